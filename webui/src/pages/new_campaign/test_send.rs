//! "Send test" on the new-campaign form: the campaign as typed, delivered at once to a few
//! addresses through ingest's `POST /v1/campaigns/test` (rendered with the first recipient's
//! variables, if the form has recipients). A test is no campaign: no list shows it and no
//! campaign counts it. The form comes back with everything typed still in it.

use axum::http::StatusCode;
use axum::response::Response;
use jetmail_common::api::{TestSendReport, TEST_SEND_MAX};

use super::errors::{errors_from_ingest, FieldErrors};
use super::{render_form, FormValues};
use crate::auth::{CurrentSession, Flash};
use crate::ingest::CampaignForm;
use crate::AppState;

/// The recipients sent when the form has none: a header without rows, so ingest renders
/// the message without variables.
pub(super) const NO_RECIPIENTS: &[u8] = b"email\n";

/// Why the typed test addresses cannot be sent to; shown beside the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum TestAddressesError {
    #[error("an address to send the test to is required")]
    None,
    #[error("a test goes to at most {TEST_SEND_MAX} addresses, not {0}")]
    TooMany(usize),
}

/// The addresses as typed: separated by commas or white space, 1 to [`TEST_SEND_MAX`].
/// Whether each is an address is ingest's to say.
pub(super) fn addresses(typed: &str) -> Result<Vec<String>, TestAddressesError> {
    let to: Vec<String> = typed
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    match to.len() {
        0 => Err(TestAddressesError::None),
        n if n > TEST_SEND_MAX => Err(TestAddressesError::TooMany(n)),
        _ => Ok(to),
    }
}

/// What a test send did, as the message above the form says.
fn flash(report: &TestSendReport, to: &[String]) -> Flash {
    let rendered = match &report.variables_from {
        Some(r) => format!("with the variables of {r}"),
        None => "without recipient variables".to_string(),
    };
    Flash::ok(format!(
        "Test {} sent to {} ({} messages, {rendered}).",
        report.id,
        to.join(", "),
        report.published
    ))
}

/// Sends the test and shows the form again, with the outcome above it.
pub(super) async fn send(
    app: &AppState,
    session: &CurrentSession,
    values: &FormValues,
    campaign: &CampaignForm,
    to: &[String],
) -> Response {
    match app.ingest.test_send(campaign, to).await {
        Ok(report) => {
            tracing::info!(test = %report.id, published = report.published, "test send");
            app.sessions.set_flash(&session.id, flash(&report, to));
            render_form(
                app,
                session,
                StatusCode::OK,
                values,
                &FieldErrors::new(),
                &[],
                None,
            )
        }
        Err(e) => {
            tracing::info!(error = %e, "test send refused");
            let (status, errors) = errors_from_ingest(&e);
            render_form(app, session, status, values, &errors, &[], None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_addresses_are_split_and_counted() {
        assert_eq!(
            addresses(" a@x.example, b@y.example\nc@z.example ,").unwrap(),
            vec!["a@x.example", "b@y.example", "c@z.example"]
        );
        assert_eq!(addresses(" , "), Err(TestAddressesError::None));
        let eleven: Vec<String> = (0..11).map(|i| format!("u{i}@x.example")).collect();
        assert_eq!(
            addresses(&eleven.join(" ")),
            Err(TestAddressesError::TooMany(11))
        );
        assert_eq!(addresses(&eleven[..10].join(",")).unwrap().len(), 10);
    }

    #[test]
    fn the_message_names_the_test_and_its_variables() {
        let r = TestSendReport {
            id: "t-1".into(),
            published: 2,
            variables_from: None,
        };
        let to = ["a@x.example".to_string(), "b@x.example".to_string()];
        let f = flash(&r, &to);
        assert_eq!(
            f.message,
            "Test t-1 sent to a@x.example, b@x.example (2 messages, without recipient variables)."
        );
    }
}
