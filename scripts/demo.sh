#!/usr/bin/env bash
# Runs the whole jetmail stack on this machine (nats-server, a local SMTP sink, ingest's API,
# 3 senders, the monitor and the web UI), sends the demo campaign in examples/ and shows
# the delivered mail. Everything lives in .jetmail-demo/ and stops with Ctrl-C.
#   scripts/demo.sh            # keep running after the campaign (web UI on :8090)
#   scripts/demo.sh --once     # stop after the campaign is done
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --bins --quiet
BIN=target/debug
DIR=.jetmail-demo
rm -rf "$DIR" && mkdir -p "$DIR/mail"
NATS_PORT=${NATS_PORT:-4222}
export JETMAIL_NATS_URL="nats://127.0.0.1:$NATS_PORT"
export JETMAIL_WEBUI_PASSWORD=${JETMAIL_WEBUI_PASSWORD:-demo}
pids=()
cleanup() {
  # Services first, the broker last, so they can say goodbye.
  kill -TERM "${pids[@]:1}" 2>/dev/null || true
  for p in "${pids[@]:1}"; do wait "$p" 2>/dev/null || true; done
  kill -TERM "${pids[0]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
start() { local name=$1; shift; "$@" >"$DIR/$name.log" 2>&1 & pids+=($!); }

start nats nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$DIR/jetstream"
start sink "$BIN/jetmail-sink" --listen 127.0.0.1:2525 --maildir "$DIR/mail"
sleep 1
# The API's token (README, "Running it safely"): the web UI's, with scope admin.
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf 'webui %s admin\n' "$TOKEN" >"$DIR/api-tokens"
printf '%s\n' "$TOKEN" >"$DIR/webui-ingest-token"
# One-click unsubscribe: a secret every ingest shares (README, "Sending like a good citizen");
# the links in the demo mail point at this ingest's public routes.
head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/unsubscribe-secret"
UNSUB=(--public-url http://127.0.0.1:8080 --unsubscribe-secret-file "$DIR/unsubscribe-secret")
start ingest "$BIN/jetmail-ingest" serve --listen 127.0.0.1:8080 --api-tokens-file "$DIR/api-tokens" \
  "${UNSUB[@]}"
start monitor "$BIN/jetmail-monitor" --listen 127.0.0.1:8081
# DKIM: an Ed25519 key for example.com, selector demo (README shows how to publish its record).
DKIM=()
if command -v openssl >/dev/null 2>&1; then
  openssl genpkey -algorithm ed25519 -out "$DIR/dkim-demo.pem" 2>/dev/null &&
    DKIM=(--dkim-selector demo --dkim-key "$DIR/dkim-demo.pem")
fi
for i in 1 2 3; do
  start "sender$i" "$BIN/jetmail-sender" --smtp-url smtp://127.0.0.1:2525 --id "demo-sender-$i" \
    "${DKIM[@]}"
done
start webui "$BIN/jetmail-webui" --ingest-url http://127.0.0.1:8080 --listen 127.0.0.1:8090 \
  --ingest-token-file "$DIR/webui-ingest-token"
sleep 1

"$BIN/jetmail-ingest" submit --from 'jetmail demo <demo@example.com>' \
  --subject 'Welcome, {{ name }}' --text examples/welcome.txt --html examples/welcome.html \
  --recipients examples/recipients.csv --campaign-id demo "${UNSUB[@]}"

for _ in $(seq 1 60); do
  status=$("$BIN/jetmail-ingest" status demo 2>/dev/null | sed -n 's/^  "status": "\(.*\)",/\1/p')
  [[ "$status" == "done" ]] && break
  sleep 0.5
done
echo
echo "campaign demo is ${status:-unknown}; $(ls "$DIR/mail" | wc -l) messages delivered to $DIR/mail/:"
ls "$DIR/mail"
echo
echo "---- first message ----"
head -c 2400 "$(ls "$DIR"/mail/*.eml | head -1)"
echo
echo "----"
echo "web UI: http://127.0.0.1:8090 (password: $JETMAIL_WEBUI_PASSWORD)   ingest API: http://127.0.0.1:8080"
echo "monitor: http://127.0.0.1:8081/v1/senders   logs: $DIR/*.log"
if [[ "${1:-}" != "--once" ]]; then
  echo "running; Ctrl-C stops everything"
  wait
fi
