//! The fleet's delivery policy (retry schedule, ack wait), kept on the senders consumer so
//! that every sender follows the same one, and the consumers that carry it.

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};

use super::*;

/// The fleet-wide delivery policy, kept on the senders consumer itself so that every sender
/// follows the same one: the retry schedule (MaxDeliver is one first attempt plus one per
/// delay; the delays are in the consumer's metadata) and the ack wait. [`ensure`] creates the
/// consumer once with [`SendersPolicy::default`]; only [`apply_senders_policy`] (`jetmail-ingest
/// topology apply`) changes it. A sender started with other flags says so and follows this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendersPolicy {
    /// Nak delay after the n-th failed delivery.
    pub retry_backoff: Vec<Duration>,
    /// A message whose sender died is redelivered after this.
    pub ack_wait: Duration,
}

impl Default for SendersPolicy {
    fn default() -> Self {
        Self {
            retry_backoff: DEFAULT_RETRY_BACKOFF.to_vec(),
            ack_wait: SENDERS_ACK_WAIT,
        }
    }
}

/// Consumer metadata key holding the retry delays (`30s,2m,…`).
const RETRY_BACKOFF_METADATA: &str = "jetmail.retry_backoff";

impl SendersPolicy {
    /// Deliveries allowed per message: the first plus one per retry delay.
    pub fn max_deliver(&self) -> i64 {
        self.retry_backoff.len() as i64 + 1
    }

    /// The nak delay after failed delivery number `delivery` (1-based); the last delay repeats.
    pub fn retry_delay(&self, delivery: i64) -> Duration {
        let i = (delivery.max(1) as usize - 1).min(self.retry_backoff.len().saturating_sub(1));
        self.retry_backoff
            .get(i)
            .copied()
            .unwrap_or(DEFAULT_RETRY_BACKOFF[0])
    }

    /// The consumer configuration carrying this policy.
    pub fn consumer_config(&self) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(SENDERS_CONSUMER.into()),
            description: Some("jetmail senders: shared by every sender instance".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver(),
            max_ack_pending: SENDERS_MAX_ACK_PENDING,
            metadata: [(
                RETRY_BACKOFF_METADATA.to_string(),
                crate::config::format_durations(&self.retry_backoff),
            )]
            .into(),
            ..Default::default()
        }
    }

    /// The policy a consumer carries. A consumer edited by hand may have lost the delays or
    /// changed MaxDeliver: the count follows MaxDeliver, the delays what is left of them.
    pub fn of(config: &consumer::Config) -> Self {
        let mut delays: Vec<Duration> = config
            .metadata
            .get(RETRY_BACKOFF_METADATA)
            .and_then(|s| crate::config::parse_duration_list(s).ok())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| DEFAULT_RETRY_BACKOFF.to_vec());
        if config.max_deliver > 0 {
            let retries = (config.max_deliver - 1) as usize;
            let last = *delays.last().expect("never empty");
            delays.resize(retries, last);
        }
        Self {
            retry_backoff: delays,
            ack_wait: config.ack_wait,
        }
    }
}

/// The senders consumer (made by [`ensure`] if it is still missing), with the policy it
/// carries as the broker has it.
pub async fn senders_consumer(
    outbox: &stream::Stream,
) -> Result<(consumer::Consumer<consumer::pull::Config>, SendersPolicy), TopologyError> {
    let c = outbox
        .get_or_create_consumer(SENDERS_CONSUMER, SendersPolicy::default().consumer_config())
        .await
        .map_err(|source| TopologyError::Consumer {
            name: SENDERS_CONSUMER,
            source,
        })?;
    let policy = SendersPolicy::of(&c.cached_info().config);
    Ok((c, policy))
}

/// Changes the fleet's delivery policy: the one deliberate rewrite of the senders consumer.
/// Running senders pick it up when they next (re)create their consumer handle; new senders
/// at once.
pub async fn apply_senders_policy(
    topo: &Topology,
    policy: &SendersPolicy,
) -> Result<SendersPolicy, TopologyError> {
    let c = topo
        .outbox
        .update_consumer(policy.consumer_config())
        .await
        .map_err(|source| TopologyError::UpdateConsumer {
            name: SENDERS_CONSUMER,
            source,
        })?;
    Ok(SendersPolicy::of(&c.cached_info().config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_round_trips_through_the_consumer_config() {
        let p = SendersPolicy {
            retry_backoff: vec![Duration::from_millis(200), Duration::from_secs(90)],
            ack_wait: Duration::from_secs(4),
        };
        let cfg = p.consumer_config();
        assert_eq!(cfg.max_deliver, 3);
        let general = consumer::Config {
            max_deliver: cfg.max_deliver,
            ack_wait: cfg.ack_wait,
            metadata: cfg.metadata.clone(),
            ..Default::default()
        };
        assert_eq!(SendersPolicy::of(&general), p);
        assert_eq!(p.retry_delay(1), Duration::from_millis(200));
        assert_eq!(p.retry_delay(9), Duration::from_secs(90));
    }

    #[test]
    fn a_hand_edited_max_deliver_wins_over_the_stored_delays() {
        let general = consumer::Config {
            max_deliver: 4,
            ack_wait: Duration::from_secs(60),
            ..Default::default()
        };
        let p = SendersPolicy::of(&general);
        assert_eq!(p.max_deliver(), 4);
        assert_eq!(p.retry_backoff[..3], DEFAULT_RETRY_BACKOFF[..3]);
    }
}
