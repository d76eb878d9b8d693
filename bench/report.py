#!/usr/bin/env python3
"""Markdown report for bench/compare.sh: reads the loadgen JSON results of one run.

Usage: report.py RESULTS_DIR THREADS CONNECTIONS  (prints markdown on stdout)
"""
import datetime
import json
import os
import platform
import subprocess
import sys

RES, THREADS, CONNS = sys.argv[1], sys.argv[2], sys.argv[3]

SCENARIOS = [
    ("keepalive", f"1. keep-alive, max rate ({CONNS} conns, closed loop)"),
    ("rate1000", f"2. fixed 1,000/s ({CONNS} conns, open loop)"),
    ("handshake", "3. new TLS connection per request (16 conns, closed loop)"),
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


def loadavg(scenario, server):
    path = os.path.join(RES, f"{scenario}.{server}.load")
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


def throughput(r, scenario):
    return r["handshakes_per_s"] if scenario == "handshake" else r["rps"]


def failures(r):
    if not r["errors_total"]:
        return "0"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items()))
    return f"{r['errors_total']} ({kinds})"


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
p(f"- nginx: {sh('nginx -v 2>&1').replace('nginx version: ', '')}, "
  f"{THREADS} workers, `ssl_verify_client on` + `map $ssl_client_s_dn` + `proxy_pass` (keep-alive upstream)")
p(f"- pushgate: {sh('git rev-parse --short HEAD')}, release, `server.threads: {THREADS}`, `ack: spool` "
  "(fsync before 200, group commit), mastercard-xbs profile, PROD DN pinned, log level info")
p("- both: 127.0.0.1, ECDSA P-256 server cert from `pushgate dev-certs`, client cert xbs-prod, "
  "~2.5 KB body with a new eventRef per request, the same example app behind")
p("- ok/s is successful answers per second over the window from the end of the warm-up to the last answer: "
  "in scenario 4 nginx's last answers come 3 s after the last request, which halves its figure "
  "though it answered every request")
p("- latency: from (intended) send to complete response, measured by examples/loadgen; "
  "throughput: successful requests per second (scenario 3: full handshakes per second)")
p("")
p("| scenario | server | ok/s | p50 ms | p99 ms | p99.9 ms | ok | failures | load avg before |")
p("|---|---|---:|---:|---:|---:|---:|---|---:|")
results = {}
for key, title in SCENARIOS:
    n = load(f"{key}.nginx.json")
    g = load(f"{key}.pushgate.json")
    results[key] = (n, g)
    for server, r in (("nginx", n), ("pushgate", g)):
        if r is None:
            p(f"| {title} | {server} | not run | | | | | | |")
            continue
        late = ""
        if r.get("rate") and r.get("late"):
            late = f" ({r['late']} sent late)"
        p(f"| {title} | {server} | {fmt(throughput(r, key), 1)} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} "
          f"| {fmt(r['p999_ms'])} | {r['ok']:,} | {failures(r)}{late} | {loadavg(key, server)} |")
        title = ""
    if n and g:
        p(f"| | **pushgate / nginx** | **{fr(ratio(throughput(g, key), throughput(n, key)))}×** "
          f"| {fr(ratio(g['p50_ms'], n['p50_ms']))}× | {fr(ratio(g['p99_ms'], n['p99_ms']))}× "
          f"| {fr(ratio(g['p999_ms'], n['p999_ms']))}× | | | |")
p("")

# Memory.
mem = load("rss.env")
rss = load("rss.json")
if mem:
    mib = lambda kib: kib / 1024
    keys, target = mem["keys"], mem["target"]
    p("| pushgate memory | VmRSS |")
    p("|---|---:|")
    p(f"| idle, after start-up | {mib(mem['idle_kib']):.1f} MiB |")
    p(f"| right after {keys:,} distinct ids accepted (duplicate memory) | {mib(mem['loaded_kib']):.1f} MiB |")
    p(f"| 5 s later (forwarder caught up) | {mib(mem['settled_kib']):.1f} MiB (peak {mib(mem['hwm_kib']):.1f} MiB) |")
    per_id = None
    if keys > 0 and keys < target:
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
    rate = f", {rss['rps']:,.0f} events/s" if rss else ""
    p("")
    p(f"Sending the ids took {mem['seconds']} s{rate}; the spool file grew to "
      f"{mem['spool_bytes'] / 2**20:,.0f} MiB (delivered events are kept for `storage.retention`).")
    p("")

# Targets.
def pg(key, field):
    g = results.get(key, (None, None))[1]
    return g[field] if g else None


p("| target | measured | met |")
p("|---|---|---|")


def target(name, value, ok):
    p(f"| {name} | {value} | {'yes' if ok else ('**no**' if ok is not None else '–')} |")


kn, kg = results["keepalive"]
r = ratio(kg and kg["rps"], kn and kn["rps"])
target("keep-alive throughput ≥ 1.0× nginx (fsync on)", f"{fr(r)}×", None if r is None else r >= 1.0)
v = pg("rate1000", "p99_ms")
target("ack p99 ≤ 5 ms at 1,000/s", f"{fmt(v)} ms", None if v is None else v <= 5.0)
base = pg("healthy200", "p99_ms")
for key, what in (("slowapp", "app slow (3 s)"), ("appdown", "app down")):
    v = pg(key, "p99_ms")
    r = ratio(v, base)
    target(f"{what}: ack p99 within 10% of healthy ({fmt(base)} ms at 200/s)",
           f"{fmt(v)} ms ({fr(r)}×)", None if r is None else r <= 1.10)
hn, hg = results["handshake"]
r = ratio(hg and hg["handshakes_per_s"], hn and hn["handshakes_per_s"])
target("new handshakes/s ≥ 1.0× nginx (ECDSA P-256)", f"{fr(r)}×", None if r is None else r >= 1.0)
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
