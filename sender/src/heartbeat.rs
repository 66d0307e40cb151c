//! Heartbeats on `mail.heartbeat.<id>`: state, relays' circuits, counters, in-flight count.
//! The monitor turns them into the `mail_senders` health map.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use jetmail_common::now_ms;
use jetmail_common::topology;
use jetmail_common::wire::{Heartbeat, RelayHealth, SenderState, WIRE_VERSION};
use tokio_util::sync::CancellationToken;

use crate::Ctx;

pub fn snapshot(ctx: &Ctx, started_ms: u64) -> Heartbeat {
    Heartbeat {
        v: WIRE_VERSION,
        id: ctx.cfg.id.clone(),
        host: ctx.cfg.host.clone(),
        state: ctx.state(),
        relays: ctx
            .relays
            .iter()
            .map(|r| {
                let c = r.circuit.lock().unwrap();
                RelayHealth {
                    url: r.redacted().to_string(),
                    circuit: c.state(),
                    consecutive_failures: c.consecutive_failures(),
                    last_error: r.last_error(),
                }
            })
            .collect(),
        in_flight: ctx.stats.in_flight.load(Ordering::Relaxed),
        sent: ctx.stats.sent.load(Ordering::Relaxed),
        failed: ctx.stats.failed.load(Ordering::Relaxed) + ctx.stats.dead.load(Ordering::Relaxed),
        deferred: ctx.stats.deferred.load(Ordering::Relaxed),
        concurrency: ctx.cfg.concurrency as u64,
        interval_ms: ctx.cfg.heartbeat_interval.as_millis() as u64,
        started_ms,
        at_ms: now_ms(),
    }
}

async fn publish(ctx: &Ctx, client: &async_nats::Client, hb: &Heartbeat) {
    crate::metrics::heartbeat(hb);
    let Ok(payload) = serde_json::to_vec(hb) else {
        return;
    };
    if let Err(e) = client
        .publish(
            topology::heartbeat_subject(&ctx.cfg.id),
            Bytes::from(payload),
        )
        .await
    {
        tracing::debug!(error = %e, "heartbeat not published");
    }
}

/// Publishes a heartbeat every interval until `stop`, then one last with the final state.
pub async fn run(ctx: Arc<Ctx>, client: async_nats::Client, stop: CancellationToken) {
    let started_ms = now_ms();
    let mut tick = tokio::time::interval(ctx.cfg.heartbeat_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => publish(&ctx, &client, &snapshot(&ctx, started_ms)).await,
        }
    }
    let mut last = snapshot(&ctx, started_ms);
    if last.state != SenderState::Stopped {
        last.state = SenderState::Stopped;
    }
    // Best effort: the broker may be gone too.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        publish(&ctx, &client, &last),
    )
    .await;
    jetmail_common::config::flush_before_exit(&client, std::time::Duration::from_secs(2)).await;
}
