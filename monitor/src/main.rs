use anyhow::Context;
use clap::Parser;
use std::time::Duration;

use jetmail_common::config::{parse_duration, NatsArgs};
use jetmail_monitor::MonitorConfig;

#[derive(Parser)]
#[command(
    name = "jetmail-monitor",
    version,
    about = "jetmail monitor: sender health map and campaign progress"
)]
struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    /// Address of the HTTP endpoint (`/healthz`, `/v1/senders`).
    #[arg(long, env = "JETMAIL_MONITOR_LISTEN", default_value = "127.0.0.1:8081")]
    listen: std::net::SocketAddr,
    /// How often MAIL_OUTBOX is checked for messages at MaxDeliver whose advisory was missed.
    #[arg(long, env = "JETMAIL_MONITOR_SWEEP_EVERY", default_value = "30s", value_parser = parse_duration)]
    sweep_every: Duration,
    /// On SIGTERM, how long to wait for the last progress flush.
    #[arg(long, env = "JETMAIL_MONITOR_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
    /// How long a done or cancelled campaign (its record and progress) is kept; `0s` keeps
    /// them forever.
    #[arg(long, env = "JETMAIL_RETAIN_FINISHED", default_value = "30d", value_parser = parse_duration)]
    retain_finished: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jetmail_common::telemetry::init_tracing();
    let args = Args::parse();
    let shutdown = jetmail_common::shutdown::shutdown_token();
    let Some((client, topo)) = args
        .nats
        .connect_topology_or_stop("jetmail-monitor", 4096, &shutdown)
        .await?
    else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let cfg = MonitorConfig {
        sweep_every: args.sweep_every,
        shutdown_timeout: args.shutdown_timeout,
        retain_finished: args.retain_finished,
    };
    jetmail_monitor::run(cfg, client, topo, listener, shutdown).await?;
    Ok(())
}
