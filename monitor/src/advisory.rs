//! Messages that reached MaxDeliver without an outcome (their sender died on every delivery)
//! stay in the work queue forever and are never delivered again. The broker announces each
//! with an advisory; this moves the message to MAIL_DEAD, or, if the ledger shows it was in
//! fact sent, records it as sent, and then deletes it from MAIL_OUTBOX. An advisory missed
//! while the monitor was down is made up for by [`crate::sweep`].

use async_nats::jetstream::stream::RawMessageErrorKind;
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
    stream_seq: u64,
    #[serde(default)]
    deliveries: u64,
}

/// Listens for max-deliveries advisories until `shutdown`.
pub async fn run(
    client: async_nats::Client,
    topo: Topology,
    shutdown: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut sub = client.subscribe(topology::MAX_DELIVERIES_ADVISORY).await?;
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = sub.next() => match m { Some(m) => m, None => return Ok(()) },
        };
        match serde_json::from_slice::<MaxDeliveries>(&msg.payload) {
            Ok(a) => {
                if let Err(e) = settle(&topo, a.stream_seq, a.deliveries).await {
                    tracing::error!(stream_seq = a.stream_seq, error = %e, "cannot dead-letter a message that reached MaxDeliver");
                }
            }
            Err(e) => tracing::warn!(error = %e, "unreadable max-deliveries advisory"),
        }
    }
}

/// Moves outbox message `seq` to MAIL_DEAD (or records it as sent) and deletes it.
pub async fn settle(topo: &Topology, seq: u64, deliveries: u64) -> Result<(), StoreError> {
    let raw = match topo.outbox.get_raw_message(seq).await {
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
        .unwrap_or_else(|| "unknown".into());
    if let Some(m) = &decoded {
        let key = topology::sent_key(&m.campaign, m.seq);
        if let Ok(Some(_)) = topo.sent.get(&key).await {
            let ev = DeliveryEvent::new(m, Outcome::Sent, "monitor");
            publish_event(
                &topo.js,
                &ev,
                &event_msg_id(&m.campaign, m.seq, m.replay, Outcome::Sent, None),
            )
            .await?;
            topo.outbox
                .delete_message(seq)
                .await
                .map_err(StoreError::broker)?;
            return Ok(());
        }
    }
    let mut attempts: Vec<Attempt> = match &decoded {
        Some(m) => match topo
            .attempts
            .get(topology::sent_key(&m.campaign, m.seq))
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
        None => topology::poison_msg_id(seq),
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
            .purge(topology::sent_key(&m.campaign, m.seq))
            .await;
    }
    topo.outbox
        .delete_message(seq)
        .await
        .map_err(StoreError::broker)?;
    tracing::warn!(campaign = %campaign, stream_seq = seq, "message reached MaxDeliver: moved to MAIL_DEAD");
    Ok(())
}
