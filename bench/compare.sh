#!/usr/bin/env bash
# pushgate against nginx on this machine, in one run.
#
# nginx is set up the way a team would put it in front of an app without pushgate:
# `ssl_verify_client on` with the same CA, a `map $ssl_client_s_dn` pinning the Cross-Border PROD
# sender, and `proxy_pass` to the app over a keep-alive upstream (bench/nginx.conf.template).
# pushgate runs `ack: spool` (200 once the event is fsync'd, the app gets it in the background),
# with the same PROD DN pinned and the same app behind it. Both listen on loopback with the
# same ECDSA P-256 server certificate and `THREADS` workers, and are driven back to back by the
# project's load generator with the xbs-prod client certificate and a ~2.5 KB Cross-Border
# status change whose eventRef is new on every request (bench/payload-2.5k.json).
#
# Each scenario starts both servers afresh (empty spool, empty duplicate memory), measures
# nginx, then pushgate, and stops them. Absolute figures depend on the machine and on whatever
# else runs on it; the ratios, measured one right after the other, are what to read.
#
# Usage: bench/compare.sh            (about 7 minutes on 2 cores, 4 of them the 1M-id run; bounded below 15)
# Knobs (environment): BENCH_THREADS (2), BENCH_DURATION (15s), BENCH_RATE_DURATION (10s),
#   BENCH_CONNECTIONS (32), BENCH_RSS_EVENTS (1000000), BENCH_RSS_MAX_SECONDS (480),
#   BENCH_QUICK=1 (short smoke run: 3 s windows, 20,000 ids), BENCH_KEEP=1 (keep the temp dir),
#   BENCH_SKIP_BUILD=1.
# Output: a markdown table on stdout and in bench/results/<date>.md; raw loadgen JSON in the
# temp dir (printed at the end with BENCH_KEEP=1).
#
# Loopback only; every load run is bounded in time (and the 1M run in count too).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
THREADS=${BENCH_THREADS:-2}
DURATION=${BENCH_DURATION:-15s}
WARMUP=${BENCH_WARMUP:-3s}
RATE_DURATION=${BENCH_RATE_DURATION:-10s}
CONNS=${BENCH_CONNECTIONS:-32}
RSS_EVENTS=${BENCH_RSS_EVENTS:-1000000}
RSS_MAX_SECONDS=${BENCH_RSS_MAX_SECONDS:-480}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    DURATION=3s WARMUP=1s RATE_DURATION=3s RSS_EVENTS=${BENCH_RSS_EVENTS:-20000} RSS_MAX_SECONDS=60
fi

# Loopback ports; the script refuses to start if one is taken.
NGINX_PORT=${BENCH_NGINX_PORT:-28443}
PUSHGATE_PORT=${BENCH_PUSHGATE_PORT:-28444}
ADMIN_PORT=${BENCH_ADMIN_PORT:-28900}
APP_PORT=${BENCH_APP_PORT:-28080}        # answers 200 at once
SLOW_APP_PORT=${BENCH_SLOW_APP_PORT:-28081}  # answers 200 after 3 s
DOWN_APP_PORT=${BENCH_DOWN_APP_PORT:-28082}  # nothing listens: the app is down

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }

# ---- tools -------------------------------------------------------------------------------------
if ! command -v nginx >/dev/null; then
    log "installing nginx (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq nginx-light >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null && apt-get install -y -qq nginx-light >/dev/null 2>&1
    } || apt-get install -y -qq nginx >/dev/null || die "cannot install nginx"
fi
command -v python3 >/dev/null || die "python3 is needed for the report"
for port in $NGINX_PORT $PUSHGATE_PORT $ADMIN_PORT $APP_PORT $SLOW_APP_PORT $DOWN_APP_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is in use (set BENCH_*_PORT)"; fi
done

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "building (release)"
    cargo build --release --locked --bin pushgate --example loadgen --example app >&2
fi
PUSHGATE=$ROOT/target/release/pushgate
LOADGEN=$ROOT/target/release/examples/loadgen
APP=$ROOT/target/release/examples/app

WORK=$(mktemp -d /tmp/pushgate-bench.XXXXXX)
RES=$WORK/results
mkdir -p "$RES"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Waits (at most 10 s) until something accepts on 127.0.0.1:$1.
wait_port() {
    local i
    for i in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$1 after 10 s (see $WORK)"
}

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

# ---- certificates and apps ---------------------------------------------------------------------
log "dev certificates (ECDSA P-256) in $WORK/certs"
"$PUSHGATE" dev-certs --out "$WORK/certs" >/dev/null
CERTS=$WORK/certs

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

start_pushgate() { # app port
    local dir=$WORK/pushgate-$1
    rm -rf "$dir" && mkdir -p "$dir"
    cat >"$dir/pushgate.yaml" <<EOF
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
  path: $dir/data
dedupe:
  backend: memory
  ttl: 72h
  max_entries: 1000000
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
    "$PUSHGATE" run -c "$dir/pushgate.yaml" >"$dir/pushgate.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_port "$PUSHGATE_PORT"
}

stop_server() { stop_pid "$SERVER_PID"; SERVER_PID=; }

# loadgen against one server; the JSON result goes to $RES/<scenario>.<server>.json.
drive() { # scenario server [loadgen args...]
    local scenario=$1 server=$2 port
    shift 2
    [[ $server == nginx ]] && port=$NGINX_PORT || port=$PUSHGATE_PORT
    printf '%s\n' "$(loadavg)" >"$RES/$scenario.$server.load"
    "$LOADGEN" --url "https://127.0.0.1:$port/xbs/status/webhook" \
        --ca "$CERTS/ca.pem" --cert "$CERTS/xbs-prod.pem" --key "$CERTS/xbs-prod.key" \
        --body "$ROOT/bench/payload-2.5k.json" -H "Content-Type: application/json" \
        --id-prefix "$scenario-$server-$RANDOM" --json "$@" >"$RES/$scenario.$server.json"
    log "$scenario $server: $(cat "$RES/$scenario.$server.json")"
}

# One scenario: nginx then pushgate, each started afresh against the given app.
scenario() { # name app-port [loadgen args...]
    local name=$1 app=$2
    shift 2
    log "scenario $name (load average $(loadavg))"
    start_nginx "$app"
    drive "$name" nginx "$@"
    stop_server
    start_pushgate "$app"
    drive "$name" pushgate "$@"
    stop_server
}

# Sanity: both servers let the PROD sender through and turn the other sender away.
log "checking both servers pin the PROD DN"
for server in nginx pushgate; do
    "start_$server" "$APP_PORT"
    [[ $server == nginx ]] && port=$NGINX_PORT || port=$PUSHGATE_PORT
    for who in xbs-prod:200 other:403; do
        "$LOADGEN" --url "https://127.0.0.1:$port/xbs/status/webhook" --ca "$CERTS/ca.pem" \
            --cert "$CERTS/${who%%:*}.pem" --key "$CERTS/${who%%:*}.key" \
            --body "$ROOT/bench/payload-2.5k.json" -H "Content-Type: application/json" \
            --connections 1 --requests 3 --expect-status "${who##*:}" --json >"$RES/check.json"
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r["ok"]==3 else 1)' \
            "$RES/check.json" || die "$server: ${who%%:*} did not get ${who##*:}: $(cat "$RES/check.json")"
    done
    stop_server
done

# ---- scenarios ---------------------------------------------------------------------------------
scenario keepalive "$APP_PORT" --connections "$CONNS" --warmup "$WARMUP" --duration "$DURATION"
scenario rate1000 "$APP_PORT" --connections "$CONNS" --rate 1000 --warmup 2s --duration "$RATE_DURATION"
scenario handshake "$APP_PORT" --connections 16 --new-connection-per-request --warmup 2s --duration "$RATE_DURATION"
# 200/s with a 3 s app needs ~600 requests in flight on nginx: 800 connections, 10 s timeout.
SLOW_ARGS=(--connections 800 --rate 200 --warmup 2s --duration "$RATE_DURATION" --timeout 10s)
scenario healthy200 "$APP_PORT" "${SLOW_ARGS[@]}"
scenario slowapp "$SLOW_APP_PORT" "${SLOW_ARGS[@]}"
scenario appdown "$DOWN_APP_PORT" "${SLOW_ARGS[@]}"

# ---- memory: idle, then RSS_EVENTS distinct ids in the duplicate memory -----------------------
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
dedupe_keys() {
    python3 - "$ADMIN_PORT" <<'EOF'
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read()
try:
    import gzip; body = gzip.decompress(body)
except OSError:
    pass
for line in body.decode().splitlines():
    if line.startswith("pushgate_dedupe_keys"):
        print(int(float(line.split()[-1]))); break
else:
    print(-1)
EOF
}
log "memory: idle, then $RSS_EVENTS ids (at most ${RSS_MAX_SECONDS}s; load average $(loadavg))"
start_pushgate "$APP_PORT"
sleep 2
IDLE_RSS=$(rss_kib "$SERVER_PID")
printf '%s\n' "$(loadavg)" >"$RES/rss.load"
RSS_START=$(date +%s)
( # VmRSS every 15 s while the ids arrive; ends with the server or after the time cap
    for _ in $(seq $(( RSS_MAX_SECONDS / 15 + 1 ))); do
        sleep 15
        kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null) || break
        echo "$(( $(date +%s) - RSS_START )) $kib" >>"$RES/rss.samples"
    done
) &
SAMPLER=$!
PIDS+=("$SAMPLER")
"$LOADGEN" --url "https://127.0.0.1:$PUSHGATE_PORT/xbs/status/webhook" \
    --ca "$CERTS/ca.pem" --cert "$CERTS/xbs-prod.pem" --key "$CERTS/xbs-prod.key" \
    --body "$ROOT/bench/payload-2.5k.json" -H "Content-Type: application/json" \
    --id-prefix "rss-$RANDOM" --connections "$CONNS" --requests "$RSS_EVENTS" \
    --duration "${RSS_MAX_SECONDS}s" --json >"$RES/rss.json"
RSS_SECONDS=$(( $(date +%s) - RSS_START ))
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
LOADED_RSS=$(rss_kib "$SERVER_PID")
KEYS=$(dedupe_keys)
sleep 5 # the forwarder catches up; RSS once the backlog is delivered
SETTLED_RSS=$(rss_kib "$SERVER_PID")
HWM=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")
SPOOL_BYTES=$(du -sb "$WORK/pushgate-$APP_PORT/data" | cut -f1)
stop_server
cat >"$RES/rss.env" <<EOF
{"idle_kib": $IDLE_RSS, "loaded_kib": $LOADED_RSS, "settled_kib": $SETTLED_RSS, "hwm_kib": $HWM,
 "keys": $KEYS, "target": $RSS_EVENTS, "seconds": $RSS_SECONDS, "spool_bytes": $SPOOL_BYTES}
EOF
log "memory: $(cat "$RES/rss.env")"

# ---- report ------------------------------------------------------------------------------------
mkdir -p "$ROOT/bench/results"
OUT=$ROOT/bench/results/$(date -u +%Y-%m-%d).md
python3 "$ROOT/bench/report.py" "$RES" "$THREADS" "$CONNS" >"$OUT"
cat "$OUT"
log "written to ${OUT#"$ROOT"/}"
