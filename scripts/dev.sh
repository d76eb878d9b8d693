#!/usr/bin/env bash
# Runs pushgate locally: dev certificates, the dev config (embedded storage under dev/),
# and the example app behind it. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --locked --bin pushgate --example app
[ -f dev/certs/ca.pem ] || target/release/pushgate dev-certs --out dev/certs
# The Gateway route's secret comes from the environment, as it would in production.
export GW_SECRET="${GW_SECRET:-dev-secret-0123456789abcdef01234}"
target/release/pushgate check -c conf/dev.yaml
target/release/examples/app 127.0.0.1:8080 &
app=$!
trap 'kill $app 2>/dev/null' EXIT
cat <<TXT

pushgate on https://localhost:8443 (admin on http://127.0.0.1:9900), the example app on :8080.
Send the samples:   examples/send-samples.sh
Or by hand:         curl --cacert dev/certs/ca.pem --cert dev/certs/xbs-prod.pem --key dev/certs/xbs-prod.key \\
                      -H 'content-type: application/json' --data @examples/samples/xbs-status-change.json \\
                      https://localhost:8443/xbs/status/webhook

TXT
target/release/pushgate run -c conf/dev.yaml
