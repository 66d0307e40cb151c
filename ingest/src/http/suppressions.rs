//! `/v1/suppressions`: list (with search), add, remove and import the suppression list.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use jetmail_common::api::{
    route, ErrorCode, Field, SuppressReport, SuppressRequest, SuppressionList, SuppressionQuery,
};
use jetmail_common::compliance::SuppressionReason;
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::suppressions::{self, SuppressError};

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(route::SUPPRESSIONS, get(list).post(add))
        .route(route::SUPPRESSION, delete(remove))
        .route(route::SUPPRESSIONS_IMPORT, post(import))
}

impl From<SuppressError> for ApiError {
    fn from(e: SuppressError) -> Self {
        match e {
            SuppressError::InvalidAddress { .. } | SuppressError::Format(_) => {
                let mut err = ApiError::new(ErrorCode::InvalidAddress, &e);
                err.body.field = Some(Field::Address);
                err
            }
            SuppressError::Store(s) => s.into(),
        }
    }
}

/// The query as sent: the reason is parsed here, so a bad one is a typed error.
#[derive(Deserialize)]
struct RawQuery {
    search: Option<String>,
    reason: Option<String>,
    limit: Option<usize>,
}

fn reason(raw: Option<&str>) -> Result<Option<SuppressionReason>, ApiError> {
    raw.filter(|r| !r.is_empty())
        .map(|r| {
            r.parse().map_err(|e| {
                let mut err = ApiError::new(ErrorCode::InvalidFilter, e);
                err.body.field = Some(Field::Reason);
                err
            })
        })
        .transpose()
}

async fn list(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<RawQuery>,
) -> Result<Json<SuppressionList>, ApiError> {
    let q = SuppressionQuery {
        search: q.search.filter(|s| !s.is_empty()),
        reason: reason(q.reason.as_deref())?,
        limit: q.limit.unwrap_or(SuppressionQuery::DEFAULT_LIMIT),
    };
    Ok(Json(suppressions::list(&state.topo, &q).await?))
}

async fn add(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<SuppressReport>, ApiError> {
    let req: SuppressRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::new(ErrorCode::BadJson, e))?;
    let reason = req.reason.unwrap_or(SuppressionReason::Manual);
    Ok(Json(
        suppressions::add(&state.topo, &req.addresses, reason).await?,
    ))
}

async fn remove(
    State(state): State<Arc<ApiState>>,
    Path(address): Path<String>,
) -> Result<StatusCode, ApiError> {
    if suppressions::remove(&state.topo, &address).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("{address} is not suppressed")))
    }
}

#[derive(Deserialize)]
struct ImportQuery {
    reason: Option<String>,
}

/// The body is the CSV itself (`email` column, optional `reason` column) or bare addresses.
async fn import(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<ImportQuery>,
    body: Bytes,
) -> Result<Json<SuppressReport>, ApiError> {
    let default = reason(q.reason.as_deref())?.unwrap_or(SuppressionReason::Manual);
    let report = suppressions::import(&state.topo, std::io::Cursor::new(body), default).await?;
    Ok(Json(report))
}
