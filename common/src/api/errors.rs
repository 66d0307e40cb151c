//! The error half of the contract: `{error, field?, detail}`, a closed set of codes and of the
//! request fields an error can be about. Clients branch on these, never on `detail`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What went wrong, as a closed set clients can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request could not be read at all (not UTF-8, a broken multipart body, a header
    /// that is not text).
    BadRequest,
    /// The body is not JSON.
    BadJson,
    /// The body is larger than the route accepts.
    TooLarge,
    /// The campaign is invalid; `field` says which part, when one does.
    InvalidCampaign,
    /// A dead-letter filter is invalid.
    InvalidFilter,
    /// A sending limit is invalid; `field` says which part.
    InvalidLimit,
    /// An address (to suppress, or to send a test to) is not one; `field` says which part.
    InvalidAddress,
    /// A bounce or complaint message is not a report ingest can act on (not a DSN or ARF
    /// report, truncated, without a recipient): nothing was suppressed.
    InvalidReport,
    /// The unsubscribe link was not made by us or was altered: nothing changed.
    InvalidToken,
    /// No API token, or one ingest does not know (`Authorization: Bearer …`): nothing changed.
    Unauthorized,
    /// The API token is valid but lacks the scope the route needs: nothing changed.
    Forbidden,
    /// The request took longer than its route allows (a body sent too slowly, or a quick
    /// route that could not finish): nothing is known to have changed; retry.
    Timeout,
    /// No such campaign, action or route.
    NotFound,
    /// The request contradicts the current state (a campaign id reused with other content,
    /// resuming a finished campaign, rescheduling one that started, a domain another limit
    /// already lists).
    Conflict,
    /// MAIL_OUTBOX refused more messages; retry after `Retry-After`.
    OutboxFull,
    /// The broker could not be reached or answered an error; retry later.
    Broker,
    /// Ingest found something it cannot work with (a stored record it cannot decode):
    /// retrying will not help, an operator must look.
    Internal,
    /// A code this client does not know (a newer ingest).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status ingest answers this code with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::BadJson => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::InvalidCampaign
            | ErrorCode::InvalidFilter
            | ErrorCode::InvalidLimit
            | ErrorCode::InvalidAddress
            | ErrorCode::InvalidReport => 422,
            ErrorCode::InvalidToken => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::Timeout => 408,
            ErrorCode::OutboxFull | ErrorCode::Broker => 503,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadJson => "bad_json",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::InvalidCampaign => "invalid_campaign",
            ErrorCode::InvalidFilter => "invalid_filter",
            ErrorCode::InvalidLimit => "invalid_limit",
            ErrorCode::InvalidAddress => "invalid_address",
            ErrorCode::InvalidReport => "invalid_report",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Timeout => "timeout",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::OutboxFull => "outbox_full",
            ErrorCode::Broker => "broker",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The part of a campaign or limit request an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    From,
    Subject,
    Text,
    Html,
    Recipients,
    CampaignId,
    /// A campaign's or a limit's rate (`25/s`).
    Rate,
    SendAt,
    Deadline,
    /// The domains of a limit.
    Domains,
    Concurrency,
    Cooldown,
    /// A limit's scope (in the path of `PUT /v1/limits/{scope}`).
    Scope,
    /// An address to suppress or remove.
    Address,
    /// A suppression's reason.
    Reason,
    /// The addresses of a test send.
    To,
    /// A field this client does not know (a newer ingest).
    #[serde(other)]
    Other,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::From => "from",
            Field::Subject => "subject",
            Field::Text => "text",
            Field::Html => "html",
            Field::Recipients => "recipients",
            Field::CampaignId => "campaign_id",
            Field::Rate => "rate",
            Field::SendAt => "send_at",
            Field::Deadline => "deadline",
            Field::Domains => "domains",
            Field::Concurrency => "concurrency",
            Field::Cooldown => "cooldown",
            Field::Scope => "scope",
            Field::Address => "address",
            Field::Reason => "reason",
            Field::To => "to",
            Field::Other => "other",
        }
    }
}

/// A name that is not one of [`Field`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no field {0:?}")]
pub struct UnknownField(pub String);

impl Field {
    /// Every field but [`Field::Other`], which stands for names this build does not know.
    pub const KNOWN: [Field; 16] = [
        Field::From,
        Field::Subject,
        Field::Text,
        Field::Html,
        Field::Recipients,
        Field::CampaignId,
        Field::Rate,
        Field::SendAt,
        Field::Deadline,
        Field::Domains,
        Field::Concurrency,
        Field::Cooldown,
        Field::Scope,
        Field::Address,
        Field::Reason,
        Field::To,
    ];
}

/// The inverse of [`Field::as_str`]: what turns a form field's or template part's name into
/// the typed field (`other` is not a name anyone sends).
impl FromStr for Field {
    type Err = UnknownField;

    fn from_str(s: &str) -> Result<Self, UnknownField> {
        Field::KNOWN
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownField(s.to_string()))
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every error answer of ingest's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<Field>,
    /// A sentence for a person; never parsed.
    pub detail: String,
}
