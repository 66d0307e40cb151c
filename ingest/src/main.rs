//! `jetmail-ingest`: parses the command line, starts logging, connects to NATS and runs the
//! command (see [`jetmail_ingest::cli`]).

use clap::Parser;
use jetmail_common::config::NatsArgs;
use jetmail_ingest::cli::Command;
use jetmail_ingest::publish::PUBLISH_MAX_ACK_INFLIGHT;

#[derive(Parser)]
#[command(
    name = "jetmail-ingest",
    version,
    about = "Publish jetmail campaigns: from a CSV file or over HTTP"
)]
struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(subcommand)]
    command: Command,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.command.is_service() {
        jetmail_common::telemetry::init_tracing();
    } else {
        jetmail_common::telemetry::init_tracing_with_default("warn");
    }
    args.command.preflight()?;
    let (client, topo) = args
        .nats
        .connect_topology("jetmail-ingest", PUBLISH_MAX_ACK_INFLIGHT)
        .await?;
    let result = jetmail_ingest::cli::run(topo, args.command).await;
    jetmail_common::config::flush_before_exit(&client, std::time::Duration::from_secs(5)).await;
    result
}
