//! `jetmail-ingest submit`: a campaign from files, with a progress bar on a terminal and plain
//! progress lines otherwise.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use jetmail_common::topology::Topology;
use jetmail_common::wire::CampaignSpec;

use crate::dedup::duplicate_lines;
use crate::feed::rows_from_reader_with;
use crate::publish::{self, Progress, Submission, SubmitError, SubmitReport};
use crate::recipients::RowClassifier;
use crate::schedule::ScheduleInput;

/// Arguments of `submit`.
#[derive(Debug, Clone, clap::Args)]
pub struct SubmitArgs {
    /// Sender address, e.g. `News <news@example.com>`.
    #[arg(long, env = "JETMAIL_FROM")]
    pub from: String,
    /// Subject template, e.g. `Hello {{ name }}`.
    #[arg(long, env = "JETMAIL_SUBJECT")]
    pub subject: String,
    /// File holding the text body template.
    #[arg(long, env = "JETMAIL_TEXT")]
    pub text: PathBuf,
    /// File holding the HTML body template (the mail becomes multipart/alternative).
    #[arg(long, env = "JETMAIL_HTML")]
    pub html: Option<PathBuf>,
    /// Recipients: CSV with an `email` column, or one address a line.
    #[arg(long, env = "JETMAIL_RECIPIENTS")]
    pub recipients: PathBuf,
    /// Campaign id (letters, digits, `-`, `_`); the same id makes a retried submit safe.
    #[arg(long, env = "JETMAIL_CAMPAIGN_ID")]
    pub campaign_id: Option<String>,
    /// The campaign's own rate across the fleet (`N/s`, `N/m`, `N/h`), e.g. to warm up a new
    /// sending domain.
    #[arg(long, env = "JETMAIL_CAMPAIGN_RATE")]
    pub rate: Option<String>,
    /// Deliver nothing before this time: RFC 3339 (`2026-12-01T09:00:00Z`) or `+2h`.
    #[arg(long, env = "JETMAIL_SEND_AT")]
    pub send_at: Option<String>,
    /// Deliver nothing after this time: RFC 3339, or a duration counted from the send start
    /// (`6h`); what is left then is dead-lettered as `expired`.
    #[arg(long, env = "JETMAIL_DEADLINE")]
    pub deadline: Option<String>,
    /// Print at most this many rejected rows (all are counted).
    #[arg(long, default_value_t = 20)]
    pub show_rejected: usize,
    /// Where the duplicate finder keeps its sorted runs (unnamed files, ~24 bytes a
    /// recipient) for large files; the system's temporary directory by default.
    #[arg(long, env = "JETMAIL_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,
    #[command(flatten)]
    pub unsubscribe: crate::unsubscribe::UnsubscribeArgs,
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

struct Bar {
    bar: indicatif::ProgressBar,
    bytes: Arc<AtomicU64>,
    plain: bool,
    last_line: Instant,
    started: Instant,
}

impl Progress for Bar {
    fn rows(&mut self, published: u64, rejected: u64, duplicates: u64) {
        let read = self.bytes.load(Ordering::Relaxed);
        if self.plain {
            if self.last_line.elapsed() >= Duration::from_secs(1) {
                self.last_line = Instant::now();
                let rate = published as f64 / self.started.elapsed().as_secs_f64().max(0.001);
                eprintln!("published {published} ({rate:.0}/s), rejected {rejected}, duplicates {duplicates}");
            }
        } else {
            self.bar.set_position(read);
            self.bar.set_message(format!(
                "published {published}, rejected {rejected}, duplicates {duplicates}"
            ));
        }
    }
}

/// Runs a submit and prints its summary.
pub async fn run(topo: &Topology, args: SubmitArgs) -> anyhow::Result<SubmitReport> {
    // Checked before any file is read or anything stored.
    let schedule = crate::schedule::resolve(
        ScheduleInput {
            rate: args.rate.as_deref(),
            send_at: args.send_at.as_deref(),
            deadline: args.deadline.as_deref(),
        },
        jetmail_common::now_ms(),
    )
    .map_err(SubmitError::from)?;
    let unsubscribe = args.unsubscribe.load()?;
    let spec = CampaignSpec {
        from: args.from.clone(),
        subject: args.subject.clone(),
        text: read_file(&args.text)?,
        html: args.html.as_deref().map(read_file).transpose()?,
    };
    let open = || {
        std::fs::File::open(&args.recipients)
            .with_context(|| format!("cannot open {}", args.recipients.display()))
    };
    let size = open()?.metadata().map(|m| m.len()).unwrap_or(0);
    let plain = !std::io::stderr().is_terminal();
    let bar = if plain {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(size);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        b
    };

    // First pass: find duplicate addresses with flat memory, whatever the file's size.
    bar.set_message("finding duplicates");
    if plain {
        eprintln!(
            "finding duplicates in {} ({} bytes)",
            args.recipients.display(),
            size
        );
    }
    let scanned = Arc::new(AtomicU64::new(0));
    let scan = {
        let file = open()?;
        let scanned = scanned.clone();
        let dir = args.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
        tokio::task::spawn_blocking(move || duplicate_lines(file, &dir, &scanned))
    };
    tokio::pin!(scan);
    let duplicates = loop {
        tokio::select! {
            done = &mut scan => break done.context("duplicate scan stopped")?,
            _ = tokio::time::sleep(Duration::from_millis(200)) => bar.set_position(scanned.load(Ordering::Relaxed)),
        }
    }
    .with_context(|| format!("{}", args.recipients.display()))?;

    // Second pass: publish, skipping exactly those lines.
    bar.set_position(0);
    let (rows, bytes) =
        rows_from_reader_with(open()?, RowClassifier::with_known_duplicates(duplicates))
            .with_context(|| format!("{}", args.recipients.display()))?;
    let mut progress = Bar {
        bar: bar.clone(),
        bytes,
        plain,
        last_line: Instant::now(),
        started: Instant::now(),
    };
    let started = Instant::now();
    let result = publish::submit(
        topo,
        Submission {
            campaign_id: args.campaign_id.clone(),
            spec,
            idempotency_key: None,
            fingerprint: None,
            schedule,
            compliance: crate::citizen::Compliance::campaign(unsubscribe),
        },
        rows,
        &mut progress,
    )
    .await;
    bar.finish_and_clear();
    let report = result?;
    for r in report.rejected.iter().take(args.show_rejected) {
        eprintln!("rejected line {}: {:?}: {}", r.line, r.email, r.reason);
    }
    if report.rejected_count as usize > args.show_rejected {
        eprintln!(
            "… and {} more rejected rows",
            report.rejected_count as usize - args.show_rejected
        );
    }
    if let Some(at) = schedule
        .send_at_ms
        .filter(|at| *at > jetmail_common::now_ms())
    {
        println!(
            "campaign {} is scheduled: nothing is sent before {}",
            report.id,
            jetmail_common::schedule::format_ms(at)
        );
    }
    let secs = started.elapsed().as_secs_f64();
    if report.replayed {
        println!(
            "campaign {} was already published: nothing new sent",
            report.id
        );
    }
    println!(
        "campaign {}: published {}, rejected {}, duplicates {}, suppressed {} ({:.1}s, {:.0} recipients/s)",
        report.id,
        report.published,
        report.rejected_count,
        report.duplicates,
        report.suppressed,
        secs,
        report.published as f64 / secs.max(0.001)
    );
    Ok(report)
}
