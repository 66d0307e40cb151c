//! The sender's Prometheus metrics (names in [`jetmail_common::metrics`]) and the
//! `--metrics-listen` endpoint that serves them. Deliveries are counted where their outcome
//! is published; in-flight and circuit gauges follow each heartbeat, so they are exactly
//! what the monitor sees.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use jetmail_common::metrics::{
    SENDER_CIRCUIT_OPEN, SENDER_DELIVERIES, SENDER_IN_FLIGHT, SENDER_SMTP_SECONDS,
};
use jetmail_common::wire::{CircuitState, Heartbeat, Outcome};
use tokio_util::sync::CancellationToken;

use crate::smtp::SendOutcome;

/// One settled delivery.
pub fn delivery(outcome: Outcome) {
    metrics::counter!(SENDER_DELIVERIES, "outcome" => outcome.as_str()).increment(1);
}

/// One SMTP transaction and how it ended.
pub fn smtp(elapsed: Duration, outcome: &SendOutcome) {
    let result = match outcome {
        SendOutcome::Accepted => "accepted",
        SendOutcome::RelayFailed { .. } => "relay_failed",
        SendOutcome::Transient { .. } => "transient",
        SendOutcome::Permanent { .. } => "permanent",
        SendOutcome::Unknown { .. } => "unknown",
    };
    metrics::histogram!(SENDER_SMTP_SECONDS, "result" => result).record(elapsed.as_secs_f64());
}

/// The gauges, from the heartbeat about to be published.
pub fn heartbeat(hb: &Heartbeat) {
    metrics::gauge!(SENDER_IN_FLIGHT).set(hb.in_flight as f64);
    for relay in &hb.relays {
        let open = relay.circuit != CircuitState::Closed;
        metrics::gauge!(SENDER_CIRCUIT_OPEN, "relay" => relay.url.clone())
            .set(f64::from(u8::from(open)));
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`. Install the recorder first
/// ([`jetmail_common::metrics::install_for`]): what is counted before that is lost.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new().route(
        jetmail_common::metrics::ROUTE,
        get(|| async { jetmail_common::metrics::render() }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
