//! Dead letters: filter by campaign and reason, read each one's attempts and SMTP replies,
//! replay or discard one, a selection, or every match. Listing, replaying and discarding are
//! ingest's; this page only asks.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jetmail_common::api::{self, DeadFilter, DeadQuery, ErrorCode};
use jetmail_common::wire::OutboxMessage;
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::auth::{self, CurrentSession, Flash};
use crate::ingest::IngestError;
use crate::render::format_utc;
use crate::AppState;

/// Dead letters listed when the page does not say.
pub const DEFAULT_LIMIT: usize = DeadQuery::DEFAULT_LIMIT;
pub const MAX_LIMIT: usize = 1000;

/// The page's own query: empty fields are no filter.
#[derive(Debug, Default, Deserialize)]
pub struct DeadPageQuery {
    #[serde(default)]
    campaign: String,
    #[serde(default)]
    reason: String,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct AttemptView {
    at: String,
    sender: String,
    relay: String,
    code: Option<u16>,
    error: String,
}

#[derive(Debug, Serialize)]
struct DeadView {
    stream_seq: u64,
    campaign: String,
    seq: Option<u64>,
    email: String,
    outcome: &'static str,
    reason: String,
    at: String,
    attempts: Vec<AttemptView>,
}

fn query_string(campaign: &str, reason: &str) -> String {
    let mut q = Vec::new();
    if !campaign.is_empty() {
        q.push(format!("campaign={}", api::path::encode(campaign)));
    }
    if !reason.is_empty() {
        q.push(format!("reason={}", api::path::encode(reason)));
    }
    if q.is_empty() {
        "/dead".into()
    } else {
        format!("/dead?{}", q.join("&"))
    }
}

fn non_empty(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

/// `GET /dead?campaign=…&reason=…`.
pub async fn page(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    Query(q): Query<DeadPageQuery>,
) -> Response {
    let campaign = q.campaign.trim().to_string();
    let reason = q.reason.trim().to_string();
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let query = DeadQuery {
        campaign: non_empty(&campaign).map(str::to_string),
        reason: non_empty(&reason).map(str::to_string),
        limit,
    };
    let (entries, total, error, status) = match app.ingest.dead_list(&query).await {
        Ok(list) => {
            let views: Vec<DeadView> = list
                .dead
                .into_iter()
                .map(|e| {
                    let l = e.letter;
                    // The recipient is inside the original message, when it can be read.
                    let email = serde_json::from_str::<OutboxMessage>(&l.original)
                        .map(|m| m.email)
                        .unwrap_or_default();
                    DeadView {
                        stream_seq: e.stream_seq,
                        campaign: l.campaign,
                        seq: l.seq,
                        email,
                        outcome: l.outcome.as_str(),
                        reason: l.reason,
                        at: format_utc(l.at_ms),
                        attempts: l
                            .attempts
                            .into_iter()
                            .map(|a| AttemptView {
                                at: format_utc(a.at_ms),
                                sender: a.sender,
                                relay: a.relay,
                                code: a.code,
                                error: a.error,
                            })
                            .collect(),
                    }
                })
                .collect();
            (views, list.total, None, StatusCode::OK)
        }
        Err(IngestError::Refused { body, .. })
            if matches!(body.error, ErrorCode::InvalidFilter | ErrorCode::BadRequest) =>
        {
            (
                Vec::new(),
                0,
                Some(body.detail),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        Err(e) => (Vec::new(), 0, Some(e.to_string()), StatusCode::BAD_GATEWAY),
    };
    let campaigns: Vec<String> = app.hub.campaigns().into_iter().map(|c| c.id).collect();
    let body = app.templates.page(
        &app,
        &session,
        None,
        "dead.html",
        "dead",
        context! {
            entries => entries,
            total => total,
            campaign => campaign,
            reason => reason,
            limit => limit,
            error => error,
            campaigns => campaigns,
        },
    );
    (status, body).into_response()
}

/// `POST /dead`: `replay_one`/`discard_one` = a sequence, or `op` = `replay_selected`,
/// `discard_selected` (with `seq` checkboxes), `replay_all`, `discard_all` (with the filter).
pub async fn act(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
    };
    if !auth::csrf_ok(&session, get(auth::CSRF_FIELD).as_deref()) {
        return auth::csrf_refusal(&app, &session);
    }
    let campaign = get("campaign").unwrap_or_default();
    let reason = get("reason").unwrap_or_default();
    let back = query_string(&campaign, &reason);
    let selected: Vec<u64> = fields
        .iter()
        .filter(|(k, _)| k == "seq")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    let (replay, filter) = if let Some(seq) = get("replay_one").and_then(|s| s.parse().ok()) {
        (true, Some(seqs_filter(vec![seq])))
    } else if let Some(seq) = get("discard_one").and_then(|s| s.parse().ok()) {
        (false, Some(seqs_filter(vec![seq])))
    } else {
        let all = DeadFilter {
            campaign: non_empty(&campaign).map(str::to_string),
            reason: non_empty(&reason).map(str::to_string),
            seqs: None,
        };
        match get("op").as_deref() {
            Some("replay_selected") => (true, Some(seqs_filter(selected))),
            Some("discard_selected") => (false, Some(seqs_filter(selected))),
            Some("replay_all") => (true, Some(all)),
            Some("discard_all") => (false, Some(all)),
            _ => (true, None),
        }
    };
    let Some(filter) = filter else {
        app.sessions
            .set_flash(&session.id, Flash::error("Unknown action."));
        return Redirect::to(&back).into_response();
    };
    if filter.seqs.as_ref().is_some_and(|s| s.is_empty()) {
        app.sessions.set_flash(
            &session.id,
            Flash::error("Select at least one dead letter first."),
        );
        return Redirect::to(&back).into_response();
    }
    let result = if replay {
        app.ingest.dead_replay(&filter).await
    } else {
        app.ingest.dead_discard(&filter).await
    };
    let verb = if replay { "Replayed" } else { "Discarded" };
    let flash = match result {
        Ok(report) => {
            tracing::info!(
                done = report.done,
                errors = report.errors.len(),
                replay,
                "dead letters handled"
            );
            let mut f = Flash::ok(format!(
                "{verb} {} dead letter{}.",
                report.done,
                if report.done == 1 { "" } else { "s" }
            ));
            if !report.errors.is_empty() {
                f.kind = "error";
                f.lines = report.errors;
            }
            f
        }
        Err(IngestError::Refused { body, .. }) => Flash::error(body.detail),
        Err(e) => Flash::error(e.to_string()),
    };
    app.sessions.set_flash(&session.id, flash);
    Redirect::to(&back).into_response()
}

fn seqs_filter(seqs: Vec<u64>) -> DeadFilter {
    DeadFilter {
        campaign: None,
        reason: None,
        seqs: Some(seqs),
    }
}
