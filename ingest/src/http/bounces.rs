//! `POST /v1/bounces`: one raw bounce (DSN) or complaint (ARF) message as the body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use jetmail_common::api::{route, BounceReport, ErrorCode};

use super::{ApiError, ApiState};
use crate::bounces::{self, BounceError};

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route(route::BOUNCES, post(import))
}

impl From<BounceError> for ApiError {
    fn from(e: BounceError) -> Self {
        match e {
            BounceError::Report(_) | BounceError::BadRecipient { .. } => {
                ApiError::new(ErrorCode::InvalidReport, e)
            }
            BounceError::Store(s) => s.into(),
        }
    }
}

async fn import(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<BounceReport>, ApiError> {
    Ok(Json(bounces::apply(&state.topo, &body).await?))
}
