//! The good-citizen part of ingest's API: the suppression list (`/v1/suppressions`), bounce
//! and complaint reports (`POST /v1/bounces`) and test sends (`POST /v1/campaigns/test`).
//! The one-click unsubscribe routes (`/unsubscribe/{token}`) answer HTML and plain text for
//! mail clients, not these types.

use serde::{Deserialize, Serialize};

use crate::compliance::{Suppression, SuppressionReason};
use crate::wire::RejectedRow;

/// The query of `GET /v1/suppressions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionQuery {
    /// Case-insensitive substring of the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<SuppressionReason>,
    #[serde(default = "SuppressionQuery::default_limit")]
    pub limit: usize,
}

impl SuppressionQuery {
    pub const DEFAULT_LIMIT: usize = 100;

    fn default_limit() -> usize {
        Self::DEFAULT_LIMIT
    }
}

impl Default for SuppressionQuery {
    fn default() -> Self {
        Self {
            search: None,
            reason: None,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

/// `GET /v1/suppressions`: the first matching entries, by address, and how many matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionList {
    pub suppressions: Vec<Suppression>,
    pub total: u64,
}

/// `POST /v1/suppressions`: suppress these addresses (`manual` unless a reason is given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressRequest {
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<SuppressionReason>,
}

/// What an add or an import did. An address already on the list keeps its first entry (its
/// reason and campaign) and is counted in `already`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressReport {
    pub added: u64,
    #[serde(default)]
    pub already: u64,
    /// The first rows of an import that are not addresses (all are counted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedRow>,
    #[serde(default)]
    pub rejected_count: u64,
}

/// What one bounce or complaint report was found to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// A DSN (RFC 3464, `report-type=delivery-status`).
    DeliveryStatus,
    /// An ARF report (RFC 5965, `report-type=feedback-report`).
    Feedback,
}

/// `POST /v1/bounces`: what one report said and what was suppressed because of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceReport {
    pub kind: ReportKind,
    /// The campaign named by the VERP address the report was sent to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Addresses now suppressed (hard bounces, complaints), normalised.
    #[serde(default)]
    pub suppressed: Vec<Suppressed>,
    /// Temporary failures and delays: counted, never suppressed.
    #[serde(default)]
    pub soft_bounces: u64,
    /// Recipients the report names that are not suppressed (a 5.7.x policy refusal, a
    /// delivered or relayed action, a feedback type other than abuse).
    #[serde(default)]
    pub ignored: u64,
}

/// One address a report suppressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppressed {
    pub address: String,
    pub reason: SuppressionReason,
    /// The status code or feedback type that decided it.
    pub detail: String,
    /// False when the address was already on the list (its first entry is kept).
    pub added: bool,
}

/// Most addresses one test send may go to.
pub const TEST_SEND_MAX: usize = 10;

/// The query of `POST /v1/campaigns/test`, whose body is a campaign as for
/// `POST /v1/campaigns` (JSON or multipart; `recipients` may be empty): `to` is a
/// comma-separated list of at most [`TEST_SEND_MAX`] addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestSendQuery {
    pub to: String,
}

/// The answer to a test send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestSendReport {
    /// The test campaign's id (`t-…`): listed and counted nowhere.
    pub id: String,
    /// One message per address.
    pub published: u64,
    /// The recipient whose variables rendered the message, if the list had a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables_from: Option<String>,
}

impl SuppressionQuery {
    /// `GET /v1/suppressions` with this query.
    pub fn path(&self) -> String {
        let mut p = format!("{}?limit={}", super::route::SUPPRESSIONS, self.limit);
        if let Some(s) = &self.search {
            p.push_str("&search=");
            p.push_str(&super::path::encode(s));
        }
        if let Some(r) = self.reason {
            p.push_str("&reason=");
            p.push_str(r.as_str());
        }
        p
    }
}

/// `DELETE /v1/suppressions/{address}`.
pub fn suppression_path(address: &str) -> String {
    format!(
        "{}/{}",
        super::route::SUPPRESSIONS,
        super::path::encode(address)
    )
}

/// `POST /v1/campaigns/test` to these addresses.
pub fn test_send_path(to: &[String]) -> String {
    format!(
        "{}?to={}",
        super::route::TEST_SEND,
        super::path::encode(&to.join(","))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_addresses_and_queries() {
        assert_eq!(
            suppression_path("a+b@x.example"),
            "/v1/suppressions/a%2Bb%40x.example"
        );
        let q = SuppressionQuery {
            search: Some("ann & co".into()),
            reason: Some(SuppressionReason::HardBounce),
            limit: 5,
        };
        assert_eq!(
            q.path(),
            "/v1/suppressions?limit=5&search=ann%20%26%20co&reason=hard_bounce"
        );
        assert_eq!(
            test_send_path(&["a@x.example".into(), "b@y.example".into()]),
            "/v1/campaigns/test?to=a%40x.example%2Cb%40y.example"
        );
    }
}
