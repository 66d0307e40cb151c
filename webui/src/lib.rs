//! jetmail web UI: a browser front end for people who send campaigns. It renders HTML on the
//! server (minijinja), keeps pages live with Server-Sent Events fed by KV watches and stream
//! state ([`live`]), and changes nothing itself: submitting a campaign, pausing it, replaying a
//! dead letter all go through ingest's HTTP API ([`ingest`]). The web UI never publishes to a
//! stream and never writes a bucket.
//!
//! [`router`] builds the whole application from an [`AppState`], so tests drive it with
//! `tower::ServiceExt::oneshot` and no socket; [`run`] serves it on a listener the caller bound.

pub mod auth;
pub mod ingest;
pub mod live;
pub mod pages;
pub mod render;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use jetmail_common::topology::Topology;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest form with an upload accepted (a campaign's recipients, a suppression list to
/// import); ingest's own default limit.
pub const MAX_FORM_BYTES: usize = 32 * 1024 * 1024;
/// Largest body of every other form (login, control buttons, limits, one suppression).
pub const MAX_SMALL_FORM_BYTES: usize = 256 * 1024;
/// After SIGTERM, how long requests in flight may take before the server stops anyway.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// How people prove who they are.
#[derive(Clone)]
pub enum Access {
    /// One shared password (`JETMAIL_WEBUI_PASSWORD`).
    Password(String),
    /// `--insecure-no-auth`: anyone who reaches the port may use it; every page says so.
    Open,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password, not even in a debug log.
        match self {
            Access::Password(_) => f.write_str("Password(<hidden>)"),
            Access::Open => f.write_str("Open"),
        }
    }
}

/// Everything the web UI is configured with; passed explicitly, never global.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of `jetmail-ingest serve`, e.g. `http://127.0.0.1:8080`.
    pub ingest_url: String,
    pub access: Access,
    /// Add `Secure` to the session cookie (when served behind TLS).
    pub secure_cookie: bool,
    /// The web UI's own token for ingest's API (`--ingest-token-file`); hidden from `Debug`.
    pub ingest_token: Option<ingest::IngestToken>,
    /// Failed logins tolerated per client and overall.
    pub login_limits: auth::LoginLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("invalid ingest URL {url:?}: {reason}")]
    IngestUrl { url: String, reason: String },
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The shared parts behind [`AppState`].
pub struct Inner {
    pub config: Config,
    pub topo: Topology,
    pub ingest: ingest::IngestClient,
    pub sessions: auth::Sessions,
    pub login_throttle: auth::LoginThrottle,
    pub hub: live::Hub,
    pub templates: render::Templates,
    pub shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state and starts the live hub's watches; they stop with `shutdown`.
    pub fn new(
        config: Config,
        topo: Topology,
        shutdown: CancellationToken,
    ) -> Result<Self, WebError> {
        let ingest =
            ingest::IngestClient::new(&config.ingest_url)?.with_token(config.ingest_token.clone());
        let login_throttle = auth::LoginThrottle::new(config.login_limits);
        let tasks = TaskTracker::new();
        let hub = live::Hub::start(topo.clone(), &tasks, shutdown.clone());
        Ok(Self(Arc::new(Inner {
            config,
            topo,
            ingest,
            sessions: auth::Sessions::default(),
            login_throttle,
            hub,
            templates: render::Templates::new(),
            shutdown,
            tasks,
        })))
    }

    /// Whether logins are switched off (`--insecure-no-auth`).
    pub fn open_access(&self) -> bool {
        matches!(self.config.access, Access::Open)
    }

    /// Waits for the hub's tasks, which end once `shutdown` is cancelled.
    pub async fn wait_tasks(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The whole application. Pages and forms need a session; static files, `/healthz` and
/// `/metrics` do not.
pub fn router(state: AppState) -> Router {
    jetmail_common::metrics::install_for("webui");
    let pages = Router::new()
        .route("/", get(pages::index))
        .route("/campaigns", get(pages::campaigns::list))
        .route(
            "/campaigns/new",
            get(pages::new_campaign::form)
                .post(pages::new_campaign::submit)
                .layer(DefaultBodyLimit::max(MAX_FORM_BYTES)),
        )
        .route(
            "/campaigns/new/preview",
            get(pages::new_campaign::preview_html),
        )
        .route("/campaigns/{id}", get(pages::campaigns::detail))
        .route("/campaigns/{id}/{action}", post(pages::campaigns::control))
        .route("/senders", get(pages::senders::page))
        .route("/dead", get(pages::dead::page).post(pages::dead::act))
        .route("/limits", get(pages::limits::page).post(pages::limits::set))
        .route("/limits/remove", post(pages::limits::remove))
        .route(
            "/suppressions",
            get(pages::suppressions::page).post(pages::suppressions::add),
        )
        .route("/suppressions/remove", post(pages::suppressions::remove))
        .route(
            "/suppressions/import",
            post(pages::suppressions::import).layer(DefaultBodyLimit::max(MAX_FORM_BYTES)),
        )
        .route("/events/campaigns", get(live::campaign_events))
        .route("/events/senders", get(live::sender_events))
        .route_layer(middleware::from_fn(auth::require_login));
    let public = Router::new()
        .route("/login", get(auth::login_page).post(auth::login_submit))
        .route("/logout", post(auth::logout));
    Router::new()
        .merge(pages)
        .merge(public)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::with_session,
        ))
        .route("/static/style.css", get(render::style_css))
        .route("/static/app.js", get(render::app_js))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            jetmail_common::metrics::ROUTE,
            get(|| async { jetmail_common::metrics::render() }),
        )
        .layer(DefaultBodyLimit::max(MAX_SMALL_FORM_BYTES))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

/// Headers every answer carries: our own scripts and styles only, no framing, no sniffing.
async fn security_headers(mut resp: axum::response::Response) -> axum::response::Response {
    let h = resp.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'",
            ),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Serves the web UI on `listener` until `shutdown`. Live streams end at once on shutdown;
/// other requests get [`SHUTDOWN_DEADLINE`] to finish, then are dropped: every change they
/// asked for is ingest's to complete or refuse, so a dropped answer loses no mail.
pub async fn run(
    config: Config,
    topo: Topology,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), WebError> {
    let state = AppState::new(config, topo, shutdown.clone())?;
    if state.open_access() {
        tracing::warn!("--insecure-no-auth: anyone who can reach the web UI may use it");
    }
    let app = router(state.clone());
    tracing::info!(addr = %listener.local_addr()?, "web UI listening");
    let stop = shutdown.clone();
    // Header and body timeouts and a connection limit (slowloris); shutdown stops accepting.
    let server = jetmail_common::http_server::serve(listener, app, Default::default(), stop);
    tokio::pin!(server);
    tokio::select! {
        // Only an I/O error ends the server before shutdown.
        r = &mut server => {
            r?;
            state.wait_tasks().await;
        }
        _ = shutdown.cancelled() => {
            let drained = jetmail_common::shutdown::finish_within(
                async {
                    (&mut server).await?;
                    state.wait_tasks().await;
                    Ok::<_, WebError>(())
                },
                SHUTDOWN_DEADLINE,
                "web UI requests",
                || None,
            )
            .await;
            if let Some(r) = drained {
                r?;
            }
        }
    }
    tracing::info!("web UI stopped");
    Ok(())
}
