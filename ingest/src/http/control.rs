//! `POST /v1/campaigns/{id}/{action}`: pause, resume or cancel a campaign.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use jetmail_common::api::{route, ControlAction};
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
) -> Result<Json<CampaignRecord>, ApiError> {
    let action: ControlAction = action.parse().map_err(ApiError::not_found)?;
    Ok(Json(control::apply(&state.topo, &id, action).await?))
}
