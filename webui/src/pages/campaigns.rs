//! The campaign list and a campaign's page, with pause, resume, cancel and (before it
//! starts) reschedule.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jetmail_common::api::{self, ControlAction};
use jetmail_common::records;
use jetmail_common::topology;
use minijinja::context;

use crate::auth::{self, CurrentSession, Flash};
use crate::ingest::IngestError;
use crate::pages::error_page;
use crate::AppState;

/// A page waits this long at most for fresh outbox counts; the live stream corrects them.
const PENDING_WAIT: Duration = Duration::from_secs(2);

async fn refresh_pending(app: &AppState) {
    let _ = tokio::time::timeout(PENDING_WAIT, app.hub.refresh_pending()).await;
}

/// `GET /campaigns`: every campaign, newest first, live.
pub async fn list(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
) -> Response {
    refresh_pending(&app).await;
    let mut campaigns = app.hub.campaigns();
    let total = campaigns.len();
    campaigns.truncate(crate::live::LIST_LIMIT);
    app.templates
        .page(
            &app,
            &session,
            None,
            "campaigns.html",
            "campaigns",
            context! { campaigns => campaigns, total => total },
        )
        .into_response()
}

/// `GET /campaigns/{id}`: counters, throughput chart and controls, live.
pub async fn detail(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    Path(id): Path<String>,
) -> Response {
    let not_found = |app: &AppState| {
        error_page(
            app,
            &session,
            StatusCode::NOT_FOUND,
            "No such campaign",
            &format!("There is no campaign {id}."),
        )
    };
    if topology::validate_campaign_id(&id).is_err() {
        return not_found(&app);
    }
    if app.hub.campaign(&id).is_none() {
        // Just created: the watch may not have delivered it yet, the bucket has it.
        match records::load_record(&app.topo, &id).await {
            Ok(Some((record, _))) => {
                let progress = records::load_progress(&app.topo, &id)
                    .await
                    .unwrap_or_default();
                app.hub.insert_record(record, progress);
            }
            Ok(None) => return not_found(&app),
            Err(e) => {
                return error_page(
                    &app,
                    &session,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Broker unavailable",
                    &format!("Cannot read campaign {id}: {e}"),
                )
            }
        }
    }
    refresh_pending(&app).await;
    let (Some(summary), Some(record)) = (app.hub.campaign(&id), app.hub.record(&id)) else {
        return not_found(&app);
    };
    let samples = serde_json::to_string(&app.hub.samples(&id)).unwrap_or_else(|_| "[]".into());
    app.templates
        .page(
            &app,
            &session,
            None,
            "campaign.html",
            "campaigns",
            context! { c => summary, spec => record.spec, samples => samples },
        )
        .into_response()
}

/// A control button's form: the CSRF token, and the new send-at of a reschedule.
#[derive(Debug, serde::Deserialize)]
pub struct ControlForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    send_at: String,
}

/// `POST /campaigns/{id}/{pause|resume|cancel|reschedule}`, through ingest.
pub async fn control(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ControlForm>,
) -> Response {
    if !auth::csrf_ok(&session, form.csrf.as_deref()) {
        return auth::csrf_refusal(&app, &session);
    }
    let Ok(action) = action.parse::<ControlAction>() else {
        return error_page(
            &app,
            &session,
            StatusCode::NOT_FOUND,
            "No such action",
            "Campaigns can be paused, resumed, cancelled or rescheduled.",
        );
    };
    if topology::validate_campaign_id(&id).is_err() {
        return error_page(
            &app,
            &session,
            StatusCode::NOT_FOUND,
            "No such campaign",
            "That campaign id is not valid.",
        );
    }
    let done = match action {
        ControlAction::Reschedule => app.ingest.reschedule(&id, &form.send_at).await,
        _ => app.ingest.control(&id, action).await,
    };
    let flash = match done {
        Ok(()) => {
            tracing::info!(campaign = %id, action = action.as_str(), "campaign control");
            Flash::ok(match action {
                ControlAction::Pause => {
                    "Campaign paused: senders hold its messages until it resumes."
                }
                ControlAction::Resume => "Campaign resumed.",
                ControlAction::Cancel => {
                    "Campaign cancelled: its remaining recipients will not be mailed."
                }
                ControlAction::Reschedule => "Campaign rescheduled.",
            })
        }
        Err(IngestError::Refused { body, .. }) => Flash::error(body.detail),
        Err(e) => Flash::error(e.to_string()),
    };
    app.sessions.set_flash(&session.id, flash);
    Redirect::to(&format!("/campaigns/{}", api::path::encode(&id))).into_response()
}
