use anyhow::Context;
use clap::{Parser, Subcommand};
use jetmail_common::config::NatsArgs;
use jetmail_ingest::control::Action;
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

#[derive(Subcommand)]
enum Command {
    /// Publish a campaign from files, with a progress bar.
    Submit(jetmail_ingest::submit_cli::SubmitArgs),
    /// Serve the HTTP API (`POST /v1/campaigns`, …).
    Serve {
        #[arg(long, env = "JETMAIL_INGEST_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Largest request body accepted, in bytes (413 above it).
        #[arg(long, env = "JETMAIL_INGEST_MAX_BODY", default_value_t = jetmail_ingest::http::DEFAULT_MAX_BODY)]
        max_body: usize,
    },
    /// Pause, resume or cancel a campaign.
    Control { action: Action, campaign: String },
    /// Print a campaign's status and counters as JSON.
    Status { campaign: String },
    /// List, replay or purge dead letters.
    Dead {
        action: DeadAction,
        /// Only this campaign's dead letters.
        #[arg(long)]
        campaign: Option<String>,
        /// Only dead letters whose reason contains this text (case-insensitive).
        #[arg(long)]
        reason: Option<String>,
        /// Only these MAIL_DEAD sequence numbers (comma-separated).
        #[arg(long, value_delimiter = ',')]
        seq: Vec<u64>,
        /// `list` prints at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DeadAction {
    List,
    Replay,
    Purge,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Serve { .. } => jetmail_common::telemetry::init_tracing(),
        _ => jetmail_common::telemetry::init_tracing_with_default("warn"),
    }
    let (client, topo) = args
        .nats
        .connect_topology("jetmail-ingest", PUBLISH_MAX_ACK_INFLIGHT)
        .await?;
    let result = match args.command {
        Command::Submit(a) => jetmail_ingest::submit_cli::run(&topo, a).await.map(|_| ()),
        Command::Serve { listen, max_body } => {
            let shutdown = jetmail_common::shutdown::shutdown_token();
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            jetmail_ingest::serve(topo, listener, max_body, shutdown)
                .await
                .map_err(Into::into)
        }
        Command::Control { action, campaign } => {
            let rec = jetmail_ingest::control::apply(&topo, &campaign, action).await?;
            println!("campaign {} is {}", rec.id, rec.status.as_str());
            Ok(())
        }
        Command::Status { campaign } => {
            let view = jetmail_ingest::http::campaign_view(&topo, &campaign)
                .await
                .map_err(anyhow::Error::msg)?
                .with_context(|| format!("no campaign {campaign}"))?;
            println!("{}", serde_json::to_string_pretty(&view)?);
            Ok(())
        }
        Command::Dead {
            action,
            campaign,
            reason,
            seq,
            limit,
        } => {
            use jetmail_ingest::dead::{self, DeadFilter};
            let filter = DeadFilter {
                campaign,
                reason,
                seqs: if seq.is_empty() { None } else { Some(seq) },
            };
            match action {
                DeadAction::List => {
                    let (entries, total) = dead::list(&topo, &filter, limit).await?;
                    for e in &entries {
                        println!(
                            "{}\t{}\t#{}\t{}\t{}",
                            e.stream_seq,
                            e.letter.campaign,
                            e.letter
                                .seq
                                .map(|s| s.to_string())
                                .unwrap_or_else(|| "-".into()),
                            e.letter.outcome.as_str(),
                            e.letter.reason
                        );
                    }
                    eprintln!("{total} dead letters match ({} shown)", entries.len());
                    Ok(())
                }
                DeadAction::Replay | DeadAction::Purge => {
                    let (verb, report) = if matches!(action, DeadAction::Replay) {
                        ("replayed", dead::replay(&topo, &filter).await?)
                    } else {
                        ("purged", dead::purge(&topo, &filter).await?)
                    };
                    for e in &report.errors {
                        eprintln!("error: {e}");
                    }
                    println!("{verb} {} dead letters", report.done);
                    if report.errors.is_empty() {
                        Ok(())
                    } else {
                        Err(anyhow::anyhow!(
                            "{} dead letters could not be {verb}",
                            report.errors.len()
                        ))
                    }
                }
            }
        }
    };
    jetmail_common::config::flush_before_exit(&client, std::time::Duration::from_secs(5)).await;
    result
}
