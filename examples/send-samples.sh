#!/usr/bin/env bash
# Sends every sample in examples/samples through the dev setup started by scripts/dev.sh
# (pushgate on https://localhost:8443 with conf/dev.yaml and dev/certs) and prints each answer.
# Run it twice: the second time every notification is a duplicate — still 200 (Ethoca's still
# lists each alert), and the example app prints nothing new.
#
#   PUSHGATE_URL  where pushgate listens (default https://localhost:8443)
#   GW_SECRET     the Gateway route's secret (default: the one scripts/dev.sh sets)
set -euo pipefail
cd "$(dirname "$0")/.."

base="${PUSHGATE_URL:-https://localhost:8443}"
secret="${GW_SECRET:-dev-secret-0123456789abcdef01234}"
samples=examples/samples
certs=dev/certs
[ -f "$certs/ca.pem" ] || { echo "no $certs/ca.pem: start scripts/dev.sh first" >&2; exit 1; }

# Mastercard's senders (and, in dev, Ethoca's) present a client certificate; the Gateway does not.
mtls=(--cert "$certs/xbs-prod.pem" --key "$certs/xbs-prod.key")
json="content-type: application/json"
form="content-type: application/x-www-form-urlencoded"
failed=0

# send NAME PATH FILE CURL-ARGS...: POSTs FILE's bytes as they are, prints status and answer.
send() {
  local name=$1 path=$2 file=$3
  shift 3
  local out status body
  out=$(curl -sS --cacert "$certs/ca.pem" --data-binary "@$samples/$file" -w '\n%{http_code}' "$@" "$base$path")
  status=${out##*$'\n'}
  body=${out%"$status"}
  body=${body%$'\n'}
  printf '%s  %-30s %s\n' "$status" "$name" "${body:-(no body)}"
  [ "$status" = 200 ] || failed=1
}

send xbs-status-change    /xbs/status/webhook xbs-status-change.json       "${mtls[@]}" -H "$json"
send xbs-status-snake     /xbs/status/webhook xbs-status-change-snake.json "${mtls[@]}" -H "$json"
send xbs-carded-rate      /xbs/status/webhook xbs-carded-rate.json         "${mtls[@]}" -H "$json"
send xbs-rfi              /xbs/status/webhook xbs-rfi.json                 "${mtls[@]}" -H "$json"
send cen-batch            /cen/notifications  cen-batch.json               "${mtls[@]}" -H "$json"
send gateway-json         /gateway/webhook    gateway.json -H "$json" \
  -H "X-Notification-Secret: $secret" -H "X-Notification-Id: sample-gateway-json-1" -H "X-Notification-Attempt: 1"
send gateway-nvp          /gateway/webhook    gateway.nvp  -H "$form" \
  -H "X-Notification-Secret: $secret" -H "X-Notification-Id: sample-gateway-nvp-1" -H "X-Notification-Attempt: 1"
send ethoca-alerts        /ethoca/alerts      ethoca-alerts.json           "${mtls[@]}" -H "$json"

exit "$failed"
