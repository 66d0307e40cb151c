use anyhow::Context;
use clap::Parser;
use jetmail_common::config::NatsArgs;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jetmail_common::telemetry::init_tracing();
    let args = Args::parse();
    let shutdown = jetmail_common::shutdown::shutdown_token();
    let (client, topo) = args.nats.connect_topology("jetmail-monitor", 4096).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    jetmail_monitor::run(client, topo, listener, shutdown).await?;
    Ok(())
}
