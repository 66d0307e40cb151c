//! The new-campaign form: from, subject, text and HTML templates, recipients as a CSV upload
//! or pasted addresses, and optionally a send-at, a deadline and a rate; "Preview" renders the
//! message for the first recipient, "Send test" delivers it at once to a few addresses
//! ([`test_send`]), "Send" submits.
//! All go to ingest, which owns validation and publishing; its answers are mapped back onto
//! the field they concern ([`errors`]).

mod errors;
mod test_send;

use axum::extract::{Multipart, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Extension;
use bytes::Bytes;
use jetmail_common::api::{self, Preview};
use jetmail_common::wire::RejectedRow;
use minijinja::context;
use serde::Serialize;

use crate::auth::{self, random_token, CurrentSession, Flash, StashedUpload};
use crate::ingest::CampaignForm;
use crate::pages::error_page;
use crate::AppState;
use errors::errors_from_ingest;
pub use errors::FieldErrors;

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
    /// Where "Send test" sends: up to [`api::TEST_SEND_MAX`] addresses, comma- or
    /// space-separated.
    pub test_to: String,
}

pub(super) fn render_form(
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
            "test_to" => v.test_to = text,
            _ => {}
        }
    }
    Ok(r)
}

/// `POST /campaigns/new`: `action=preview`, `action=test` or `action=send`.
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
    // A test needs no recipients: they only lend the message their variables.
    let test_to = (r.action == "test").then(|| match test_send::addresses(&values.test_to) {
        Ok(to) => to,
        Err(e) => {
            errors.insert("test_to", e.to_string());
            Vec::new()
        }
    });

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
                if test_to.is_none() {
                    errors.insert(
                        "recipients",
                        "upload a CSV file or paste addresses, one a line".into(),
                    );
                }
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
    let recipients = match (recipients, &test_to) {
        (Some(r), _) => Some(r),
        (None, Some(_)) => Some(Bytes::from_static(test_send::NO_RECIPIENTS)),
        (None, None) => None,
    };
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

    if let Some(to) = test_to {
        return test_send::send(&app, &session, &r.values, &campaign, &to).await;
    }

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
            tracing::info!(campaign = %s.id, published = s.published, rejected = s.rejected_count, suppressed = s.suppressed, "campaign submitted");
            let mut flash = Flash::ok(format!(
                "Campaign {} submitted: {} recipients published, {} rows rejected, {} duplicates skipped, {} suppressed addresses skipped.",
                s.id, s.published, s.rejected_count, s.duplicates, s.suppressed
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
