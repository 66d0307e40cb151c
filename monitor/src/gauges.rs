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
    loop {
        senders(&map);
        if let Err(e) = refresh(&topo).await {
            tracing::debug!(error = %e, "metrics not refreshed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
        }
    }
}

fn senders(map: &HealthMap) {
    let map = map.lock().unwrap();
    for (state, name) in STATES {
        let n = map.values().filter(|s| s.state == state).count();
        gauge!(SENDERS, "state" => name).set(n as f64);
    }
}

/// Reads the streams, the consumer and the campaign records once and sets their gauges.
pub async fn refresh(topo: &Topology) -> Result<(), StoreError> {
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
    Ok(())
}
