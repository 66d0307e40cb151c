//! Dead letters: list, replay and purge MAIL_DEAD, by campaign, reason text or stream
//! sequence. Replay re-publishes the original recipient to MAIL_OUTBOX with a new replay
//! generation (a new `Nats-Msg-Id`: the old one may still be in the duplicate window) and
//! removes the dead letter only after the broker acknowledged the publish.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use jetmail_common::now_ms;
use jetmail_common::outcomes::publish_event;
use jetmail_common::records::update_record;
use jetmail_common::topology::event_msg_id;
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{CampaignStatus, DeadLetter, DeliveryEvent, OutboxMessage, Outcome};
use serde::{Deserialize, Serialize};

/// Which dead letters an operation applies to. Empty matches all.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct DeadFilter {
    #[serde(default)]
    pub campaign: Option<String>,
    /// Case-insensitive substring of the reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// Only these MAIL_DEAD stream sequences.
    #[serde(default)]
    pub seqs: Option<Vec<u64>>,
}

/// One dead letter with its place in MAIL_DEAD.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadEntry {
    pub stream_seq: u64,
    pub letter: DeadLetter,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadError {
    #[error("invalid filter: {0}")]
    Filter(String),
    #[error("broker: {0}")]
    Broker(String),
}

impl DeadFilter {
    fn matches(&self, e: &DeadEntry) -> bool {
        if let Some(seqs) = &self.seqs {
            if !seqs.contains(&e.stream_seq) {
                return false;
            }
        }
        if let Some(c) = &self.campaign {
            if &e.letter.campaign != c {
                return false;
            }
        }
        if let Some(r) = &self.reason {
            if !e.letter.reason.to_lowercase().contains(&r.to_lowercase()) {
                return false;
            }
        }
        true
    }
}

/// Lists matching dead letters, oldest first, at most `limit`; also returns how many matched.
pub async fn list(
    topo: &Topology,
    filter: &DeadFilter,
    limit: usize,
) -> Result<(Vec<DeadEntry>, usize), DeadError> {
    if let Some(c) = &filter.campaign {
        topology::validate_campaign_id(c).map_err(|e| DeadError::Filter(e.to_string()))?;
    }
    let mut stream = topo.dead.clone();
    let info = stream
        .info()
        .await
        .map_err(|e| DeadError::Broker(e.to_string()))?;
    if info.state.messages == 0 {
        return Ok((Vec::new(), 0));
    }
    let last = info.state.last_sequence;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            filter_subject: topology::dead_filter(filter.campaign.as_deref()),
            ..Default::default()
        })
        .await
        .map_err(|e| DeadError::Broker(e.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| DeadError::Broker(e.to_string()))?;
    let mut out = Vec::new();
    let mut total = 0;
    loop {
        let next = match tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(DeadError::Broker(e.to_string())),
            // No more messages for this filter.
            Ok(None) | Err(_) => break,
        };
        let Ok(info) = next.info() else { continue };
        let (seq, pending) = (info.stream_sequence, info.pending);
        if let Ok(letter) = serde_json::from_slice::<DeadLetter>(&next.payload) {
            let e = DeadEntry {
                stream_seq: seq,
                letter,
            };
            if filter.matches(&e) {
                total += 1;
                if out.len() < limit {
                    out.push(e);
                }
            }
        }
        if pending == 0 || seq >= last {
            break;
        }
    }
    Ok((out, total))
}

/// Outcome of a replay or purge.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BulkReport {
    pub done: u64,
    /// Dead letters that could not be handled, with the reason.
    pub errors: Vec<String>,
}

/// Re-publishes every matching dead letter to MAIL_OUTBOX, then removes it from MAIL_DEAD.
pub async fn replay(topo: &Topology, filter: &DeadFilter) -> Result<BulkReport, DeadError> {
    let (entries, _) = list(topo, filter, usize::MAX).await?;
    let mut report = BulkReport::default();
    let mut reopened = std::collections::HashSet::new();
    for e in entries {
        match replay_one(topo, &e).await {
            Ok(campaign) => {
                report.done += 1;
                if reopened.insert(campaign.clone()) {
                    // A done campaign has recipients pending again.
                    let _ = update_record(topo, &campaign, |r| {
                        if r.status == CampaignStatus::Done {
                            r.status = CampaignStatus::Running;
                        }
                    })
                    .await;
                }
            }
            Err(err) => report
                .errors
                .push(format!("dead letter {}: {err}", e.stream_seq)),
        }
    }
    Ok(report)
}

async fn replay_one(topo: &Topology, e: &DeadEntry) -> Result<String, String> {
    let mut m: OutboxMessage = serde_json::from_str(&e.letter.original)
        .map_err(|err| format!("original message is undecodable, cannot replay ({err})"))?;
    m.replay += 1;
    m.published_ms = now_ms();
    let payload = serde_json::to_vec(&m).map_err(|err| err.to_string())?;
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        topology::outbox_msg_id(&m.campaign, m.seq, m.replay).as_str(),
    );
    topo.js
        .publish_with_headers(
            e.letter.original_subject.clone(),
            headers,
            Bytes::from(payload),
        )
        .await
        .map_err(|err| err.to_string())?
        .await
        .map_err(|err| format!("publish not acknowledged: {err}"))?;
    // The recipient leaves the failed/dead count: it is pending again.
    let ev = DeliveryEvent {
        undoes: Some(e.letter.outcome),
        ..DeliveryEvent::new(&m, Outcome::Replayed, "ingest")
    };
    publish_event(
        &topo.js,
        &ev,
        &event_msg_id(&m.campaign, m.seq, m.replay, Outcome::Replayed, None),
    )
    .await
    .map_err(|e| e.to_string())?;
    topo.dead
        .delete_message(e.stream_seq)
        .await
        .map_err(|err| format!("replayed, but the dead letter could not be removed: {err}"))?;
    Ok(m.campaign)
}

/// Deletes every matching dead letter.
pub async fn purge(topo: &Topology, filter: &DeadFilter) -> Result<BulkReport, DeadError> {
    let (entries, _) = list(topo, filter, usize::MAX).await?;
    let mut report = BulkReport::default();
    for e in entries {
        match topo.dead.delete_message(e.stream_seq).await {
            Ok(_) => report.done += 1,
            Err(err) => report
                .errors
                .push(format!("dead letter {}: {err}", e.stream_seq)),
        }
    }
    Ok(report)
}
