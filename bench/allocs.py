#!/usr/bin/env python3
"""Allocations per request from heaptrack's folded stacks (bench/profile.sh).

Usage: allocs.py STACKS_FILE REQUESTS

Each stack (root first, `;`-separated, then a count of allocation calls) is put in one part of
pushgate: the store (spool, redb), the forwarder, or the request path (everything else: TLS,
Pingora, ingest, checks, extraction, dedupe, replies, logging, metrics). Within the request path
an allocation is attributed to the innermost frame that is not the allocator or the standard
library's plumbing, and the innermost pushgate frame is shown beside it.
"""
import collections
import re
import sys

stacks, requests = sys.argv[1], int(sys.argv[2])
PLUMBING = re.compile(
    r"^$|^_R|^<T as alloc::|^<?(malloc|calloc|realloc|free|operator new|__rust|__rdl|alloc::|core::|std::|"
    r"hashbrown::|bytes::|serde_core::|serde_json::value|<unresolved|\?\?)"
)
MANGLED = [("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","), ("$u7b$", "{"), ("$u7d$", "}"),
           ("$RF$", "&"), ("$BP$", "*"), ("$u27$", "'"), ("..", "::")]


def clean(frame):
    """Rust's legacy mangling, made readable: hashes dropped, escapes decoded, file names kept."""
    frame = re.sub(r"::h[0-9a-f]{16}", "", frame)
    for a, b in MANGLED:
        frame = frame.replace(a, b)
    return frame[1:] if frame.startswith("_<") else frame


def part(frames):
    text = ";".join(frames)
    if "pushgate::spool" in text or "redb::" in text:
        return "store (spool, redb)"
    if "pushgate::forward" in text:
        return "forwarder (to the app)"
    return "request path"


def site(frames):
    inner = next((f for f in reversed(frames) if not PLUMBING.match(f)), frames[-1])
    ours = next((f for f in reversed(frames) if "pushgate::" in f), "-")
    return inner[:110], ours[:90]


parts = collections.Counter()
sites = collections.Counter()
total = 0
for line in open(stacks):
    line = line.rstrip("\n")
    if not line:
        continue
    path, _, count = line.rpartition(" ")
    n = int(count)
    frames = [clean(f) for f in path.split(";")]
    total += n
    p = part(frames)
    parts[p] += n
    if p == "request path":
        sites[site(frames)] += n

print(f"{requests:,} requests; {total:,} allocation calls in all ({total / requests:.1f} per request)")
print()
for p, n in parts.most_common():
    print(f"{n / requests:8.1f} per request  {p}")
print()
print("request path, by innermost non-plumbing frame (per request | frame | innermost pushgate frame):")
for (inner, ours), n in sites.most_common(40):
    print(f"{n / requests:8.2f}  {inner}  |  {ours}")
