//! The sending limits: the list with each limit's configured and effective rate (after a
//! fleet-wide back-off), a form to set one and a button to remove one. Every change goes to
//! ingest's `/v1/limits`, which checks it; its refusals land beside the field they name.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jetmail_common::address::parse_domain;
use jetmail_common::api::{ErrorCode, Field, LimitRequest, LimitView};
use jetmail_common::limits::Scope;
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::auth::{self, CurrentSession, Flash};
use crate::ingest::IngestError;
use crate::AppState;

/// The set form as typed, sent back into the form when it is shown again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LimitForm {
    #[serde(default)]
    csrf: Option<String>,
    /// Comma- or space-separated; empty for the global limit.
    #[serde(default)]
    pub domains: String,
    #[serde(default)]
    pub rate: String,
    #[serde(default)]
    pub concurrency: String,
    #[serde(default)]
    pub cooldown: String,
}

/// The remove button's form.
#[derive(Debug, Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    scope: String,
}

/// Problems, by field (`domains`, `rate`, `concurrency`, `cooldown`, `general`).
pub type FieldErrors = BTreeMap<&'static str, String>;

/// The form field an ingest error names, if the form has it.
fn form_field(field: Option<Field>) -> Option<&'static str> {
    match field? {
        Field::Domains => Some("domains"),
        Field::Rate => Some("rate"),
        Field::Concurrency => Some("concurrency"),
        Field::Cooldown => Some("cooldown"),
        _ => None,
    }
}

/// Ingest's refusal mapped onto the form by field and code, with the page's status.
fn errors_from_ingest(e: &IngestError) -> (StatusCode, FieldErrors) {
    let mut errors = FieldErrors::new();
    let IngestError::Refused { body, .. } = e else {
        errors.insert("general", e.to_string());
        return (StatusCode::BAD_GATEWAY, errors);
    };
    if let Some(field) = form_field(body.field) {
        errors.insert(field, body.detail.clone());
        return (StatusCode::UNPROCESSABLE_ENTITY, errors);
    }
    if matches!(
        body.error,
        ErrorCode::InvalidLimit | ErrorCode::BadJson | ErrorCode::Conflict
    ) {
        errors.insert("general", body.detail.clone());
        return (StatusCode::UNPROCESSABLE_ENTITY, errors);
    }
    errors.insert(
        "general",
        format!("ingest could not take it: {}", body.detail),
    );
    (StatusCode::BAD_GATEWAY, errors)
}

fn split_domains(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// The scope a request sets: ingest names a group of domains after the first one. A domain
/// that does not parse is sent anyway: ingest refuses it, about the domains field.
fn scope_of(domains: &[String]) -> Scope {
    match domains.first() {
        None => Scope::Global,
        Some(d) => parse_domain(d)
            .map(|a| Scope::for_domains(&a))
            .unwrap_or(Scope::Global),
    }
}

/// A limit as the page shows it.
#[derive(Debug, Serialize)]
struct LimitRow {
    scope: String,
    domains: String,
    rate: String,
    effective: String,
    backed_off: bool,
    concurrency: String,
    cooldown: String,
}

fn row(v: &LimitView) -> LimitRow {
    LimitRow {
        scope: v.scope.token(),
        domains: v.domains.join(", "),
        rate: v.rate.clone(),
        effective: format!("{}/s", crate::render::format_rate(v.effective_per_second)),
        backed_off: v.backoff_level > 0,
        concurrency: v.concurrency.map(|c| c.to_string()).unwrap_or_default(),
        cooldown: jetmail_common::config::format_duration(std::time::Duration::from_millis(
            v.cooldown_ms,
        )),
    }
}

async fn render(
    app: &AppState,
    session: &CurrentSession,
    status: StatusCode,
    values: &LimitForm,
    mut errors: FieldErrors,
) -> Response {
    let limits = match app.ingest.limits().await {
        Ok(l) => l.limits.iter().map(row).collect(),
        Err(e) => {
            errors
                .entry("list")
                .or_insert_with(|| format!("cannot list the limits: {e}"));
            Vec::new()
        }
    };
    let body = app.templates.page(
        app,
        session,
        None,
        "limits.html",
        "limits",
        context! { limits => limits, v => values, errors => errors },
    );
    (status, body).into_response()
}

/// `GET /limits`.
pub async fn page(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
) -> Response {
    render(
        &app,
        &session,
        StatusCode::OK,
        &LimitForm::default(),
        FieldErrors::new(),
    )
    .await
}

/// `POST /limits`: set (or replace) a limit through ingest.
pub async fn set(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    Form(form): Form<LimitForm>,
) -> Response {
    if !auth::csrf_ok(&session, form.csrf.as_deref()) {
        return auth::csrf_refusal(&app, &session);
    }
    let mut errors = FieldErrors::new();
    let concurrency = match form.concurrency.trim() {
        "" => None,
        c => match c.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                errors.insert("concurrency", "a whole number of at least 1".into());
                None
            }
        },
    };
    if form.rate.trim().is_empty() {
        errors.insert("rate", "a rate is required: N/s, N/m or N/h".into());
    }
    if !errors.is_empty() {
        return render(
            &app,
            &session,
            StatusCode::UNPROCESSABLE_ENTITY,
            &form,
            errors,
        )
        .await;
    }
    let domains = split_domains(&form.domains);
    let scope = scope_of(&domains);
    let req = LimitRequest {
        domains,
        rate: form.rate.trim().to_string(),
        concurrency,
        cooldown: Some(form.cooldown.trim().to_string()).filter(|c| !c.is_empty()),
    };
    match app.ingest.set_limit(&scope, &req).await {
        Ok(v) => {
            tracing::info!(scope = %v.scope, rate = %v.rate, "limit set");
            app.sessions.set_flash(
                &session.id,
                Flash::ok(format!("Limit {} set to {}.", v.scope, v.rate)),
            );
            Redirect::to("/limits").into_response()
        }
        Err(e) => {
            let (status, errors) = errors_from_ingest(&e);
            render(&app, &session, status, &form, errors).await
        }
    }
}

/// `POST /limits/remove`: remove the limit of one scope through ingest.
pub async fn remove(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    Form(form): Form<RemoveForm>,
) -> Response {
    if !auth::csrf_ok(&session, form.csrf.as_deref()) {
        return auth::csrf_refusal(&app, &session);
    }
    let flash = match Scope::parse(&form.scope) {
        Err(e) => Flash::error(e.to_string()),
        Ok(scope) => match app.ingest.remove_limit(&scope).await {
            Ok(()) => {
                tracing::info!(scope = %scope, "limit removed");
                Flash::ok(format!("Limit {scope} removed."))
            }
            Err(IngestError::Refused { body, .. }) => Flash::error(body.detail),
            Err(e) => Flash::error(e.to_string()),
        },
    };
    app.sessions.set_flash(&session.id, flash);
    Redirect::to("/limits").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_is_named_after_the_first_domain() {
        assert_eq!(scope_of(&[]), Scope::Global);
        let d = split_domains("Gmail.com, googlemail.com");
        assert_eq!(d, vec!["Gmail.com", "googlemail.com"]);
        assert_eq!(scope_of(&d), Scope::for_domains("gmail.com"));
    }

    #[test]
    fn refusals_land_by_field() {
        let refused = |field| IngestError::Refused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: jetmail_common::api::ErrorBody {
                error: ErrorCode::InvalidLimit,
                field,
                detail: "the detail".into(),
            },
        };
        for (field, shown) in [
            (Some(Field::Rate), "rate"),
            (Some(Field::Domains), "domains"),
            (Some(Field::Concurrency), "concurrency"),
            (Some(Field::Cooldown), "cooldown"),
            (Some(Field::Scope), "general"),
            (None, "general"),
        ] {
            let (status, errors) = errors_from_ingest(&refused(field));
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(errors.get(shown).map(String::as_str), Some("the detail"));
        }
    }
}
