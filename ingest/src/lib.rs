//! jetmail ingest: takes a campaign from a CSV file (`submit`) or over HTTP (`serve`) and
//! publishes one message per recipient to MAIL_OUTBOX. Ingest never talks SMTP.

pub mod control;
pub mod dead;
pub mod dedup;
pub mod feed;
pub mod http;
pub mod publish;
pub mod recipients;
pub mod submit_cli;

use jetmail_common::topology::Topology;
use tokio_util::sync::CancellationToken;

/// Serves the HTTP API on `listener` until `shutdown`, then finishes in-flight requests.
pub async fn serve(
    topo: Topology,
    listener: tokio::net::TcpListener,
    max_body: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = http::router(http::ApiState { topo }, max_body);
    tracing::info!(addr = %listener.local_addr()?, "ingest API listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
