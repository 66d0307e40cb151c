//! `/v1/dead`: list, replay and purge dead letters.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use jetmail_common::api::{route, BulkReport, DeadFilter, DeadList, DeadQuery, ErrorCode};

use super::{ApiError, ApiState};
use crate::dead;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(route::DEAD, get(dead_list).delete(dead_purge))
        .route(route::DEAD_REPLAY, post(dead_replay))
}

async fn dead_list(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<DeadQuery>, QueryRejection>,
) -> Result<Json<DeadList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::InvalidFilter, e.body_text()))?;
    // An empty form field means "any", not "the empty campaign".
    let filter = DeadFilter {
        campaign: q.campaign.filter(|c| !c.is_empty()),
        reason: q.reason.filter(|r| !r.is_empty()),
        seqs: None,
    };
    Ok(Json(dead::list(&state.topo, &filter, q.limit).await?))
}

/// The filter of a replay or purge: a JSON [`DeadFilter`]; no body at all matches every
/// dead letter.
fn filter_of(body: Result<Bytes, BytesRejection>) -> Result<DeadFilter, ApiError> {
    let body = body.map_err(|e| ApiError::body(e.status(), e.body_text()))?;
    if body.is_empty() {
        return Ok(DeadFilter::default());
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::new(ErrorCode::BadJson, e))
}

async fn dead_replay(
    State(state): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BulkReport>, ApiError> {
    let filter = filter_of(body)?;
    Ok(Json(dead::replay(&state.topo, &filter).await?))
}

async fn dead_purge(
    State(state): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BulkReport>, ApiError> {
    let filter = filter_of(body)?;
    Ok(Json(dead::purge(&state.topo, &filter).await?))
}
