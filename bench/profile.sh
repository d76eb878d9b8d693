#!/usr/bin/env bash
# Where pushgate's CPU goes, and what it allocates per request, under the keep-alive load of
# bench/compare.sh (oha, 32 mTLS connections, ~2.5 KB bodies, `ack: spool`).
#
#   bench/profile.sh            both: perf (CPU, self time) and heaptrack (allocations)
#   bench/profile.sh perf       `perf record -F 499 -e cpu-clock --call-graph dwarf` for
#                               PROFILE_SECONDS of load (software clock: this VM has no PMU)
#   bench/profile.sh heaptrack  pushgate under heaptrack for PROFILE_REQUESTS requests; the
#                               allocation sites, per request, with the store's own set apart
#
# Needs target/release/pushgate and examples/app (cargo build --release --bin pushgate
# --example app), oha (as bench/compare.sh installs it), perf, heaptrack (Debian packages).
# PROFILE_KEEP=1 keeps the temp dir (perf.data, for `perf report -i` by hand).
# Results in bench/results/profile-<date>/ (perf report text, heaptrack summary); loopback only.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WHAT=${1:-all}
SECONDS_=${PROFILE_SECONDS:-10}
REQUESTS=${PROFILE_REQUESTS:-20000}
PORT=${BENCH_PUSHGATE_PORT:-28444}
ADMIN_PORT=${BENCH_ADMIN_PORT:-28900}
APP_PORT=${BENCH_APP_PORT:-28080}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
PUSHGATE=$ROOT/target/release/pushgate
OUT=$ROOT/bench/results/profile-$(date -u +%Y-%m-%d)
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/pushgate-profile.XXXXXX)
PIDS=()
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
KEEP=${PROFILE_KEEP:-0}
trap cleanup EXIT
requests_total() {
    curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^pushgate_requests_total/ { s += $NF } END { print s + 0 }'
}

"$PUSHGATE" dev-certs --out "$WORK/certs" >/dev/null
CERTS=$WORK/certs
python3 - "$ROOT/bench/payload-2.5k.json" "$WORK/bodies.jsonl" 200000 "prof-$RANDOM" <<'EOF'
import sys
head, tail = open(sys.argv[1]).read().strip().split("{{id}}", 1)
with open(sys.argv[2], "w") as f:
    for i in range(int(sys.argv[3])):
        f.write(f"{head}{sys.argv[4]}-{i}{tail}\n")
EOF
"$ROOT/target/release/examples/app" "127.0.0.1:$APP_PORT" --quiet >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$APP_PORT"
cat >"$WORK/pushgate.yaml" <<EOF
server: { threads: 2, grace_period: 1s }
listen:
  addr: "127.0.0.1:$PORT"
  tls: { cert: $CERTS/server.pem, key: $CERTS/server.key, client_ca: $CERTS/ca.pem, require_client_cert: true }
admin: { addr: "127.0.0.1:$ADMIN_PORT" }
storage: { path: $WORK/data }
dedupe: { backend: memory, ttl: 72h, max_entries: 1000000 }
log: { format: text, level: info }
routes:
  - name: xbs-status
    path: /xbs/status/webhook
    profile: mastercard-xbs
    client_dn:
      - "CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US"
    ack: spool
    upstream: { url: "http://127.0.0.1:$APP_PORT/mastercard/xbs", timeout: 10s }
EOF
OHA_ARGS=(--no-tui --output-format json --cacert "$CERTS/ca.pem" --cert "$CERTS/xbs-prod.pem"
    --key "$CERTS/xbs-prod.key" -m POST -H "Content-Type: application/json" -Z "$WORK/bodies.jsonl" -c 32)
URL="https://127.0.0.1:$PORT/xbs/status/webhook"

if [[ $WHAT == all || $WHAT == perf ]]; then
    rm -rf "$WORK/data"
    "$PUSHGATE" run -c "$WORK/pushgate.yaml" >"$WORK/pushgate.log" 2>&1 &
    PG=$!
    PIDS+=("$PG")
    wait_port "$PORT"
    log "perf: $SECONDS_ s of keep-alive load (load average $(cut -d' ' -f1 /proc/loadavg))"
    "$OHA" "${OHA_ARGS[@]}" -z "$((SECONDS_ + 4))s" -w "$URL" >"$OUT/perf-oha.json" &
    LOAD=$!
    sleep 2
    before=$(requests_total)
    perf record -F 499 -e cpu-clock --call-graph dwarf,16384 -p "$PG" -o "$WORK/perf.data" -- sleep "$SECONDS_" \
        2>"$WORK/perf-record.log"
    after=$(requests_total)
    wait "$LOAD" || true
    kill -INT "$PG"
    wait "$PG" || true
    echo "requests during the recording: $((after - before))" >"$OUT/perf-summary.txt"
    set +o pipefail # head closes the pipe early: perf's SIGPIPE is not a failure
    perf report -i "$WORK/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -20 >>"$OUT/perf-summary.txt"
    echo >>"$OUT/perf-summary.txt"
    perf report -i "$WORK/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -60 >>"$OUT/perf-summary.txt"
    perf report -i "$WORK/perf.data" --children --sort sym --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -80 >"$OUT/perf-children.txt"
    set -o pipefail
    log "perf: $OUT/perf-summary.txt"
fi

if [[ $WHAT == all || $WHAT == heaptrack ]]; then
    rm -rf "$WORK/data"
    heaptrack -o "$WORK/heaptrack" "$PUSHGATE" run -c "$WORK/pushgate.yaml" >"$WORK/heaptrack.log" 2>&1 &
    PG=$!
    PIDS+=("$PG")
    wait_port "$PORT"
    sleep 1
    log "heaptrack: $REQUESTS requests"
    "$OHA" "${OHA_ARGS[@]}" -n "$REQUESTS" "$URL" >"$OUT/heaptrack-oha.json"
    sleep 2 # the forwarder delivers the last ones
    n=$(requests_total)
    kill -INT "$(pgrep -P "$PG" -f 'pushgate run' || echo "$PG")" 2>/dev/null || kill -INT "$PG"
    wait "$PG" || true
    file=$(ls "$WORK"/heaptrack*.zst "$WORK"/heaptrack*.gz 2>/dev/null | head -1)
    heaptrack_print -f "$file" --flamegraph-cost-type allocations -F "$WORK/stacks.txt" >"$WORK/heaptrack.txt"
    python3 "$ROOT/bench/allocs.py" "$WORK/stacks.txt" "$n" >"$OUT/allocations.txt"
    log "heaptrack: $OUT/allocations.txt"
fi
