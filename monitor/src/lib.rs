//! jetmail monitor: the senders' heartbeats into the `mail_senders` health map, delivery
//! events into campaign progress, and dead letters for messages whose sender died on every
//! delivery. The monitor never sends mail and never acks an outbox message.

pub mod advisory;
pub mod health;
pub mod progress;

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use jetmail_common::topology::Topology;
use jetmail_common::wire::SenderHealth;
use tokio_util::sync::CancellationToken;

use crate::health::HealthMap;

/// `GET /healthz` and `GET /v1/senders`.
pub fn router(map: HealthMap) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/senders", get(senders))
        .with_state(map)
}

async fn senders(State(map): State<HealthMap>) -> Json<Vec<SenderHealth>> {
    let mut list: Vec<SenderHealth> = map.lock().unwrap().values().cloned().collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    Json(list)
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot subscribe: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
}

/// Runs every part of the monitor until `shutdown`.
pub async fn run(
    client: async_nats::Client,
    topo: Topology,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), MonitorError> {
    let map: HealthMap = Arc::default();
    let health = tokio::spawn(health::run(
        client.clone(),
        topo.clone(),
        map.clone(),
        shutdown.clone(),
    ));
    let advisories = tokio::spawn(advisory::run(
        client.clone(),
        topo.clone(),
        shutdown.clone(),
    ));
    let progress = tokio::spawn(progress::run(topo.clone(), shutdown.clone()));
    tracing::info!(addr = %listener.local_addr()?, "monitor ready");
    let s = shutdown.clone();
    axum::serve(listener, router(map))
        .with_graceful_shutdown(async move { s.cancelled().await })
        .await?;
    shutdown.cancel();
    let (h, a, _) = tokio::join!(health, advisories, progress);
    if let Ok(Err(e)) = h {
        return Err(e.into());
    }
    if let Ok(Err(e)) = a {
        return Err(e.into());
    }
    jetmail_common::config::flush_before_exit(&client, std::time::Duration::from_secs(5)).await;
    Ok(())
}
