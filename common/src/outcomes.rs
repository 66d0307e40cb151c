//! Writing outcomes: delivery events to MAIL_EVENTS and dead letters to MAIL_DEAD, each with a
//! `Nats-Msg-Id` that makes a re-publish (after a crash or a retry) a no-op.

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;

use crate::topology;
use crate::wire::{DeadLetter, DeliveryEvent, Outcome};

/// Id of an outcome event. Deferrals carry their delivery number: each is its own event.
pub fn event_msg_id(
    campaign: &str,
    seq: u64,
    replay: u32,
    outcome: Outcome,
    delivery: Option<i64>,
) -> String {
    match delivery {
        Some(d) => format!("{campaign}.{seq}.r{replay}.{}.{d}", outcome.as_str()),
        None => format!("{campaign}.{seq}.r{replay}.{}", outcome.as_str()),
    }
}

/// Id of a dead letter: one per recipient and replay generation.
pub fn dead_msg_id(campaign: &str, seq: u64, replay: u32) -> String {
    format!("{campaign}.{seq}.r{replay}.dead")
}

async fn publish(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    payload: Bytes,
) -> Result<(), String> {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    js.publish_with_headers(subject, headers, payload)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Publishes an event and waits for the broker's ack.
pub async fn publish_event(
    js: &jetstream::Context,
    ev: &DeliveryEvent,
    msg_id: &str,
) -> Result<(), String> {
    let payload = serde_json::to_vec(ev).map_err(|e| e.to_string())?;
    publish(
        js,
        topology::event_subject(&ev.campaign, ev.outcome),
        msg_id,
        payload.into(),
    )
    .await
}

/// Publishes a dead letter and waits for the broker's ack.
pub async fn publish_dead(
    js: &jetstream::Context,
    dl: &DeadLetter,
    msg_id: &str,
) -> Result<(), String> {
    let payload = serde_json::to_vec(dl).map_err(|e| e.to_string())?;
    publish(
        js,
        topology::dead_subject(&dl.campaign),
        msg_id,
        payload.into(),
    )
    .await
}
