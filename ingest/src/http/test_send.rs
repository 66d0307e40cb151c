//! `POST /v1/campaigns/test?to=a@x,b@y`: the campaign of the body (as for
//! `POST /v1/campaigns`) sent once to each address, as a test campaign.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use jetmail_common::api::{route, TestSendReport};

use super::campaigns::read_campaign;
use super::{ApiError, ApiState};

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route(route::TEST_SEND, post(test_send))
}

async fn test_send(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    req: Request,
) -> Result<(StatusCode, Json<TestSendReport>), ApiError> {
    let to: Vec<String> = q
        .get("to")
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    // The addresses are checked before the body is read.
    crate::test_send::check_addresses(&to)?;
    let parts = read_campaign(&state, &headers, req).await?;
    let report = crate::test_send::send(
        &state.topo,
        parts.spec,
        &to,
        parts.rows,
        state.unsubscribe.clone(),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(report)))
}
