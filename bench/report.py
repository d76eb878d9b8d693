#!/usr/bin/env python3
"""Markdown report for bench/compare.sh: reads the oha and loadgen JSON results of one run.

Usage: report.py RESULTS_DIR THREADS CONNECTIONS OHA_VERSION BUILD  (prints markdown on stdout)
"""
import datetime
import json
import os
import platform
import subprocess
import sys

RES, THREADS, CONNS, OHA, BUILD = sys.argv[1:6]

SCENARIOS = [
    ("keepalive", f"1. keep-alive, max rate ({CONNS} conns, closed loop)"),
    ("rate1000", f"2. fixed 1,000/s ({CONNS} conns, open loop)"),
    ("handshake", "3. new TCP+TLS connection per request (16 conns, closed loop)"),
    ("fullhandshake", "3b. the same, every handshake a full one (examples/loadgen: no resumption)"),
    ("healthy200", "4a. 200/s, app healthy (800 conns) — baseline for 4 and 5"),
    ("slowapp", "4. 200/s, app answers after 3 s"),
    ("appdown", "5. 200/s, app down (connection refused)"),
]


def load(name):
    path = os.path.join(RES, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def loadavg(name):
    path = os.path.join(RES, f"{name}.load")
    return open(path).read().strip() if os.path.exists(path) else "-"


def fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float) and v >= 100:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def fr(v):
    """A ratio, three significant digits (0.000447×, 1.06×)."""
    return "–" if v is None else f"{v:.3g}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


class Run:
    """One oha result: answers with status 200 are the successes; latency is over those."""

    def __init__(self, r):
        self.codes = {int(k): v for k, v in r.get("statusCodeDistribution", {}).items()}
        self.errors = r.get("errorDistribution", {})
        self.ok = self.codes.get(200, 0)
        self.seconds = r["summary"]["total"]
        self.ok_per_s = self.ok / self.seconds if self.seconds else None
        pct = r.get("latencyPercentileSuccessful") or r.get("latencyPercentiles") or {}
        ms = lambda k: None if pct.get(k) is None or not self.ok else pct[k] * 1000
        self.p50, self.p99, self.p999 = ms("p50"), ms("p99"), ms("p99.9")

    def failures(self):
        parts = [f"status {c}: {n:,}" for c, n in sorted(self.codes.items()) if c != 200]
        parts += [f"{e[:60]}: {n:,}" for e, n in sorted(self.errors.items())]
        total = sum(n for c, n in self.codes.items() if c != 200) + sum(self.errors.values())
        return "0" if not total else f"{total:,} ({'; '.join(parts)})"


class LoadgenRun(Run):
    """One examples/loadgen result (the full-handshake scenario), read like an oha one."""

    def __init__(self, r):
        self.codes = {200: r["ok"]}
        self.errors = {k: v for k, v in r["errors"].items()}
        self.ok, self.seconds, self.ok_per_s = r["ok"], r["duration_s"], r["rps"]
        self.p50, self.p99, self.p999 = r["p50_ms"], r["p99_ms"], r["p999_ms"]


def run(name):
    r = load(f"{name}.json")
    if r:
        return Run(r)
    r = load(f"{name}.loadgen.json")
    return LoadgenRun(r) if r else None


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # the report is still useful without it
        return "?"


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


out = []
p = out.append
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
p(f"# pushgate vs nginx — {now}")
p("")
p(f"- machine: {os.cpu_count()} CPUs, {cpu_model()}, Linux {platform.release()}")
p(f"- client: {OHA} (the same binary and arguments for both servers)")
p(f"- nginx: {sh('nginx -v 2>&1').replace('nginx version: ', '')}, "
  f"{THREADS} workers, `ssl_verify_client on` + `map $ssl_client_s_dn` + `proxy_pass` (keep-alive upstream)")
if BUILD != "release":
    p(f"- **{BUILD} build (BENCH_DEBUG=1): a check of the script, not a measurement**")
p(f"- pushgate: {sh('git rev-parse --short HEAD')}, {BUILD}, `server.threads: {THREADS}`, `ack: spool` "
  "(fsync before 200, group commit), mastercard-xbs profile, PROD DN pinned, log level info")
p("- both: 127.0.0.1, ECDSA P-256 server cert from `pushgate dev-certs`, client cert xbs-prod, "
  "~2.5 KB body, the same example app behind; each body line has its own eventRef and oha picks "
  "one at random per request, so pushgate sees some duplicates (counted in `new / dup`)")
p("- ok/s: answers with status 200 per second over oha's whole run (from the first request to the last "
  "answer: in scenario 4 nginx's last answers come 3 s after the last request, which lowers its figure "
  "though it answered every request)")
p("- latency: oha's, over the 200s; at a fixed rate with `--latency-correction` (from the intended send "
  "time: no coordinated omission); the app's round trip included for nginx, which answers only with "
  "the app's answer")
p("")
p("| scenario | server | ok/s | p50 ms | p99 ms | p99.9 ms | ok | failures | pushgate new / dup | load avg before |")
p("|---|---|---:|---:|---:|---:|---:|---|---:|---:|")
results = {}
for key, title in SCENARIOS:
    n, g = run(f"{key}.nginx"), run(f"{key}.pushgate")
    results[key] = (n, g)
    for server, r in (("nginx", n), ("pushgate", g)):
        if r is None:
            p(f"| {title} | {server} | not run | | | | | | | |")
            title = ""
            continue
        ev = load(f"{key}.{server}.events")
        events = f"{ev['new']:,} / {ev['duplicate']:,}" if ev else ""
        p(f"| {title} | {server} | {fmt(r.ok_per_s, 1)} | {fmt(r.p50)} | {fmt(r.p99)} | {fmt(r.p999)} "
          f"| {r.ok:,} | {r.failures()} | {events} | {loadavg(f'{key}.{server}')} |")
        title = ""
    if n and g:
        p(f"| | **pushgate / nginx** | **{fr(ratio(g.ok_per_s, n.ok_per_s))}×** "
          f"| {fr(ratio(g.p50, n.p50))}× | {fr(ratio(g.p99, n.p99))}× | {fr(ratio(g.p999, n.p999))}× | | | | |")
p("")
for key, label in (("handshake", "3"), ("fullhandshake", "3b")):
    resumed = load(f"{key}.nginx.resumed")
    if resumed and resumed["requests"]:
        p(f"Scenario {label}: nginx logged {resumed['resumed']:,} of {resumed['requests']:,} requests "
          "(warm-up included) on resumed TLS sessions.")
        p("")

# Memory, disk, start-up, compaction: pushgate alone on one store.
mem = load("rss.env")
rss = load("rss.json")
if mem:
    mib = lambda kib: kib / 1024
    keys, target = mem["keys"], mem["target"]
    p("| pushgate memory | VmRSS |")
    p("|---|---:|")
    p(f"| idle, after start-up | {mib(mem['idle_kib']):.1f} MiB |")
    p(f"| right after {keys:,} distinct ids accepted (duplicate memory) | {mib(mem['loaded_kib']):.1f} MiB |")
    p(f"| 5 s later (forwarder catching up) | {mib(mem['settled_kib']):.1f} MiB (peak {mib(mem['hwm_kib']):.1f} MiB) |")
    if 0 < keys < target:
        per_id = (mem["loaded_kib"] - mem["idle_kib"]) * 1024 / keys
        est = mem["idle_kib"] / 1024 + per_id * target / 2**20
        p(f"| **extrapolated** to {target:,} ids (linear: {per_id:.0f} B per id) | {est:.1f} MiB |")
    samples = os.path.join(RES, "rss.samples")
    if os.path.exists(samples):
        pts = [line.split() for line in open(samples) if line.strip()]
        if pts:
            p("")
            p("VmRSS while the ids arrived (seconds: MiB): "
              + ", ".join(f"{t}: {int(k) / 1024:.0f}" for t, k in pts))
    rate = f", {rss['rps']:,.0f} events/s (examples/loadgen, {CONNS} keep-alive connections)" if rss else ""
    p("")
    p(f"Sending the ids took {mem['seconds']} s{rate}, load average {loadavg('rss')} before. "
      f"With {mem['delivered']:,} of them delivered, the store holds {mem['spool_bytes'] / 2**20:,.0f} MiB "
      f"({mem['spool_disk_bytes'] / 2**20:,.0f} MiB allocated on disk) for {keys:,} events of "
      f"{mem['body_bytes']:,} B: **{mem['spool_bytes'] / max(keys, 1) / mem['body_bytes']:.2f}×** the bodies.")
    p("")

pending = load("pending.json")
starts = [(k, load(f"startup.{k}.json")) for k in ("clean", "kill9")]
if any(s for _, s in starts):
    stored = (mem["keys"] if mem else 0) + (pending["ok"] if pending else 0)
    p(f"| start with {stored:,} events stored | first 200 after `pushgate run` | pending at start | store size |")
    p("|---|---:|---:|---:|")
    for k, s in starts:
        if s:
            what = "after a clean stop (SIGINT)" if k == "clean" else "after `kill -9`"
            ms = "no 200 in 120 s" if s["ms"] is None else f"{s['ms'] / 1000:.2f} s"
            p(f"| {what} | {ms} ({s['tries']} tries) | {s['pending']:,} | {s['stored_bytes'] / 2**20:,.0f} MiB |")
    p("")

nc, c = run("nocompact.pushgate"), run("compact.pushgate")
purge = load("purge.json")
if nc and c:
    p("| 1,000/s while the delivered events are deleted | ok/s | p50 ms | p99 ms | p99.9 ms | failures | load avg before |")
    p("|---|---:|---:|---:|---:|---|---:|")
    for name, r, label in (("nocompact", nc, "without"), ("compact", c, "during `POST /api/purge?state=delivered`")):
        p(f"| {label} | {fmt(r.ok_per_s, 1)} | {fmt(r.p50)} | {fmt(r.p99)} | {fmt(r.p999)} | {r.failures()} "
          f"| {loadavg(f'{name}.pushgate')} |")
    if purge:
        p("")
        p(f"The purge answered {purge['answer']} after {purge['ms'] / 1000:.1f} s"
          + (" (still running when the window ended)." if purge["running_at_end_of_window"] else
             " (it ended inside the window)."))
    p("")


def pg(key):
    return results.get(key, (None, None))[1]


p("| target | measured | met |")
p("|---|---|---|")


def target(name, value, ok):
    p(f"| {name} | {value} | {'yes' if ok else ('**no**' if ok is not None else '–')} |")


kn, kg = results["keepalive"]
r = ratio(kg and kg.ok_per_s, kn and kn.ok_per_s)
target("keep-alive throughput ≥ 1.0× nginx (fsync on)", f"{fr(r)}×", None if r is None else r >= 1.0)
rn, rg = results["rate1000"]
if rn and rg and rg.p99 is not None and rn.p99 is not None:
    target("ack p99 at 1,000/s ≤ nginx's p99", f"{fmt(rg.p99)} ms vs {fmt(rn.p99)} ms", rg.p99 <= rn.p99)
for key, what in (("handshake", "oha, resumption offered"), ("fullhandshake", "full handshakes")):
    hn, hg = results[key]
    r = ratio(hg and hg.ok_per_s, hn and hn.ok_per_s)
    target(f"new TCP+TLS connection per request ≥ 1.0× nginx ({what})", f"{fr(r)}×", None if r is None else r >= 1.0)
base = pg("healthy200")
for key, what in (("slowapp", "app slow (3 s)"), ("appdown", "app down")):
    v = pg(key)
    r = ratio(v and v.p99, base and base.p99)
    target(f"{what}: ack p99 within 10% of healthy ({fmt(base and base.p99)} ms at 200/s)",
           f"{fmt(v and v.p99)} ms ({fr(r)}×)", None if r is None else r <= 1.10)
if mem and mem["keys"] > 0:
    per = mem["spool_bytes"] / mem["keys"] / mem["body_bytes"]
    target("disk bytes per stored 2.5 KB event ≤ 1.3×", f"{per:.2f}×", per <= 1.3)
for k, s in starts:
    if s:
        ok = None if s["ms"] is None else s["ms"] <= 3000
        target(f"first 200 with the store full ({'clean stop' if k == 'clean' else 'kill -9'}) ≤ 3 s",
               "none in 120 s" if s["ms"] is None else f"{s['ms'] / 1000:.2f} s", ok)
if nc and c:
    r = ratio(c.p99, nc.p99)
    target("ack p99 while deleting delivered events ≤ 1.2× without", f"{fr(r)}×", None if r is None else r <= 1.2)
if mem:
    idle = mem["idle_kib"] / 1024
    target("idle RSS ≤ 32 MiB", f"{idle:.1f} MiB", idle <= 32)
    if mem["keys"] >= mem["target"]:
        loaded = max(mem["loaded_kib"], mem["settled_kib"]) / 1024
        target(f"{mem['target']:,} ids ≤ 200 MiB", f"{loaded:.1f} MiB", loaded <= 200)
    elif mem["keys"] > 0:
        per_id = (mem["loaded_kib"] - mem["idle_kib"]) * 1024 / mem["keys"]
        est = mem["idle_kib"] / 1024 + per_id * mem["target"] / 2**20
        target(f"{mem['target']:,} ids ≤ 200 MiB", f"{est:.1f} MiB (extrapolated from {mem['keys']:,})",
               est <= 200)
print("\n".join(out))
