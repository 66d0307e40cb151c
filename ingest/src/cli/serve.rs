//! `jetmail-ingest serve`: its flags, the API tokens (or the explicit `--insecure-no-auth`),
//! the listeners, and the SIGHUP that reloads the token file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jetmail_common::config::parse_duration;
use jetmail_common::http_server::{ServerLimits, DEFAULT_BODY_IDLE_TIMEOUT};
use jetmail_common::topology::Topology;

use crate::api_tokens::TokenStore;
use crate::from_domains::AllowedFromDomains;
use crate::http::{ApiAuth, Listeners, ServeConfig, DEFAULT_MAX_BODY};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[arg(long, env = "JETMAIL_INGEST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Also serve the public unsubscribe routes (and /healthz), and nothing else, here: the one
    /// ingest port to expose. They stay on --listen too.
    #[arg(long, env = "JETMAIL_PUBLIC_LISTEN")]
    pub public_listen: Option<SocketAddr>,
    /// The API's bearer tokens: one `name token [read|send|admin]` a line (see README).
    /// SIGHUP reloads it.
    #[arg(long, env = "JETMAIL_API_TOKENS_FILE")]
    pub api_tokens_file: Option<PathBuf>,
    /// Serve the API without tokens: anyone who reaches the port may send mail.
    #[arg(long, env = "JETMAIL_INGEST_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Refuse campaigns whose From is not at one of these domains (comma-separated).
    #[arg(long, env = "JETMAIL_ALLOWED_FROM_DOMAINS", value_delimiter = ',')]
    pub allowed_from_domains: Vec<String>,
    /// Largest request body accepted, in bytes (413 above it).
    #[arg(long, env = "JETMAIL_INGEST_MAX_BODY", default_value_t = DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Time a client has to send a request's headers (slower ones are cut off).
    #[arg(long, env = "JETMAIL_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Connections served at once, per listener (more wait to be accepted).
    #[arg(long, env = "JETMAIL_HTTP_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,
    /// On SIGTERM, how long requests in flight may take to finish before they are dropped
    /// (a submit cut short resumes when the client submits again).
    #[arg(long, env = "JETMAIL_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    #[command(flatten)]
    pub unsubscribe: crate::unsubscribe::UnsubscribeArgs,
}

/// Who may call the API, from the flags: a token file, or the explicit opt-out.
fn auth(a: &ServeArgs) -> anyhow::Result<ApiAuth> {
    match (&a.api_tokens_file, a.insecure_no_auth) {
        (Some(path), false) => Ok(ApiAuth::Tokens(Arc::new(TokenStore::load(path)?))),
        (None, true) => Ok(ApiAuth::Insecure),
        (None, false) => anyhow::bail!(
            "no API tokens: pass --api-tokens-file (JETMAIL_API_TOKENS_FILE), or \
             --insecure-no-auth to serve the API to anyone who can reach it"
        ),
        (Some(_), true) => {
            anyhow::bail!("both --api-tokens-file and --insecure-no-auth were given: choose one")
        }
    }
}

/// What can be checked before connecting to the broker: access and the From domains, so a
/// misconfigured `serve` stops at once with the reason.
pub fn preflight(a: &ServeArgs) -> anyhow::Result<()> {
    auth(a)?;
    AllowedFromDomains::new(&a.allowed_from_domains)?;
    Ok(())
}

pub async fn run(topo: Topology, a: ServeArgs) -> anyhow::Result<()> {
    let auth = auth(&a)?;
    let shutdown = jetmail_common::shutdown::shutdown_token();
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))
    };
    let api = bind(a.listen).await?;
    let public = match a.public_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    if let ApiAuth::Tokens(store) = &auth {
        tokio::spawn(crate::api_tokens::reload_on_sighup(
            store.clone(),
            shutdown.clone(),
        ));
    }
    let config = ServeConfig {
        max_body: a.max_body,
        shutdown_timeout: a.shutdown_timeout,
        unsubscribe: a.unsubscribe.load()?,
        auth,
        allowed_from: AllowedFromDomains::new(&a.allowed_from_domains)?.map(Arc::new),
        limits: ServerLimits {
            header_read_timeout: a.header_timeout,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            max_connections: a.max_connections,
        },
    };
    crate::http::serve(topo, Listeners { api, public }, &config, shutdown).await?;
    Ok(())
}
