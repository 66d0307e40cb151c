//! Retention of finished campaigns (`--retain-finished`): the record and the progress key of a
//! campaign that is done or cancelled, and of a test send, are deleted once their last write
//! is older than the retention. Without it `mail_campaigns` grows with every campaign ever
//! sent, and every watcher of it (senders, the web UI) reads them all at start-up.
//!
//! The progress key goes first: a monitor stopped between the two deletes leaves a record
//! without progress, which the next pass finds, rather than a progress key nothing owns. A
//! record changed since it was read (its revision moved) is left for the next pass.

use std::time::Duration;

use jetmail_common::store::StoreError;
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{CampaignProgress, CampaignRecord, CampaignStatus};
use tokio_util::sync::CancellationToken;

/// How often a pass runs, at most (a short retention runs more often).
pub const PASS_EVERY: Duration = Duration::from_secs(3600);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub campaigns: u64,
}

/// Runs a pass at start-up and then every [`PASS_EVERY`] (or the retention, if shorter);
/// `retain` of zero keeps everything. A failed pass is logged and retried at the next.
pub async fn run(topo: Topology, retain: Duration, shutdown: CancellationToken) {
    if retain.is_zero() {
        return;
    }
    let every = PASS_EVERY.min(retain).max(Duration::from_secs(1));
    loop {
        match remove_finished(&topo, retain, jetmail_common::now_ms()).await {
            Ok(r) if r.campaigns > 0 => tracing::info!(
                campaigns = r.campaigns,
                retain = %jetmail_common::config::format_duration(retain),
                "finished campaigns removed"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed; next pass retries"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Deletes every finished campaign whose record and progress were last written more than
/// `retain` before `now_ms`.
pub async fn remove_finished(
    topo: &Topology,
    retain: Duration,
    now_ms: u64,
) -> Result<Removed, StoreError> {
    let cutoff = now_ms.saturating_sub(retain.as_millis() as u64);
    let ids = jetmail_common::records::list_campaign_ids(topo).await?;
    let mut removed = Removed::default();
    for id in &ids {
        let key = topology::campaign_key(id);
        let Some(entry) = topo
            .campaigns
            .entry(&key)
            .await
            .map_err(StoreError::broker)?
        else {
            continue;
        };
        // An unreadable record is left alone: the operator has to look at it.
        let Ok(record) = serde_json::from_slice::<CampaignRecord>(&entry.value) else {
            continue;
        };
        let finished = record.test
            || matches!(
                record.status,
                CampaignStatus::Done | CampaignStatus::Cancelled
            );
        if !finished || written_ms(&entry) > cutoff {
            continue;
        }
        let progress_key = topology::progress_key(id);
        if let Some(p) = topo
            .campaigns
            .entry(&progress_key)
            .await
            .map_err(StoreError::broker)?
        {
            let updated = serde_json::from_slice::<CampaignProgress>(&p.value)
                .map(|p| p.updated_ms)
                .unwrap_or(0);
            if written_ms(&p).max(updated) > cutoff {
                continue;
            }
            topo.campaigns
                .purge_expect_revision(&progress_key, Some(p.revision))
                .await
                .map_err(StoreError::broker)?;
        }
        match topo
            .campaigns
            .purge_expect_revision(key, Some(entry.revision))
            .await
        {
            Ok(()) => removed.campaigns += 1,
            // Written since we read it: looked at again next pass.
            Err(e) => tracing::debug!(campaign = %id, error = %e, "record changed; kept"),
        }
    }
    Ok(removed)
}

/// When the broker stored this revision, in ms since the epoch.
fn written_ms(entry: &async_nats::jetstream::kv::Entry) -> u64 {
    u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}
