//! The client of ingest's HTTP API: every change the web UI makes (a new campaign, pause,
//! resume, cancel, replaying or discarding dead letters) is a request to ingest, which owns
//! publishing. Requests and answers are the types of [`jetmail_common::api`], the contract
//! ingest serialises, so the two cannot drift apart. Forms are forwarded as multipart, the way
//! ingest reads CSV uploads, so line numbers of rejected rows are ingest's own. Sending
//! limits and rescheduling are in [`limits`]; the suppression list and test sends in
//! [`compliance`].

use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use jetmail_common::api::{
    self, BulkReport, ControlAction, DeadFilter, DeadList, DeadQuery, ErrorBody, ErrorCode, Field,
    Preview, SubmitReport,
};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, Url};

use crate::WebError;

mod compliance;
mod limits;
mod token;
pub use token::{IngestToken, TokenFileError};

/// How long a quick request (preview, list, control) may take.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(30);
/// Submitting publishes every recipient before ingest answers: a large list takes minutes.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Replaying or discarding "all that match" touches every matching dead letter.
pub const BULK_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long connecting to ingest may take: it is on the local network or nowhere.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from ingest.
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// How much of an answer that is not ingest's error body is shown to a person.
const SHOWN_OF_FOREIGN_ANSWER: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No HTTP exchange happened; `cause` is the chain of causes ("tcp connect error:
    /// Connection refused (os error 111)").
    #[error("ingest is unreachable at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("ingest did not answer within {0:?}")]
    Timeout(Duration),
    /// Ingest refused the request. Callers branch on `body.error` and `body.field`;
    /// `body.detail` is for people.
    #[error("ingest refused the request ({status}): {}", body.detail)]
    Refused { status: StatusCode, body: ErrorBody },
    #[error("ingest answered something unreadable: {0}")]
    Decode(String),
    /// Ingest refused the web UI's own token (401) or its scope (403): an operator must fix
    /// the configuration. The text never holds the token.
    #[error("{}", token::refusal_text(*.0))]
    Credentials(StatusCode),
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
    /// The campaign's own rate, send-at and deadline as typed; empty ones are not sent.
    pub rate: String,
    pub send_at: String,
    pub deadline: String,
}

impl CampaignForm {
    /// The form as ingest reads it: the fields of [`api::CampaignRequest`] by name, the
    /// recipients as a CSV file part.
    fn multipart(&self) -> Form {
        let recipients = Part::stream_with_length(
            reqwest::Body::from(self.recipients.clone()),
            self.recipients.len() as u64,
        )
        .file_name("recipients.csv")
        .mime_str("text/csv")
        .expect("text/csv is a valid media type");
        let mut form = Form::new()
            .text("from", self.from.clone())
            .text("subject", self.subject.clone())
            .text("text", self.text.clone())
            .text("html", self.html.clone());
        for (field, value) in [
            (Field::Rate, &self.rate),
            (Field::SendAt, &self.send_at),
            (Field::Deadline, &self.deadline),
        ] {
            if !value.trim().is_empty() {
                form = form.text(field.as_str(), value.trim().to_string());
            }
        }
        form.part("recipients", recipients)
    }
}

/// What a request carries.
enum Payload {
    Empty,
    /// A body already serialised as JSON.
    Json(Vec<u8>),
    Multipart(Form),
    /// A body sent as it is, with its media type (a CSV file to import).
    Raw(&'static str, Bytes),
}

impl Payload {
    fn json(body: &impl serde::Serialize) -> Self {
        Payload::Json(serde_json::to_vec(body).expect("an API body always serialises"))
    }
}

/// A cheap handle (clone it freely) on one pooled HTTP/1 client.
#[derive(Clone)]
pub struct IngestClient {
    /// Without a trailing `/`, so a path prefix (`http://proxy/ingest`) is kept.
    base: String,
    http: reqwest::Client,
    token: Option<IngestToken>,
}

impl IngestClient {
    /// `base` is `http://host:port` (a path prefix is kept); TLS is left to a proxy in front.
    pub fn new(base: &str) -> Result<Self, WebError> {
        let bad = |reason: &str| WebError::IngestUrl {
            url: base.to_string(),
            reason: reason.to_string(),
        };
        let url = Url::parse(base).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if url.scheme() != "http" {
            return Err(bad("only http:// is supported (put TLS in a proxy)"));
        }
        if url.host().is_none() {
            return Err(bad("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a base URL has no query or fragment"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // Ingest is an internal service: an HTTP_PROXY set in the environment for the
            // way out to the internet must not carry these calls elsewhere.
            .no_proxy()
            .build()
            .map_err(|e| bad(&format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            base: url.as_str().trim_end_matches('/').to_string(),
            http,
            token: None,
        })
    }

    /// Sends `token` as `Authorization: Bearer …` on every call.
    pub fn with_token(mut self, token: Option<IngestToken>) -> Self {
        self.token = token;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One exchange: `path_and_query` comes from [`api::route`] or [`api::path`], which
    /// encode every variable part.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        payload: Payload,
        extra_headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Bytes, IngestError> {
        let url = format!("{}{}", self.base, path_and_query);
        let mut req = self.http.request(method, &url).timeout(timeout);
        if let Some(t) = &self.token {
            req = req.header(reqwest::header::AUTHORIZATION, t.header_value());
        }
        for (name, value) in extra_headers {
            req = req.header(*name, *value);
        }
        req = match payload {
            Payload::Empty => req,
            Payload::Json(body) => req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
            Payload::Multipart(form) => req.multipart(form),
            Payload::Raw(content_type, body) => req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body),
        };
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                IngestError::Timeout(timeout)
            } else if e.is_connect() || e.is_request() || e.is_builder() {
                IngestError::Unreachable {
                    url: url.clone(),
                    cause: causes(&e),
                }
            } else {
                IngestError::Decode(causes(&e))
            }
        };
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(Bytes::from(body));
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(IngestError::Credentials(status));
        }
        Err(IngestError::Refused {
            status,
            body: error_body(status, &body),
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, IngestError> {
        serde_json::from_slice(body).map_err(|e| IngestError::Decode(e.to_string()))
    }

    /// Renders the campaign for its first valid recipient; publishes nothing.
    pub async fn preview(&self, form: &CampaignForm) -> Result<Preview, IngestError> {
        let b = self
            .call(
                Method::POST,
                api::route::PREVIEW,
                Payload::Multipart(form.multipart()),
                &[],
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
    ) -> Result<SubmitReport, IngestError> {
        let b = self
            .call(
                Method::POST,
                api::route::CAMPAIGNS,
                Payload::Multipart(form.multipart()),
                &[(api::IDEMPOTENCY_KEY_HEADER, idempotency_key)],
                SUBMIT_TIMEOUT,
            )
            .await?;
        Self::decode(&b)
    }

    pub async fn control(&self, campaign: &str, action: ControlAction) -> Result<(), IngestError> {
        self.call(
            Method::POST,
            &api::path::control(campaign, action),
            Payload::Empty,
            &[],
            QUICK_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    pub async fn dead_list(&self, query: &DeadQuery) -> Result<DeadList, IngestError> {
        let b = self
            .call(
                Method::GET,
                &api::path::dead_list(query),
                Payload::Empty,
                &[],
                QUICK_TIMEOUT,
            )
            .await?;
        Self::decode(&b)
    }

    /// Re-publishes matching dead letters (ingest gives each a new message id).
    pub async fn dead_replay(&self, filter: &DeadFilter) -> Result<BulkReport, IngestError> {
        self.dead_bulk(Method::POST, api::route::DEAD_REPLAY, filter)
            .await
    }

    /// Deletes matching dead letters.
    pub async fn dead_discard(&self, filter: &DeadFilter) -> Result<BulkReport, IngestError> {
        self.dead_bulk(Method::DELETE, api::route::DEAD, filter)
            .await
    }

    async fn dead_bulk(
        &self,
        method: Method,
        path: &str,
        filter: &DeadFilter,
    ) -> Result<BulkReport, IngestError> {
        let b = self
            .call(method, path, Payload::json(filter), &[], BULK_TIMEOUT)
            .await?;
        Self::decode(&b)
    }
}

fn too_large() -> IngestError {
    IngestError::Decode(format!("the answer is larger than {MAX_ANSWER} bytes"))
}

/// The causes under a reqwest error, outermost first. reqwest's own message only says
/// "error sending request for url (…)"; what a person needs ("Connection refused") is one or
/// two sources down.
fn causes(e: &reqwest::Error) -> String {
    let chain: Vec<String> = std::iter::successors(std::error::Error::source(e), |c| c.source())
        .map(ToString::to_string)
        .collect();
    if chain.is_empty() {
        e.to_string()
    } else {
        chain.join(": ")
    }
}

/// Ingest's error body, or (an answer from something else in between: a proxy's 502 page)
/// one made from the status, with the start of the answer as its detail.
fn error_body(status: StatusCode, body: &[u8]) -> ErrorBody {
    if let Ok(e) = serde_json::from_slice::<ErrorBody>(body) {
        return e;
    }
    let error = match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::TooLarge,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Broker,
        _ => ErrorCode::Unknown,
    };
    let shown = String::from_utf8_lossy(&body[..body.len().min(SHOWN_OF_FOREIGN_ANSWER)]);
    let detail = if shown.trim().is_empty() {
        status.to_string()
    } else {
        shown.trim().to_string()
    };
    ErrorBody {
        error,
        field: None,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;

    #[test]
    fn refuses_urls_it_cannot_call() {
        assert!(IngestClient::new("https://ingest:8080").is_err());
        assert!(IngestClient::new("ingest:8080").is_err());
        assert!(IngestClient::new("http://127.0.0.1:8080/?x=1").is_err());
        let c = IngestClient::new("http://127.0.0.1:8080/prefix/").unwrap();
        assert_eq!(c.base(), "http://127.0.0.1:8080/prefix");
    }

    #[test]
    fn error_bodies_are_read_whatever_answers() {
        let e = error_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"error":"invalid_campaign","field":"subject","detail":"syntax error"}"#,
        );
        assert_eq!(
            (e.error, e.field),
            (ErrorCode::InvalidCampaign, Some(Field::Subject))
        );
        // An ingest from before `field` existed.
        let e = error_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"error":"invalid_campaign","detail":"x"}"#,
        );
        assert_eq!((e.error, e.field), (ErrorCode::InvalidCampaign, None));
        // A proxy's page.
        let e = error_body(StatusCode::BAD_GATEWAY, b"<h1>502 Bad Gateway</h1>");
        assert_eq!(e.error, ErrorCode::Unknown);
        assert_eq!(e.detail, "<h1>502 Bad Gateway</h1>");
        let e = error_body(StatusCode::PAYLOAD_TOO_LARGE, b"");
        assert_eq!(e.error, ErrorCode::TooLarge);
        assert!(e.detail.contains("413"), "{}", e.detail);
    }

    #[tokio::test]
    async fn an_unreachable_ingest_is_reported_with_its_cause() {
        // A port nobody listens on: bound, then closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = IngestClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = c
            .control("c1", ControlAction::Pause)
            .await
            .expect_err("nobody listens");
        let text = e.to_string();
        assert!(matches!(e, IngestError::Unreachable { .. }), "{text}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }

    /// A stand-in ingest on a loopback port, serving `app`.
    async fn serve(app: axum::Router) -> IngestClient {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        IngestClient::new(&format!("http://{addr}")).unwrap()
    }

    #[tokio::test]
    async fn forms_are_forwarded_as_ingest_reads_them() {
        async fn echo(mut mp: axum::extract::Multipart) -> axum::Json<Preview> {
            let mut seen = Vec::new();
            while let Some(f) = mp.next_field().await.unwrap() {
                let name = f.name().unwrap().to_string();
                let file = f.file_name().map(str::to_string);
                let data = f.text().await.unwrap();
                seen.push(format!("{name}|{file:?}|{data}"));
            }
            axum::Json(Preview {
                recipient: seen.join("\n"),
                subject: String::new(),
                text: String::new(),
                html: None,
                rejected: Vec::new(),
            })
        }
        let c = serve(axum::Router::new().route(api::route::PREVIEW, post(echo))).await;
        let p = c
            .preview(&CampaignForm {
                from: "a@example.com".into(),
                subject: "Hi {{ name }}".into(),
                text: "T".into(),
                html: String::new(),
                recipients: Bytes::from_static(b"email\nb@example.com\n"),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            p.recipient,
            "from|None|a@example.com\nsubject|None|Hi {{ name }}\ntext|None|T\nhtml|None|\n\
             recipients|Some(\"recipients.csv\")|email\nb@example.com\n"
        );
    }

    #[tokio::test]
    async fn slow_and_oversized_answers_are_cut_off() {
        let app = axum::Router::new()
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/big", post(|| async { vec![b'x'; MAX_ANSWER + 1] }));
        let c = serve(app).await;
        let slow = c
            .call(
                Method::POST,
                "/slow",
                Payload::Empty,
                &[],
                Duration::from_millis(200),
            )
            .await;
        assert!(matches!(slow, Err(IngestError::Timeout(_))), "{slow:?}");
        let big = c
            .call(Method::POST, "/big", Payload::Empty, &[], QUICK_TIMEOUT)
            .await;
        assert!(matches!(big, Err(IngestError::Decode(_))), "{big:?}");
    }
}
