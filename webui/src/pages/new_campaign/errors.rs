//! Ingest's refusals of a new campaign, a preview or a test send, mapped onto the form's
//! fields by the error body's `field` and `error` (never by its wording).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use jetmail_common::api::{ErrorCode, Field};

use crate::ingest::IngestError;

/// Problems, by field (`from`, `subject`, `text`, `html`, `recipients`, `send_at`,
/// `deadline`, `rate`, `test_to`, `general`).
pub type FieldErrors = BTreeMap<&'static str, String>;

/// The form field an ingest error names, if the form has it.
pub(super) fn form_field(field: Option<Field>) -> Option<&'static str> {
    match field? {
        Field::From => Some("from"),
        Field::Subject => Some("subject"),
        Field::Text => Some("text"),
        Field::Html => Some("html"),
        Field::Recipients => Some("recipients"),
        Field::Rate => Some("rate"),
        Field::SendAt => Some("send_at"),
        Field::Deadline => Some("deadline"),
        Field::To => Some("test_to"),
        // The form has no campaign id and no limit's parts, and a field a newer ingest names
        // is not on it.
        Field::CampaignId
        | Field::Domains
        | Field::Concurrency
        | Field::Cooldown
        | Field::Scope
        | Field::Address
        | Field::Reason
        | Field::Other => None,
    }
}

/// Ingest's refusal mapped onto the form by its field and code (never by its wording), with
/// the status the page is answered with.
pub(super) fn errors_from_ingest(e: &IngestError) -> (StatusCode, FieldErrors) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use jetmail_common::api;

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
            (Field::To, "test_to"),
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
