//! The sending-limit part of ingest's API (`GET /v1/limits`, `PUT|DELETE /v1/limits/{scope}`)
//! and the body of a reschedule. Limits are shown with the rate configured *and* the rate in
//! force after a fleet-wide back-off, so that an operator sees when a provider pushed back.

use serde::{Deserialize, Serialize};

use crate::limits::Scope;

/// `PUT /v1/limits/{scope}`: the scope in the path must be the one the body gives (`global`
/// without domains, else `d-<first domain's token>`), so a typo cannot replace another limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitRequest {
    /// The domains sharing one budget; none for the global limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// `N/s`, `N/m` or `N/h`.
    pub rate: String,
    /// Simultaneous SMTP sessions to these domains across the fleet (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// How long a 421 / 4.7.x back-off halving lasts (`60s`, `5m`); 60 s when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
}

/// One limit as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitView {
    pub scope: Scope,
    #[serde(default)]
    pub domains: Vec<String>,
    /// The configured rate as written (`25/s`).
    pub rate: String,
    /// The configured rate in messages per second.
    pub per_second: f64,
    /// The rate in force now: the configured one halved once per back-off level.
    pub effective_per_second: f64,
    /// Halvings in force after 421 / 4.7.x replies (0: none).
    #[serde(default)]
    pub backoff_level: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    pub cooldown_ms: u64,
    #[serde(default)]
    pub updated_ms: u64,
}

/// `GET /v1/limits`: global first, then by scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitList {
    pub limits: Vec<LimitView>,
}

/// `POST /v1/campaigns/{id}/reschedule`: a new send-at (RFC 3339 or `+2h`), accepted while
/// the campaign is publishing or scheduled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RescheduleRequest {
    pub send_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_paths_name_their_scope() {
        assert_eq!(
            crate::api::path::limit(&Scope::for_domains("gmail.com")),
            "/v1/limits/d-gmail_com"
        );
        assert_eq!(crate::api::path::limit(&Scope::Global), "/v1/limits/global");
        let r: LimitRequest = serde_json::from_str(r#"{"rate":"10/s"}"#).unwrap();
        assert!(r.domains.is_empty() && r.concurrency.is_none() && r.cooldown.is_none());
    }
}
