#!/usr/bin/env bash
# Runs every test of the workspace against real parts (nats-server, an SMTP server, the
# service binaries, headless Chromium), installing what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --bins --quiet
cargo test --workspace --no-fail-fast -- --test-threads=2 "$@"
