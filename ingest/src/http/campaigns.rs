//! `/v1/campaigns`: submit a campaign (JSON or multipart with a CSV file), preview it, read
//! one campaign or all of them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jetmail_common::api::{
    route, CampaignList, CampaignRequest, CampaignView, ErrorCode, Field, Preview,
    IDEMPOTENCY_KEY_HEADER, IDEMPOTENT_REPLAYED_HEADER,
};
use jetmail_common::wire::{CampaignSchedule, CampaignSpec};

use super::{ApiError, ApiState};
use crate::feed::{rows_from_json, rows_from_reader, Rows};
use crate::publish::{self, Submission};
use crate::recipients::Row;
use crate::schedule::{self, ScheduleInput};
use crate::view;

/// Largest JSON campaign: a JSON body is parsed whole, so its size bounds the memory a
/// submit takes (several times this); a larger list goes as multipart CSV, which is streamed.
pub const MAX_JSON_CAMPAIGN: usize = 8 * 1024 * 1024;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(route::CAMPAIGNS, post(create_campaign).get(list_campaigns))
        .route(route::CAMPAIGN, get(get_campaign))
        .route(route::PREVIEW, post(preview))
}

/// A campaign as read from a request, before any recipient is classified.
pub(super) struct CampaignParts {
    pub(super) spec: CampaignSpec,
    campaign_id: Option<String>,
    pub(super) rows: Rows,
    schedule: CampaignSchedule,
    /// SHA-256 of the whole request, to tell a replayed request from another one.
    fingerprint: String,
}

async fn create_campaign(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let key = headers
        .get(IDEMPOTENCY_KEY_HEADER)
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "Idempotency-Key is not text"))?;
    let parts = read_campaign(&state, &headers, req).await?;
    let report = publish::submit(
        &state.topo,
        Submission {
            campaign_id: parts.campaign_id,
            spec: parts.spec,
            fingerprint: key.as_ref().map(|_| parts.fingerprint),
            idempotency_key: key,
            schedule: parts.schedule,
            compliance: crate::citizen::Compliance::campaign(state.unsubscribe.clone()),
        },
        parts.rows,
        &mut (),
    )
    .await?;
    let replayed = report.replayed;
    let mut resp = (StatusCode::ACCEPTED, Json(report)).into_response();
    if replayed {
        resp.headers_mut()
            .insert(IDEMPOTENT_REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// Reads a campaign from a JSON or multipart request and checks its spec; the recipients come
/// as a channel of classified rows.
pub(super) async fn read_campaign(
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
            .map_err(|e| ApiError::body(e.status(), e.body_text()))?;
        let parts = read_multipart(mp).await?;
        allowed_from(state, &parts.spec)?;
        return Ok(parts);
    }
    // The smaller of this and `--max-body` applies; either is a 413 from axum's extractor.
    let req =
        req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, MAX_JSON_CAMPAIGN)));
    let body = Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() != StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::body(e.status(), e.body_text());
        }
        let mut err = ApiError::body(
            e.status(),
            format!(
                "a JSON campaign is at most {MAX_JSON_CAMPAIGN} bytes (and --max-body): send a \
                 larger recipient list as multipart CSV, which is streamed"
            ),
        );
        err.body.field = Some(Field::Recipients);
        err
    })?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::new(ErrorCode::BadJson, e))?;
    let r = campaign_request(value)?;
    let spec = CampaignSpec {
        from: r.from,
        subject: r.subject,
        text: r.text,
        html: r.html.filter(|h| !h.trim().is_empty()),
    };
    // Refuse a broken campaign before a single row is classified.
    publish::validate_spec(&spec)?;
    allowed_from(state, &spec)?;
    let schedule = checked_schedule(ScheduleInput {
        rate: r.rate.as_deref(),
        send_at: r.send_at.as_deref(),
        deadline: r.deadline.as_deref(),
    })?;
    Ok(CampaignParts {
        spec,
        campaign_id: r.campaign_id,
        schedule,
        rows: rows_from_json(r.recipients),
        fingerprint: publish::fingerprint(&[&body]),
    })
}

/// `--allowed-from-domains`, checked once the spec is known to be valid.
fn allowed_from(state: &ApiState, spec: &CampaignSpec) -> Result<(), ApiError> {
    match &state.allowed_from {
        Some(allowed) => Ok(allowed.check(&spec.from)?),
        None => Ok(()),
    }
}

fn checked_schedule(input: ScheduleInput<'_>) -> Result<CampaignSchedule, ApiError> {
    schedule::resolve(input, jetmail_common::now_ms())
        .map_err(|e| publish::SubmitError::from(e).into())
}

/// The JSON request, with a missing required field named in the answer's `field` (serde says
/// which only in its message, which is not for parsing).
fn campaign_request(value: serde_json::Value) -> Result<CampaignRequest, ApiError> {
    if let Some(obj) = value.as_object() {
        for field in [Field::From, Field::Subject, Field::Recipients] {
            if !obj.contains_key(field.as_str()) {
                return Err(ApiError::invalid(
                    Some(field),
                    format!("missing field `{field}`"),
                ));
            }
        }
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid(None, e))
}

async fn read_multipart(mut mp: Multipart) -> Result<CampaignParts, ApiError> {
    // Every part's name and bytes, in order: what the fingerprint is taken over.
    let mut seen: Vec<Bytes> = Vec::new();
    let mut from = None;
    let mut subject = None;
    let mut text = String::new();
    let mut html = None;
    let mut campaign_id = None;
    let mut recipients: Option<Bytes> = None;
    let (mut rate, mut send_at, mut deadline) = (None, None, None);
    while let Some(part) = mp
        .next_field()
        .await
        .map_err(|e| ApiError::body(e.status(), e.body_text()))?
    {
        let name = part.name().unwrap_or_default().to_string();
        let data = part
            .bytes()
            .await
            .map_err(|e| ApiError::body(e.status(), e.body_text()))?;
        seen.push(Bytes::from(name.clone()));
        seen.push(data.clone());
        // Parts this API does not know are ignored, as unknown JSON fields are.
        let Ok(field) = name.parse::<Field>() else {
            continue;
        };
        let as_text = || {
            String::from_utf8(data.to_vec()).map_err(|_| {
                ApiError::new(ErrorCode::BadRequest, format!("field {name} is not UTF-8"))
            })
        };
        match field {
            Field::From => from = Some(as_text()?),
            Field::Subject => subject = Some(as_text()?),
            Field::Text => text = as_text()?,
            Field::Html => html = Some(as_text()?).filter(|h: &String| !h.trim().is_empty()),
            Field::CampaignId => campaign_id = Some(as_text()?).filter(|c: &String| !c.is_empty()),
            Field::Recipients => recipients = Some(data),
            Field::Rate => rate = Some(as_text()?),
            Field::SendAt => send_at = Some(as_text()?),
            Field::Deadline => deadline = Some(as_text()?),
            // A limit's parts are not a campaign's.
            Field::Domains
            | Field::Concurrency
            | Field::Cooldown
            | Field::Scope
            | Field::Address
            | Field::Reason
            | Field::To
            | Field::Other => {}
        }
    }
    let missing = |f: Field| ApiError::invalid(Some(f), format!("missing field `{f}`"));
    let spec = CampaignSpec {
        from: from.ok_or_else(|| missing(Field::From))?,
        subject: subject.ok_or_else(|| missing(Field::Subject))?,
        text,
        html,
    };
    publish::validate_spec(&spec)?;
    let schedule = checked_schedule(ScheduleInput {
        rate: rate.as_deref(),
        send_at: send_at.as_deref(),
        deadline: deadline.as_deref(),
    })?;
    let recipients = recipients.ok_or_else(|| missing(Field::Recipients))?;
    let (rows, _) = rows_from_reader(std::io::Cursor::new(recipients))
        .map_err(|e| ApiError::invalid(Some(Field::Recipients), e))?;
    let refs: Vec<&[u8]> = seen.iter().map(|b| b.as_ref()).collect();
    Ok(CampaignParts {
        spec,
        campaign_id,
        schedule,
        rows,
        fingerprint: publish::fingerprint(&refs),
    })
}

async fn get_campaign(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    view::campaign_view(&state.topo, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no campaign {id}")))
}

async fn list_campaigns(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<CampaignList>, ApiError> {
    let campaigns = view::campaign_views(&state.topo).await?;
    Ok(Json(CampaignList { campaigns }))
}

/// Renders a campaign for its first valid recipient without publishing anything.
async fn preview(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    req: Request,
) -> Result<Json<Preview>, ApiError> {
    let CampaignParts { spec, mut rows, .. } = read_campaign(&state, &headers, req).await?;
    let mut rejected = crate::rejected::RejectedSample::default();
    let mut first = None;
    while let Some(row) = rows.next().await {
        match row {
            Row::Accepted(a) if first.is_none() => first = Some(a),
            Row::Rejected(r) => rejected.push(r),
            _ => {}
        }
    }
    let first =
        first.ok_or_else(|| ApiError::invalid(Some(Field::Recipients), "no valid recipients"))?;
    let rendered = crate::bounded::render_once(&spec, &first.email, &first.vars).await?;
    let rejected = rejected.into_rows();
    Ok(Json(Preview {
        recipient: first.email,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        rejected,
    }))
}
