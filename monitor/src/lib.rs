//! jetmail monitor: the senders' heartbeats into the `mail_senders` health map, delivery
//! events into campaign progress, and dead letters for messages whose sender died on every
//! delivery (from the max-deliveries advisory, and a periodic sweep for advisories it missed),
//! and scheduled campaigns flipped to running once their send-at passes; finished campaigns
//! are deleted after `--retain-finished` ([`retention`]).
//! The monitor never sends mail and never acks an outbox message: it settles one only by
//! deleting it after MaxDeliver, once its dead letter (or sent event) is written.

pub mod advisory;
pub mod gauges;
pub mod health;
pub mod progress;
pub mod retention;
pub mod schedule;
pub mod sweep;

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use jetmail_common::topology::Topology;
use jetmail_common::wire::SenderHealth;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::health::HealthMap;

/// `GET /healthz`, `GET /v1/senders` and `GET /metrics`.
pub fn router(map: HealthMap) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            jetmail_common::metrics::ROUTE,
            get(|| async { jetmail_common::metrics::render() }),
        )
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
    #[error(transparent)]
    Advisory(#[from] advisory::AdvisoryError),
}

/// What the monitor is told on its command line.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// How often MAIL_OUTBOX is reconciled with the senders consumer ([`sweep`]).
    pub sweep_every: Duration,
    /// On shutdown, how long the parts get to finish (the last progress flush above all).
    pub shutdown_timeout: Duration,
    /// How long a done or cancelled campaign's record is kept ([`retention`]); zero: forever.
    pub retain_finished: Duration,
}

/// `--retain-finished` by default: 30 days.
pub const RETAIN_FINISHED: Duration = Duration::from_secs(30 * 24 * 3600);

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            sweep_every: sweep::SWEEP_EVERY,
            shutdown_timeout: Duration::from_secs(10),
            retain_finished: RETAIN_FINISHED,
        }
    }
}

/// The first error of a part that ended early; it stops the whole monitor.
type FirstFailure = Arc<Mutex<Option<MonitorError>>>;

/// Runs a part of the monitor on `tracker`; if it fails, the monitor stops with its error
/// rather than run on without it.
fn spawn_part<F, E>(
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    failure: &FirstFailure,
    part: F,
) where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: Into<MonitorError>,
{
    let shutdown = shutdown.clone();
    let failure = failure.clone();
    tracker.spawn(async move {
        if let Err(e) = part.await {
            let e = e.into();
            tracing::error!(error = %e, "monitor part failed; stopping");
            failure.lock().unwrap().get_or_insert(e);
            shutdown.cancel();
        }
    });
}

/// Runs every part of the monitor until `shutdown` (or until one of them fails), then gives
/// them `cfg.shutdown_timeout` to finish.
pub async fn run(
    cfg: MonitorConfig,
    client: async_nats::Client,
    topo: Topology,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), MonitorError> {
    let map: HealthMap = Arc::default();
    let failure: FirstFailure = Arc::default();
    let tracker = TaskTracker::new();
    let addr = listener.local_addr()?;
    spawn_part(
        &tracker,
        &shutdown,
        &failure,
        health::run(client.clone(), topo.clone(), map.clone(), shutdown.clone()),
    );
    spawn_part(
        &tracker,
        &shutdown,
        &failure,
        advisory::run(topo.clone(), shutdown.clone()),
    );
    let (t, s) = (topo.clone(), shutdown.clone());
    spawn_part(&tracker, &shutdown, &failure, async move {
        progress::run(t, s).await;
        Ok::<_, MonitorError>(())
    });
    let (t, s) = (topo.clone(), shutdown.clone());
    spawn_part(&tracker, &shutdown, &failure, async move {
        sweep::run(t, cfg.sweep_every, s).await;
        Ok::<_, MonitorError>(())
    });
    let (t, s) = (topo.clone(), shutdown.clone());
    spawn_part(&tracker, &shutdown, &failure, async move {
        schedule::run(t, s).await;
        Ok::<_, MonitorError>(())
    });
    jetmail_common::metrics::install_for("monitor");
    let (t, m, s) = (topo.clone(), map.clone(), shutdown.clone());
    spawn_part(&tracker, &shutdown, &failure, async move {
        gauges::run(t, m, s).await;
        Ok::<_, MonitorError>(())
    });
    let (t, s) = (topo.clone(), shutdown.clone());
    spawn_part(&tracker, &shutdown, &failure, async move {
        retention::run(t, cfg.retain_finished, s).await;
        Ok::<_, MonitorError>(())
    });
    let s = shutdown.clone();
    spawn_part(
        &tracker,
        &shutdown,
        &failure,
        axum::serve(listener, router(map))
            .with_graceful_shutdown(async move { s.cancelled().await })
            .into_future(),
    );
    tracing::info!(%addr, "monitor ready");
    shutdown.cancelled().await;
    tracker.close();
    // Unfinished parts lose nothing: progress resumes from the last event it stored.
    jetmail_common::shutdown::finish_within(
        tracker.wait(),
        cfg.shutdown_timeout,
        "monitor tasks",
        || Some(tracker.len() as u64),
    )
    .await;
    jetmail_common::config::flush_before_exit(&client, Duration::from_secs(5)).await;
    let failed = failure.lock().unwrap().take();
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
