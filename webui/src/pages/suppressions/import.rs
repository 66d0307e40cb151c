//! The suppression list's CSV import: the uploaded file is forwarded to ingest's
//! `POST /v1/suppressions/import` as it is, so the line numbers of rejected rows are ingest's
//! own; the message after it lists them.

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use bytes::Bytes;
use jetmail_common::api::SuppressReport;
use jetmail_common::compliance::SuppressionReason;

use super::{errors_from_ingest, parse_reason, render, AddForm, FieldErrors, FormKind, ListQuery};
use crate::auth::{self, CurrentSession, Flash};
use crate::pages::error_page;
use crate::AppState;

/// Rejected import rows listed in the message; the count says how many more there are.
pub const REJECTED_SHOWN: usize = 50;

/// The import form, as received.
#[derive(Default)]
struct ImportForm {
    csrf: Option<String>,
    reason: String,
    file: Option<Bytes>,
}

async fn read_import(mut mp: Multipart) -> Result<ImportForm, (StatusCode, String)> {
    let mut f = ImportForm::default();
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| (e.status(), e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let data = field
            .bytes()
            .await
            .map_err(|e| (e.status(), e.body_text()))?;
        match name.as_str() {
            "file" => f.file = Some(data).filter(|d| !d.is_empty()),
            auth::CSRF_FIELD | "reason" => {
                let text = String::from_utf8(data.to_vec()).map_err(|_| {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("field {name} is not UTF-8"),
                    )
                })?;
                if name == "reason" {
                    f.reason = text;
                } else {
                    f.csrf = Some(text);
                }
            }
            _ => {}
        }
    }
    Ok(f)
}

/// What an import did, as the message after it says.
fn import_flash(r: &SuppressReport) -> Flash {
    let text = format!(
        "Imported: {} added, {} already suppressed, {} rows rejected.",
        r.added, r.already, r.rejected_count
    );
    let mut flash = if r.rejected_count > 0 {
        Flash::error(text)
    } else {
        Flash::ok(text)
    };
    flash.lines = r
        .rejected
        .iter()
        .take(REJECTED_SHOWN)
        .map(|row| format!("line {}: {} ({})", row.line, row.email, row.reason))
        .collect();
    let listed = flash.lines.len() as u64;
    if r.rejected_count > listed {
        flash.lines.push(format!(
            "… and {} more rejected rows",
            r.rejected_count - listed
        ));
    }
    flash
}

/// `POST /suppressions/import`: a CSV file (an `email` column, an optional `reason`
/// column) or bare addresses one a line, forwarded to ingest as it is.
pub async fn import(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    mp: Multipart,
) -> Response {
    let form = match read_import(mp).await {
        Ok(f) => f,
        Err((status, text)) => {
            return error_page(&app, &session, status, "Form not readable", &text);
        }
    };
    if !auth::csrf_ok(&session, form.csrf.as_deref()) {
        return auth::csrf_refusal(&app, &session);
    }
    let mut errors = FieldErrors::new();
    let reason = match parse_reason(&form.reason) {
        Ok(r) => r.unwrap_or(SuppressionReason::Manual),
        Err(e) => {
            errors.insert("import", e.to_string());
            SuppressionReason::Manual
        }
    };
    let Some(file) = form.file.filter(|_| errors.is_empty()) else {
        errors
            .entry("import")
            .or_insert_with(|| "choose a CSV file to import".into());
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        let q = ListQuery::default();
        return render(&app, &session, status, &q, &AddForm::default(), errors).await;
    };
    match app.ingest.import_suppressions(file, reason).await {
        Ok(r) => {
            tracing::info!(
                added = r.added,
                already = r.already,
                rejected = r.rejected_count,
                "suppressions imported"
            );
            app.sessions.set_flash(&session.id, import_flash(&r));
            Redirect::to("/suppressions").into_response()
        }
        Err(e) => {
            let (status, errors) = errors_from_ingest(FormKind::Import, &e);
            let q = ListQuery::default();
            render(&app, &session, status, &q, &AddForm::default(), errors).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetmail_common::wire::RejectedRow;

    #[test]
    fn an_import_lists_its_rejected_rows_by_line() {
        let r = SuppressReport {
            added: 2,
            already: 1,
            rejected: vec![RejectedRow {
                line: 3,
                email: "nope".into(),
                reason: "no @".into(),
            }],
            rejected_count: 4,
        };
        let f = import_flash(&r);
        assert!(f
            .message
            .contains("2 added, 1 already suppressed, 4 rows rejected"));
        assert_eq!(
            f.lines,
            vec!["line 3: nope (no @)", "… and 3 more rejected rows"]
        );
    }
}
