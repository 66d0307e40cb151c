//! The HTTP API the web form (and any client) uses: submit a campaign, read its state.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{CampaignProgress, CampaignRecord, CampaignSpec};
use serde::Deserialize;
use serde_json::json;

use crate::dead::{self, BulkReport, DeadError, DeadFilter};
use crate::feed::{rows_from_json, rows_from_reader, JsonRecipient};
use crate::publish::{self, Submission, SubmitError};

/// Default request body limit: bodies above it get 413.
pub const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub topo: Topology,
}

/// An error answer: `{error, detail}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub detail: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error,
            detail: detail.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({"error": self.error, "detail": self.detail})),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        let detail = e.to_string();
        match e {
            SubmitError::Invalid(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_campaign", detail)
            }
            SubmitError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", detail),
            SubmitError::OutboxFull { .. } => ApiError {
                retry_after: Some(30),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "outbox_full", detail)
            },
            SubmitError::Broker { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "broker", detail)
            }
        }
    }
}

/// The routes of `jetmail-ingest serve`, with a request body limit of `max_body` bytes.
pub fn router(state: ApiState, max_body: usize) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/campaigns", post(create_campaign).get(list_campaigns))
        .route("/v1/campaigns/{id}", get(get_campaign))
        .route("/v1/campaigns/preview", post(preview))
        .route("/v1/dead", get(dead_list).delete(dead_purge))
        .route("/v1/dead/replay", post(dead_replay))
        .merge(crate::control::routes())
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(Arc::new(state))
}

#[derive(Debug, Deserialize)]
struct CampaignRequest {
    from: String,
    subject: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    html: Option<String>,
    recipients: Vec<JsonRecipient>,
    #[serde(default)]
    campaign_id: Option<String>,
}

fn body_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "too_large", text)
    } else {
        ApiError::new(status, "bad_request", text)
    }
}

async fn create_campaign(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Idempotency-Key is not text",
            )
        })?;
    let (spec, campaign_id, rows, fingerprint) = read_campaign(&state, &headers, req).await?;
    let report = publish::submit(
        &state.topo,
        Submission {
            campaign_id,
            spec,
            fingerprint: key.as_ref().map(|_| fingerprint),
            idempotency_key: key,
        },
        rows,
        &mut (),
    )
    .await?;
    let replayed = report.replayed;
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(json!({
            "id": report.id,
            "published": report.published,
            "rejected": report.rejected,
            "rejected_count": report.rejected_count,
            "duplicates": report.duplicates,
        })),
    )
        .into_response();
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// Reads a campaign from a JSON or multipart request and checks its spec; the recipients come
/// as a channel of classified rows, with a fingerprint of the whole request.
async fn read_campaign(
    state: &Arc<ApiState>,
    headers: &HeaderMap,
    req: Request,
) -> Result<CampaignParts, ApiError> {
    let is_multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if is_multipart {
        let mp = Multipart::from_request(req, state)
            .await
            .map_err(|e| body_error(e.status(), e.body_text()))?;
        return read_multipart(mp).await;
    }
    let body = Bytes::from_request(req, state)
        .await
        .map_err(|e| body_error(e.status(), e.body_text()))?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?;
    let r: CampaignRequest = serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_campaign",
            e.to_string(),
        )
    })?;
    let spec = CampaignSpec {
        from: r.from,
        subject: r.subject,
        text: r.text,
        html: r.html.filter(|h| !h.trim().is_empty()),
    };
    // Refuse a broken campaign before a single row is classified.
    publish::validate_spec(&spec)?;
    let fingerprint = publish::fingerprint(&[&body]);
    Ok((
        spec,
        r.campaign_id,
        rows_from_json(r.recipients),
        fingerprint,
    ))
}

type CampaignParts = (
    CampaignSpec,
    Option<String>,
    tokio::sync::mpsc::Receiver<crate::recipients::Row>,
    String,
);

async fn read_multipart(mut mp: Multipart) -> Result<CampaignParts, ApiError> {
    let mut parts: Vec<Bytes> = Vec::new();
    let mut from = None;
    let mut subject = None;
    let mut text = String::new();
    let mut html = None;
    let mut campaign_id = None;
    let mut recipients: Option<Bytes> = None;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(body_error(e.status(), e.body_text())),
        };
        let name = field.name().unwrap_or_default().to_string();
        let data = field
            .bytes()
            .await
            .map_err(|e| body_error(e.status(), e.body_text()))?;
        parts.push(Bytes::from(name.clone()));
        parts.push(data.clone());
        let as_text = || {
            String::from_utf8(data.to_vec()).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("field {name} is not UTF-8"),
                )
            })
        };
        match name.as_str() {
            "from" => from = Some(as_text()?),
            "subject" => subject = Some(as_text()?),
            "text" => text = as_text()?,
            "html" => html = Some(as_text()?).filter(|h: &String| !h.trim().is_empty()),
            "campaign_id" => campaign_id = Some(as_text()?).filter(|c: &String| !c.is_empty()),
            "recipients" => recipients = Some(data),
            _ => {}
        }
    }
    let missing = |f: &str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_campaign",
            format!("missing field `{f}`"),
        )
    };
    let spec = CampaignSpec {
        from: from.ok_or_else(|| missing("from"))?,
        subject: subject.ok_or_else(|| missing("subject"))?,
        text,
        html,
    };
    publish::validate_spec(&spec)?;
    let recipients = recipients.ok_or_else(|| missing("recipients"))?;
    let (rows, _) = rows_from_reader(std::io::Cursor::new(recipients)).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_campaign",
            format!("recipients: {e}"),
        )
    })?;
    let refs: Vec<&[u8]> = parts.iter().map(|b| b.as_ref()).collect();
    Ok((spec, campaign_id, rows, publish::fingerprint(&refs)))
}

/// A campaign as the API shows it.
#[derive(Debug, serde::Serialize)]
pub struct CampaignView {
    #[serde(flatten)]
    pub record: CampaignRecord,
    pub progress: CampaignProgress,
    /// Recipients still in MAIL_OUTBOX, by the broker's count.
    pub pending: u64,
}

/// Reads a campaign, its progress and its pending count.
pub async fn campaign_view(topo: &Topology, id: &str) -> Result<Option<CampaignView>, String> {
    let Some((record, _)) = publish::load_record(topo, id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let progress = jetmail_common::records::load_progress(topo, id)
        .await
        .unwrap_or_default();
    let pending = pending_count(topo, id).await.unwrap_or(0);
    Ok(Some(CampaignView {
        record,
        progress,
        pending,
    }))
}

/// Messages of one campaign still in MAIL_OUTBOX: the broker answers per subject.
pub async fn pending_count(topo: &Topology, id: &str) -> Result<u64, String> {
    use futures::TryStreamExt;
    let stream = topo.outbox.clone();
    let subjects = stream
        .info_with_subjects(topology::outbox_campaign_filter(id))
        .await
        .map_err(|e| e.to_string())?;
    let counts: Vec<(String, usize)> = subjects.try_collect().await.map_err(|e| e.to_string())?;
    Ok(counts.into_iter().map(|(_, n)| n as u64).sum())
}

async fn get_campaign(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    topology::validate_campaign_id(&id)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()))?;
    match campaign_view(&state.topo, &id).await {
        Ok(Some(v)) => Ok(Json(v)),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no campaign {id}"),
        )),
        Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "broker", e)),
    }
}

async fn list_campaigns(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use futures::TryStreamExt;
    let keys: Vec<String> = state
        .topo
        .campaigns
        .keys()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "broker", e.to_string()))?
        .try_collect()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "broker", e.to_string()))?;
    let mut out = Vec::new();
    for k in keys.iter().filter(|k| !k.contains('.')) {
        if let Ok(Some(v)) = campaign_view(&state.topo, k).await {
            out.push(v);
        }
    }
    out.sort_by_key(|v| std::cmp::Reverse(v.record.created_ms));
    Ok(Json(json!({ "campaigns": out })))
}

#[derive(Debug, Deserialize)]
struct DeadQuery {
    campaign: Option<String>,
    reason: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

fn dead_error(e: DeadError) -> ApiError {
    match e {
        DeadError::Filter(d) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_filter", d)
        }
        DeadError::Broker(d) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "broker", d),
    }
}

async fn dead_list(
    State(state): State<Arc<ApiState>>,
    axum::extract::Query(q): axum::extract::Query<DeadQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let filter = DeadFilter {
        campaign: q.campaign.filter(|c| !c.is_empty()),
        reason: q.reason.filter(|r| !r.is_empty()),
        seqs: None,
    };
    let (entries, total) = dead::list(&state.topo, &filter, q.limit)
        .await
        .map_err(dead_error)?;
    Ok(Json(json!({ "dead": entries, "total": total })))
}

fn parse_filter(body: &Bytes) -> Result<DeadFilter, ApiError> {
    if body.is_empty() {
        return Ok(DeadFilter::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))
}

async fn dead_replay(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<BulkReport>, ApiError> {
    let filter = parse_filter(&body)?;
    dead::replay(&state.topo, &filter)
        .await
        .map(Json)
        .map_err(dead_error)
}

async fn dead_purge(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<BulkReport>, ApiError> {
    let filter = parse_filter(&body)?;
    dead::purge(&state.topo, &filter)
        .await
        .map(Json)
        .map_err(dead_error)
}

/// Renders a campaign for its first valid recipient without publishing anything.
async fn preview(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    req: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (spec, _, mut rows, _) = read_campaign(&state, &headers, req).await?;
    let mut rejected = Vec::new();
    let mut first = None;
    while let Some(row) = rows.recv().await {
        match row {
            crate::recipients::Row::Accepted(a) if first.is_none() => first = Some(a),
            crate::recipients::Row::Rejected(r) if rejected.len() < publish::REJECTED_SAMPLE => {
                rejected.push(r)
            }
            _ => {}
        }
    }
    let Some(first) = first else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_campaign",
            "no valid recipients",
        ));
    };
    let t = jetmail_common::template::CampaignTemplates::compile(&spec).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_campaign",
            e.to_string(),
        )
    })?;
    let r = t.render(&first.email, &first.vars).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_campaign",
            e.to_string(),
        )
    })?;
    Ok(Json(json!({
        "recipient": first.email,
        "subject": r.subject,
        "text": r.text,
        "html": r.html,
        "rejected": rejected,
    })))
}
