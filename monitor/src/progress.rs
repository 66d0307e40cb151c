//! MAIL_EVENTS into per-campaign counters (`<campaign>.progress` in `mail_campaigns`), and a
//! campaign's status to `done` once every published recipient reached a final outcome.
//!
//! Counting is exact across monitor restarts: events are read in stream order (an ordered
//! consumer) and each progress record keeps the stream sequence of the last event folded in;
//! anything at or below it is skipped when it is read again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use bytes::Bytes;
use futures::StreamExt;
use jetmail_common::now_ms;
use jetmail_common::records::{list_campaign_ids, load_progress, load_record, update_record};
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{CampaignProgress, CampaignStatus, DeliveryEvent, Outcome};
use tokio_util::sync::CancellationToken;

const FLUSH_EVERY: Duration = Duration::from_millis(250);

struct Tally {
    progress: CampaignProgress,
    dirty: bool,
}

/// Applies one event to a progress record.
pub fn fold(p: &mut CampaignProgress, ev: &DeliveryEvent) {
    match ev.outcome {
        Outcome::Sent => {
            p.sent += 1;
            if p.first_sent_ms == 0 {
                p.first_sent_ms = ev.at_ms;
            }
            p.last_sent_ms = p.last_sent_ms.max(ev.at_ms);
        }
        Outcome::Deferred => p.deferred += 1,
        Outcome::Failed => p.failed += 1,
        Outcome::Dead => p.dead += 1,
        Outcome::Suppressed => p.suppressed += 1,
        Outcome::Cancelled => p.cancelled += 1,
        Outcome::Expired => p.expired += 1,
        // A replayed dead letter is pending again. Saturating: a replay whose dead letter was
        // counted before this progress record began (or twice replayed) never wraps around.
        Outcome::Replayed => match ev.undoes {
            Some(Outcome::Failed) => p.failed = p.failed.saturating_sub(1),
            Some(Outcome::Dead) => p.dead = p.dead.saturating_sub(1),
            Some(Outcome::Expired) => p.expired = p.expired.saturating_sub(1),
            _ => {}
        },
    }
}

/// Where to start reading events: the oldest point any unfinished campaign may need.
async fn start_policy(topo: &Topology) -> DeliverPolicy {
    let ids = list_campaign_ids(topo).await.unwrap_or_default();
    let mut start: Option<u64> = None;
    let mut any = false;
    for id in &ids {
        let Ok(Some((rec, _))) = load_record(topo, id).await else {
            continue;
        };
        if matches!(rec.status, CampaignStatus::Done) {
            continue;
        }
        any = true;
        let p = load_progress(topo, id).await.unwrap_or_default();
        let from = p.last_event_seq + 1;
        start = Some(start.map_or(from, |s| s.min(from)));
    }
    match start {
        Some(s) if any && s > 1 => DeliverPolicy::ByStartSequence { start_sequence: s },
        Some(_) => DeliverPolicy::All,
        None => DeliverPolicy::New,
    }
}

/// Folds events into progress until `shutdown`; re-creates its consumer when it fails.
pub async fn run(topo: Topology, shutdown: CancellationToken) {
    let mut tallies: HashMap<String, Tally> = HashMap::new();
    let mut active: HashSet<String> = HashSet::new();
    while !shutdown.is_cancelled() {
        let policy = match tallies.values().map(|t| t.progress.last_event_seq).max() {
            // After a failure, continue after the last event already folded in.
            Some(seq) if seq > 0 => DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            },
            _ => start_policy(&topo).await,
        };
        let consumer = topo
            .events
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: policy,
                ..Default::default()
            })
            .await;
        let mut messages = match consumer {
            Ok(c) => match c.messages().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read MAIL_EVENTS; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the events consumer; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = flush.tick() => flush_all(&topo, &mut tallies, &mut active).await,
                next = messages.next() => match next {
                    Some(Ok(msg)) => {
                        let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                        let ev: DeliveryEvent = match serde_json::from_slice(&msg.payload) {
                            Ok(e) => e,
                            Err(e) => { tracing::warn!(seq, error = %e, "unreadable event skipped"); continue; }
                        };
                        // A test send is counted in no campaign, not even its own.
                        if jetmail_common::compliance::is_test_campaign(&ev.campaign) {
                            continue;
                        }
                        let tally = match tallies.get_mut(&ev.campaign) {
                            Some(t) => t,
                            None => {
                                let progress = load_progress(&topo, &ev.campaign).await.unwrap_or_default();
                                tallies.entry(ev.campaign.clone()).or_insert(Tally { progress, dirty: false })
                            }
                        };
                        if seq <= tally.progress.last_event_seq {
                            continue; // folded in before a restart
                        }
                        fold(&mut tally.progress, &ev);
                        tally.progress.last_event_seq = seq;
                        tally.dirty = true;
                        active.insert(ev.campaign.clone());
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "events consumer failed; re-creating it");
                        break;
                    }
                    None => break,
                }
            }
        }
        flush_all(&topo, &mut tallies, &mut active).await;
    }
}

async fn flush_all(
    topo: &Topology,
    tallies: &mut HashMap<String, Tally>,
    active: &mut HashSet<String>,
) {
    for (id, t) in tallies.iter_mut().filter(|(_, t)| t.dirty) {
        t.progress.updated_ms = now_ms();
        let Ok(v) = serde_json::to_vec(&t.progress) else {
            continue;
        };
        match topo
            .campaigns
            .put(topology::progress_key(id), Bytes::from(v))
            .await
        {
            Ok(_) => t.dirty = false,
            Err(e) => tracing::warn!(campaign = %id, error = %e, "cannot store progress"),
        }
    }
    // A campaign is done when publishing finished and every recipient is settled. Checked on
    // each flush, because publishing may finish after the last event.
    let mut finished = Vec::new();
    for id in active.iter() {
        let Some(t) = tallies.get(id) else { continue };
        if t.dirty {
            continue;
        }
        match load_record(topo, id).await {
            Ok(Some((rec, _))) => {
                let settled = t.progress.settled();
                let complete = rec.publish.complete && settled >= rec.publish.published_through;
                match rec.status {
                    CampaignStatus::Running | CampaignStatus::Publishing if complete => {
                        let res = update_record(topo, id, |r| {
                            if matches!(
                                r.status,
                                CampaignStatus::Running | CampaignStatus::Publishing
                            ) && r.publish.complete
                            {
                                r.status = CampaignStatus::Done;
                            }
                        })
                        .await;
                        match res {
                            Ok(r) if r.status == CampaignStatus::Done => {
                                tracing::info!(campaign = %id, sent = t.progress.sent, "campaign done");
                                finished.push(id.clone());
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(campaign = %id, error = %e, "cannot mark campaign done")
                            }
                        }
                    }
                    CampaignStatus::Done => finished.push(id.clone()),
                    CampaignStatus::Cancelled if complete => finished.push(id.clone()),
                    _ => {}
                }
            }
            Ok(None) => finished.push(id.clone()),
            Err(_) => {}
        }
    }
    for id in finished {
        active.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(outcome: Outcome, undoes: Option<Outcome>, at_ms: u64) -> DeliveryEvent {
        // Through the wire format, as the monitor reads events (older senders omit fields).
        serde_json::from_value(serde_json::json!({
            "campaign": "c", "seq": 1, "outcome": outcome, "undoes": undoes, "at_ms": at_ms,
        }))
        .expect("a minimal event")
    }

    fn folded(events: &[DeliveryEvent]) -> CampaignProgress {
        let mut p = CampaignProgress::default();
        for ev in events {
            fold(&mut p, ev);
        }
        p
    }

    #[test]
    fn every_final_outcome_counts_once_and_deferrals_are_not_settled() {
        let p = folded(&[
            event(Outcome::Sent, None, 10),
            event(Outcome::Deferred, None, 11),
            event(Outcome::Deferred, None, 12),
            event(Outcome::Failed, None, 13),
            event(Outcome::Dead, None, 14),
            event(Outcome::Suppressed, None, 15),
            event(Outcome::Cancelled, None, 16),
            event(Outcome::Expired, None, 17),
        ]);
        assert_eq!(
            (
                p.sent,
                p.deferred,
                p.failed,
                p.dead,
                p.suppressed,
                p.cancelled,
                p.expired
            ),
            (1, 2, 1, 1, 1, 1, 1)
        );
        assert_eq!(p.settled(), 6, "a deferral is not a final outcome");
    }

    #[test]
    fn sent_times_are_the_first_and_the_latest_whatever_the_order() {
        let p = folded(&[
            event(Outcome::Sent, None, 50),
            event(Outcome::Sent, None, 90),
            event(Outcome::Sent, None, 70),
        ]);
        assert_eq!((p.first_sent_ms, p.last_sent_ms), (50, 90));
    }

    #[test]
    fn a_replay_undoes_the_outcome_it_names_and_nothing_else() {
        let mut p = folded(&[
            event(Outcome::Failed, None, 1),
            event(Outcome::Failed, None, 2),
            event(Outcome::Dead, None, 3),
            event(Outcome::Expired, None, 4),
        ]);
        fold(&mut p, &event(Outcome::Replayed, Some(Outcome::Failed), 5));
        assert_eq!((p.failed, p.dead, p.expired), (1, 1, 1));
        fold(&mut p, &event(Outcome::Replayed, Some(Outcome::Dead), 6));
        assert_eq!((p.failed, p.dead, p.expired), (1, 0, 1));
        fold(&mut p, &event(Outcome::Replayed, Some(Outcome::Expired), 7));
        assert_eq!((p.failed, p.dead, p.expired), (1, 0, 0));
        // A replay naming no undoable outcome changes nothing.
        let before = p.clone();
        fold(&mut p, &event(Outcome::Replayed, None, 8));
        fold(&mut p, &event(Outcome::Replayed, Some(Outcome::Sent), 9));
        assert_eq!(p, before);
        // The replayed recipient then delivered: settled again, as sent.
        fold(&mut p, &event(Outcome::Sent, None, 10));
        assert_eq!((p.sent, p.settled()), (1, 2));
    }

    #[test]
    fn a_replay_never_takes_a_counter_below_zero() {
        let mut p = CampaignProgress::default();
        for undoes in [Outcome::Failed, Outcome::Dead, Outcome::Expired] {
            fold(&mut p, &event(Outcome::Replayed, Some(undoes), 1));
        }
        assert_eq!(p, CampaignProgress::default());
    }
}
