#!/usr/bin/env bash
# jetmail's benchmark (not a test): release binaries, Postfix's smtp-sink as the relay, every
# figure beside its reference from the same run (smtp-source into the same kind of sink):
# 100,000 recipients with 3 senders (msg/s and the ratio to smtp-source, CPU per recipient of
# nats-server + senders + monitor, broker messages per recipient, a latency histogram, peak RSS),
# a private Postfix instance relaying into the same kind of sink (as root, where installed),
# the latency at a quarter of that peak, 1,000,000 recipients, one sender at --concurrency 2000
# against a relay answering after 1 s (vs smtp-source with 2,000 sessions), ingest alone, the
# sending policy's cost; then PIPELINING's worth against a relay whose every reply is 50 ms late.
#   scripts/bench.sh [--recipients 100000] [--senders 3] [--million 1000000] [--slow-concurrency 2000]
#                    [--quarter-secs 10] [--ingest-sizes 100000,1000000] [--limits-recipients 50000]
#                    [--postfix-messages 10000]
#   scripts/bench.sh --pipelining [--latency 50ms] [--recipients 2000] [--concurrency 32]
#   scripts/bench.sh --compliance [--recipients 20000] [--suppressions 1000000]
#   scripts/bench.sh --cluster [--recipients 50000] [--senders 1,2,3,4] [--nodes 1,3]
#     end-to-end msg/s on one node and on a 3-node cluster at 3 replicas (all on this machine),
#     each with the default fsync and with sync_interval: always
# The full run ends with the compliance figures: one sender's throughput without DKIM, with
# RSA-2048 and with Ed25519, and a sender loading 1,000,000 suppressed addresses.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --bench
cargo build --release --workspace --bins --quiet
if [[ "${1:-}" == "--pipelining" ]]; then
  shift
  exec target/release/jetmail-relay-bench "$@"
fi
if [[ "${1:-}" == "--cluster" ]]; then
  shift
  exec target/release/jetmail-cluster-bench "$@"
fi
if [[ "${1:-}" == "--compliance" ]]; then
  shift
  exec target/release/jetmail-compliance-bench "$@"
fi
target/release/jetmail-bench "$@"
target/release/jetmail-relay-bench
target/release/jetmail-compliance-bench
