#!/usr/bin/env bash
# pushgate against nginx on this machine, in one run, driven by the same load tool: oha.
#
# nginx is set up the way a team would put it in front of an app without pushgate:
# `ssl_verify_client on` with the same CA, a `map $ssl_client_s_dn` pinning the Cross-Border PROD
# sender, and `proxy_pass` to the app over a keep-alive upstream (bench/nginx.conf.template).
# pushgate runs `ack: spool` (200 once the event is fsync'd, the app gets it in the background),
# with the same PROD DN pinned and the same app behind it. Both listen on loopback with the
# same ECDSA P-256 server certificate and `THREADS` workers, and are driven back to back by oha
# (a pinned release, installed with `cargo install` when missing) with the xbs-prod
# client certificate and ~2.5 KB Cross-Border status changes, one per line of a bodies file in
# which every line has its own eventRef (oha -Z picks a line at random for each request: see
# BENCHMARKS.md for what that means for duplicates, and the duplicate count in the report).
#
# Each scenario starts both servers afresh (empty spool, empty duplicate memory), measures
# nginx, then pushgate, and stops them. Absolute figures depend on the machine and on whatever
# else runs on it; the ratios, measured one right after the other, are what to read.
#
# Then pushgate alone, on one store: VmRSS idle and after RSS_EVENTS distinct ids; STORE_PENDING
# more events that the (now slow) app has not taken yet; the time from `pushgate run` to the
# first 200 with all of that stored, after a clean stop and after kill -9; and the ack p99 at
# 1,000/s while the delivered events are deleted (`POST /api/purge?state=delivered`, the same
# chunked sweep as retention compaction) against the p99 just before without it. Those ids
# come from examples/loadgen, which sends exactly N distinct ids (oha cannot: see above).
#
# Usage: bench/compare.sh   (about 15 minutes on 2 cores, most of them storing 1.5M events)
# Knobs (environment): BENCH_THREADS (2), BENCH_DURATION (15s), BENCH_WARMUP (3s),
#   BENCH_RATE_DURATION (10s), BENCH_CONNECTIONS (32), BENCH_BODIES (lines in the bodies file,
#   1000000), BENCH_RSS_EVENTS (1000000), BENCH_STORE_PENDING (500000),
#   BENCH_RSS_MAX_SECONDS (480, per batch of ids), BENCH_QUIET_LOAD (1.0),
#   BENCH_QUIET_WAIT (300: seconds to wait at the start for the 1-minute load average to drop
#   below BENCH_QUIET_LOAD), BENCH_SCENARIO_WAIT (30: the same before each scenario),
#   BENCH_QUICK=1 (smoke run: 3 s windows, 20,000 + 10,000 ids, no waiting for load),
#   BENCH_KEEP=1 (keep the temp dir), BENCH_SKIP_BUILD=1, OHA (path of an oha binary),
#   BENCH_DEBUG=1 (debug binaries: only to check the script itself, the figures mean nothing),
#   BENCH_ONLY (comma list of the scenarios to run, `store` for the pushgate-alone part; all
#   when unset; e.g. BENCH_ONLY=keepalive,rate1000 while working on the request path).
# Output: a markdown table on stdout and in bench/results/<date>[-quick][-debug].md; raw oha / loadgen JSON in
# the temp dir (kept with BENCH_KEEP=1).
#
# Loopback only; every load run is bounded in time (and the id runs in count too).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OHA_VERSION=1.16.0
THREADS=${BENCH_THREADS:-2}
DURATION=${BENCH_DURATION:-15s}
WARMUP=${BENCH_WARMUP:-3s}
RATE_DURATION=${BENCH_RATE_DURATION:-10s}
CONNS=${BENCH_CONNECTIONS:-32}
BODIES=${BENCH_BODIES:-1000000}
RSS_EVENTS=${BENCH_RSS_EVENTS:-1000000}
STORE_PENDING=${BENCH_STORE_PENDING:-500000}
RSS_MAX_SECONDS=${BENCH_RSS_MAX_SECONDS:-480}
QUIET_LOAD=${BENCH_QUIET_LOAD:-1.0}
QUIET_WAIT=${BENCH_QUIET_WAIT:-300}
SCENARIO_WAIT=${BENCH_SCENARIO_WAIT:-30}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    DURATION=3s WARMUP=1s RATE_DURATION=3s RSS_MAX_SECONDS=60 QUIET_WAIT=0 SCENARIO_WAIT=0
    BODIES=${BENCH_BODIES:-50000} RSS_EVENTS=${BENCH_RSS_EVENTS:-20000}
    STORE_PENDING=${BENCH_STORE_PENDING:-10000}
fi

# Loopback ports; the script refuses to start if one is taken.
NGINX_PORT=${BENCH_NGINX_PORT:-28443}
PUSHGATE_PORT=${BENCH_PUSHGATE_PORT:-28444}
ADMIN_PORT=${BENCH_ADMIN_PORT:-28900}
APP_PORT=${BENCH_APP_PORT:-28080}        # answers 200 at once
SLOW_APP_PORT=${BENCH_SLOW_APP_PORT:-28081}  # answers 200 after 3 s
DOWN_APP_PORT=${BENCH_DOWN_APP_PORT:-28082}  # nothing listens: the app is down
STORE_APP_PORT=${BENCH_STORE_APP_PORT:-28083}  # the store run's app: fast, then slow

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
KEEP=${BENCH_KEEP:-0}

# ---- tools -------------------------------------------------------------------------------------
if ! command -v nginx >/dev/null; then
    log "installing nginx (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq nginx-light >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null && apt-get install -y -qq nginx-light >/dev/null 2>&1
    } || apt-get install -y -qq nginx >/dev/null || die "cannot install nginx"
fi
OHA=${OHA:-$(command -v oha || true)}
if [[ -z $OHA ]] || ! "$OHA" --version 2>/dev/null | grep -qF "$OHA_VERSION"; then
    log "installing oha $OHA_VERSION (cargo install, a few minutes)"
    cargo install oha --version "$OHA_VERSION" --locked >&2
    OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
fi
command -v python3 >/dev/null || die "python3 is needed for the bodies and the report"
command -v curl >/dev/null || die "curl is needed for the start-up probe"
for port in $NGINX_PORT $PUSHGATE_PORT $ADMIN_PORT $APP_PORT $SLOW_APP_PORT $DOWN_APP_PORT $STORE_APP_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is in use (set BENCH_*_PORT)"; fi
done

BUILD=release
[[ ${BENCH_DEBUG:-0} == 1 ]] && BUILD=debug
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "building ($BUILD)"
    cargo build $([[ $BUILD == release ]] && echo --release) --locked --bin pushgate --example loadgen --example app >&2
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$BUILD
PUSHGATE=$BIN/pushgate
LOADGEN=$BIN/examples/loadgen
APP=$BIN/examples/app

WORK=$(mktemp -d /tmp/pushgate-bench.XXXXXX)
RES=$WORK/results
mkdir -p "$RES"
PIDS=()
trap cleanup EXIT

# Stops one process this script started: SIGINT (pushgate exits at once), then SIGKILL after 5 s.
stop_pid() {
    local pid=$1 i
    kill -INT "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

loadavg() { cut -d' ' -f1 /proc/loadavg; }

# The machine is shared: wait at most $1 seconds for the 1-minute load average to drop below
# QUIET_LOAD. The figure before each run is recorded either way; the wait only makes it likelier
# that the two servers of a scenario see the same machine.
wait_quiet() {
    local cap=$1 start=$SECONDS
    while awk -v l="$(loadavg)" -v m="$QUIET_LOAD" 'BEGIN { exit !(l > m) }' && ((SECONDS - start < cap)); do
        sleep 5
    done
    if ((SECONDS - start > 0)); then log "waited $((SECONDS - start)) s for the load average: now $(loadavg)"; fi
}

# ---- certificates, bodies and apps -------------------------------------------------------------
log "dev certificates (ECDSA P-256) in $WORK/certs"
"$PUSHGATE" dev-certs --out "$WORK/certs" >/dev/null
CERTS=$WORK/certs

# One body per line, each with its own eventRef (the template is one line of JSON).
log "$BODIES bodies in $WORK/bodies.jsonl"
python3 - "$ROOT/bench/payload-2.5k.json" "$WORK/bodies.jsonl" "$BODIES" "oha-$RANDOM" <<'EOF'
import sys
template, out, n, prefix = open(sys.argv[1]).read().strip(), sys.argv[2], int(sys.argv[3]), sys.argv[4]
assert "\n" not in template and "{{id}}" in template
head, tail = template.split("{{id}}", 1)
with open(out, "w") as f:
    for i in range(n):
        f.write(f"{head}{prefix}-{i}{tail}\n")
EOF

"$APP" "127.0.0.1:$APP_PORT" --quiet >"$WORK/app.log" 2>&1 &
PIDS+=($!)
"$APP" "127.0.0.1:$SLOW_APP_PORT" --quiet --delay-ms 3000 >"$WORK/slow-app.log" 2>&1 &
PIDS+=($!)
wait_port "$APP_PORT"
wait_port "$SLOW_APP_PORT"

# ---- the two servers ---------------------------------------------------------------------------
SERVER_PID=
start_nginx() { # app port
    local dir=$WORK/nginx-$1
    rm -rf "$dir" && mkdir -p "$dir/tmp" "$dir/logs"
    sed -e "s|@WORKERS@|$THREADS|g" -e "s|@PREFIX@|$dir|g" -e "s|@PORT@|$NGINX_PORT|g" \
        -e "s|@APP_PORT@|$1|g" -e "s|@CERT@|$CERTS/server.pem|g" -e "s|@KEY@|$CERTS/server.key|g" \
        -e "s|@CA@|$CERTS/ca.pem|g" "$ROOT/bench/nginx.conf.template" >"$dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_port "$NGINX_PORT"
}

pushgate_config() { # app-port data-dir
    cat <<EOF
server: { threads: $THREADS, grace_period: 1s }
listen:
  addr: "127.0.0.1:$PUSHGATE_PORT"
  tls:
    cert: $CERTS/server.pem
    key: $CERTS/server.key
    client_ca: $CERTS/ca.pem
    require_client_cert: true
admin:
  addr: "127.0.0.1:$ADMIN_PORT"
storage:
  path: $2
dedupe:
  backend: memory
  ttl: 72h
  max_entries: $((RSS_EVENTS + STORE_PENDING + 1000000))
log: { format: text, level: info }
routes:
  - name: xbs-status
    path: /xbs/status/webhook
    profile: mastercard-xbs
    client_dn:
      - "CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US"
    ack: spool
    max_body: 1MiB
    upstream:
      url: "http://127.0.0.1:$1/mastercard/xbs"
      timeout: 10s
EOF
}

# Starts pushgate on an existing (or new) data dir; does not wait for the port.
launch_pushgate() { # app-port dir
    mkdir -p "$2"
    pushgate_config "$1" "$2/data" >"$2/pushgate.yaml"
    "$PUSHGATE" run -c "$2/pushgate.yaml" >>"$2/pushgate.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
}

start_pushgate() { # app port
    local dir=$WORK/pushgate-$1
    rm -rf "$dir"
    launch_pushgate "$1" "$dir"
    wait_port "$PUSHGATE_PORT"
}

stop_server() { stop_pid "$SERVER_PID"; SERVER_PID=; }

# pushgate's Prometheus counters: `metric NAME [LABEL-SUBSTRING]` prints the sum of the samples.
metric() {
    python3 - "$ADMIN_PORT" "$1" "${2:-}" <<'EOF'
import sys, urllib.request
port, name, label = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
except OSError:
    print(-1); sys.exit()
total, seen = 0.0, False
for line in body.splitlines():
    if line.startswith(name) and (line[len(name)] in " {") and label in line:
        total += float(line.split()[-1]); seen = True
print(int(total) if seen else -1)
EOF
}

URL_PATH=/xbs/status/webhook
OHA_TLS=(--cacert "$CERTS/ca.pem" --cert "$CERTS/xbs-prod.pem" --key "$CERTS/xbs-prod.key")
OHA_REQ=(-m POST -H "Content-Type: application/json" -Z "$WORK/bodies.jsonl")

# oha against one server: a warm-up run (not counted), then the measured one, whose JSON goes to
# $RES/<scenario>.<server>.json; for pushgate also how many events were new and how many were
# duplicates (oha picks bodies at random, so some requests repeat an eventRef).
drive() { # scenario server duration [oha args...]
    local scenario=$1 server=$2 duration=$3 port
    shift 3
    [[ $server == nginx ]] && port=$NGINX_PORT || port=$PUSHGATE_PORT
    local url="https://127.0.0.1:$port$URL_PATH"
    "$OHA" --no-tui "${OHA_TLS[@]}" "${OHA_REQ[@]}" "$@" -z "$WARMUP" -w --output-format json "$url" \
        >"$RES/$scenario.$server.warmup.json" 2>&1 || true
    printf '%s\n' "$(loadavg)" >"$RES/$scenario.$server.load"
    local new0=0 dup0=0
    if [[ $server == pushgate ]]; then
        new0=$(metric pushgate_events_total accepted)
        dup0=$(metric pushgate_events_total duplicate)
    fi
    "$OHA" --no-tui "${OHA_TLS[@]}" "${OHA_REQ[@]}" "$@" -z "$duration" -w --stats-success-breakdown \
        --output-format json "$url" >"$RES/$scenario.$server.json" 2>"$RES/$scenario.$server.err" ||
        die "oha failed ($scenario $server): $(cat "$RES/$scenario.$server.err")"
    if [[ $server == pushgate ]]; then
        printf '{"new": %s, "duplicate": %s}\n' "$(($(metric pushgate_events_total accepted) - new0))" \
            "$(($(metric pushgate_events_total duplicate) - dup0))" >"$RES/$scenario.$server.events"
    fi
    log "$scenario $server: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["statusCodeDistribution"], round(r["summary"]["requestsPerSec"]), "req/s")' "$RES/$scenario.$server.json")"
}

# examples/loadgen against one server, for what oha cannot do (here: full handshakes only).
drive_loadgen() { # scenario server duration [loadgen args...]
    local scenario=$1 server=$2 port
    shift 2
    set -- --warmup "$WARMUP" --duration "$@"
    [[ $server == nginx ]] && port=$NGINX_PORT || port=$PUSHGATE_PORT
    printf '%s\n' "$(loadavg)" >"$RES/$scenario.$server.load"
    "$LOADGEN" --url "https://127.0.0.1:$port$URL_PATH" \
        --ca "$CERTS/ca.pem" --cert "$CERTS/xbs-prod.pem" --key "$CERTS/xbs-prod.key" \
        --body "$ROOT/bench/payload-2.5k.json" -H "Content-Type: application/json" \
        --id-prefix "$scenario-$server-$RANDOM" "$@" >"$RES/$scenario.$server.loadgen.json"
    log "$scenario $server: $(cat "$RES/$scenario.$server.loadgen.json")"
}

# Is this part asked for (BENCH_ONLY)?
only() { [[ -z ${BENCH_ONLY:-} || ,$BENCH_ONLY, == *,$1,* ]]; }

# One scenario: nginx then pushgate, each started afresh against the given app.
scenario() { # name app-port [--loadgen] duration [oha or loadgen args...]
    local name=$1 app=$2 tool=drive
    only "$name" || return 0
    shift 2
    if [[ ${1:-} == --loadgen ]]; then tool=drive_loadgen; shift; fi
    wait_quiet "$SCENARIO_WAIT"
    log "scenario $name (load average $(loadavg))"
    start_nginx "$app"
    "$tool" "$name" nginx "$@"
    if [[ $name == *handshake ]]; then # were TLS sessions resumed? nginx logs it per request
        awk '{ n++; if ($0 ~ /reused=r/) r++ } END { printf "{\"requests\": %d, \"resumed\": %d}\n", n, r }' \
            "$WORK/nginx-$app/access.log" >"$RES/$name.nginx.resumed"
    fi
    stop_server
    start_pushgate "$app"
    "$tool" "$name" pushgate "$@"
    stop_server
}

# Sanity: both servers let the PROD sender through and turn the other sender away.
log "checking both servers pin the PROD DN"
head -n 1 "$WORK/bodies.jsonl" >"$WORK/one.json"
for server in nginx pushgate; do
    "start_$server" "$APP_PORT"
    [[ $server == nginx ]] && port=$NGINX_PORT || port=$PUSHGATE_PORT
    for who in xbs-prod:200 other:403; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$CERTS/ca.pem" \
            --cert "$CERTS/${who%%:*}.pem" --key "$CERTS/${who%%:*}.key" -H "Content-Type: application/json" \
            --data-binary @"$WORK/one.json" "https://127.0.0.1:$port$URL_PATH" || true)
        [[ $code == "${who##*:}" ]] || die "$server: ${who%%:*} got $code, not ${who##*:}"
    done
    stop_server
done

# ---- scenarios against both --------------------------------------------------------------------
wait_quiet "$QUIET_WAIT"
RATE=(-q 1000 --latency-correction)
scenario keepalive "$APP_PORT" "$DURATION" -c "$CONNS"
scenario rate1000 "$APP_PORT" "$RATE_DURATION" -c "$CONNS" "${RATE[@]}"
scenario handshake "$APP_PORT" "$RATE_DURATION" -c 16 --disable-keepalive
# The same with every handshake a full one (oha always offers resumption): examples/loadgen.
scenario fullhandshake "$APP_PORT" --loadgen "$RATE_DURATION" --connections 16 --new-connection-per-request
# 200/s with a 3 s app needs ~600 requests in flight on nginx: 800 connections, 10 s timeout.
SLOW=(-c 800 -q 200 --latency-correction -t 10s)
scenario healthy200 "$APP_PORT" "$RATE_DURATION" "${SLOW[@]}"
scenario slowapp "$SLOW_APP_PORT" "$RATE_DURATION" "${SLOW[@]}"
scenario appdown "$DOWN_APP_PORT" "$RATE_DURATION" "${SLOW[@]}"

# ---- pushgate alone on one store: memory, start-up, compaction ---------------------------------
if only store; then
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
STORE=$WORK/pushgate-store
# loadgen sends exactly $1 distinct ids (closed loop, CONNS connections), bounded in time.
send_ids() { # count prefix result-file
    "$LOADGEN" --url "https://127.0.0.1:$PUSHGATE_PORT$URL_PATH" \
        --ca "$CERTS/ca.pem" --cert "$CERTS/xbs-prod.pem" --key "$CERTS/xbs-prod.key" \
        --body "$ROOT/bench/payload-2.5k.json" -H "Content-Type: application/json" \
        --id-prefix "$2-$RANDOM" --connections "$CONNS" --requests "$1" \
        --duration "${RSS_MAX_SECONDS}s" >"$3"
}

wait_quiet "$SCENARIO_WAIT"
log "memory: idle, then $RSS_EVENTS ids (at most ${RSS_MAX_SECONDS}s; load average $(loadavg))"
"$APP" "127.0.0.1:$STORE_APP_PORT" --quiet >"$WORK/store-app.log" 2>&1 &
STORE_APP=$!
PIDS+=("$STORE_APP")
wait_port "$STORE_APP_PORT"
launch_pushgate "$STORE_APP_PORT" "$STORE"
wait_port "$PUSHGATE_PORT"
sleep 2
IDLE_RSS=$(rss_kib "$SERVER_PID")
printf '%s\n' "$(loadavg)" >"$RES/rss.load"
RSS_START=$(date +%s)
( # VmRSS every 15 s while the ids arrive; ends with the server or after the time cap
    for _ in $(seq $((RSS_MAX_SECONDS / 15 + 1))); do
        sleep 15
        kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null) || break
        echo "$(($(date +%s) - RSS_START)) $kib" >>"$RES/rss.samples"
    done
) &
SAMPLER=$!
PIDS+=("$SAMPLER")
send_ids "$RSS_EVENTS" rss "$RES/rss.json"
RSS_SECONDS=$(($(date +%s) - RSS_START))
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
LOADED_RSS=$(rss_kib "$SERVER_PID")
KEYS=$(metric pushgate_dedupe_keys)
sleep 5 # the forwarder catches up; RSS once the backlog is delivered
SETTLED_RSS=$(rss_kib "$SERVER_PID")
HWM=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")
for _ in $(seq 120); do # the forwarder delivers the rest (at most 2 minutes more)
    [[ $(metric pushgate_spool_pending) -le 0 ]] && break
    sleep 1
done
DELIVERED=$(metric pushgate_forward_total delivered)
SPOOL_APPARENT=$(du -sb "$STORE/data" | cut -f1)
SPOOL_DISK=$(du -sB1 "$STORE/data" | cut -f1)
cat >"$RES/rss.env" <<EOF
{"idle_kib": $IDLE_RSS, "loaded_kib": $LOADED_RSS, "settled_kib": $SETTLED_RSS, "hwm_kib": $HWM,
 "keys": $KEYS, "target": $RSS_EVENTS, "seconds": $RSS_SECONDS, "spool_bytes": $SPOOL_APPARENT,
 "spool_disk_bytes": $SPOOL_DISK, "delivered": $DELIVERED,
 "body_bytes": $(($(wc -c <"$ROOT/bench/payload-2.5k.json") - 1))}
EOF
log "memory: $(cat "$RES/rss.env")"

# The app turns slow (3 s per answer): the next events stay pending in the store.
stop_pid "$STORE_APP"
"$APP" "127.0.0.1:$STORE_APP_PORT" --quiet --delay-ms 3000 >>"$WORK/store-app.log" 2>&1 &
STORE_APP=$!
PIDS+=("$STORE_APP")
wait_port "$STORE_APP_PORT"
log "store: $STORE_PENDING more ids that the slow app will not have taken (load average $(loadavg))"
send_ids "$STORE_PENDING" pending "$RES/pending.json"

# Start-up with all of it stored: from `pushgate run` to the first 200 (a new event each try).
first_200() { # label
    local t0 i code=000 n=0
    t0=$(date +%s%N)
    launch_pushgate "$STORE_APP_PORT" "$STORE"
    while [[ $code != 200 ]] && (($(date +%s%N) - t0 < 120000000000)); do
        n=$((n + 1))
        sed "s|{{id}}|startup-$1-$n-$RANDOM|" "$ROOT/bench/payload-2.5k.json" >"$WORK/probe.json"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$CERTS/ca.pem" \
            --cert "$CERTS/xbs-prod.pem" --key "$CERTS/xbs-prod.key" -H "Content-Type: application/json" \
            --data-binary @"$WORK/probe.json" "https://127.0.0.1:$PUSHGATE_PORT$URL_PATH" || true)
        [[ $code == 200 ]] || sleep 0.02
    done
    local ms=$((($(date +%s%N) - t0) / 1000000))
    [[ $code == 200 ]] || ms=null
    printf '{"ms": %s, "tries": %d, "pending": %s, "stored_bytes": %s}\n' "$ms" "$n" \
        "$(metric pushgate_spool_pending)" "$(du -sb "$STORE/data" | cut -f1)" >"$RES/startup.$1.json"
    log "start-up after $1: $(cat "$RES/startup.$1.json")"
}
stop_server
first_200 clean
kill -KILL "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
first_200 kill9

# Compaction: ack p99 at 1,000/s, then the same while the delivered events are deleted.
compaction_run() { # name
    printf '%s\n' "$(loadavg)" >"$RES/$1.pushgate.load"
    "$OHA" --no-tui "${OHA_TLS[@]}" "${OHA_REQ[@]}" -c "$CONNS" "${RATE[@]}" -z "$RATE_DURATION" -w \
        --stats-success-breakdown --output-format json "https://127.0.0.1:$PUSHGATE_PORT$URL_PATH" \
        >"$RES/$1.pushgate.json" 2>"$RES/$1.pushgate.err" || die "oha failed ($1): $(cat "$RES/$1.pushgate.err")"
}
wait_port "$PUSHGATE_PORT"
log "compaction: 1,000/s without, then while the delivered events are purged"
compaction_run nocompact
PURGE_T0=$(date +%s%N)
curl -s --max-time "$RSS_MAX_SECONDS" -X POST "http://127.0.0.1:$ADMIN_PORT/api/purge?state=delivered" \
    >"$RES/purge.out" 2>&1 &
PURGE=$!
PIDS+=("$PURGE")
compaction_run compact
PURGE_STILL_RUNNING=$(kill -0 "$PURGE" 2>/dev/null && echo true || echo false)
wait "$PURGE" || true
PURGE_MS=$((($(date +%s%N) - PURGE_T0) / 1000000))
printf '{"ms": %d, "running_at_end_of_window": %s, "answer": %s}\n' "$PURGE_MS" "$PURGE_STILL_RUNNING" \
    "$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read().strip()))' "$RES/purge.out")" \
    >"$RES/purge.json"
log "purge: $(cat "$RES/purge.json")"
stop_server

fi

# ---- report ------------------------------------------------------------------------------------
mkdir -p "$ROOT/bench/results"
SUFFIX=
if [[ ${BENCH_QUICK:-0} == 1 ]]; then SUFFIX+=-quick; fi
if [[ $BUILD == debug ]]; then SUFFIX+=-debug; fi
OUT=$ROOT/bench/results/$(date -u +%Y-%m-%d)$SUFFIX.md
python3 "$ROOT/bench/report.py" "$RES" "$THREADS" "$CONNS" "$("$OHA" --version)" "$BUILD" >"$OUT"
cat "$OUT"
log "written to ${OUT#"$ROOT"/}"
