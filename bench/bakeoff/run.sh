#!/bin/sh
# The bake-off as recorded in BENCHMARKS.md ("Store bake-off"): each engine on its own, then
# each again under strace to count writes and syncs. Data goes to $BAKEOFF_DIR (default
# /work/bakeoff-data), which must be on the disk under test.
cd "$(dirname "$0")" || exit 1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -q || exit 1
N="${1:-100000}"
uptime
for e in log logzero fjall redb; do
  "$CARGO_TARGET_DIR/release/bakeoff" "$N" "$e"
done
for e in log fjall redb; do
  echo "== strace -f -c, $e, 32000 events = 1000 batches"
  strace -f -c -e trace=fdatasync,fsync,write,pwrite64 "$CARGO_TARGET_DIR/release/bakeoff" 32000 "$e" 2>&1 \
    | grep -E "calls|fdatasync|fsync|write|total"
done
uptime
