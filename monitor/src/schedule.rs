//! Starting scheduled campaigns: a campaign published with a send-at still ahead is
//! `scheduled`; once its time has passed the monitor flips it to `running` (a compare-and-set
//! of its record), checked every second. Senders go by the send-at itself, not by this status,
//! so a monitor that was down delays nothing: on start-up every campaign whose time passed
//! meanwhile is flipped at once.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use jetmail_common::records::update_record;
use jetmail_common::store::StoreError;
use jetmail_common::topology::{CampaignsKey, Topology, CAMPAIGN_RECORDS_FILTER};
use jetmail_common::wire::{CampaignRecord, CampaignStatus};
use tokio_util::sync::CancellationToken;

/// How often due campaigns are looked for.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Scheduled campaigns by id, with their send-at (ms since epoch), as the watch last saw them.
#[derive(Debug, Default)]
pub struct Scheduled(HashMap<String, u64>);

impl Scheduled {
    /// Follows one record: kept while `scheduled`, forgotten otherwise.
    pub fn observe(&mut self, rec: &CampaignRecord) {
        if rec.status == CampaignStatus::Scheduled {
            self.0
                .insert(rec.id.clone(), rec.schedule.send_at_ms.unwrap_or(0));
        } else {
            self.0.remove(&rec.id);
        }
    }

    pub fn forget(&mut self, id: &str) {
        self.0.remove(id);
    }

    /// The campaigns whose send-at is at or before `now_ms`.
    pub fn due(&self, now_ms: u64) -> Vec<String> {
        let mut ids: Vec<String> = self
            .0
            .iter()
            .filter(|(_, at)| **at <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }
}

/// Flips campaign `id` to `running` if it is still `scheduled` and its send-at (as the record
/// says now: it may have been rescheduled) has passed. Returns whether it did.
pub async fn start_if_due(topo: &Topology, id: &str, now_ms: u64) -> Result<bool, StoreError> {
    let mut started = false;
    update_record(topo, id, |rec| {
        started = rec.status == CampaignStatus::Scheduled && !rec.schedule.waiting(now_ms);
        if started {
            rec.status = CampaignStatus::Running;
        }
    })
    .await?;
    Ok(started)
}

/// Starts every due campaign of `scheduled`; one that fails is tried again next time.
async fn start_due(topo: &Topology, scheduled: &mut Scheduled) {
    let now = jetmail_common::now_ms();
    for id in scheduled.due(now) {
        match start_if_due(topo, &id, now).await {
            Ok(started) => {
                if started {
                    tracing::info!(campaign = %id, "send-at reached: campaign running");
                }
                scheduled.forget(&id);
            }
            Err(StoreError::NotFound(_)) => scheduled.forget(&id),
            Err(e) => tracing::warn!(campaign = %id, error = %e, "cannot start campaign; retrying"),
        }
    }
}

/// Watches campaign records and starts the scheduled ones when due, until `shutdown`. The
/// watch is re-created when it fails (a broker restart ends it).
pub async fn run(topo: Topology, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let mut watch = match topo
            .campaigns
            .watch_with_history(CAMPAIGN_RECORDS_FILTER)
            .await
        {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch campaigns; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(CHECK_EVERY) => continue,
                }
            }
        };
        // The history rebuilds the whole picture.
        let mut scheduled = Scheduled::default();
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => start_due(&topo, &mut scheduled).await,
                next = watch.next() => match next {
                    Some(Ok(entry)) => {
                        let Some(CampaignsKey::Record(id)) = CampaignsKey::parse(&entry.key) else {
                            continue;
                        };
                        let rec = (entry.operation == kv::Operation::Put)
                            .then(|| serde_json::from_slice::<CampaignRecord>(&entry.value).ok())
                            .flatten();
                        match rec {
                            Some(rec) => scheduled.observe(&rec),
                            // Deleted, or unreadable (the sender dead-letters its messages).
                            None => scheduled.forget(id),
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "campaign watch failed; re-creating it");
                        break;
                    }
                    None => break,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, status: CampaignStatus, send_at_ms: Option<u64>) -> CampaignRecord {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "spec": {"from": "a@example.com", "subject": "s", "text": "t"},
            "status": status,
            "created_ms": 1,
            "schedule": {"send_at_ms": send_at_ms},
        }))
        .expect("a record")
    }

    #[test]
    fn only_scheduled_campaigns_past_their_time_are_due() {
        let mut s = Scheduled::default();
        s.observe(&record("early", CampaignStatus::Scheduled, Some(1_000)));
        s.observe(&record("late", CampaignStatus::Scheduled, Some(5_000)));
        s.observe(&record("running", CampaignStatus::Running, Some(1_000)));
        assert_eq!(s.due(999), Vec::<String>::new());
        assert_eq!(s.due(1_000), vec!["early"]);
        assert_eq!(s.due(5_000), vec!["early", "late"]);
        // Cancelled meanwhile: forgotten.
        s.observe(&record("early", CampaignStatus::Cancelled, Some(1_000)));
        assert_eq!(s.due(5_000), vec!["late"]);
    }
}
