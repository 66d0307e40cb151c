//! The `jetmail-ingest` commands: their arguments and what each does, so that `main.rs` only
//! parses, starts logging, connects and calls [`run`]. Output here is for people (and for
//! scripts that read the documented lines), so errors are `anyhow` with context.

pub mod bounces;
pub mod limits;
pub mod serve;
pub mod submit;
pub mod suppress;
pub mod test_send;
pub use serve::ServeArgs;
pub mod topology;
mod topology_show;

use anyhow::Context;
use jetmail_common::api::{ControlAction, DeadFilter};
use jetmail_common::topology::Topology;

use crate::{control, dead, view};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Publish a campaign from files, with a progress bar.
    Submit(submit::SubmitArgs),
    /// Serve the HTTP API (`POST /v1/campaigns`, …).
    Serve(ServeArgs),
    /// Pause, resume, cancel or reschedule a campaign (`reschedule` takes `--send-at`, and
    /// only before the campaign starts).
    Control {
        action: ControlAction,
        campaign: String,
        /// The new send-at of `reschedule`: RFC 3339 or `+2h`.
        #[arg(long)]
        send_at: Option<String>,
    },
    /// Print a campaign's status and counters as JSON.
    Status { campaign: String },
    /// List, replay or purge dead letters.
    Dead(DeadArgs),
    /// Set, list or remove the fleet's sending limits (global or per domain group).
    #[command(subcommand)]
    Limits(limits::LimitsCommand),
    /// Add, remove, list, import or export suppressed addresses.
    #[command(subcommand)]
    Suppress(suppress::SuppressCommand),
    /// Apply bounce (DSN) and complaint (ARF) messages to the suppression list.
    #[command(subcommand)]
    Bounces(bounces::BouncesCommand),
    /// Send a campaign once to a few addresses, at once, counted nowhere.
    TestSend(test_send::TestSendArgs),
    /// Show the streams, buckets and senders consumer, or change the fleet's delivery policy.
    #[command(subcommand)]
    Topology(topology::TopologyCommand),
}

impl Command {
    /// Whether the command is a long-running service (logs at INFO) rather than a one-shot
    /// tool (only warnings, so its output stays readable).
    pub fn is_service(&self) -> bool {
        matches!(self, Command::Serve(_))
    }

    /// Checks what needs no broker (a service's flags and files), before connecting.
    pub fn preflight(&self) -> anyhow::Result<()> {
        match self {
            Command::Serve(a) => serve::preflight(a),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DeadAction {
    List,
    Replay,
    Purge,
}

#[derive(Debug, clap::Args)]
pub struct DeadArgs {
    pub action: DeadAction,
    /// Only this campaign's dead letters.
    #[arg(long)]
    pub campaign: Option<String>,
    /// Only dead letters whose reason contains this text (case-insensitive).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only these MAIL_DEAD sequence numbers (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub seq: Vec<u64>,
    /// `list` prints at most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// Runs one command against the broker `topo` is connected to.
pub async fn run(topo: Topology, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Submit(a) => submit::run(&topo, a).await.map(|_| ()),
        Command::Serve(a) => serve::run(topo, a).await,
        Command::Control {
            action,
            campaign,
            send_at,
        } => {
            anyhow::ensure!(
                send_at.is_none() || action == ControlAction::Reschedule,
                "--send-at goes with `control reschedule` only"
            );
            let rec = control::apply(&topo, &campaign, action, send_at.as_deref()).await?;
            match rec.schedule.send_at_ms {
                Some(at) if action == ControlAction::Reschedule => println!(
                    "campaign {} is {}, send-at {}",
                    rec.id,
                    rec.status.as_str(),
                    jetmail_common::schedule::format_ms(at)
                ),
                _ => println!("campaign {} is {}", rec.id, rec.status.as_str()),
            }
            Ok(())
        }
        Command::Status { campaign } => {
            let view = view::campaign_view(&topo, &campaign)
                .await?
                .with_context(|| format!("no campaign {campaign}"))?;
            println!("{}", serde_json::to_string_pretty(&view)?);
            Ok(())
        }
        Command::Dead(a) => dead_letters(&topo, a).await,
        Command::Limits(c) => limits::run(&topo, c).await,
        Command::Suppress(c) => suppress::run(&topo, c).await,
        Command::Bounces(c) => bounces::run(&topo, c).await,
        Command::TestSend(a) => test_send::run(&topo, a).await,
        Command::Topology(c) => topology::run(&topo, c).await,
    }
}

/// `dead list|replay|purge`. The last line of each is what scripts read: `N dead letters
/// match (M shown)`, `replayed N dead letters`, `purged N dead letters`.
async fn dead_letters(topo: &Topology, a: DeadArgs) -> anyhow::Result<()> {
    let filter = DeadFilter {
        campaign: a.campaign,
        reason: a.reason,
        seqs: if a.seq.is_empty() { None } else { Some(a.seq) },
    };
    let (verb, report) = match a.action {
        DeadAction::List => {
            let list = dead::list(topo, &filter, a.limit).await?;
            for e in &list.dead {
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
            eprintln!(
                "{} dead letters match ({} shown)",
                list.total,
                list.dead.len()
            );
            return Ok(());
        }
        DeadAction::Replay => ("replayed", dead::replay(topo, &filter).await?),
        DeadAction::Purge => ("purged", dead::purge(topo, &filter).await?),
    };
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    println!("{verb} {} dead letters", report.done);
    anyhow::ensure!(
        report.errors.is_empty(),
        "{} dead letters could not be {verb}",
        report.errors.len()
    );
    Ok(())
}
