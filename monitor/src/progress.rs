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
        Outcome::Replayed => match ev.undoes {
            Some(Outcome::Failed) => p.failed = p.failed.saturating_sub(1),
            Some(Outcome::Dead) => p.dead = p.dead.saturating_sub(1),
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
