//! Command-line pieces every service shares: the NATS connection ([`NatsArgs`], in `nats`),
//! the replica count ([`TopologyArgs`]) and duration parsing.

use std::time::Duration;

use async_nats::{jetstream, Client};

mod nats;
pub use nats::{
    redact_urls, ConnectError, Credentials, NatsArgs, NatsConfigError, NatsTarget, Secret,
};
mod topology;
pub use topology::{ReplicasError, TopologyArgs};

/// How long a service keeps trying to set up its streams and buckets before it gives up.
pub const TOPOLOGY_RETRY_FOR: Duration = Duration::from_secs(60);

/// Why a service could not start talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("setting up JetStream: {0}")]
    Topology(#[from] crate::topology::TopologyError),
}

impl NatsArgs {
    /// [`NatsArgs::connect_topology`], given up when `shutdown` comes first (`None`): a
    /// service waiting for a broker that is not up yet must still stop on SIGTERM, since its
    /// signal handler replaced the default one that would have killed it.
    pub async fn connect_topology_or_stop(
        &self,
        name: &str,
        max_ack_inflight: usize,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<Option<(Client, crate::topology::Topology)>, StartupError> {
        tokio::select! {
            r = self.connect_topology(name, max_ack_inflight) => r.map(Some),
            _ = shutdown.cancelled() => {
                tracing::info!("stopped before the broker was reached");
                Ok(None)
            }
        }
    }

    /// Connects, then makes sure every stream, consumer and bucket exists: what every service
    /// does first. `max_ack_inflight` bounds un-acked publishes (see [`jetstream_context`]).
    pub async fn connect_topology(
        &self,
        name: &str,
        max_ack_inflight: usize,
    ) -> Result<(Client, crate::topology::Topology), StartupError> {
        let client = self.connect(name).await?;
        let js = jetstream_context(client.clone(), max_ack_inflight);
        // A cluster that is still forming (or has lost its quorum) accepts connections but
        // cannot create replicated streams yet: keep trying for a while, saying why, rather
        // than exit and leave it to a restart policy (compose's first `up` of the cluster
        // profile gave up on a service that exited so).
        let started = std::time::Instant::now();
        loop {
            match crate::topology::ensure_with(&js, &self.topology.options()).await {
                Ok(topo) => return Ok((client, topo)),
                Err(e) if started.elapsed() < TOPOLOGY_RETRY_FOR => {
                    tracing::warn!(error = %e, "cannot set up JetStream yet; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A JetStream context whose un-acked publish window is explicit: async-nats refuses (or, with
/// back-pressure on, waits) past `max_ack_inflight`, so callers keep their own window below it.
pub fn jetstream_context(client: Client, max_ack_inflight: usize) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(max_ack_inflight)
        .backpressure_on_inflight(true)
        .build(client)
}

/// Flushes what the client still buffers (acks are queued, not sent, until flushed), but never
/// waits longer than `limit`: with the broker gone a flush would wait for a reconnect forever.
pub async fn flush_before_exit(client: &Client, limit: Duration) {
    match tokio::time::timeout(limit, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "final flush failed"),
        Err(_) => tracing::warn!("broker unreachable: exiting without the final flush"),
    }
}

/// A duration that could not be read: the text and humantime's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {reason} (write durations like 30s, 5m, 1h30m)")]
pub struct DurationError {
    pub text: String,
    pub reason: String,
}

/// Parses `30s`, `5m`, `1h30m`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(s.trim()).map_err(|e| DurationError {
        text: s.to_string(),
        reason: e.to_string(),
    })
}

/// Writes a duration the way the flags take it: `30s`, `2m`, `1h 30m`.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Writes a list of durations the way `--retry-backoff` takes it: `30s,2m,10m`.
pub fn format_durations(d: &[Duration]) -> String {
    d.iter()
        .map(|d| format_duration(*d))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a comma-separated list of durations: `30s,2m,10m`.
pub fn parse_duration_list(s: &str) -> Result<Vec<Duration>, DurationError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(parse_duration)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse_duration_list("30s, 2m,1h").unwrap(),
            vec![
                Duration::from_secs(30),
                Duration::from_secs(120),
                Duration::from_secs(3600)
            ]
        );
        assert!(parse_duration("soon").is_err());
    }
}
