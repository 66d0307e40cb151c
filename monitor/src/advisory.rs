//! Messages that reached MaxDeliver without an outcome (their sender died on every delivery)
//! stay in the work queue forever and are never delivered again. The broker announces each
//! with an advisory, which MAIL_ADVISORIES keeps until the monitor acks it; this moves the
//! message to MAIL_DEAD, or, if the ledger shows it was in fact sent, records it as sent, and
//! then deletes it from its queue (MAIL_OUTBOX or MAIL_HELD). [`crate::sweep`] is the second
//! line: it finds such messages from the consumer's state, should an advisory be lost anyway
//! (the advisories stream was full, or created after the advisory).

use std::time::Duration;

use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use jetmail_common::now_ms;
use jetmail_common::outcomes::{publish_dead, publish_event};
use jetmail_common::store::StoreError;
use jetmail_common::topology::{self, dead_msg_id, event_msg_id, Topology};
use jetmail_common::wire::{
    Attempt, DeadLetter, DeliveryEvent, OutboxMessage, Outcome, WIRE_VERSION,
};
use tokio_util::sync::CancellationToken;

#[derive(serde::Deserialize)]
struct MaxDeliveries {
    #[serde(default)]
    stream: String,
    stream_seq: u64,
    #[serde(default)]
    deliveries: u64,
}

/// The work queues whose messages can reach MaxDeliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    Outbox,
    Held,
}

impl Queue {
    fn of(stream: &str) -> Option<Self> {
        match stream {
            topology::OUTBOX_STREAM => Some(Queue::Outbox),
            topology::HELD_STREAM => Some(Queue::Held),
            _ => None,
        }
    }

    fn stream(self, topo: &Topology) -> &async_nats::jetstream::stream::Stream {
        match self {
            Queue::Outbox => &topo.outbox,
            Queue::Held => &topo.held,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Queue::Outbox => topology::OUTBOX_STREAM,
            Queue::Held => topology::HELD_STREAM,
        }
    }
}

/// How long a failed settlement waits before its advisory is offered again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Settles what the kept max-deliveries advisories name until `shutdown`. They are read from
/// MAIL_ADVISORIES with a durable consumer and acked once settled, so one published while the
/// monitor was down, or whose settlement failed, is handled when it can be.
pub async fn run(topo: Topology, shutdown: CancellationToken) -> Result<(), AdvisoryError> {
    while !shutdown.is_cancelled() {
        let consumer = topo
            .advisories
            .get_or_create_consumer(
                topology::ADVISORIES_CONSUMER,
                topology::advisories_consumer_config(),
            )
            .await
            .map_err(AdvisoryError::Consumer)?;
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read MAIL_ADVISORIES; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = messages.next() => n,
            };
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "advisories consumer failed; re-creating it");
                    break;
                }
                None => break,
            };
            let a = match serde_json::from_slice::<MaxDeliveries>(&msg.payload) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable max-deliveries advisory dropped");
                    let _ = msg.ack().await;
                    continue;
                }
            };
            let Some(queue) = Queue::of(&a.stream) else {
                let _ = msg.ack().await;
                continue;
            };
            match settle_in(&topo, queue, a.stream_seq, a.deliveries).await {
                Ok(()) => {
                    let _ = msg.ack().await;
                }
                Err(e) => {
                    tracing::error!(stream = %a.stream, stream_seq = a.stream_seq, error = %e, "cannot dead-letter a message that reached MaxDeliver; will retry");
                    let _ = msg.ack_with(AckKind::Nak(Some(RETRY_AFTER))).await;
                }
            }
        }
    }
    Ok(())
}

/// Why the advisory reader could not run.
#[derive(Debug, thiserror::Error)]
pub enum AdvisoryError {
    #[error("cannot use the advisories consumer: {0}")]
    Consumer(#[source] async_nats::jetstream::stream::ConsumerError),
}

/// Moves outbox message `seq` to MAIL_DEAD (or records it as sent) and deletes it.
pub async fn settle(topo: &Topology, seq: u64, deliveries: u64) -> Result<(), StoreError> {
    settle_in(topo, Queue::Outbox, seq, deliveries).await
}

/// Moves message `seq` of `queue` to MAIL_DEAD (or records it as sent) and deletes it.
pub async fn settle_in(
    topo: &Topology,
    queue: Queue,
    seq: u64,
    deliveries: u64,
) -> Result<(), StoreError> {
    let stream = queue.stream(topo);
    let raw = match stream.get_raw_message(seq).await {
        Ok(m) => m,
        // Already settled (by a sender, or by the advisory and the sweep both): nothing to do.
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(()),
        Err(e) => return Err(StoreError::broker(e)),
    };
    let original = String::from_utf8_lossy(&raw.payload).into_owned();
    let decoded: Option<OutboxMessage> = serde_json::from_slice(&raw.payload).ok();
    let reason = format!(
        "no outcome after {deliveries} deliveries: its sender stopped (crashed?) while handling it each time"
    );
    let campaign = decoded
        .as_ref()
        .map(|m| m.campaign.clone())
        .or_else(|| topology::OutboxSubject::parse(&raw.subject).map(|s| s.campaign.to_string()))
        .or_else(|| topology::HeldSubject::parse(&raw.subject).map(|s| s.campaign.to_string()))
        .unwrap_or_else(|| "unknown".into());
    if let Some(m) = &decoded {
        if let Ok(true) =
            jetmail_common::outcomes::already_sent(&topo.events, &m.campaign, m.seq).await
        {
            let ev = DeliveryEvent::new(m, Outcome::Sent, "monitor");
            publish_event(
                &topo.js,
                &ev,
                &event_msg_id(&m.campaign, m.seq, m.replay, Outcome::Sent, None),
            )
            .await?;
            stream
                .delete_message(seq)
                .await
                .map_err(StoreError::broker)?;
            return Ok(());
        }
    }
    let mut attempts: Vec<Attempt> = match &decoded {
        Some(m) => match topo
            .attempts
            .get(topology::attempts_key(&m.campaign, m.seq))
            .await
        {
            Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_default(),
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    attempts.push(Attempt {
        at_ms: now_ms(),
        sender: "monitor".into(),
        relay: "-".into(),
        code: None,
        error: reason.clone(),
    });
    let dl = DeadLetter {
        v: WIRE_VERSION,
        campaign: campaign.clone(),
        seq: decoded.as_ref().map(|m| m.seq),
        outcome: Outcome::Dead,
        reason,
        original,
        original_subject: raw.subject.to_string(),
        attempts,
        at_ms: now_ms(),
    };
    let id = match &decoded {
        Some(m) => dead_msg_id(&m.campaign, m.seq, m.replay),
        None => topology::poison_msg_id(queue.name(), seq),
    };
    publish_dead(&topo.js, &dl, &id).await?;
    if let Some(m) = &decoded {
        let ev = DeliveryEvent::new(m, Outcome::Dead, "monitor");
        publish_event(
            &topo.js,
            &ev,
            &event_msg_id(&m.campaign, m.seq, m.replay, Outcome::Dead, None),
        )
        .await?;
        let _ = topo
            .attempts
            .purge(topology::attempts_key(&m.campaign, m.seq))
            .await;
    }
    stream
        .delete_message(seq)
        .await
        .map_err(StoreError::broker)?;
    tracing::warn!(campaign = %campaign, stream_seq = seq, "message reached MaxDeliver: moved to MAIL_DEAD");
    Ok(())
}
