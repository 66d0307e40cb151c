//! Writing outcomes: delivery events to MAIL_EVENTS and dead letters to MAIL_DEAD, each with a
//! `Nats-Msg-Id` (built by [`crate::topology`]) that makes a re-publish after a crash or a
//! retry a no-op; and reading the ledger those events make.
//!
//! One durable record per outcome: a recipient's `sent` event, on a subject of its own, is both
//! what the monitor counts and the idempotency ledger a redelivery is checked against, so an
//! accepted send costs one acknowledged broker write, not a ledger put and an event.

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;

use crate::store::StoreError;
use crate::topology;
use crate::wire::{DeadLetter, DeliveryEvent};

async fn publish(
    js: &jetstream::Context,
    what: &str,
    subject: String,
    msg_id: &str,
    payload: Bytes,
) -> Result<(), StoreError> {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    js.publish_with_headers(subject, headers, payload)
        .await
        .map_err(|e| StoreError::from_publish(what, e))?
        .await
        .map_err(|e| StoreError::from_publish(what, e))?;
    Ok(())
}

/// Publishes an event and waits for the broker's ack. `msg_id` comes from
/// [`topology::event_msg_id`].
pub async fn publish_event(
    js: &jetstream::Context,
    ev: &DeliveryEvent,
    msg_id: &str,
) -> Result<(), StoreError> {
    let payload = serde_json::to_vec(ev).expect("an event always serialises");
    publish(
        js,
        topology::EVENTS_STREAM,
        topology::event_subject(&ev.campaign, ev.outcome, ev.seq),
        msg_id,
        payload.into(),
    )
    .await
}

/// Publishes a dead letter and waits for the broker's ack. `msg_id` comes from
/// [`topology::dead_msg_id`] or [`topology::poison_msg_id`].
pub async fn publish_dead(
    js: &jetstream::Context,
    dl: &DeadLetter,
    msg_id: &str,
) -> Result<(), StoreError> {
    let payload = serde_json::to_vec(dl).expect("a dead letter always serialises");
    publish(
        js,
        topology::DEAD_STREAM,
        topology::dead_subject(&dl.campaign),
        msg_id,
        payload.into(),
    )
    .await
}

/// True when the relay accepted recipient `seq` of `campaign` before: its `sent` event is in
/// MAIL_EVENTS. Asked of the stream's leader (not a direct get, which a replica may answer
/// from behind), as a redelivery after a failure must see the latest write.
pub async fn already_sent(
    events: &jetstream::stream::Stream,
    campaign: &str,
    seq: u64,
) -> Result<bool, StoreError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let subject = topology::event_subject(campaign, crate::wire::Outcome::Sent, seq);
    match events.get_last_raw_message_by_subject(&subject).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
        Err(e) => Err(StoreError::broker(e)),
    }
}
