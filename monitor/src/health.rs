//! Heartbeats into the `mail_senders` health map: `up` (or whatever the sender says) while
//! they arrive, `down` after three missed intervals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use jetmail_common::now_ms;
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{
    missed_beats, Heartbeat, SenderHealth, SenderState, MISSED_BEATS, WIRE_VERSION,
};
use tokio_util::sync::CancellationToken;

/// The health map, also served at `GET /v1/senders`.
pub type HealthMap = Arc<Mutex<HashMap<String, SenderHealth>>>;

fn health_from(hb: &Heartbeat, previous: Option<&SenderHealth>) -> SenderHealth {
    let rate = match previous {
        Some(p) if hb.at_ms > p.last_seen_ms && hb.sent >= p.sent => {
            (hb.sent - p.sent) as f64 * 1000.0 / (hb.at_ms - p.last_seen_ms) as f64
        }
        _ => 0.0,
    };
    SenderHealth {
        v: WIRE_VERSION,
        id: hb.id.clone(),
        host: hb.host.clone(),
        state: hb.state,
        relays: hb.relays.clone(),
        in_flight: hb.in_flight,
        sent: hb.sent,
        failed: hb.failed,
        deferred: hb.deferred,
        rate,
        concurrency: hb.concurrency,
        interval_ms: hb.interval_ms,
        last_seen_ms: hb.at_ms.max(1),
    }
}

async fn store(topo: &Topology, h: &SenderHealth) {
    if let Ok(v) = serde_json::to_vec(h) {
        if let Err(e) = topo.senders.put(&h.id, Bytes::from(v)).await {
            tracing::warn!(sender = %h.id, error = %e, "cannot update mail_senders");
        }
    }
}

/// Follows heartbeats and marks silent senders down, until `shutdown`.
pub async fn run(
    client: async_nats::Client,
    topo: Topology,
    map: HealthMap,
    shutdown: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut sub = client.subscribe(topology::heartbeat_filter()).await?;
    let mut sweep = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            msg = sub.next() => {
                let Some(msg) = msg else { return Ok(()) };
                let hb: Heartbeat = match serde_json::from_slice(&msg.payload) {
                    Ok(h) => h,
                    Err(e) => { tracing::warn!(subject = %msg.subject, error = %e, "unreadable heartbeat"); continue; }
                };
                let mut h = {
                    let m = map.lock().unwrap();
                    health_from(&hb, m.get(&hb.id))
                };
                // Our clock, not the sender's, decides when it is overdue.
                h.last_seen_ms = now_ms();
                map.lock().unwrap().insert(h.id.clone(), h.clone());
                store(&topo, &h).await;
            }
            _ = sweep.tick() => {
                let now = now_ms();
                let overdue: Vec<SenderHealth> = {
                    let mut m = map.lock().unwrap();
                    m.values_mut()
                        .filter(|h| h.state != SenderState::Down)
                        .filter(|h| missed_beats(h.last_seen_ms, h.interval_ms, now))
                        .map(|h| { h.state = SenderState::Down; h.in_flight = 0; h.rate = 0.0; h.clone() })
                        .collect()
                };
                for h in overdue {
                    tracing::warn!(sender = %h.id, "sender missed {MISSED_BEATS} heartbeats: marked down");
                    store(&topo, &h).await;
                }
            }
        }
    }
}
