//! Settling a message with the broker: ack (confirmed), nak, hand back untried, and the retry
//! that rides out a broker restart for the writes an outcome needs.

use std::time::{Duration, Instant};

use async_nats::jetstream::{AckKind, Message};
use jetmail_common::limits::Scope;
use jetmail_common::wire::OutboxMessage;

use crate::hold::{self, Origin};
use crate::Ctx;

/// How long a settlement (ack, event, dead letter) is retried while the broker is away.
const SETTLE_RETRY_FOR: Duration = Duration::from_secs(60);

/// Returns a message untried. A nak costs one delivery, so at the last allowed delivery the
/// message is moved to its campaign's held queue instead (a fresh delivery count; the held
/// lane pulls it when the campaign can send) and the original acked: waiting for a paused
/// campaign or an open circuit must never turn a recipient into a dead letter. It is not
/// re-published to the outbox, which only ingest may write to.
pub(crate) async fn hand_back(ctx: &Ctx, msg: &Message, delivery: i64, delay: std::time::Duration) {
    if delivery + 1 < ctx.max_deliver {
        return settle(msg, AckKind::Nak(Some(delay))).await;
    }
    let moved = match (
        serde_json::from_slice::<OutboxMessage>(&msg.payload),
        Origin::of(msg),
    ) {
        (Ok(m), Some(origin)) => {
            let scope = origin
                .held
                .clone()
                .unwrap_or_else(|| Scope::Campaign(m.campaign.clone()));
            let (stream, stream_seq) = msg
                .info()
                .map(|i| (i.stream.to_string(), i.stream_sequence))
                .unwrap_or_default();
            hold::requeue(ctx, msg, &m, &origin, &scope, &stream, stream_seq)
                .await
                .is_ok()
        }
        _ => false,
    };
    if moved {
        ack_msg(msg).await
    } else {
        settle(msg, AckKind::Nak(Some(delay))).await
    }
}

/// Acks a message whose outcome is already durable (a `sent` event, which is the ledger; or an
/// outcome a redelivery would reach again, like a suppression): without waiting for the
/// broker's confirmation. If this ack is lost (a crash, a broken connection) the message comes
/// back after the ack wait with a higher delivery count, and the ledger check acks it without
/// sending; a drain flushes the connection before exit. Confirming it would cost a broker
/// round trip per recipient that buys nothing the ledger does not already give.
pub(crate) async fn ack_settled(msg: &Message) {
    if let Err(e) = msg.ack().await {
        tracing::warn!(error = %e, "cannot ack; the ledger will absorb a redelivery");
    }
}

/// Acks with the broker's confirmation: once this returns Ok the message will not come back.
/// For moves (to a held queue), where a redelivery would make a second copy.
pub(crate) async fn ack_msg(msg: &Message) {
    if let Err(e) = msg.double_ack().await {
        // The ledger makes a lost ack harmless: the redelivery is acked without sending.
        tracing::warn!(error = %e, "ack not confirmed; the ledger will absorb a redelivery");
    }
}

pub(crate) async fn settle(msg: &Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(error = %e, "cannot settle message; it will be redelivered after the ack wait");
    }
}

/// Retries a broker write for a while (a broker restart is ridden out), logging failures.
pub(crate) async fn retry<T, E, F, Fut>(what: &str, mut f: F) -> bool
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + SETTLE_RETRY_FOR;
    let mut wait = Duration::from_millis(100);
    loop {
        match f().await {
            Ok(_) => return true,
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "cannot {what}; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot {what}; giving up");
                return false;
            }
        }
    }
}
