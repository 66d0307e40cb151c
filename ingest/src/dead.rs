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
use jetmail_common::store::StoreError;
use jetmail_common::topology::{self, event_msg_id, CampaignIdError, Topology};
use jetmail_common::wire::{CampaignStatus, DeadLetter, DeliveryEvent, OutboxMessage, Outcome};

pub use jetmail_common::api::{BulkReport, DeadEntry, DeadFilter, DeadList};

/// Why a dead-letter operation could not run at all (one dead letter that cannot be handled
/// is reported in [`BulkReport::errors`] instead).
#[derive(Debug, thiserror::Error)]
pub enum DeadError {
    #[error("invalid filter: {0}")]
    Filter(#[from] CampaignIdError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why one dead letter could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("original message is undecodable, cannot replay ({0})")]
    Undecodable(#[source] serde_json::Error),
    #[error("publish not acknowledged: {0}")]
    Publish(#[source] StoreError),
    #[error("replayed, but its event could not be written: {0}")]
    Event(#[source] StoreError),
    #[error("replayed, but the dead letter could not be removed: {0}")]
    Remove(#[source] StoreError),
}

/// Lists matching dead letters, oldest first, at most `limit`; also returns how many matched.
pub async fn list(
    topo: &Topology,
    filter: &DeadFilter,
    limit: usize,
) -> Result<DeadList, DeadError> {
    if let Some(c) = &filter.campaign {
        topology::validate_campaign_id(c)?;
    }
    let mut stream = topo.dead.clone();
    let info = stream.info().await.map_err(StoreError::broker)?;
    if info.state.messages == 0 {
        return Ok(DeadList {
            dead: Vec::new(),
            total: 0,
        });
    }
    let last = info.state.last_sequence;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            filter_subject: topology::dead_filter(filter.campaign.as_deref()),
            ..Default::default()
        })
        .await
        .map_err(StoreError::broker)?;
    let mut messages = consumer.messages().await.map_err(StoreError::broker)?;
    let mut out = Vec::new();
    let mut total = 0;
    loop {
        let next = match tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(StoreError::broker(e).into()),
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
    Ok(DeadList { dead: out, total })
}

/// Re-publishes every matching dead letter to MAIL_OUTBOX, then removes it from MAIL_DEAD.
pub async fn replay(topo: &Topology, filter: &DeadFilter) -> Result<BulkReport, DeadError> {
    let entries = list(topo, filter, usize::MAX).await?.dead;
    let mut report = BulkReport::default();
    let mut reopened = std::collections::HashSet::new();
    for e in entries {
        match replay_one(topo, &e).await {
            Ok(campaign) => {
                report.done += 1;
                if reopened.insert(campaign.clone()) {
                    // A done campaign has recipients pending again.
                    let res = update_record(topo, &campaign, |r| {
                        if r.status == CampaignStatus::Done {
                            r.status = CampaignStatus::Running;
                        }
                    })
                    .await;
                    if let Err(e) = res {
                        // The recipients are pending all the same; only the status lags.
                        tracing::warn!(%campaign, error = %e, "cannot mark a replayed campaign running");
                    }
                }
            }
            Err(err) => report
                .errors
                .push(format!("dead letter {}: {err}", e.stream_seq)),
        }
    }
    Ok(report)
}

async fn replay_one(topo: &Topology, e: &DeadEntry) -> Result<String, ReplayError> {
    let mut m: OutboxMessage =
        serde_json::from_str(&e.letter.original).map_err(ReplayError::Undecodable)?;
    m.replay += 1;
    m.published_ms = now_ms();
    let payload = serde_json::to_vec(&m).expect("an outbox message always serialises");
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        topology::outbox_msg_id(&m.campaign, m.seq, m.replay).as_str(),
    );
    let publish =
        |err| ReplayError::Publish(StoreError::from_publish(topology::OUTBOX_STREAM, err));
    topo.js
        .publish_with_headers(
            e.letter.original_subject.clone(),
            headers,
            Bytes::from(payload),
        )
        .await
        .map_err(publish)?
        .await
        .map_err(publish)?;
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
    .map_err(ReplayError::Event)?;
    topo.dead
        .delete_message(e.stream_seq)
        .await
        .map_err(|err| ReplayError::Remove(StoreError::broker(err)))?;
    Ok(m.campaign)
}

/// Deletes every matching dead letter.
pub async fn purge(topo: &Topology, filter: &DeadFilter) -> Result<BulkReport, DeadError> {
    let entries = list(topo, filter, usize::MAX).await?.dead;
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
