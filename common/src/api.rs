//! The HTTP contract between ingest and its clients (the web UI, scripts, `curl`): every
//! request and answer body of ingest's API, the routes, and the error body. Ingest serialises
//! these types and the web UI deserialises the same ones, so the two cannot drift apart.
//!
//! Errors cross this boundary as `{error: <code>, field?: <field>, detail: <text>}`: clients
//! branch on [`ErrorCode`] and [`Field`] (closed sets), never on `detail`, which is for people.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::wire::{CampaignProgress, CampaignRecord, DeadLetter, RejectedRow};

mod compliance;
mod errors;
mod limits;
pub use compliance::{
    suppression_path, test_send_path, BounceReport, ReportKind, SuppressReport, SuppressRequest,
    Suppressed, SuppressionList, SuppressionQuery, TestSendQuery, TestSendReport, TEST_SEND_MAX,
};
pub use errors::{ErrorBody, ErrorCode, Field, UnknownField};
pub use limits::{LimitList, LimitRequest, LimitView, RescheduleRequest};

/// Routes of ingest's API, as axum patterns. Clients build concrete paths with [`path`].
pub mod route {
    pub const HEALTH: &str = "/healthz";
    pub const CAMPAIGNS: &str = "/v1/campaigns";
    pub const CAMPAIGN: &str = "/v1/campaigns/{id}";
    pub const CAMPAIGN_CONTROL: &str = "/v1/campaigns/{id}/{action}";
    pub const PREVIEW: &str = "/v1/campaigns/preview";
    pub const DEAD: &str = "/v1/dead";
    pub const DEAD_REPLAY: &str = "/v1/dead/replay";
    pub const LIMITS: &str = "/v1/limits";
    pub const LIMIT: &str = "/v1/limits/{scope}";
    /// One-click unsubscribe (RFC 8058): public, without the API's token.
    pub const UNSUBSCRIBE: &str = "/unsubscribe/{token}";
    pub const SUPPRESSIONS: &str = "/v1/suppressions";
    pub const SUPPRESSION: &str = "/v1/suppressions/{address}";
    pub const SUPPRESSIONS_IMPORT: &str = "/v1/suppressions/import";
    pub const BOUNCES: &str = "/v1/bounces";
    pub const TEST_SEND: &str = "/v1/campaigns/test";
}

/// Concrete request paths, with every variable part percent-encoded.
pub mod path {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

    use super::ControlAction;

    /// RFC 3986 unreserved characters stay as they are; everything else is encoded.
    const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');

    /// Percent-encodes one path segment or query value.
    pub fn encode(s: &str) -> String {
        utf8_percent_encode(s, COMPONENT).to_string()
    }

    pub fn campaign(id: &str) -> String {
        format!("{}/{}", super::route::CAMPAIGNS, encode(id))
    }

    pub fn control(id: &str, action: ControlAction) -> String {
        format!("{}/{}", campaign(id), action.as_str())
    }

    /// `PUT|DELETE /v1/limits/{scope}`.
    pub fn limit(scope: &crate::limits::Scope) -> String {
        format!("{}/{}", super::route::LIMITS, encode(&scope.token()))
    }

    /// `GET /v1/dead` with its query.
    pub fn dead_list(q: &super::DeadQuery) -> String {
        let mut p = format!("{}?limit={}", super::route::DEAD, q.limit);
        if let Some(c) = &q.campaign {
            p.push_str("&campaign=");
            p.push_str(&encode(c));
        }
        if let Some(r) = &q.reason {
            p.push_str("&reason=");
            p.push_str(&encode(r));
        }
        p
    }
}

/// Header a client sets so that a resent request finds what the first one did.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Header ingest sets on an answer that replays an earlier request's result.
pub const IDEMPOTENT_REPLAYED_HEADER: &str = "idempotent-replayed";

/// Pause, resume, cancel or reschedule a campaign: parsed here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ControlAction {
    Pause,
    Resume,
    Cancel,
    /// A new send-at ([`RescheduleRequest`]), while the campaign has not started.
    Reschedule,
}

impl ControlAction {
    pub const ALL: [ControlAction; 4] = [
        ControlAction::Pause,
        ControlAction::Resume,
        ControlAction::Cancel,
        ControlAction::Reschedule,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ControlAction::Pause => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Cancel => "cancel",
            ControlAction::Reschedule => "reschedule",
        }
    }
}

/// A word that is not `pause`, `resume`, `cancel` or `reschedule`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no action {0:?} (pause, resume, cancel or reschedule)")]
pub struct UnknownAction(pub String);

impl FromStr for ControlAction {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, UnknownAction> {
        ControlAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAction(s.to_string()))
    }
}

impl fmt::Display for ControlAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recipient of a JSON request: a bare address or an object with `email` and variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JsonRecipient {
    Address(String),
    Object(serde_json::Map<String, serde_json::Value>),
}

/// `POST /v1/campaigns` and `POST /v1/campaigns/preview` as JSON. The same requests also come
/// as `multipart/form-data` with these field names and the recipients as a CSV file part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRequest {
    pub from: String,
    pub subject: String,
    #[serde(default)]
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    pub recipients: Vec<JsonRecipient>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// The campaign's own fleet-wide rate, `N/s`, `N/m` or `N/h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Nothing is delivered before it: RFC 3339 or `+2h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<String>,
    /// Nothing is delivered after it: RFC 3339, or a duration after the send start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
}

/// The answer to a submitted campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitReport {
    pub id: String,
    /// Recipients in MAIL_OUTBOX for this campaign (across resumed submits).
    pub published: u64,
    /// The first rejected rows (all are counted in `rejected_count`).
    #[serde(default)]
    pub rejected: Vec<RejectedRow>,
    #[serde(default)]
    pub rejected_count: u64,
    #[serde(default)]
    pub duplicates: u64,
    /// Recipients on the suppression list: not published (each is settled at once as a
    /// `suppressed` outcome of the campaign).
    #[serde(default)]
    pub suppressed: u64,
    /// True when the campaign had already been fully published: nothing new was sent.
    #[serde(default)]
    pub replayed: bool,
}

/// The answer to a preview: the campaign rendered for its first valid recipient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    pub recipient: String,
    pub subject: String,
    pub text: String,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub rejected: Vec<RejectedRow>,
}

/// A campaign as the API shows it: its record, delivery progress and pending count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignView {
    #[serde(flatten)]
    pub record: CampaignRecord,
    pub progress: CampaignProgress,
    /// Recipients still waiting, in MAIL_OUTBOX or held in MAIL_HELD, by the broker's count.
    pub pending: u64,
}

/// `GET /v1/campaigns`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignView>,
}

/// Which dead letters an operation applies to. Empty matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Case-insensitive substring of the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Only these MAIL_DEAD stream sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seqs: Option<Vec<u64>>,
}

impl DeadFilter {
    pub fn matches(&self, e: &DeadEntry) -> bool {
        if let Some(seqs) = &self.seqs {
            if !seqs.contains(&e.stream_seq) {
                return false;
            }
        }
        if let Some(c) = &self.campaign {
            if &e.letter.campaign != c {
                return false;
            }
        }
        if let Some(r) = &self.reason {
            if !e.letter.reason.to_lowercase().contains(&r.to_lowercase()) {
                return false;
            }
        }
        true
    }
}

/// The query of `GET /v1/dead`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadQuery {
    #[serde(default)]
    pub campaign: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default = "DeadQuery::default_limit")]
    pub limit: usize,
}

impl DeadQuery {
    pub const DEFAULT_LIMIT: usize = 100;

    fn default_limit() -> usize {
        Self::DEFAULT_LIMIT
    }
}

impl Default for DeadQuery {
    fn default() -> Self {
        Self {
            campaign: None,
            reason: None,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

/// One dead letter with its place in MAIL_DEAD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadEntry {
    pub stream_seq: u64,
    pub letter: DeadLetter,
}

/// `GET /v1/dead`: the first matching dead letters, oldest first, and how many matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadList {
    pub dead: Vec<DeadEntry>,
    pub total: u64,
}

/// Outcome of a replay or purge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkReport {
    pub done: u64,
    /// Dead letters that could not be handled, with the reason.
    #[serde(default)]
    pub errors: Vec<String>,
}

#[cfg(test)]
mod tests;
