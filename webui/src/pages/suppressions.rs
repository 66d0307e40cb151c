//! The suppression list: addresses that are never mailed again (unsubscribed, hard-bounced,
//! complained, or added by hand). The page lists them with a search and a reason filter, adds
//! one, removes one and imports a CSV file. Every change goes to ingest's `/v1/suppressions`,
//! which normalises and checks the addresses; its refusals land beside the field they name.
//! The CSV import is in the `import` submodule.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jetmail_common::api::{ErrorCode, Field, SuppressionQuery};
use jetmail_common::compliance::{is_test_campaign, Suppression, SuppressionReason, UnknownReason};
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::auth::{self, CurrentSession, Flash};
use crate::ingest::IngestError;
use crate::render::format_utc;
use crate::AppState;

mod import;
pub use import::import;

/// The page's query: empty fields are no filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    pub search: String,
    #[serde(default)]
    pub reason: String,
}

/// The add form as typed, sent back into the form when it is shown again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    pub address: String,
    #[serde(default = "AddForm::default_reason")]
    pub reason: String,
}

impl AddForm {
    fn default_reason() -> String {
        SuppressionReason::Manual.as_str().to_string()
    }
}

impl Default for AddForm {
    fn default() -> Self {
        Self {
            csrf: None,
            address: String::new(),
            reason: Self::default_reason(),
        }
    }
}

/// The remove button's form.
#[derive(Debug, Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    address: String,
}

/// Problems, by field (`address`, `reason`, `import`, `filter`, `list`, `general`).
pub type FieldErrors = BTreeMap<&'static str, String>;

/// Which form an ingest refusal answers: the fields it names are that form's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FormKind {
    Add,
    Import,
    List,
}

/// The page field an ingest error names, for the form that asked.
fn form_field(form: FormKind, field: Option<Field>) -> Option<&'static str> {
    let field = field?;
    match form {
        FormKind::Add => match field {
            Field::Address => Some("address"),
            Field::Reason => Some("reason"),
            _ => None,
        },
        // An import's addresses and reasons are the file's.
        FormKind::Import => match field {
            Field::Address | Field::Reason => Some("import"),
            _ => None,
        },
        FormKind::List => match field {
            Field::Reason | Field::Address => Some("filter"),
            _ => None,
        },
    }
}

/// Ingest's refusal mapped onto the page by field and code (never by wording), with the
/// page's status.
fn errors_from_ingest(form: FormKind, e: &IngestError) -> (StatusCode, FieldErrors) {
    let mut errors = FieldErrors::new();
    let IngestError::Refused { body, .. } = e else {
        errors.insert("general", e.to_string());
        return (StatusCode::BAD_GATEWAY, errors);
    };
    if form == FormKind::Import && body.error == ErrorCode::TooLarge {
        errors.insert(
            "import",
            format!("the file is larger than ingest accepts ({})", body.detail),
        );
        return (StatusCode::PAYLOAD_TOO_LARGE, errors);
    }
    if let Some(field) = form_field(form, body.field) {
        errors.insert(field, body.detail.clone());
        return (StatusCode::UNPROCESSABLE_ENTITY, errors);
    }
    if matches!(
        body.error,
        ErrorCode::InvalidAddress
            | ErrorCode::InvalidFilter
            | ErrorCode::BadRequest
            | ErrorCode::BadJson
    ) {
        let field = match form {
            FormKind::Add => "general",
            FormKind::Import => "import",
            FormKind::List => "filter",
        };
        errors.insert(field, body.detail.clone());
        return (StatusCode::UNPROCESSABLE_ENTITY, errors);
    }
    errors.insert(
        "general",
        format!("ingest could not take it: {}", body.detail),
    );
    (StatusCode::BAD_GATEWAY, errors)
}

/// A suppression as the page shows it.
#[derive(Debug, Serialize)]
struct Row {
    address: String,
    reason: &'static str,
    at: String,
    /// The campaign that caused it; empty for none or a test send (which has no page).
    campaign: String,
    detail: String,
}

fn row(s: &Suppression) -> Row {
    Row {
        address: s.address.clone(),
        reason: s.reason.as_str(),
        at: format_utc(s.at_ms),
        campaign: s
            .campaign
            .clone()
            .filter(|c| !is_test_campaign(c))
            .unwrap_or_default(),
        detail: s.detail.clone().unwrap_or_default(),
    }
}

/// A reason as typed: empty is none.
fn parse_reason(s: &str) -> Result<Option<SuppressionReason>, UnknownReason> {
    match s.trim() {
        "" => Ok(None),
        r => r.parse().map(Some),
    }
}

async fn render(
    app: &AppState,
    session: &CurrentSession,
    status: StatusCode,
    query: &ListQuery,
    values: &AddForm,
    mut errors: FieldErrors,
) -> Response {
    let mut rows = Vec::new();
    let mut total = 0;
    match parse_reason(&query.reason) {
        Err(e) => {
            errors.entry("filter").or_insert(e.to_string());
        }
        Ok(reason) => {
            let q = SuppressionQuery {
                search: Some(query.search.trim().to_string()).filter(|s| !s.is_empty()),
                reason,
                ..Default::default()
            };
            match app.ingest.suppressions(&q).await {
                Ok(l) => {
                    rows = l.suppressions.iter().map(row).collect();
                    total = l.total;
                }
                Err(e) => {
                    let (_, errs) = errors_from_ingest(FormKind::List, &e);
                    for (field, detail) in errs {
                        let field = if field == "general" { "list" } else { field };
                        errors.entry(field).or_insert(detail);
                    }
                }
            }
        }
    }
    let reasons: Vec<&str> = SuppressionReason::ALL.iter().map(|r| r.as_str()).collect();
    let body = app.templates.page(
        app,
        session,
        None,
        "suppressions.html",
        "suppressions",
        context! {
            rows => rows,
            total => total,
            q => query,
            v => values,
            reasons => reasons,
            errors => errors,
        },
    );
    (status, body).into_response()
}

/// `GET /suppressions?search=…&reason=…`.
pub async fn page(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    Query(query): Query<ListQuery>,
) -> Response {
    render(
        &app,
        &session,
        StatusCode::OK,
        &query,
        &AddForm::default(),
        FieldErrors::new(),
    )
    .await
}

/// `POST /suppressions`: suppress one address through ingest.
pub async fn add(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    Form(form): Form<AddForm>,
) -> Response {
    if !auth::csrf_ok(&session, form.csrf.as_deref()) {
        return auth::csrf_refusal(&app, &session);
    }
    let mut errors = FieldErrors::new();
    let address = form.address.trim().to_string();
    if address.is_empty() {
        errors.insert("address", "an address is required".into());
    }
    let reason = match parse_reason(&form.reason) {
        Ok(r) => r.unwrap_or(SuppressionReason::Manual),
        Err(e) => {
            errors.insert("reason", e.to_string());
            SuppressionReason::Manual
        }
    };
    if !errors.is_empty() {
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return render(&app, &session, status, &ListQuery::default(), &form, errors).await;
    }
    match app.ingest.suppress(vec![address.clone()], reason).await {
        Ok(r) => {
            tracing::info!(reason = %reason, added = r.added, "suppression added");
            let message = if r.added > 0 {
                format!("{address} is suppressed ({reason}).")
            } else {
                format!("{address} was already suppressed; its first entry is kept.")
            };
            app.sessions.set_flash(&session.id, Flash::ok(message));
            Redirect::to("/suppressions").into_response()
        }
        Err(e) => {
            let (status, errors) = errors_from_ingest(FormKind::Add, &e);
            render(&app, &session, status, &ListQuery::default(), &form, errors).await
        }
    }
}

/// `POST /suppressions/remove`: take one address off the list through ingest.
pub async fn remove(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    Form(form): Form<RemoveForm>,
) -> Response {
    if !auth::csrf_ok(&session, form.csrf.as_deref()) {
        return auth::csrf_refusal(&app, &session);
    }
    let flash = match app.ingest.unsuppress(&form.address).await {
        Ok(()) => {
            tracing::info!("suppression removed");
            Flash::ok(format!("{} is no longer suppressed.", form.address))
        }
        Err(IngestError::Refused { body, .. }) => Flash::error(body.detail),
        Err(e) => Flash::error(e.to_string()),
    };
    app.sessions.set_flash(&session.id, flash);
    Redirect::to("/suppressions").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetmail_common::api;

    fn refused(error: ErrorCode, field: Option<Field>) -> IngestError {
        IngestError::Refused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: api::ErrorBody {
                error,
                field,
                detail: "the detail".into(),
            },
        }
    }

    #[test]
    fn refusals_land_by_form_and_field() {
        for (form, error, field, shown) in [
            (
                FormKind::Add,
                ErrorCode::InvalidAddress,
                Some(Field::Address),
                "address",
            ),
            (
                FormKind::Add,
                ErrorCode::InvalidFilter,
                Some(Field::Reason),
                "reason",
            ),
            (FormKind::Add, ErrorCode::InvalidAddress, None, "general"),
            (
                FormKind::Import,
                ErrorCode::InvalidAddress,
                Some(Field::Address),
                "import",
            ),
            (FormKind::Import, ErrorCode::BadRequest, None, "import"),
            (
                FormKind::List,
                ErrorCode::InvalidFilter,
                Some(Field::Reason),
                "filter",
            ),
        ] {
            let (status, errors) = errors_from_ingest(form, &refused(error, field));
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{form:?} {field:?}"
            );
            assert_eq!(
                errors.get(shown).map(String::as_str),
                Some("the detail"),
                "{form:?} {field:?}: {errors:?}"
            );
        }
        let (status, errors) = errors_from_ingest(FormKind::Add, &refused(ErrorCode::Broker, None));
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(errors["general"].contains("the detail"));
    }

    #[test]
    fn reasons_parse_and_test_campaigns_are_not_linked() {
        assert_eq!(parse_reason(" "), Ok(None));
        assert_eq!(
            parse_reason("hard_bounce"),
            Ok(Some(SuppressionReason::HardBounce))
        );
        assert!(parse_reason("bored").is_err());
        let mut s = Suppression {
            v: 1,
            address: "a@x.example".into(),
            reason: SuppressionReason::Unsubscribed,
            at_ms: 1_000,
            campaign: Some("t-abc".into()),
            detail: None,
        };
        assert_eq!(row(&s).campaign, "");
        s.campaign = Some("c1".into());
        assert_eq!(row(&s).campaign, "c1");
    }
}
