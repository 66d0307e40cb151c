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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // A one-shot command (a submit above all) runs on one thread: its publish loop and the
    // NATS connection then hand messages over without waking each other across threads
    // (measured at 1,000,000 recipients: 15% less CPU). The file reader has its own thread
    // from the blocking pool either way. `serve` answers many requests at once.
    let runtime = if args.command.is_service() {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    }
    .enable_all()
    .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
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

/// A submit allocates each row on the reader thread and frees it on the runtime thread;
/// glibc's allocator serialised that on a lock (a fifth of ingest's CPU at a million rows,
/// futex included). mimalloc frees across threads without one: 4.6-5.0 → 3.6 µs of CPU per
/// recipient, peak RSS +9 MiB whatever the file's size (ARCHITECTURE.md, Performance notes).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
