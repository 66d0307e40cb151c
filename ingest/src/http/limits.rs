//! `/v1/limits`: list the sending limits with their effective rates, set one, remove one.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use jetmail_common::api::{route, ErrorCode, Field, LimitList, LimitRequest, LimitView};
use jetmail_common::limits::Scope;

use super::{ApiError, ApiState};
use crate::limits::{self, LimitsError};

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route(route::LIMITS, get(list_limits)).route(
        route::LIMIT,
        axum::routing::put(put_limit).delete(delete_limit),
    )
}

async fn list_limits(State(state): State<Arc<ApiState>>) -> Result<Json<LimitList>, ApiError> {
    let limits = limits::list(&state.topo).await?;
    Ok(Json(LimitList { limits }))
}

/// Sets the limit of `scope`: the body must describe that scope's limit.
async fn put_limit(
    State(state): State<Arc<ApiState>>,
    Path(scope): Path<String>,
    body: Bytes,
) -> Result<Json<LimitView>, ApiError> {
    let req = limit_request(&body)?;
    let spec = limits::spec(&req)?;
    if Scope::parse(&scope).ok().as_ref() != Some(&spec.scope) {
        return Err(LimitsError::ScopeMismatch {
            path: scope,
            body: spec.scope,
        }
        .into());
    }
    Ok(Json(limits::set(&state.topo, &spec).await?))
}

async fn delete_limit(
    State(state): State<Arc<ApiState>>,
    Path(scope): Path<String>,
) -> Result<StatusCode, ApiError> {
    let scope =
        Scope::parse(&scope).map_err(|_| ApiError::not_found(format!("no limit {scope}")))?;
    limits::remove(&state.topo, &scope).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The JSON body, a part of the wrong type named in the answer's `field` (serde says which
/// only in its message, which is not for parsing).
fn limit_request(body: &[u8]) -> Result<LimitRequest, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::new(ErrorCode::BadJson, e))?;
    let invalid = |field: Field, detail: &str| {
        let mut e = ApiError::new(ErrorCode::InvalidLimit, detail);
        e.body.field = Some(field);
        e
    };
    let Some(obj) = value.as_object() else {
        return Err(ApiError::new(
            ErrorCode::InvalidLimit,
            "expected a JSON object",
        ));
    };
    if !obj.get(Field::Rate.as_str()).is_some_and(|v| v.is_string()) {
        return Err(invalid(Field::Rate, "`rate` (N/s, N/m or N/h) is required"));
    }
    let domains_ok = obj.get(Field::Domains.as_str()).is_none_or(|v| {
        v.as_array()
            .is_some_and(|a| a.iter().all(|d| d.is_string()))
    });
    if !domains_ok {
        return Err(invalid(
            Field::Domains,
            "`domains` is a list of domain names",
        ));
    }
    let concurrency_ok = obj
        .get(Field::Concurrency.as_str())
        .is_none_or(|v| v.is_null() || v.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)));
    if !concurrency_ok {
        return Err(invalid(
            Field::Concurrency,
            "`concurrency` is a whole number of at least 1",
        ));
    }
    let cooldown_ok = obj
        .get(Field::Cooldown.as_str())
        .is_none_or(|v| v.is_null() || v.is_string());
    if !cooldown_ok {
        return Err(invalid(
            Field::Cooldown,
            "`cooldown` is a duration such as 60s",
        ));
    }
    serde_json::from_value(value).map_err(|e| ApiError::new(ErrorCode::InvalidLimit, e))
}
