#!/usr/bin/env bash
# jetmail's benchmark (not a test): release binaries, Postfix's smtp-sink as the relay, then
# PIPELINING's worth against a relay whose every reply is 50 ms late.
#   scripts/bench.sh [--recipients 100000] [--senders 1,3] [--ingest-sizes 100000,1000000]
#   scripts/bench.sh --pipelining [--latency 50ms] [--recipients 2000] [--concurrency 32]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --bench
cargo build --release --workspace --bins --quiet
if [[ "${1:-}" == "--pipelining" ]]; then
  shift
  exec target/release/jetmail-relay-bench "$@"
fi
target/release/jetmail-bench "$@"
target/release/jetmail-relay-bench
