//! `POST /v1/campaigns/{id}/{action}`: pause, resume, cancel or reschedule a campaign. Only
//! `reschedule` reads a body ([`RescheduleRequest`]); the others ignore theirs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use jetmail_common::api::{route, ControlAction, ErrorCode, Field, RescheduleRequest};
use jetmail_common::wire::CampaignRecord;

use super::{ApiError, ApiState};
use crate::control;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route(route::CAMPAIGN_CONTROL, post(control_campaign))
}

/// Answers the updated record. An action that is not one is a route that does not exist.
async fn control_campaign(
    State(state): State<Arc<ApiState>>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<CampaignRecord>, ApiError> {
    let action: ControlAction = action.parse().map_err(ApiError::not_found)?;
    let send_at = match action {
        ControlAction::Reschedule => Some(reschedule_request(&body)?.send_at),
        _ => None,
    };
    Ok(Json(
        control::apply(&state.topo, &id, action, send_at.as_deref()).await?,
    ))
}

fn reschedule_request(body: &[u8]) -> Result<RescheduleRequest, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::new(ErrorCode::BadJson, e))?;
    // A missing or non-text send_at is about that field, whatever serde's wording.
    if !value
        .get(Field::SendAt.as_str())
        .is_some_and(|v| v.is_string())
    {
        return Err(ApiError::invalid(
            Some(Field::SendAt),
            "`send_at` (RFC 3339 or +2h) is required",
        ));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid(None, e))
}
