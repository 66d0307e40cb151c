//! The HTTP API the web form (and any client) uses, one module per resource: campaigns
//! (submit, read, preview), campaign control, dead letters, sending limits. Every body it
//! reads or writes is a [`jetmail_common::api`] type, and every error answer an [`ErrorBody`]
//! whose status comes from its [`ErrorCode`], so clients branch on codes, never on wording.

mod bounces;
mod campaigns;
mod control;
mod dead;
pub mod guard;
mod limits;
mod suppressions;
mod test_send;
pub mod unsubscribe;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use jetmail_common::api::{route, ErrorBody, ErrorCode, Field};
use jetmail_common::http_server::ServerLimits;
use jetmail_common::store::StoreError;
use jetmail_common::topology::Topology;
use tokio_util::sync::CancellationToken;

use crate::api_tokens::{TokenSet, TokenStore};
use crate::control::ControlError;
use crate::dead::DeadError;
use crate::from_domains::AllowedFromDomains;
use crate::limits::LimitsError;
use crate::publish::SubmitError;
pub use guard::ApiAuth;

/// Default request body limit: bodies above it get 413.
pub const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;
/// Default time requests in flight get to finish after a shutdown signal.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// What a client told "the outbox is full" should wait before trying again: about the time
/// senders need to make room for a batch.
const OUTBOX_FULL_RETRY_AFTER_SECS: u64 = 30;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub topo: Topology,
    /// Verifies unsubscribe links and signs new ones; `None` when not configured.
    pub unsubscribe: Option<Arc<crate::unsubscribe::Unsubscribe>>,
    /// Who may call the API routes (see [`guard`]).
    pub auth: ApiAuth,
    /// `--allowed-from-domains`: a campaign from elsewhere is refused.
    pub allowed_from: Option<Arc<AllowedFromDomains>>,
}

impl ApiState {
    /// The state of an API without credentials, for in-process tests; `serve` takes its
    /// [`ApiAuth`] from [`ServeConfig`], which is closed by default.
    pub fn new(topo: Topology) -> Self {
        Self {
            topo,
            unsubscribe: None,
            auth: ApiAuth::Insecure,
            allowed_from: None,
        }
    }
}

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// After the shutdown signal, how long requests in flight may take to finish.
    pub shutdown_timeout: Duration,
    /// One-click unsubscribe (`--public-url`, `--unsubscribe-secret-file`).
    pub unsubscribe: Option<Arc<crate::unsubscribe::Unsubscribe>>,
    /// Who may call the API. The default knows no token: every API request is refused.
    pub auth: ApiAuth,
    /// `--allowed-from-domains`.
    pub allowed_from: Option<Arc<AllowedFromDomains>>,
    /// Header timeout, body idle timeout, connection limit (per listener).
    pub limits: ServerLimits,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            unsubscribe: None,
            auth: ApiAuth::Tokens(Arc::new(TokenStore::new(
                std::path::PathBuf::new(),
                TokenSet::default(),
            ))),
            allowed_from: None,
            limits: ServerLimits::default(),
        }
    }
}

/// Where `serve` listens: the API (with the public routes too), and optionally the public
/// unsubscribe routes alone (`--public-listen`), the one ingest port a deployment exposes.
pub struct Listeners {
    pub api: tokio::net::TcpListener,
    pub public: Option<tokio::net::TcpListener>,
}

impl From<tokio::net::TcpListener> for Listeners {
    fn from(api: tokio::net::TcpListener) -> Self {
        Listeners { api, public: None }
    }
}

/// An error answer: an [`ErrorBody`], answered with its code's status.
#[derive(Debug)]
pub struct ApiError {
    pub body: ErrorBody,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(error: ErrorCode, detail: impl std::fmt::Display) -> Self {
        Self {
            body: ErrorBody {
                error,
                field: None,
                detail: detail.to_string(),
            },
            retry_after: None,
        }
    }

    /// An invalid campaign, about `field` when one part of the request is at fault.
    pub fn invalid(field: Option<Field>, detail: impl std::fmt::Display) -> Self {
        let mut e = Self::new(ErrorCode::InvalidCampaign, detail);
        e.body.field = field;
        e
    }

    pub fn not_found(detail: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::NotFound, detail)
    }

    /// A request body that could not be read: too large, or broken.
    fn body(status: StatusCode, detail: impl std::fmt::Display) -> Self {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(ErrorCode::TooLarge, detail)
        } else {
            Self::new(ErrorCode::BadRequest, detail)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.body.error.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Client errors are the client's to read; ours are logged here, once.
        if status.is_server_error() {
            tracing::warn!(code = %self.body.error, detail = %self.body.detail, "request failed");
        }
        let mut resp = (status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::Full { .. } => ErrorCode::OutboxFull,
            StoreError::Corrupt { .. } => ErrorCode::Internal,
            // A compare-and-set that kept losing is worth retrying, like a broker away.
            StoreError::Conflict(_) | StoreError::Broker(_) => ErrorCode::Broker,
        };
        let mut err = ApiError::new(code, &e);
        if code == ErrorCode::OutboxFull {
            err.retry_after = Some(OUTBOX_FULL_RETRY_AFTER_SECS);
        }
        err
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        let detail = e.to_string();
        match e {
            SubmitError::Invalid { field, detail } => ApiError::invalid(Some(field), detail),
            SubmitError::Conflict(_) => ApiError::new(ErrorCode::Conflict, detail),
            SubmitError::OutboxFull { .. } => ApiError {
                retry_after: Some(OUTBOX_FULL_RETRY_AFTER_SECS),
                ..ApiError::new(ErrorCode::OutboxFull, detail)
            },
            // Keep the store's classification (a corrupt record is not a broker outage), with
            // the submit's own sentence (how far publishing got).
            SubmitError::Store { source, .. } => {
                let mut err = ApiError::from(source);
                err.body.detail = detail;
                err
            }
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(_) => ApiError::not_found(e),
            ControlError::Refused { .. } => ApiError::new(ErrorCode::Conflict, e),
            ControlError::MissingSendAt => ApiError::invalid(Some(Field::SendAt), e),
            ControlError::Invalid(i) => ApiError::invalid(Some(i.field()), i),
            ControlError::Store(s) => s.into(),
        }
    }
}

impl From<LimitsError> for ApiError {
    fn from(e: LimitsError) -> Self {
        let field = e.field();
        let mut err = match e {
            LimitsError::Store(s) => return s.into(),
            LimitsError::NotFound(_) => ApiError::not_found(e),
            LimitsError::DomainTaken { .. } => ApiError::new(ErrorCode::Conflict, e),
            LimitsError::Invalid(_)
            | LimitsError::Cooldown(_)
            | LimitsError::ScopeMismatch { .. } => ApiError::new(ErrorCode::InvalidLimit, e),
        };
        err.body.field = field;
        err
    }
}

impl From<DeadError> for ApiError {
    fn from(e: DeadError) -> Self {
        match e {
            DeadError::Filter(_) => ApiError::new(ErrorCode::InvalidFilter, e),
            DeadError::Store(s) => s.into(),
        }
    }
}

/// The routes of `jetmail-ingest serve`, with a request body limit of `max_body` bytes. Every
/// API route (and any other path) is behind [`guard::guard`]; `/healthz` and the public
/// unsubscribe routes are not.
pub fn router(state: ApiState, max_body: usize) -> Router {
    jetmail_common::metrics::install_for("ingest");
    let state = Arc::new(state);
    let api = Router::new()
        .merge(campaigns::routes())
        .merge(control::routes())
        .merge(dead::routes())
        .merge(limits::routes())
        .merge(suppressions::routes())
        .merge(bounces::routes())
        .merge(test_send::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ));
    Router::new()
        .route(route::HEALTH, get(|| async { "ok" }))
        .merge(api)
        // Public (RFC 8058): merged after the guard was layered, so it does not cover them.
        .merge(unsubscribe::routes())
        .route(
            jetmail_common::metrics::ROUTE,
            get(|| async { jetmail_common::metrics::render() }),
        )
        // Per route (`Router::layer`), where the matched pattern is known.
        .layer(axum::middleware::from_fn(crate::telemetry::count_requests))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// The public listener's routes: the unsubscribe pair and `/healthz`, nothing else.
pub fn public_router(state: ApiState) -> Router {
    Router::new()
        .route(route::HEALTH, get(|| async { "ok" }))
        .merge(unsubscribe::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(guard::SMALL_BODY))
        .with_state(Arc::new(state))
}

/// Counts a request as in flight for as long as it lives.
struct InFlight(Arc<AtomicU64>);

impl InFlight {
    fn enter(counter: &Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves the HTTP API on `listener` until `shutdown`, then stops accepting and gives the
/// requests in flight `config.shutdown_timeout` to finish, saying while it waits how many are
/// left. Past the deadline they are dropped: a submit cut short has its progress recorded and
/// resumes when the client submits again.
pub async fn serve(
    topo: Topology,
    listeners: impl Into<Listeners>,
    config: &ServeConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listeners = listeners.into();
    let in_flight = Arc::new(AtomicU64::new(0));
    let counter = in_flight.clone();
    let count = axum::middleware::from_fn(move |req: Request, next: Next| {
        let guard = InFlight::enter(&counter);
        async move {
            let resp = next.run(req).await;
            drop(guard);
            resp
        }
    });
    let state = ApiState {
        topo,
        unsubscribe: config.unsubscribe.clone(),
        auth: config.auth.clone(),
        allowed_from: config.allowed_from.clone(),
    };
    match &config.auth {
        ApiAuth::Insecure => tracing::warn!(
            "--insecure-no-auth: anyone who can reach the API may send mail, read every list \
             and purge dead letters"
        ),
        ApiAuth::Tokens(store) => tracing::info!(
            tokens = store.current().len(),
            file = %store.path().display(),
            "API tokens loaded"
        ),
    }
    let public = listeners.public.map(|l| {
        let app = public_router(state.clone()).layer(count.clone());
        (l, app)
    });
    let app = router(state, config.max_body).layer(count);
    tracing::info!(addr = %listeners.api.local_addr()?, "ingest API listening");
    let api_server =
        jetmail_common::http_server::serve(listeners.api, app, config.limits, shutdown.clone());
    let public_server = async {
        match public {
            Some((listener, app)) => {
                tracing::info!(addr = %listener.local_addr()?, "public unsubscribe routes listening");
                jetmail_common::http_server::serve(listener, app, config.limits, shutdown.clone())
                    .await
            }
            None => Ok(()),
        }
    };
    let server = async move { tokio::try_join!(api_server, public_server).map(|_| ()) };
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => return res,
        _ = shutdown.cancelled() => {}
    }
    tracing::info!(
        in_flight = in_flight.load(Ordering::Relaxed),
        "stopped accepting requests"
    );
    let remaining = || Some(in_flight.load(Ordering::Relaxed));
    match jetmail_common::shutdown::finish_within(
        server,
        config.shutdown_timeout,
        "HTTP requests in flight",
        remaining,
    )
    .await
    {
        Some(res) => res,
        // finish_within logged what was left unfinished.
        None => Ok(()),
    }
}
