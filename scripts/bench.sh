#!/usr/bin/env bash
# jetmail's benchmark (not a test): release binaries, Postfix's smtp-sink as the relay.
#   scripts/bench.sh [--recipients 100000] [--senders 1,3] [--ingest-sizes 100000,1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --bench
cargo build --release --workspace --bins --quiet
exec target/release/jetmail-bench "$@"
