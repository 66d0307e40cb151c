//! The new-campaign form: from, subject, text and HTML templates, recipients as a CSV upload
//! or pasted addresses, and optionally a send-at, a deadline and a rate; "Preview" renders the
//! message for the first recipient, "Send" submits.
//! Both go to ingest, which owns validation and publishing; its answers are mapped back onto
//! the field they concern.

use std::collections::BTreeMap;

use axum::extract::{Multipart, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Extension;
use bytes::Bytes;
use jetmail_common::api::{self, ErrorCode, Field, Preview};
use jetmail_common::wire::RejectedRow;
use minijinja::context;
use serde::Serialize;

use crate::auth::{self, random_token, CurrentSession, Flash, StashedUpload};
use crate::ingest::{CampaignForm, IngestError};
use crate::pages::error_page;
use crate::AppState;

/// Rejected rows listed beside the recipients field; the count says how many more there are.
pub const REJECTED_SHOWN: usize = 50;

/// What the person typed, sent back into the form when it is shown again.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FormValues {
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub recipients_text: String,
    /// When to start, when to give up, how fast: as typed, checked by ingest.
    pub send_at: String,
    pub deadline: String,
    pub rate: String,
    /// A file uploaded earlier, kept in the session under this token.
    pub upload_token: String,
    pub upload_name: String,
    pub upload_bytes: usize,
    /// The Idempotency-Key this form submits with.
    pub submission_key: String,
}

/// Problems, by field (`from`, `subject`, `text`, `html`, `recipients`, `send_at`,
/// `deadline`, `rate`, `general`).
pub type FieldErrors = BTreeMap<&'static str, String>;

/// The form field an ingest error names, if the form has it.
fn form_field(field: Option<Field>) -> Option<&'static str> {
    match field? {
        Field::From => Some("from"),
        Field::Subject => Some("subject"),
        Field::Text => Some("text"),
        Field::Html => Some("html"),
        Field::Recipients => Some("recipients"),
        Field::Rate => Some("rate"),
        Field::SendAt => Some("send_at"),
        Field::Deadline => Some("deadline"),
        // The form has no campaign id and no limit's parts, and a field a newer ingest names
        // is not on it.
        Field::CampaignId
        | Field::Domains
        | Field::Concurrency
        | Field::Cooldown
        | Field::Scope
        | Field::Address
        | Field::Reason
        | Field::To
        | Field::Other => None,
    }
}

/// Ingest's refusal mapped onto the form by its field and code (never by its wording), with
/// the status the page is answered with.
fn errors_from_ingest(e: &IngestError) -> (StatusCode, FieldErrors) {
    let mut errors = FieldErrors::new();
    let IngestError::Refused { body, .. } = e else {
        errors.insert("general", e.to_string());
        return (StatusCode::BAD_GATEWAY, errors);
    };
    if body.error == ErrorCode::TooLarge {
        errors.insert(
            "recipients",
            format!(
                "the recipients file is larger than ingest accepts ({})",
                body.detail
            ),
        );
        return (StatusCode::PAYLOAD_TOO_LARGE, errors);
    }
    if let Some(field) = form_field(body.field) {
        errors.insert(field, body.detail.clone());
        return (StatusCode::UNPROCESSABLE_ENTITY, errors);
    }
    if matches!(
        body.error,
        ErrorCode::InvalidCampaign
            | ErrorCode::BadRequest
            | ErrorCode::BadJson
            | ErrorCode::Conflict
    ) {
        // About what was typed, but no one field of it.
        errors.insert("general", body.detail.clone());
        return (StatusCode::UNPROCESSABLE_ENTITY, errors);
    }
    // The outbox is full, the broker is away, or ingest failed: nothing the person typed.
    errors.insert(
        "general",
        format!("ingest could not take it: {}", body.detail),
    );
    (StatusCode::BAD_GATEWAY, errors)
}

fn render_form(
    app: &AppState,
    session: &CurrentSession,
    status: StatusCode,
    values: &FormValues,
    errors: &FieldErrors,
    rejected: &[RejectedRow],
    preview: Option<&Preview>,
) -> Response {
    let shown: Vec<&RejectedRow> = rejected.iter().take(REJECTED_SHOWN).collect();
    let more = rejected.len().saturating_sub(shown.len());
    let body = app.templates.page(
        app,
        session,
        None,
        "new_campaign.html",
        "new",
        context! {
            v => values,
            errors => errors,
            rejected => shown,
            rejected_more => more,
            preview => preview,
        },
    );
    (status, body).into_response()
}

/// `GET /campaigns/new`.
pub async fn form(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
) -> Response {
    let values = FormValues {
        submission_key: random_token(16),
        ..Default::default()
    };
    render_form(
        &app,
        &session,
        StatusCode::OK,
        &values,
        &FieldErrors::new(),
        &[],
        None,
    )
}

/// The multipart form, as received.
#[derive(Default)]
struct Received {
    csrf: Option<String>,
    action: String,
    values: FormValues,
    file: Option<(String, Bytes)>,
}

async fn read_form(mut mp: Multipart) -> Result<Received, (StatusCode, String)> {
    let mut r = Received::default();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err((e.status(), e.body_text())),
        };
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let data = field
            .bytes()
            .await
            .map_err(|e| (e.status(), e.body_text()))?;
        if name == "recipients_file" {
            if !data.is_empty() {
                r.file = Some((file_name.unwrap_or_else(|| "recipients.csv".into()), data));
            }
            continue;
        }
        let text = String::from_utf8(data.to_vec()).map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                format!("field {name} is not UTF-8"),
            )
        })?;
        let v = &mut r.values;
        match name.as_str() {
            auth::CSRF_FIELD => r.csrf = Some(text),
            "action" => r.action = text,
            "from" => v.from = text,
            "subject" => v.subject = text,
            "text" => v.text = text,
            "html" => v.html = text,
            "recipients_text" => v.recipients_text = text,
            "send_at" => v.send_at = text,
            "deadline" => v.deadline = text,
            "rate" => v.rate = text,
            "upload_token" => v.upload_token = text,
            "submission_key" => v.submission_key = text,
            _ => {}
        }
    }
    Ok(r)
}

/// `POST /campaigns/new`: `action=preview` or `action=send`.
pub async fn submit(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    mp: Multipart,
) -> Response {
    let mut r = match read_form(mp).await {
        Ok(r) => r,
        Err((status, text)) => {
            return error_page(&app, &session, status, "Form not readable", &text);
        }
    };
    if !auth::csrf_ok(&session, r.csrf.as_deref()) {
        return auth::csrf_refusal(&app, &session);
    }
    let values = &mut r.values;
    if values.submission_key.trim().is_empty() {
        values.submission_key = random_token(16);
    }
    let mut errors = FieldErrors::new();

    // Recipients: a new file, else the file kept from a preview, else the pasted text.
    let pasted = values.recipients_text.trim().to_string();
    let recipients: Option<Bytes> = match r.file.take() {
        Some(_) if !pasted.is_empty() => {
            errors.insert(
                "recipients",
                "upload a file or paste addresses, not both".into(),
            );
            None
        }
        Some((name, bytes)) => {
            let token = random_token(16);
            values.upload_token = token.clone();
            values.upload_name = name.clone();
            values.upload_bytes = bytes.len();
            app.sessions.stash_upload(
                &session.id,
                StashedUpload {
                    token,
                    filename: name,
                    bytes: bytes.clone(),
                },
            );
            Some(bytes)
        }
        None if !pasted.is_empty() => {
            // Pasted text replaces a file kept from before.
            app.sessions.clear_upload(&session.id);
            values.upload_token.clear();
            Some(Bytes::from(values.recipients_text.clone()))
        }
        None => match app
            .sessions
            .stashed_upload(&session.id, &values.upload_token)
            .filter(|_| !values.upload_token.is_empty())
        {
            Some(u) => {
                values.upload_name = u.filename;
                values.upload_bytes = u.bytes.len();
                Some(u.bytes)
            }
            None => {
                values.upload_token.clear();
                errors.insert(
                    "recipients",
                    "upload a CSV file or paste addresses, one a line".into(),
                );
                None
            }
        },
    };
    if values.from.trim().is_empty() {
        errors.insert("from", "who the mail is from is required".into());
    }
    if values.subject.trim().is_empty() {
        errors.insert("subject", "a subject is required".into());
    }
    if values.text.trim().is_empty() && values.html.trim().is_empty() {
        errors.insert("text", "a text or an HTML body is required".into());
    }
    let Some(recipients) = recipients.filter(|_| errors.is_empty()) else {
        return render_form(
            &app,
            &session,
            StatusCode::UNPROCESSABLE_ENTITY,
            &r.values,
            &errors,
            &[],
            None,
        );
    };
    let campaign = CampaignForm {
        from: r.values.from.trim().to_string(),
        subject: r.values.subject.clone(),
        text: r.values.text.clone(),
        html: r.values.html.clone(),
        recipients,
        rate: r.values.rate.clone(),
        send_at: r.values.send_at.clone(),
        deadline: r.values.deadline.clone(),
    };

    if r.action != "send" {
        return match app.ingest.preview(&campaign).await {
            Ok(p) => {
                app.sessions.set_preview_html(&session.id, p.html.clone());
                render_form(
                    &app,
                    &session,
                    StatusCode::OK,
                    &r.values,
                    &errors,
                    &p.rejected,
                    Some(&p),
                )
            }
            Err(e) => {
                let (status, errors) = errors_from_ingest(&e);
                render_form(&app, &session, status, &r.values, &errors, &[], None)
            }
        };
    }

    match app.ingest.submit(&campaign, &r.values.submission_key).await {
        Ok(s) => {
            app.sessions.clear_upload(&session.id);
            tracing::info!(campaign = %s.id, published = s.published, rejected = s.rejected_count, "campaign submitted");
            let mut flash = Flash::ok(format!(
                "Campaign {} submitted: {} recipients published, {} rows rejected, {} duplicates skipped.",
                s.id, s.published, s.rejected_count, s.duplicates
            ));
            flash.lines = s
                .rejected
                .iter()
                .take(REJECTED_SHOWN)
                .map(|r| format!("line {}: {} ({})", r.line, r.email, r.reason))
                .collect();
            if s.rejected_count as usize > flash.lines.len() {
                flash.lines.push(format!(
                    "… and {} more rejected rows",
                    s.rejected_count as usize - flash.lines.len()
                ));
            }
            app.sessions.set_flash(&session.id, flash);
            Redirect::to(&format!("/campaigns/{}", api::path::encode(&s.id))).into_response()
        }
        Err(e) => {
            tracing::info!(error = %e, "campaign refused");
            let (status, errors) = errors_from_ingest(&e);
            render_form(&app, &session, status, &r.values, &errors, &[], None)
        }
    }
}

/// `GET /campaigns/new/preview`: the previewed HTML body, shown in a sandboxed frame with
/// its own policy: inline styles (mail uses them), no script, nothing loaded from elsewhere.
pub async fn preview_html(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
) -> Response {
    let html = app.sessions.preview_html(&session.id).unwrap_or_default();
    let mut resp = Html(html).into_response();
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'self'",
        ),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: StatusCode, error: ErrorCode, field: Option<Field>) -> IngestError {
        IngestError::Refused {
            status,
            body: api::ErrorBody {
                error,
                field,
                detail: "the detail".into(),
            },
        }
    }

    #[test]
    fn an_error_about_the_subject_lands_on_the_subject_field() {
        let e = refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidCampaign,
            Some(Field::Subject),
        );
        let (status, errors) = errors_from_ingest(&e);
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            errors.get("subject").map(String::as_str),
            Some("the detail")
        );
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn errors_land_by_field_and_code_never_by_wording() {
        for (field, shown) in [
            (Field::From, "from"),
            (Field::Text, "text"),
            (Field::Html, "html"),
            (Field::Recipients, "recipients"),
            (Field::Rate, "rate"),
            (Field::SendAt, "send_at"),
            (Field::Deadline, "deadline"),
            (Field::CampaignId, "general"),
            (Field::Other, "general"),
        ] {
            let e = refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidCampaign,
                Some(field),
            );
            assert!(errors_from_ingest(&e).1.contains_key(shown), "{field}");
        }
        // A detail that reads like a field prefix does not move the error.
        let e = IngestError::Refused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: api::ErrorBody {
                error: ErrorCode::InvalidCampaign,
                field: None,
                detail: "subject: syntax error".into(),
            },
        };
        assert!(errors_from_ingest(&e).1.contains_key("general"));
        let (status, errors) = errors_from_ingest(&refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            None,
        ));
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(errors.contains_key("recipients"));
        let (status, errors) = errors_from_ingest(&refused(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::OutboxFull,
            None,
        ));
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(errors["general"].contains("the detail"));
    }
}
