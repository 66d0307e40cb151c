//! Ingest's Prometheus metrics (names in [`jetmail_common::metrics`]): recipients published,
//! and HTTP requests by method, route pattern and status. A path that matched no route is
//! counted under [`NO_ROUTE`], so a scanner's thousand paths add no series.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use jetmail_common::metrics::{HTTP_REQUESTS, INGEST_RECIPIENTS_PUBLISHED, NO_ROUTE};

/// `n` recipients' publishes acknowledged by the broker.
pub fn published(n: u64) {
    metrics::counter!(INGEST_RECIPIENTS_PUBLISHED).increment(n);
}

/// Middleware: counts each answered request. Layered with `Router::layer`, so it runs inside
/// the matched route and sees its pattern.
pub async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| NO_ROUTE.to_string());
    let method = req.method().as_str().to_string();
    let response = next.run(req).await;
    metrics::counter!(
        HTTP_REQUESTS,
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}
