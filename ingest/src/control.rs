//! Campaign control: pause, resume, cancel. A status change is one compare-and-set write of
//! the campaign record; senders watch the records and act on it within a second.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{CampaignRecord, CampaignStatus};

use crate::http::{ApiError, ApiState};
use crate::publish::update_record;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pause,
    Resume,
    Cancel,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("campaign {0} not found")]
    NotFound(String),
    #[error("campaign {id} is {status}: cannot {action}")]
    Invalid {
        id: String,
        status: &'static str,
        action: &'static str,
    },
    #[error(transparent)]
    Store(#[from] jetmail_common::store::StoreError),
}

/// Applies `action` to campaign `id` and returns the updated record.
pub async fn apply(
    topo: &Topology,
    id: &str,
    action: Action,
) -> Result<CampaignRecord, ControlError> {
    topology::validate_campaign_id(id).map_err(|_| ControlError::NotFound(id.to_string()))?;
    let mut refused: Option<ControlError> = None;
    let res = update_record(topo, id, |rec| {
        use CampaignStatus::*;
        let name = match action {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
        };
        let next = match (action, rec.status) {
            (Action::Pause, Running | Publishing | Paused) => Some(Paused),
            (Action::Resume, Paused | Running | Publishing) => Some(if rec.publish.complete {
                Running
            } else {
                Publishing
            }),
            (Action::Cancel, Running | Publishing | Paused | Cancelled) => Some(Cancelled),
            _ => None,
        };
        match next {
            Some(s) => {
                rec.status = s;
                refused = None;
            }
            None => {
                refused = Some(ControlError::Invalid {
                    id: rec.id.clone(),
                    status: rec.status.as_str(),
                    action: name,
                })
            }
        }
    })
    .await;
    if let Some(e) = refused {
        return Err(e);
    }
    res.map_err(|e| match e {
        jetmail_common::store::StoreError::NotFound(_) => ControlError::NotFound(id.to_string()),
        other => ControlError::Store(other),
    })
}

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/v1/campaigns/{id}/{action}", post(control))
}

async fn control(
    State(state): State<Arc<ApiState>>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<CampaignRecord>, ApiError> {
    let action = match action.as_str() {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "cancel" => Action::Cancel,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no action {other}"),
            ))
        }
    };
    match apply(&state.topo, &id, action).await {
        Ok(rec) => Ok(Json(rec)),
        Err(e @ ControlError::NotFound(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            e.to_string(),
        )),
        Err(e @ ControlError::Invalid { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            e.to_string(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker",
            e.to_string(),
        )),
    }
}
