//! The monitor's Prometheus gauges (names in [`jetmail_common::metrics`]), refreshed every
//! few seconds: stream depths, the senders consumer's counts, campaigns by status (read from
//! their records; test sends are not campaigns) and senders by state (from the health map).
//! Every status and state is set, zero included, so that a series never just vanishes.

use std::time::Duration;

use jetmail_common::metrics::{
    CAMPAIGNS, CONSUMER_ACK_PENDING, CONSUMER_PENDING, CONSUMER_REDELIVERED, DEAD_MESSAGES,
    HELD_MESSAGES, OUTBOX_MESSAGES, SENDERS,
};
use jetmail_common::store::StoreError;
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{CampaignRecord, CampaignStatus, SenderState};
use metrics::gauge;
use tokio_util::sync::CancellationToken;

use crate::health::HealthMap;

/// How often the gauges are refreshed: below any sensible scrape interval.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

const STATUSES: [CampaignStatus; 6] = [
    CampaignStatus::Publishing,
    CampaignStatus::Scheduled,
    CampaignStatus::Running,
    CampaignStatus::Paused,
    CampaignStatus::Cancelled,
    CampaignStatus::Done,
];

const STATES: [(SenderState, &str); 6] = [
    (SenderState::Up, "up"),
    (SenderState::Blocked, "blocked"),
    (SenderState::Disconnected, "disconnected"),
    (SenderState::Draining, "draining"),
    (SenderState::Stopped, "stopped"),
    (SenderState::Down, "down"),
];

/// Refreshes the gauges until `shutdown`; a failed refresh keeps the last values.
pub async fn run(topo: Topology, map: HealthMap, shutdown: CancellationToken) {
    let mut capped = false;
    loop {
        senders(&map);
        match refresh(&topo).await {
            Ok(max_ack_pending) => {
                capped = warn_when_capped(&map, max_ack_pending, capped);
            }
            Err(e) => tracing::debug!(error = %e, "metrics not refreshed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
        }
    }
}

/// The consumer delivers at most MaxAckPending messages to the whole fleet at once: a fleet
/// whose send slots add up to more would wait on the broker while `--concurrency` says
/// otherwise. Said once when it starts (and once when it ends), never silently. True while
/// capped.
fn warn_when_capped(map: &HealthMap, max_ack_pending: i64, was: bool) -> bool {
    let fleet: u64 = map
        .lock()
        .unwrap()
        .values()
        .filter(|s| !matches!(s.state, SenderState::Down | SenderState::Stopped))
        .map(|s| s.concurrency)
        .sum();
    let capped = max_ack_pending > 0 && fleet > max_ack_pending as u64;
    if capped && !was {
        tracing::warn!(
            fleet_concurrency = fleet,
            max_ack_pending,
            "the senders' concurrency adds up to more than the senders consumer's MaxAckPending: \
             the broker caps the sends in flight; raise it (`nats consumer edit MAIL_OUTBOX senders \
             --max-pending`) or lower --concurrency"
        );
    } else if was && !capped {
        tracing::info!(
            fleet_concurrency = fleet,
            max_ack_pending,
            "fleet concurrency within MaxAckPending again"
        );
    }
    capped
}

fn senders(map: &HealthMap) {
    let map = map.lock().unwrap();
    for (state, name) in STATES {
        let n = map.values().filter(|s| s.state == state).count();
        gauge!(SENDERS, "state" => name).set(n as f64);
    }
}

/// Reads the streams, the consumer and the campaign records once and sets their gauges;
/// returns the senders consumer's MaxAckPending.
pub async fn refresh(topo: &Topology) -> Result<i64, StoreError> {
    for (stream, name) in [
        (&topo.outbox, OUTBOX_MESSAGES),
        (&topo.held, HELD_MESSAGES),
        (&topo.dead, DEAD_MESSAGES),
    ] {
        let state = stream.get_info().await.map_err(StoreError::broker)?.state;
        gauge!(name).set(state.messages as f64);
    }
    let (consumer, _) = topology::senders_consumer(&topo.outbox)
        .await
        .map_err(StoreError::broker)?;
    let info = consumer.get_info().await.map_err(StoreError::broker)?;
    gauge!(CONSUMER_PENDING).set(info.num_pending as f64);
    gauge!(CONSUMER_ACK_PENDING).set(info.num_ack_pending as f64);
    gauge!(CONSUMER_REDELIVERED).set(info.num_redelivered as f64);

    let ids = jetmail_common::records::list_campaign_ids(topo).await?;
    let mut by_status = [0u64; STATUSES.len()];
    for id in &ids {
        let key = topology::campaign_key(id);
        let Some(bytes) = topo.campaigns.get(&key).await.map_err(StoreError::broker)? else {
            continue;
        };
        if let Ok(rec) = serde_json::from_slice::<CampaignRecord>(&bytes) {
            if let Some(i) = STATUSES.iter().position(|s| *s == rec.status) {
                by_status[i] += u64::from(!rec.test);
            }
        }
    }
    for (status, n) in STATUSES.iter().zip(by_status) {
        gauge!(CAMPAIGNS, "status" => status.as_str()).set(n as f64);
    }
    Ok(info.config.max_ack_pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetmail_common::wire::SenderHealth;

    fn sender(id: &str, state: SenderState, concurrency: u64) -> (String, SenderHealth) {
        let h = SenderHealth {
            v: 1,
            id: id.into(),
            host: "h".into(),
            state,
            relays: Vec::new(),
            in_flight: 0,
            sent: 0,
            failed: 0,
            deferred: 0,
            rate: 0.0,
            concurrency,
            interval_ms: 500,
            last_seen_ms: 1,
        };
        (id.to_string(), h)
    }

    #[test]
    fn a_fleet_above_max_ack_pending_is_reported_while_it_lasts() {
        let map: HealthMap = Default::default();
        map.lock().unwrap().extend([
            sender("a", SenderState::Up, 600),
            sender("b", SenderState::Up, 600),
            sender("gone", SenderState::Down, 5_000),
        ]);
        assert!(warn_when_capped(&map, 1_000, false));
        assert!(!warn_when_capped(&map, 1_000_000, true));
        assert!(!warn_when_capped(&map, 0, false), "0 means no limit");
        map.lock().unwrap().remove("b");
        assert!(!warn_when_capped(&map, 1_000, true));
    }
}
