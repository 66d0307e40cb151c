//! The client of ingest's HTTP API: every change the web UI makes (a new campaign, pause,
//! resume, cancel, replaying or discarding dead letters) is a request to ingest, which owns
//! publishing. Forms are forwarded as multipart, the way ingest reads CSV uploads, so line
//! numbers of rejected rows are ingest's own.

use std::time::Duration;

use axum::http::{header, Method, Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jetmail_common::wire::{DeadLetter, RejectedRow};
use serde::{Deserialize, Serialize};

use crate::WebError;

/// How long a quick request (preview, list, control) may take.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(30);
/// Submitting publishes every recipient before ingest answers: a large list takes minutes.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Replaying or discarding "all that match" touches every matching dead letter.
pub const BULK_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Largest answer read from ingest.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("ingest is unreachable at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("ingest did not answer within {0:?}")]
    Timeout(Duration),
    /// Ingest refused the request: `error` is its code (`invalid_campaign`, …), `detail` the
    /// sentence a person reads.
    #[error("ingest refused the request ({status}): {detail}")]
    Refused {
        status: StatusCode,
        error: String,
        detail: String,
    },
    #[error("ingest answered something unreadable: {0}")]
    Decode(String),
}

/// A campaign as the new-campaign form holds it, ready to forward.
#[derive(Debug, Clone, Default)]
pub struct CampaignForm {
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// A CSV file with an `email` column, or bare addresses one a line.
    pub recipients: Bytes,
}

/// Ingest's preview: the campaign rendered for its first valid recipient.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Preview {
    pub recipient: String,
    pub subject: String,
    pub text: String,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub rejected: Vec<RejectedRow>,
}

/// Ingest's answer to a submitted campaign.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Submitted {
    pub id: String,
    pub published: u64,
    #[serde(default)]
    pub rejected: Vec<RejectedRow>,
    #[serde(default)]
    pub rejected_count: u64,
    #[serde(default)]
    pub duplicates: u64,
}

/// One dead letter and its place in MAIL_DEAD.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DeadEntry {
    pub stream_seq: u64,
    pub letter: DeadLetter,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DeadList {
    pub dead: Vec<DeadEntry>,
    pub total: u64,
}

/// Which dead letters a replay or discard applies to; empty matches all.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeadFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seqs: Option<Vec<u64>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct BulkReport {
    pub done: u64,
    #[serde(default)]
    pub errors: Vec<String>,
}

/// Pause, resume or cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Cancel,
}

impl Control {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pause" => Some(Control::Pause),
            "resume" => Some(Control::Resume),
            "cancel" => Some(Control::Cancel),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Cancel => "cancel",
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    detail: String,
}

/// A cheap handle (clone it freely) on one pooled HTTP/1 client.
#[derive(Clone)]
pub struct IngestClient {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl IngestClient {
    /// `base` is `http://host:port` (a path prefix is kept); TLS is left to a proxy in front.
    pub fn new(base: &str) -> Result<Self, WebError> {
        let bad = |reason: &str| WebError::IngestUrl {
            url: base.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = base.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is supported (put TLS in a proxy)"));
        }
        if uri.host().is_none() {
            return Err(bad("no host"));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        extra: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, IngestError> {
        let url = format!("{}{}", self.base, path_and_query);
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| IngestError::Unreachable {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| IngestError::Unreachable {
                    url: url.clone(),
                    detail: error_chain(&e),
                })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| IngestError::Decode(e.to_string()))?
                .to_bytes();
            Ok::<_, IngestError>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| IngestError::Timeout(timeout))??;
        if status.is_success() {
            return Ok(body);
        }
        let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        let (error, detail) = match parsed {
            Some(e) if !e.detail.is_empty() || !e.error.is_empty() => (e.error, e.detail),
            _ => (
                String::new(),
                String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned(),
            ),
        };
        Err(IngestError::Refused {
            status,
            error,
            detail,
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, IngestError> {
        serde_json::from_slice(body).map_err(|e| IngestError::Decode(e.to_string()))
    }

    /// Renders the campaign for its first valid recipient; publishes nothing.
    pub async fn preview(&self, form: &CampaignForm) -> Result<Preview, IngestError> {
        let (ct, body) = multipart(form);
        let b = self
            .call(
                Method::POST,
                "/v1/campaigns/preview",
                Some(&ct),
                &[],
                body,
                QUICK_TIMEOUT,
            )
            .await?;
        Self::decode(&b)
    }

    /// Submits the campaign. `idempotency_key` makes a resent form (a double click, a reload)
    /// find the campaign the first one made instead of creating a second.
    pub async fn submit(
        &self,
        form: &CampaignForm,
        idempotency_key: &str,
    ) -> Result<Submitted, IngestError> {
        let (ct, body) = multipart(form);
        let b = self
            .call(
                Method::POST,
                "/v1/campaigns",
                Some(&ct),
                &[("idempotency-key", idempotency_key)],
                body,
                SUBMIT_TIMEOUT,
            )
            .await?;
        Self::decode(&b)
    }

    pub async fn control(&self, campaign: &str, action: Control) -> Result<(), IngestError> {
        let path = format!(
            "/v1/campaigns/{}/{}",
            encode_component(campaign),
            action.as_str()
        );
        self.call(Method::POST, &path, None, &[], Bytes::new(), QUICK_TIMEOUT)
            .await
            .map(|_| ())
    }

    pub async fn dead_list(
        &self,
        campaign: Option<&str>,
        reason: Option<&str>,
        limit: usize,
    ) -> Result<DeadList, IngestError> {
        let mut q = format!("/v1/dead?limit={limit}");
        if let Some(c) = campaign {
            q.push_str("&campaign=");
            q.push_str(&encode_component(c));
        }
        if let Some(r) = reason {
            q.push_str("&reason=");
            q.push_str(&encode_component(r));
        }
        let b = self
            .call(Method::GET, &q, None, &[], Bytes::new(), QUICK_TIMEOUT)
            .await?;
        Self::decode(&b)
    }

    /// Re-publishes matching dead letters (ingest gives each a new message id).
    pub async fn dead_replay(&self, filter: &DeadFilter) -> Result<BulkReport, IngestError> {
        self.dead_bulk(Method::POST, "/v1/dead/replay", filter)
            .await
    }

    /// Deletes matching dead letters.
    pub async fn dead_discard(&self, filter: &DeadFilter) -> Result<BulkReport, IngestError> {
        self.dead_bulk(Method::DELETE, "/v1/dead", filter).await
    }

    async fn dead_bulk(
        &self,
        method: Method,
        path: &str,
        filter: &DeadFilter,
    ) -> Result<BulkReport, IngestError> {
        let body = serde_json::to_vec(filter).map_err(|e| IngestError::Decode(e.to_string()))?;
        let b = self
            .call(
                method,
                path,
                Some("application/json"),
                &[],
                Bytes::from(body),
                BULK_TIMEOUT,
            )
            .await?;
        Self::decode(&b)
    }
}

/// hyper's errors hide the cause (e.g. "connection refused") one or two levels down.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Percent-encodes a path segment or query value.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes the form as `multipart/form-data`, the recipients as a file part.
fn multipart(form: &CampaignForm) -> (String, Bytes) {
    // A random boundary cannot occur in the parts by chance.
    let boundary = format!("jetmail-{}", crate::auth::random_token(16));
    let mut body = Vec::with_capacity(form.recipients.len() + 1024);
    let mut text_part = |name: &str, value: &str| {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(value.as_bytes());
        body.extend_from_slice(b"\r\n");
    };
    text_part("from", &form.from);
    text_part("subject", &form.subject);
    text_part("text", &form.text);
    text_part("html", &form.html);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"recipients\"; \
             filename=\"recipients.csv\"\r\nContent-Type: text/csv\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&form.recipients);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_urls_it_cannot_call() {
        assert!(IngestClient::new("https://ingest:8080").is_err());
        assert!(IngestClient::new("ingest:8080").is_err());
        assert!(IngestClient::new("http://127.0.0.1:8080/").is_ok());
    }

    #[test]
    fn encodes_components() {
        assert_eq!(encode_component("a b/&c"), "a%20b%2F%26c");
        assert_eq!(encode_component("c1-x_y"), "c1-x_y");
    }

    #[test]
    fn multipart_holds_every_field() {
        let (ct, body) = multipart(&CampaignForm {
            from: "a@example.com".into(),
            subject: "Hi".into(),
            text: "T".into(),
            html: String::new(),
            recipients: Bytes::from_static(b"email\nb@example.com\n"),
        });
        let boundary = ct.split("boundary=").nth(1).unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
        assert!(text.contains("name=\"recipients\"; filename=\"recipients.csv\""));
        assert!(text.contains("b@example.com"));
    }
}
