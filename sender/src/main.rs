use std::time::Duration;

use clap::Parser;
use jetmail_common::config::{parse_duration, NatsArgs};
use jetmail_sender::message::MessageOptions;
use jetmail_sender::smtp::{RelayOptions, RelayUrl};
use jetmail_sender::SenderConfig;

#[derive(Parser)]
#[command(
    name = "jetmail-sender",
    version,
    about = "Deliver jetmail recipients over SMTP from the shared JetStream consumer"
)]
struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    /// SMTP relay: smtp://host:port, smtp://user:pass@host:587 (STARTTLS, the default with
    /// credentials), smtps://host:465, smtp://[::1]:2525. Options: ?tls=starttls|implicit|none,
    /// ca=FILE, tls_verify=false, max_messages=N, pipelining=false. Give it more than once to
    /// route around a relay whose circuit is open.
    #[arg(
        long = "smtp-url",
        env = "JETMAIL_SMTP_URL",
        value_delimiter = ',',
        required = true
    )]
    smtp_url: Vec<RelayUrl>,
    /// Sends at once (and the most messages this sender ever holds).
    #[arg(long, env = "JETMAIL_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// Sender id (default: host name and process id).
    #[arg(long, env = "JETMAIL_SENDER_ID")]
    id: Option<String>,
    #[arg(long, env = "JETMAIL_HEARTBEAT_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// The retry schedule this sender expects (nak delays after the 1st, 2nd, … failed
    /// delivery). The fleet's schedule lives on the senders consumer (`jetmail-ingest topology
    /// apply --retry-backoff`); a sender whose flag differs says so and follows the fleet's.
    #[arg(long, env = "JETMAIL_RETRY_BACKOFF", value_delimiter = ',', value_parser = parse_duration)]
    retry_backoff: Option<Vec<Duration>>,
    /// Longest one SMTP send may take, connect to final reply.
    #[arg(long, env = "JETMAIL_SEND_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    send_timeout: Duration,
    /// The ack wait this sender expects; the fleet's is the senders consumer's (`jetmail-ingest
    /// topology apply --ack-wait`) and must be at least twice --send-timeout.
    #[arg(long, env = "JETMAIL_ACK_WAIT", value_parser = parse_duration)]
    ack_wait: Option<Duration>,
    /// On SIGTERM, how long to wait for sends in flight.
    #[arg(long, env = "JETMAIL_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Consecutive transient failures that open a relay's circuit.
    #[arg(long, env = "JETMAIL_CIRCUIT_FAILURES", default_value_t = 5)]
    circuit_failures: u32,
    /// How long an open circuit waits before one probe.
    #[arg(long, env = "JETMAIL_CIRCUIT_COOLDOWN", default_value = "10s", value_parser = parse_duration)]
    circuit_cooldown: Duration,
    /// EHLO name (default: this host's name); receivers check it, so give the name the
    /// sending address resolves to.
    #[arg(long, env = "JETMAIL_HELO_NAME")]
    helo_name: Option<String>,
    /// PEM file of a private CA to trust for relays, besides the system's trust store and the
    /// bundled roots (a relay's own ?ca=FILE takes precedence).
    #[arg(long, env = "JETMAIL_SMTP_CA")]
    smtp_ca: Option<std::path::PathBuf>,
    /// Close a relay connection after this many messages (a relay's ?max_messages=N takes
    /// precedence); for relays that refuse more per connection.
    #[arg(long, env = "JETMAIL_MAX_MESSAGES_PER_CONNECTION", value_parser = clap::value_parser!(u32).range(1..))]
    max_messages_per_connection: Option<u32>,
    /// DKIM selector of the --dkim-key in the same position. Give both twice (an RSA and an
    /// Ed25519 key, each with its own selector) to sign every mail with both.
    #[arg(
        long = "dkim-selector",
        env = "JETMAIL_DKIM_SELECTOR",
        value_delimiter = ','
    )]
    dkim_selector: Vec<String>,
    /// DKIM private key, PEM: RSA of 2048 bits or more (PKCS#1 or PKCS#8) or Ed25519
    /// (PKCS#8). Read and checked at start.
    #[arg(long = "dkim-key", env = "JETMAIL_DKIM_KEY", value_delimiter = ',')]
    dkim_key: Vec<std::path::PathBuf>,
    /// Signing domain (d=) of the --dkim-key keys (default: the domain of each mail's From).
    #[arg(long, env = "JETMAIL_DKIM_DOMAIN")]
    dkim_domain: Option<String>,
    /// Directory of DKIM keys for several domains: DIR/<domain>/<selector>.pem. A mail whose
    /// From domain has keys there is signed with all of them (d=<domain>); others fall back
    /// to --dkim-key.
    #[arg(long, env = "JETMAIL_DKIM_KEYS")]
    dkim_keys: Option<std::path::PathBuf>,
    /// Envelope sender (MAIL FROM) of every mail becomes bounces+<campaign>.<seq>@DOMAIN
    /// (VERP), so a bounce names its recipient; point DOMAIN's MX at a mailbox piped into
    /// `jetmail-ingest bounces import -`. The From header is unchanged.
    #[arg(long, env = "JETMAIL_BOUNCE_DOMAIN")]
    bounce_domain: Option<String>,
    /// Connect to each relay (EHLO, STARTTLS, AUTH), print what was found and exit: non-zero if
    /// a relay would fail. Needs no NATS.
    #[arg(long, env = "JETMAIL_CHECK")]
    check: bool,
    /// Serve Prometheus metrics on `http://ADDR/metrics` (off unless given).
    #[arg(long, env = "JETMAIL_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

fn default_id() -> String {
    let host = hostname();
    format!("{host}-{}", std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

// One thread per sender: a sender waits on the network, and running several senders on a
// host scales better than work-stealing threads that wake each other for every message.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    jetmail_common::telemetry::init_tracing();
    let args = Args::parse();
    let shutdown = jetmail_common::shutdown::shutdown_token();
    if let Some(name) = &args.helo_name {
        jetmail_sender::smtp::check_helo_name(name)?;
    }
    let relay_options = RelayOptions {
        ca: args.smtp_ca,
        max_messages_per_connection: args.max_messages_per_connection,
        ..RelayOptions::new(args.helo_name.unwrap_or_else(hostname))
    };
    if args.check {
        return check(&args.smtp_url, &relay_options, args.send_timeout).await;
    }
    // A bad key stops the sender here, before it touches the broker.
    let dkim = jetmail_sender::dkim::DkimKeys::load(&jetmail_sender::dkim::DkimArgs {
        selectors: args.dkim_selector,
        keys: args.dkim_key,
        domain: args.dkim_domain,
        dir: args.dkim_keys,
    })?;
    if !dkim.is_empty() {
        tracing::info!(keys = ?dkim.describe(), "DKIM signing");
    }
    let message = MessageOptions {
        dkim: std::sync::Arc::new(dkim),
        bounce_domain: args
            .bounce_domain
            .as_deref()
            .map(jetmail_sender::message::check_bounce_domain)
            .transpose()?,
    };
    let id = jetmail_common::topology::sanitize_sender_id(&args.id.unwrap_or_else(default_id));
    let cfg = SenderConfig {
        id: id.clone(),
        host: hostname(),
        relays: args.smtp_url,
        relay_options,
        concurrency: args.concurrency,
        heartbeat_interval: args.heartbeat_interval,
        retry_backoff: args.retry_backoff,
        send_timeout: args.send_timeout,
        ack_wait: args.ack_wait,
        drain_timeout: args.drain_timeout,
        circuit_failures: args.circuit_failures,
        circuit_cooldown: args.circuit_cooldown,
        paused_retry: Duration::from_secs(2),
        blocked_retry: Duration::from_millis(500),
        crash_on: std::env::var("JETMAIL_TEST_CRASH_ON")
            .ok()
            .filter(|s| !s.is_empty()),
        message,
    };
    cfg.validate()?;
    let Some((client, topo)) = args
        .nats
        .connect_topology_or_stop(&format!("jetmail-sender {id}"), 4096, &shutdown)
        .await?
    else {
        return Ok(());
    };
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--metrics-listen): {e}"))?;
        tracing::info!(%addr, "metrics on /metrics");
        jetmail_common::metrics::install_for("sender");
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = jetmail_sender::metrics::serve(listener, stop).await {
                tracing::warn!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    jetmail_sender::run(cfg, client, topo, shutdown).await?;
    Ok(())
}

/// `--check`: the report on stdout, the exit status says whether every relay works.
async fn check(urls: &[RelayUrl], opts: &RelayOptions, timeout: Duration) -> anyhow::Result<()> {
    let checks = jetmail_sender::check::check_relays(urls, opts, timeout).await?;
    for c in &checks {
        println!("{}", c.render());
    }
    let failed = checks.iter().filter(|c| !c.ok()).count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} relays failed the check", checks.len());
    }
    Ok(())
}
