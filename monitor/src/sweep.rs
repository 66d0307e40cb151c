//! Reconciliation of MAIL_OUTBOX with the senders consumer, for the messages the
//! max-deliveries advisory did not settle: the advisory is a core-NATS message, published once,
//! so a monitor that is down (or restarting) at that moment misses it, and the message would
//! stay in the work queue forever. Every [`SWEEP_EVERY`] (and at start-up) this finds them and
//! settles them as [`crate::advisory::settle`] does.
//!
//! How, cheaply and without a per-message delivery count (JetStream exposes none): a message
//! that reached MaxDeliver is still in the stream but is neither waiting for its first delivery
//! (`num_pending`) nor pending an ack or a redelivery (`num_ack_pending`). So
//! `messages - num_pending - num_ack_pending` counts them: two info requests per sweep when
//! there is nothing to do, which is almost always. When the count is not zero, the consumer's
//! snapshot names them exactly in two cases, and only those are settled:
//! - nothing is ack-pending: every message at or below the highest delivered stream sequence
//!   has been delivered and is pending nowhere, so it reached MaxDeliver;
//! - at or below the ack floor: nothing pending lies there, so a message still there reached
//!   MaxDeliver (servers that advance the floor past such messages put them there).
//!
//! A stuck message above the ack floor while other messages are pending cannot be told apart
//! from a pending one; it is settled by the first sweep that finds the consumer idle, and the
//! sweep logs the count meanwhile.

use std::time::Duration;

use async_nats::jetstream::stream::RawMessageErrorKind;
use jetmail_common::store::StoreError;
use jetmail_common::topology::{self, Topology};
use tokio_util::sync::CancellationToken;

/// How often the outbox is reconciled with the consumer.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// What one sweep found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swept {
    /// Messages that reached MaxDeliver and are still in the outbox, by the consumer's counts.
    pub stuck: u64,
    /// Of those, the ones this sweep could name and settled.
    pub settled: u64,
}

/// Sweeps every `every` until `shutdown`, the first time at once.
pub async fn run(topo: Topology, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sweep_once(&topo).await {
            Ok(s) if s.stuck > s.settled => tracing::warn!(
                stuck = s.stuck,
                settled = s.settled,
                "messages at MaxDeliver wait in MAIL_OUTBOX until the senders consumer is idle"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot reconcile MAIL_OUTBOX; retrying later"),
        }
    }
}

/// One reconciliation pass (see the module's documentation).
pub async fn sweep_once(topo: &Topology) -> Result<Swept, StoreError> {
    // The count is only a trigger (the two snapshots are not atomic: an ack or a publish in
    // between skews it by one either way); what is settled is named by the consumer's
    // snapshot alone.
    let stream = topo
        .outbox
        .get_info()
        .await
        .map_err(StoreError::broker)?
        .state;
    let (consumer, _) = topology::senders_consumer(&topo.outbox)
        .await
        .map_err(StoreError::broker)?;
    let info = consumer.get_info().await.map_err(StoreError::broker)?;
    let stuck = stream
        .messages
        .saturating_sub(info.num_pending + info.num_ack_pending as u64);
    if stuck == 0 {
        return Ok(Swept::default());
    }
    let delivered = info.delivered.stream_sequence;
    let known_stuck_through = if info.num_ack_pending == 0 {
        delivered
    } else {
        info.ack_floor.stream_sequence.min(delivered)
    };
    let deliveries = info.config.max_deliver.max(1) as u64;
    let mut settled = 0;
    let mut seq = stream.first_sequence;
    // `stuck` bounds the walk too: no more requests than messages to settle.
    while seq <= known_stuck_through && settled < stuck {
        let next = topo
            .outbox
            .raw_message_builder()
            .sequence(seq)
            .next_by_subject(topology::outbox_filter())
            .send()
            .await;
        let msg = match next {
            Ok(m) => m,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(StoreError::broker(e)),
        };
        if msg.sequence > known_stuck_through {
            break;
        }
        crate::advisory::settle(topo, msg.sequence, deliveries).await?;
        settled += 1;
        seq = msg.sequence + 1;
    }
    if settled > 0 {
        tracing::warn!(
            settled,
            "settled messages at MaxDeliver whose advisory was missed"
        );
    }
    Ok(Swept { stuck, settled })
}
