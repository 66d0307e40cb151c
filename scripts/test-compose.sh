#!/usr/bin/env bash
# Runs the shipped compose.yaml under Docker and checks what the README promises of it. No
# image is pulled: scripts/docker-images.sh builds a Debian base with debootstrap (cached),
# NATS from the local nats-server binary and jetmail from the Dockerfile and the release
# binaries; compose.yaml takes those images from its variables. Each run has its own compose
# project, secrets (passwords, API token, a private CA for the cluster's TLS), free host ports
# and volumes, all removed at the end (`down -v`), even when a step fails.
#
#  1. `up -d --scale sender=3`; every container's health check passes.
#  2. A 5,000-recipient campaign (A) is submitted through the web UI's published port, as a
#     browser does (log in, the new-campaign form with the CSV file); the SMTP sink container
#     answers each command 500 ms late, so the campaign lasts long enough for:
#     - `--scale sender=5`: the two new senders deliver part of it (their metrics);
#     - `docker kill` (SIGKILL) of one sender: its messages come back after the ack wait;
#     - `stop sender`: every other sender drains and exits 0 within its stop_grace_period;
#     then the senders start again.
#  3. A second campaign (B) is paused from the web UI, the stack goes `down` (volumes kept)
#     and `up` again: B is still paused with the same recipients waiting and nothing sent,
#     resumes from the web UI and completes, each recipient once. Campaign A, whose killed
#     sender's messages were still waiting for the ack wait through all this, completes:
#     every recipient in the sink's maildir, none missing, duplicates only within the killed
#     sender's sends in flight (32: the relay had their DATA, the sender never saw the 250).
#  4. The `cluster` profile with deploy/cluster/compose.yaml: 3 NATS nodes with TLS, every
#     stream and bucket at 3 replicas. Mid-campaign (C) the node leading MAIL_OUTBOX is cut
#     off the network (`docker network disconnect`, a real partition) for 30 s, then
#     reconnected: nothing is lost, the campaign completes, and the node catches up (for
#     every stream it is the leader or its leader reports it current with no lag, from each
#     node's /jsz).
#
# Skips (exit 0, with a message) where no Docker engine or Compose tool works. Needs openssl,
# curl and python3 on the host. Prints one `COMPOSE` line per result.
set -euo pipefail
cd "$(dirname "$0")/.."

START=$SECONDS
log() { printf 'compose-test %4ds  %s\n' $((SECONDS - START)) "$*" >&2; }
fail() {
  log "FAILED: $*"
  exit 1
}
result() { printf 'COMPOSE %s\n' "$*"; }

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "compose-test: SKIPPED: no usable Docker engine here ('docker info' fails)" >&2
  exit 0
fi
if docker compose version >/dev/null 2>&1; then
  COMPOSE_BIN=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE_BIN=(docker-compose)
else
  echo "compose-test: SKIPPED: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 0
fi

# --profile debug: images from the debug binaries `cargo build --workspace --bins` made for
# the test suite (CI, where a release build would cost another ~5 minutes); release
# otherwise, as users build them.
PROFILE=release
if [[ "${1:-}" == "--profile" && -n "${2:-}" ]]; then
  PROFILE=$2
elif (($#)); then
  echo "usage: $0 [--profile release|debug]" >&2
  exit 2
fi

RECIPIENTS=5000
PAUSED_RECIPIENTS=2000
SENDER_CONCURRENCY=32 # compose.yaml's --concurrency: a kill can duplicate at most this many
PARTITION_S=30

WORK=$(mktemp -d "${TMPDIR:-/tmp}/jetmail-compose.XXXXXX")
SECRETS=$WORK/secrets
PROJECT="jetmail-test-$$"
FILES=(-f compose.yaml)
compose() { "${COMPOSE_BIN[@]}" -p "$PROJECT" "${FILES[@]}" "$@"; }
# A compose command whose chatter goes to the run's log (shown when a step fails).
compose_quiet() {
  compose "$@" >>"$WORK/compose.log" 2>&1 || {
    tail -30 "$WORK/compose.log" >&2
    fail "compose $*"
  }
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if ((rc != 0)); then
    log "the last lines of every container's log:"
    compose logs --no-color --tail=25 >&2 2>&1 || true
  fi
  "${COMPOSE_BIN[@]}" -p "$PROJECT" -f compose.yaml -f deploy/cluster/compose.yaml \
    --profile cluster down -v --remove-orphans -t 10 >/dev/null 2>&1 || true
  rm -rf "$WORK"
  log "cleaned up (project $PROJECT: containers, network, volumes)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- images and secrets ------------------------------------------------------------------

log "images (scripts/docker-images.sh)"
eval "$(bash scripts/docker-images.sh --profile "$PROFILE")"
log "images ready: $JETMAIL_IMAGE ($PROFILE binaries), $JETMAIL_NATS_IMAGE on $JETMAIL_BASE_IMAGE"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}
export JETMAIL_SECRETS_DIR=$SECRETS
JETMAIL_WEBUI_PORT=$(free_port)
JETMAIL_UNSUBSCRIBE_PORT=$(free_port)
export JETMAIL_WEBUI_PORT JETMAIL_UNSUBSCRIBE_PORT
export JETMAIL_SINK_DELAY=500ms
# The shell's own settings must not steer the stack under test.
unset JETMAIL_NATS_URL JETMAIL_REPLICAS COMPOSE_FILE COMPOSE_PROFILES COMPOSE_PROJECT_NAME

mkdir -m 700 "$SECRETS"
for f in nats_admin_password nats_ingest_password nats_sender_password \
  nats_monitor_password nats_webui_password webui_password; do
  echo "p$(openssl rand -hex 24)" >"$SECRETS/$f"
done
TOKEN=$(openssl rand -hex 24)
printf 'webui %s admin\n' "$TOKEN" >"$SECRETS/api_tokens"
echo "$TOKEN" >"$SECRETS/webui_ingest_token"
# The cluster's TLS: a private CA (its key stays out of the secrets) and one certificate
# naming every node, for server and client use (routes present it to each other).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=jetmail-compose-test-ca -keyout "$WORK/ca.key" -out "$SECRETS/nats_tls_ca" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=nats \
  -keyout "$SECRETS/nats_tls_key" -out "$WORK/node.csr" 2>/dev/null
printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature' \
  'extendedKeyUsage=serverAuth,clientAuth' 'subjectAltName=DNS:nats-1,DNS:nats-2,DNS:nats-3' \
  >"$WORK/node.ext"
openssl x509 -req -in "$WORK/node.csr" -CA "$SECRETS/nats_tls_ca" -CAkey "$WORK/ca.key" \
  -CAserial "$WORK/ca.srl" -CAcreateserial -days 2 -extfile "$WORK/node.ext" -out "$SECRETS/nats_tls_cert" 2>/dev/null
# The services run as uid 10001; the directory keeps everyone else out.
chmod 644 "$SECRETS"/*

# --- helpers -----------------------------------------------------------------------------

# Waits until every container of the project runs and passes its health check.
wait_healthy() {
  local deadline=$((SECONDS + ${1:-180})) bad
  while :; do
    # shellcheck disable=SC2046
    bad=$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' \
      $(compose ps -q) | awk '$2 != "running" || $3 != "healthy"')
    [[ -z "$bad" ]] && return 0
    ((SECONDS < deadline)) || fail "not healthy in time: $bad"
    sleep 2
  done
}

sink_id() { compose ps -q smtp-sink; }
# Recipients of every message in the sink's maildir (one file per message, its To: header).
delivered_to() {
  docker exec "$(sink_id)" sh -c "find /mail -name '*.eml' -exec grep -h -m1 '^To: ' {} +" |
    sed 's/^To: //' | tr -d '\r'
}
# How many messages to addresses starting with $1 the sink holds.
delivered_count() { delivered_to | grep -c "^$1[0-9]*@" || true; }
wait_delivered() { # prefix at-least deadline-seconds
  local deadline=$((SECONDS + $3)) n
  while :; do
    n=$(delivered_count "$1")
    ((n >= $2)) && return 0
    ((SECONDS < deadline)) || fail "only $n of $2 '$1' messages delivered in $3 s"
    sleep 1
  done
}

recipients_csv() { # prefix count file
  {
    echo "email,name"
    for ((i = 1; i <= $2; i++)); do echo "$1$i@d$((i % 7)).example.com,Person $1$i"; done
  } >"$3"
}

# Checks the sink against the list: prints "delivered unique lost duplicates".
tally() { # prefix csv
  local got="$WORK/got-$1" want="$WORK/want-$1"
  delivered_to | grep "^$1[0-9]*@" | sort >"$got" || true
  tail -n +2 "$2" | cut -d, -f1 | sort >"$want"
  local delivered unique lost
  delivered=$(wc -l <"$got")
  unique=$(sort -u "$got" | wc -l)
  lost=$(sort -u "$got" | comm -13 - "$want" | wc -l)
  echo "$delivered $unique $lost $((delivered - unique))"
}

ingest_cli() { compose exec -T ingest jetmail-ingest "$@" 2>/dev/null; }
campaign_field() { # id python-expression on the status JSON `d`
  ingest_cli status "$1" |
    python3 -c "import json, sys; d = json.load(sys.stdin); print($2)" 2>/dev/null
}
wait_status() { # id status deadline-seconds
  local deadline=$((SECONDS + $3)) s
  while :; do
    s=$(campaign_field "$1" 'd["status"]' || echo unknown)
    [[ "$s" == "$2" ]] && return 0
    ((SECONDS < deadline)) || fail "campaign $1 is $s, not $2, after $3 s"
    sleep 2
  done
}
# Done, and nothing of it left in the broker: a message whose outcome is recorded but whose
# ack was lost (a killed sender, a partition) waits for the ack wait, then is redelivered
# and acked without sending (the ledger has it) -- or sent again, which the tally counts.
wait_settled() { # id deadline-seconds
  wait_status "$1" "done" "$2"
  local deadline=$((SECONDS + $2)) left
  while :; do
    left=$(campaign_field "$1" 'd["pending"]' || echo unknown)
    [[ "$left" == 0 ]] && return 0
    ((SECONDS < deadline)) || fail "campaign $1 is done but $left of it still wait in the broker"
    sleep 2
  done
}

sender_metric() { # container metric-line-prefix
  docker exec "$1" curl -fsS http://127.0.0.1:9091/metrics |
    awk -v m="$2" 'index($0, m) == 1 { print $2; found = 1 } END { if (!found) print 0 }'
}
SENT_METRIC='jetmail_sender_deliveries_total{outcome="sent"}'

# The web UI, driven over its published port as a browser drives it.
WEBUI="http://127.0.0.1:$JETMAIL_WEBUI_PORT"
JAR="$WORK/cookies"
web() { curl -sS -c "$JAR" -b "$JAR" "$@"; }
form_value() { sed -n "s/.*name=\"$1\" value=\"\([^\"]*\)\".*/\1/p" "$2" | head -1; }
webui_login() {
  rm -f "$JAR"
  web -f -o "$WORK/login.html" "$WEBUI/login"
  local code
  code=$(web -o /dev/null -w '%{http_code}' --data-urlencode "csrf=$(form_value csrf "$WORK/login.html")" \
    --data-urlencode next=/ --data-urlencode "password=$(head -1 "$SECRETS/webui_password")" \
    "$WEBUI/login")
  [[ "$code" == 303 ]] || fail "web UI login answered $code"
}
# Submits the new-campaign form with a CSV file; prints the campaign id.
webui_submit() { # csv-file name
  web -f -o "$WORK/new.html" "$WEBUI/campaigns/new"
  local code
  code=$(web -o "$WORK/submitted.html" -D "$WORK/submitted.headers" -w '%{http_code}' \
    -F "csrf=$(form_value csrf "$WORK/new.html")" \
    -F "submission_key=$(form_value submission_key "$WORK/new.html")" -F upload_token= \
    -F 'from=Compose test <compose-test@example.com>' -F "subject=$2 for {{ name }}" \
    -F "text=Dear {{ name }}, this is $2." -F html= -F send_at= -F deadline= -F rate= \
    -F "recipients_file=@$1;type=text/csv" -F recipients_text= -F action=send \
    "$WEBUI/campaigns/new")
  [[ "$code" == 303 ]] || fail "the web UI refused campaign $2 ($code): $(grep -o 'field-error[^<]*<[^<]*' "$WORK/submitted.html" | head -3)"
  sed -n 's|^location: /campaigns/\([A-Za-z0-9_-]*\).*|\1|ip' "$WORK/submitted.headers"
}
webui_control() { # id pause|resume
  web -f -o "$WORK/campaign.html" "$WEBUI/campaigns/$1"
  local code
  code=$(web -o /dev/null -w '%{http_code}' \
    --data-urlencode "csrf=$(form_value csrf "$WORK/campaign.html")" "$WEBUI/campaigns/$1/$2")
  [[ "$code" == 303 ]] || fail "the web UI's $2 of $1 answered $code"
}

# --- 1. up, 3 senders ----------------------------------------------------------------------

log "up -d --scale sender=3 (project $PROJECT, web UI on :$JETMAIL_WEBUI_PORT)"
t=$SECONDS
compose_quiet up -d --scale sender=3
wait_healthy
result "up --scale sender=3: every container healthy after $((SECONDS - t)) s"
mapfile -t FIRST_SENDERS < <(compose ps -q sender)
((${#FIRST_SENDERS[@]} == 3)) || fail "${#FIRST_SENDERS[@]} senders, not 3"

# --- 2. a campaign through the web UI: scale, kill, stop --------------------------------------

recipients_csv a "$RECIPIENTS" "$WORK/a.csv"
webui_login
A=$(webui_submit "$WORK/a.csv" "campaign A")
[[ -n "$A" ]] || fail "no campaign id in the web UI's answer"
log "campaign A ($A, $RECIPIENTS recipients) submitted through the web UI"
wait_delivered a 300 90

compose_quiet up -d --no-recreate --scale sender=5
wait_healthy 90
mapfile -t NEW_SENDERS < <(compose ps -q sender | grep -v -F "$(printf '%s\n' "${FIRST_SENDERS[@]}")")
((${#NEW_SENDERS[@]} == 2)) || fail "${#NEW_SENDERS[@]} new senders, not 2"
deadline=$((SECONDS + 60))
for c in "${NEW_SENDERS[@]}"; do
  until (($(sender_metric "$c" "$SENT_METRIC") > 0)); do
    ((SECONDS < deadline)) || fail "new sender $c delivered nothing in 60 s"
    sleep 1
  done
done
before_kill=$(delivered_count a)
result "scale sender=5 at $before_kill of $RECIPIENTS delivered: the 2 new senders deliver ($(for c in "${NEW_SENDERS[@]}"; do printf '%s ' "$(sender_metric "$c" "$SENT_METRIC")"; done)sent so far)"

KILLED=${FIRST_SENDERS[1]}
in_flight=$(sender_metric "$KILLED" jetmail_sender_in_flight)
docker kill -s KILL "$KILLED" >/dev/null
log "killed sender ${KILLED:0:12} (SIGKILL, ~$in_flight sends in flight) at $before_kill delivered"
wait_delivered a $((before_kill + 500)) 90

log "stop sender (SIGTERM, stop_grace_period 40s)"
t=$SECONDS
compose_quiet stop sender
stop_s=$((SECONDS - t))
exits=""
for c in $(compose ps -a -q sender); do
  [[ "$c" == "$KILLED" ]] && continue
  code=$(docker inspect -f '{{.State.ExitCode}}' "$c")
  exits+="$code "
  [[ "$code" == 0 ]] || fail "sender ${c:0:12} exited $code on stop"
  docker logs "$c" 2>&1 | grep 'sender stopped' >/dev/null || fail "sender ${c:0:12} never logged its stop"
done
((stop_s < 40)) || fail "stopping the senders took $stop_s s"
# What each had in flight when SIGTERM came (its drain log line).
drained=$(for c in $(compose ps -a -q sender); do docker logs "$c" 2>&1; done |
  sed -n 's/.*draining: finishing sends in flight in_flight=\([0-9]*\).*/\1/p' |
  awk '{ n += $1 } END { print n + 0 }')
result "stop: 4 senders drained ${drained} sends in flight and exited ${exits}in $stop_s s; the killed one exited $(docker inspect -f '{{.State.ExitCode}}' "$KILLED")"

compose_quiet up -d --no-recreate --scale sender=5
wait_healthy 90
# The killed sender's messages come back after the senders consumer's ack wait (2 min):
# campaign A is checked after step 3, which runs meanwhile (and its `down` and `up` too).
log "senders started again; campaign A goes on while campaign B is paused, taken down and up"

# --- 3. pause, down, up, resume ---------------------------------------------------------------

recipients_csv b "$PAUSED_RECIPIENTS" "$WORK/b.csv"
B=$(webui_submit "$WORK/b.csv" "campaign B")
log "campaign B ($B, $PAUSED_RECIPIENTS recipients) submitted"
wait_delivered b 200 60
webui_control "$B" pause
wait_status "$B" paused 30
# Sends already in flight finish; then nothing more arrives.
prev=-1
until n=$(delivered_count b) && ((n == prev)); do
  prev=$n
  sleep 3
done
pending=$(campaign_field "$B" 'd["pending"]')
log "campaign B paused at $n delivered, $pending pending"

t=$SECONDS
compose_quiet down
volumes=$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | sort | tr '\n' ' ')
[[ "$volumes" == *nats-data* && "$volumes" == *mail* ]] || fail "volumes after down: $volumes"
compose_quiet up -d --scale sender=3
wait_healthy
status=$(campaign_field "$B" 'd["status"]')
pending_after=$(campaign_field "$B" 'd["pending"]')
sleep 5
n_after=$(delivered_count b)
[[ "$status" == paused ]] || fail "campaign B is $status after down and up"
((pending_after == pending)) || fail "campaign B: $pending pending before down, $pending_after after up"
((n_after == n)) || fail "campaign B: $n delivered before down, $n_after after up while paused"
result "down (volumes kept: $volumes) and up in $((SECONDS - t)) s: campaign B still paused, $pending_after pending, nothing sent meanwhile"

webui_login
webui_control "$B" resume
wait_settled "$B" 180
read -r delivered unique lost dups < <(tally b "$WORK/b.csv")
((lost == 0 && dups == 0 && unique == PAUSED_RECIPIENTS)) ||
  fail "campaign B: $delivered delivered, $unique distinct, lost $lost, duplicates $dups"
result "campaign B resumed from the web UI and done: $PAUSED_RECIPIENTS recipients, each delivered once"

wait_settled "$A" 300
read -r delivered unique lost dups < <(tally a "$WORK/a.csv")
((lost == 0)) || fail "campaign A: $lost recipients never delivered"
((unique == RECIPIENTS)) || fail "campaign A: $unique distinct recipients delivered, not $RECIPIENTS"
((dups <= SENDER_CONCURRENCY)) ||
  fail "campaign A: $dups duplicates, above the killed sender's $SENDER_CONCURRENCY send slots"
sent=$(campaign_field "$A" 'd["progress"]["sent"]')
result "campaign A (scaled, a sender killed, all stopped, the stack down and up): $RECIPIENTS recipients, $delivered messages in the sink, $unique distinct, lost $lost, duplicates $dups (bound $SENDER_CONCURRENCY, the killed sender's slots); status done, sent $sent"

# --- 4. the 3-node cluster, partitioned -----------------------------------------------------

compose_quiet down -v
FILES=(-f compose.yaml -f deploy/cluster/compose.yaml --profile cluster)
log "up the cluster profile (3 NATS nodes, TLS, 3 replicas)"
t=$SECONDS
# On a cluster that has just formed, creating the 3-replica streams can outlast a service's
# JetStream request timeout when every service creates them at once: that service exits,
# Docker restarts it (restart: unless-stopped) and it succeeds, but `up` may have seen the
# web UI's dependency (ingest) exit and given up. Then `up` is run again, and said so.
first_up=""
if ! compose up -d --scale sender=3 >>"$WORK/compose.log" 2>&1; then
  exited=$(compose logs --no-color 2>/dev/null | grep -E '\| Error: ' | sort -u | head -3 | tr -s ' ' | paste -sd ';' || true)
  first_up=" (the first \`up\` failed on a dependency that exited and was restarted: ${exited:-no error logged}; the second passed)"
  log "first up failed; ${exited:-}; up again"
  compose_quiet up -d --scale sender=3
fi
wait_healthy 240
topology=$(ingest_cli topology show)
grep -q '^stream  MAIL_OUTBOX .*replicas 3' <<<"$topology" || fail "MAIL_OUTBOX is not at 3 replicas: $topology"
result "cluster up in $((SECONDS - t)) s: 3 nodes healthy, MAIL_OUTBOX at 3 replicas$first_up"

recipients_csv c "$RECIPIENTS" "$WORK/c.csv"
webui_login
C=$(webui_submit "$WORK/c.csv" "campaign C")
log "campaign C ($C, $RECIPIENTS recipients) submitted to the cluster"
wait_delivered c 500 90

t_cut=$SECONDS
leader=$(ingest_cli topology show | sed -n 's/^stream  MAIL_OUTBOX .*leader \(nats-[0-9]\).*/\1/p')
[[ -n "$leader" ]] || fail "no MAIL_OUTBOX leader in: $(ingest_cli topology show)"
node=$(compose ps -q "$leader")
net=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$node")
at_cut=$(delivered_count c)
docker network disconnect "$net" "$node"
log "cut $leader (the MAIL_OUTBOX leader) off $net at $at_cut delivered, for ${PARTITION_S} s"
sleep "$PARTITION_S"
during=$(delivered_count c)
# Back on the network under its service name, which the other nodes' routes dial.
docker network connect --alias "$leader" "$net" "$node"
result "partition: $leader cut off for $PARTITION_S s, $((during - at_cut)) delivered meanwhile (by the services connected to the other nodes); reconnected"

wait_settled "$C" 300
read -r delivered unique lost dups < <(tally c "$WORK/c.csv")
((lost == 0 && unique == RECIPIENTS)) || fail "campaign C: $unique distinct delivered, lost $lost"
bound=$((3 * SENDER_CONCURRENCY))
((dups <= bound)) || fail "campaign C: $dups duplicates, above the senders' $bound send slots"
result "campaign C on the cluster: $RECIPIENTS recipients, $delivered messages, lost $lost, duplicates $dups (bound $bound); done and its outbox empty $((SECONDS - t_cut)) s after the cut"

# Caught up: for every stream, the node is its leader, or its leader reports it current with
# no lag (each node's /jsz, read from the node that leads the stream).
catch_up() {
  local dumps=$WORK/jsz
  mkdir -p "$dumps"
  for n in nats-1 nats-2 nats-3; do
    docker exec "$(compose ps -q "$n")" wget -qO- \
      'http://127.0.0.1:8222/jsz?accounts=true&streams=true' >"$dumps/$n.json" || return 1
  done
  python3 - "$dumps" "$leader" <<'PY'
import json, os, sys
dumps, node = sys.argv[1], sys.argv[2]
views = {}
for f in os.listdir(dumps):
    d = json.load(open(os.path.join(dumps, f)))
    for a in d.get("account_details") or []:
        for s in a.get("stream_detail") or []:
            views.setdefault(s["name"], {})[f[:-5]] = s
behind, leads = [], 0
for name, by_node in sorted(views.items()):
    leader = next((s["cluster"]["leader"] for s in by_node.values() if s["cluster"].get("leader")), None)
    if leader == node:
        leads += 1
        continue
    view = by_node.get(leader)
    replica = view and next((r for r in view["cluster"].get("replicas") or [] if r["name"] == node), None)
    if not replica or not replica.get("current") or replica.get("lag", 0) != 0:
        behind.append(name)
if behind or not views:
    print("behind on " + ", ".join(behind or ["every stream"]))
    sys.exit(1)
print(f"current on all {len(views)} streams (leader of {leads})")
PY
}
deadline=$((SECONDS + 120))
until caught=$(catch_up); do
  ((SECONDS < deadline)) || fail "$leader has not caught up: $caught"
  sleep 2
done
result "$leader caught up after the partition: $caught"
log "$(ingest_cli topology show | grep -E '^stream  MAIL_OUTBOX')"

result "all steps passed in $((SECONDS - START)) s"
