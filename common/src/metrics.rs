//! Prometheus metrics: the one recorder of a process ([`install`]), its text for a `/metrics`
//! route ([`render`]), and the name of every metric jetmail exports, defined here once so
//! that the services, the shipped dashboard and its test agree.
//!
//! Labels stay bounded: an outcome, a status, a state, a route pattern, a configured relay;
//! never a campaign id or an address.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Deliveries settled by a sender, by `outcome` (`sent`, `failed`, `dead`, `deferred`, …).
pub const SENDER_DELIVERIES: &str = "jetmail_sender_deliveries_total";
/// Duration of one SMTP transaction, by `result` (`accepted`, `transient`, `permanent`,
/// `relay_failed`, `unknown`).
pub const SENDER_SMTP_SECONDS: &str = "jetmail_sender_smtp_seconds";
/// Messages a sender holds right now.
pub const SENDER_IN_FLIGHT: &str = "jetmail_sender_in_flight";
/// 1 while a relay's circuit is open (or half-open), by `relay` (its redacted URL).
pub const SENDER_CIRCUIT_OPEN: &str = "jetmail_sender_circuit_open";

/// Messages in MAIL_OUTBOX.
pub const OUTBOX_MESSAGES: &str = "jetmail_outbox_messages";
/// Messages in MAIL_HELD (waiting for a rate, a send-at or a resume).
pub const HELD_MESSAGES: &str = "jetmail_held_messages";
/// Messages in MAIL_DEAD.
pub const DEAD_MESSAGES: &str = "jetmail_dead_messages";
/// The senders consumer: messages not yet delivered to any sender.
pub const CONSUMER_PENDING: &str = "jetmail_consumer_pending";
/// The senders consumer: messages delivered and not yet acked.
pub const CONSUMER_ACK_PENDING: &str = "jetmail_consumer_ack_pending";
/// The senders consumer: messages delivered more than once and not yet acked.
pub const CONSUMER_REDELIVERED: &str = "jetmail_consumer_redelivered";
/// Campaigns by `status`.
pub const CAMPAIGNS: &str = "jetmail_campaigns";
/// Senders by `state` (`running`, `draining`, `down`, …).
pub const SENDERS: &str = "jetmail_senders";

/// Recipients ingest published (to the outbox or a held queue).
pub const INGEST_RECIPIENTS_PUBLISHED: &str = "jetmail_ingest_recipients_published_total";
/// HTTP requests answered, by `method`, `route` (the pattern, never the path) and `status`.
pub const HTTP_REQUESTS: &str = "jetmail_http_requests_total";

/// 1, labelled with the `service` and its `version`.
pub const BUILD_INFO: &str = "jetmail_build_info";

/// Every metric name above: what the dashboard test may find.
pub const ALL: &[&str] = &[
    BUILD_INFO,
    SENDER_DELIVERIES,
    SENDER_SMTP_SECONDS,
    SENDER_IN_FLIGHT,
    SENDER_CIRCUIT_OPEN,
    OUTBOX_MESSAGES,
    HELD_MESSAGES,
    DEAD_MESSAGES,
    CONSUMER_PENDING,
    CONSUMER_ACK_PENDING,
    CONSUMER_REDELIVERED,
    CAMPAIGNS,
    SENDERS,
    INGEST_RECIPIENTS_PUBLISHED,
    HTTP_REQUESTS,
];

/// SMTP transactions: 5 ms (a relay next door) to 60 s (a send timeout).
const SMTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Where every service serves [`render`].
pub const ROUTE: &str = "/metrics";

/// The route label of a request that matched no route: a 404 is not a new label per path.
pub const NO_ROUTE: &str = "(none)";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle).
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(SENDER_SMTP_SECONDS.into()), SMTP_BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if something else installed a recorder first (a test harness): then
        // ours records nothing and /metrics shows what was described.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        describe();
        handle
    })
}

/// As [`install`], and sets `jetmail_build_info{service, version} 1`: every service's
/// `/metrics` then says what it is, even before it has counted anything.
pub fn install_for(service: &'static str) -> &'static PrometheusHandle {
    let handle = install();
    metrics::gauge!(BUILD_INFO, "service" => service, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
    handle
}

/// The Prometheus text of every metric recorded so far.
pub fn render() -> String {
    let handle = install();
    handle.run_upkeep();
    handle.render()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(SENDER_DELIVERIES, "Deliveries settled, by outcome");
    describe_histogram!(SENDER_SMTP_SECONDS, Unit::Seconds, "One SMTP transaction");
    describe_gauge!(SENDER_IN_FLIGHT, "Messages this sender holds");
    describe_gauge!(SENDER_CIRCUIT_OPEN, "1 while the relay's circuit is open");
    describe_gauge!(OUTBOX_MESSAGES, "Messages in MAIL_OUTBOX");
    describe_gauge!(HELD_MESSAGES, "Messages in MAIL_HELD");
    describe_gauge!(DEAD_MESSAGES, "Messages in MAIL_DEAD");
    describe_gauge!(CONSUMER_PENDING, "Senders consumer: not yet delivered");
    describe_gauge!(
        CONSUMER_ACK_PENDING,
        "Senders consumer: delivered, not acked"
    );
    describe_gauge!(
        CONSUMER_REDELIVERED,
        "Senders consumer: redelivered, not acked"
    );
    describe_gauge!(CAMPAIGNS, "Campaigns by status");
    describe_gauge!(SENDERS, "Senders by state");
    describe_counter!(INGEST_RECIPIENTS_PUBLISHED, "Recipients published");
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route and status");
    describe_gauge!(BUILD_INFO, "1, with the service and its version");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_metrics_are_rendered_with_their_labels() {
        install();
        metrics::counter!(SENDER_DELIVERIES, "outcome" => "sent").increment(3);
        metrics::histogram!(SENDER_SMTP_SECONDS, "result" => "accepted").record(0.02);
        let text = render();
        assert!(
            text.contains("jetmail_sender_deliveries_total{outcome=\"sent\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("jetmail_sender_smtp_seconds_bucket{result=\"accepted\",le=\"0.025\"} 1"),
            "{text}"
        );
        // Installing again is harmless and keeps what was recorded.
        install();
        assert!(render().contains("outcome=\"sent\"} 3"));
    }
}
