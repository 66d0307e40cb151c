//! End-to-end tests of the whole system with real processes: nats-server, an SMTP server,
//! `jetmail-sender`s, `jetmail-monitor`, `jetmail-ingest`. The SMTP server's count is the
//! ground truth. The service binaries must be built first: `cargo test --workspace` (or
//! `bash scripts/test.sh`) does it; for `cargo test -p jetmail-e2e`, run
//! `cargo build --workspace --bins` before.

mod access;
mod bounded;
mod cluster;
mod compliance;
mod compliance_sender;
mod delivery;
mod faults;
mod metrics;
mod monitor;
mod pipeline;
mod throttle;
