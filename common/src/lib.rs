//! What the jetmail services share, and nothing else: the JetStream topology (every stream,
//! consumer, subject, bucket, key and message id, built and parsed in [`topology`]), the wire
//! types that cross process boundaries ([`wire`] between services over NATS, [`api`] over
//! ingest's HTTP API), storage errors ([`store`]), campaign records ([`records`]) and outcome
//! writes ([`outcomes`]), campaign templates ([`template`]), address handling ([`address`]),
//! command-line pieces ([`config`]), the hardened HTTP server ([`http_server`]), shutdown ([`shutdown`]) and logging ([`telemetry`]).

pub mod address;
pub mod api;
pub mod budget;
pub mod compliance;
pub mod config;
pub mod http_server;
pub mod limits;
pub mod metrics;
pub mod outcomes;
pub mod records;
pub mod schedule;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod topology;
pub mod wire;

/// Milliseconds since the Unix epoch: the one clock every wire type uses.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
