use std::time::Duration;

use clap::Parser;
use jetmail_common::config::{parse_duration, NatsArgs};
use jetmail_sender::smtp::RelayUrl;
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
    /// SMTP relay: smtp://host:port, smtp://user:pass@host:587?tls=starttls, smtps://host:465.
    /// Give it more than once to route around a relay whose circuit is open.
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
    /// Nak delays after the 1st, 2nd, … failed delivery; MaxDeliver is their count + 1.
    #[arg(long, env = "JETMAIL_RETRY_BACKOFF", default_value = "30s,2m,10m,30m,1h", value_delimiter = ',', value_parser = parse_duration)]
    retry_backoff: Vec<Duration>,
    /// Longest one SMTP send may take, connect to final reply.
    #[arg(long, env = "JETMAIL_SEND_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    send_timeout: Duration,
    /// Ack wait of the shared consumer (at least twice --send-timeout): a message whose sender
    /// died is redelivered after it.
    #[arg(long, env = "JETMAIL_ACK_WAIT", default_value = "2m", value_parser = parse_duration)]
    ack_wait: Duration,
    /// On SIGTERM, how long to wait for sends in flight.
    #[arg(long, env = "JETMAIL_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Consecutive transient failures that open a relay's circuit.
    #[arg(long, env = "JETMAIL_CIRCUIT_FAILURES", default_value_t = 5)]
    circuit_failures: u32,
    /// How long an open circuit waits before one probe.
    #[arg(long, env = "JETMAIL_CIRCUIT_COOLDOWN", default_value = "10s", value_parser = parse_duration)]
    circuit_cooldown: Duration,
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
    let id = jetmail_common::topology::sanitize_sender_id(&args.id.unwrap_or_else(default_id));
    let cfg = SenderConfig {
        id: id.clone(),
        host: hostname(),
        relays: args.smtp_url,
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
    };
    cfg.validate()?;
    let (client, topo) = args
        .nats
        .connect_topology(&format!("jetmail-sender {id}"), 4096)
        .await?;
    jetmail_sender::run(cfg, client, topo, shutdown).await?;
    Ok(())
}
