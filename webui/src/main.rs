//! `jetmail-webui`: parses flags, starts tracing and the shutdown token, connects to NATS,
//! binds the listener and hands everything to [`jetmail_webui::run`].

use anyhow::Context;
use clap::Parser;
use jetmail_common::config::NatsArgs;
use jetmail_webui::{Access, Config};

/// Environment variable holding the login password. It is read from the environment only,
/// never a flag, so it does not show in the process list.
const PASSWORD_ENV: &str = "JETMAIL_WEBUI_PASSWORD";

#[derive(Parser)]
#[command(
    name = "jetmail-webui",
    version,
    about = "jetmail web UI: send a campaign from a browser, watch it live, senders, dead letters",
    after_help = "The login password comes from JETMAIL_WEBUI_PASSWORD (or --password-file)."
)]
struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    /// Base URL of `jetmail-ingest serve`: every change goes through it.
    #[arg(
        long,
        env = "JETMAIL_INGEST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    ingest_url: String,
    /// Address to serve the web UI on.
    #[arg(long, env = "JETMAIL_WEBUI_LISTEN", default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    /// Read the password from this file (its first line) instead of JETMAIL_WEBUI_PASSWORD.
    #[arg(long, env = "JETMAIL_WEBUI_PASSWORD_FILE")]
    password_file: Option<std::path::PathBuf>,
    /// Run without a login: anyone who can reach the port may send mail. Every page says so.
    #[arg(long, env = "JETMAIL_WEBUI_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// Mark the session cookie `Secure` (serve it over HTTPS, behind a TLS proxy). Implied by
    /// an https:// --public-url.
    #[arg(long, env = "JETMAIL_WEBUI_SECURE_COOKIE")]
    secure_cookie: bool,
    /// The URL people open the web UI at; `https://…` makes the session cookie `Secure`.
    #[arg(long, env = "JETMAIL_WEBUI_PUBLIC_URL")]
    public_url: Option<String>,
    /// The web UI's API token for ingest (first line of the file): ingest's
    /// --api-tokens-file must list it with scope `admin` for every page to work.
    #[arg(long, env = "JETMAIL_INGEST_TOKEN_FILE")]
    ingest_token_file: Option<std::path::PathBuf>,
}

fn access(args: &Args) -> anyhow::Result<Access> {
    let password = match &args.password_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the password file {}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        None => std::env::var(PASSWORD_ENV).unwrap_or_default(),
    };
    match (password.is_empty(), args.insecure_no_auth) {
        (false, false) => Ok(Access::Password(password)),
        (true, true) => Ok(Access::Open),
        (true, false) => anyhow::bail!(
            "no password: set {PASSWORD_ENV} (or --password-file), or pass --insecure-no-auth \
             to run without a login"
        ),
        (false, true) => {
            anyhow::bail!("both a password and --insecure-no-auth were given: choose one")
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jetmail_common::telemetry::init_tracing();
    let args = Args::parse();
    let config = Config {
        access: access(&args)?,
        ingest_url: args.ingest_url.clone(),
        secure_cookie: args.secure_cookie
            || args
                .public_url
                .as_deref()
                .is_some_and(|u| u.trim().to_ascii_lowercase().starts_with("https://")),
        ingest_token: match &args.ingest_token_file {
            Some(path) => Some(jetmail_webui::ingest::IngestToken::read(path)?),
            None => {
                tracing::warn!("no --ingest-token-file: calls to ingest carry no API token");
                None
            }
        },
        login_limits: Default::default(),
    };
    let shutdown = jetmail_common::shutdown::shutdown_token();
    let Some((_client, topo)) = args
        .nats
        .connect_topology_or_stop("jetmail-webui", 4096, &shutdown)
        .await?
    else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    jetmail_webui::run(config, topo, listener, shutdown).await?;
    Ok(())
}
