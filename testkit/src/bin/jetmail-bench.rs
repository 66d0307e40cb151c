//! jetmail's benchmark: the release binaries end to end against a fast SMTP sink (Postfix's
//! `smtp-sink` when installed, else `jetmail-sink`). Reports end-to-end messages per second
//! for 1 and 3 senders, ingest's publish rate, publish-to-SMTP-accept latency and the peak
//! RSS of every process; then the sending policy's cost and precision: the same campaign with
//! no limit, under a global limit too high to bite (the limits code fully active: budget
//! takes, held lanes) and under a global limit of 5,000/s, whose held rate is measured. Run it
//! with `scripts/bench.sh`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use jetmail_common::limits::{LimitSpec, Rate};
use jetmail_common::topology;
use jetmail_common::wire::{DeliveryEvent, Outcome};
use jetmail_testkit::{bin_path, free_port, NatsServer, Service, TempDir};

#[derive(Parser)]
#[command(about = "jetmail end-to-end benchmark")]
struct Args {
    /// Recipients per end-to-end run.
    #[arg(long, default_value_t = 100_000)]
    recipients: usize,
    /// Sender counts to measure, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    senders: Vec<usize>,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// CSV sizes for the ingest-only runs (publish rate and ingest's peak RSS).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    ingest_sizes: Vec<usize>,
    /// Recipients per run of the limits comparison (0 skips it); the runs use the largest
    /// sender count of `--senders`.
    #[arg(long, default_value_t = 50_000)]
    limits_recipients: usize,
    /// The global limit whose precision is measured.
    #[arg(long, default_value = "5000/s")]
    held_limit: String,
}

/// A global limit far above what the machine can send: every send takes from the shared
/// budget, but the budget never refuses.
const UNREACHABLE_LIMIT: &str = "1000000/s";
/// The start of a limited run is not judged: senders start and take their first slices.
const SETTLE_MS: u64 = 2_000;

fn write_csv(path: &Path, n: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "email,name")?;
    for i in 0..n {
        writeln!(f, "user{i}@domain{}.example.com,Name {i}", i % 50)?;
    }
    Ok(f.flush()?)
}

/// Peak resident set of a running process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .map(|kb| kb.parse::<f64>().unwrap_or(0.0))
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// Runs `jetmail-ingest submit` and returns (seconds, peak RSS MiB, stdout).
fn submit(
    nats: &str,
    csv: &Path,
    body: &Path,
    campaign: &str,
) -> anyhow::Result<(f64, f64, String)> {
    let started = Instant::now();
    let child = Command::new(bin_path("jetmail-ingest")?)
        .args([
            "--nats-url",
            nats,
            "submit",
            "--from",
            "bench@example.com",
            "--subject",
            "Hi {{ name }}",
        ])
        .arg("--text")
        .arg(body)
        .arg("--recipients")
        .arg(csv)
        .args(["--campaign-id", campaign])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("piped");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out)?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid pointers; wait4 reports its peak RSS.
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(status == 0, "submit failed: {out}");
    Ok((secs, usage.ru_maxrss as f64 / 1024.0, out))
}

struct Sink {
    child: std::process::Child,
    port: u16,
    out: std::path::PathBuf,
}

impl Sink {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        let port = free_port();
        let out = dir.join("sink.out");
        let log = std::fs::File::create(&out)?;
        let smtp_sink = ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let child = match smtp_sink {
            // Each run on its own port: a leftover sink with SO_REUSEPORT would take half the load.
            Some(p) => Command::new(p)
                .args(["-u", "nobody", "-c"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("1024")
                .stdout(log)
                .stderr(Stdio::null())
                .spawn()?,
            None => Command::new(bin_path("jetmail-sink")?)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        };
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { child, port, out })
    }

    /// Messages accepted, from smtp-sink's running counter (`mesg=N`).
    fn messages(&self) -> u64 {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.rsplit("mesg=")
            .next()
            .and_then(|t| {
                t.trim()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// What one end-to-end run measured.
struct Run {
    /// Recipients per second from submit to the last SMTP accept.
    end_to_end: f64,
    /// When each recipient was accepted (the `sent` events' times, ms since the epoch), sorted.
    sent_at_ms: Vec<u64>,
}

/// Runs one campaign of `recipients` through `senders` senders, under `global_limit` if set;
/// prints the usual report when `report`.
async fn end_to_end(
    args: &Args,
    senders: usize,
    recipients: usize,
    global_limit: Option<&str>,
    report: bool,
) -> anyhow::Result<Run> {
    let dir = TempDir::new("bench");
    let nats = NatsServer::start().await?;
    let sink = Sink::start(dir.path())?;
    let client = nats.client().await?;
    let js = jetmail_common::config::jetstream_context(client.clone(), 8192);
    let topo = topology::ensure(&js).await?;
    if let Some(rate) = global_limit {
        let spec = LimitSpec::new(&[], rate, None, None)?;
        topo.limits
            .put(
                topology::limit_key(&spec.scope),
                serde_json::to_vec(&spec)?.into(),
            )
            .await?;
    }
    let monitor = Service::spawn(
        "monitor",
        "jetmail-monitor",
        &[
            "--nats-url".into(),
            nats.url(),
            "--listen".into(),
            format!("127.0.0.1:{}", free_port()),
        ],
        &[],
        dir.path(),
    )?;
    let mut procs = Vec::new();
    for i in 0..senders {
        procs.push(Service::spawn(
            &format!("sender{i}"),
            "jetmail-sender",
            &[
                "--nats-url".into(),
                nats.url(),
                "--smtp-url".into(),
                format!("smtp://127.0.0.1:{}", sink.port),
                "--concurrency".into(),
                args.concurrency.to_string(),
                "--id".into(),
                format!("bench{i}"),
            ],
            &[],
            dir.path(),
        )?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let csv = dir.path().join("r.csv");
    write_csv(&csv, recipients)?;
    let body = dir.path().join("body.txt");
    std::fs::write(
        &body,
        "Hello {{ name }},\nthis is a benchmark mail for {{ email }}.\n",
    )?;

    let started = Instant::now();
    let started_ms = jetmail_common::now_ms();
    let (ingest_secs, ingest_rss, _) = submit(&nats.url(), &csv, &body, "bench")?;
    let n = recipients as u64;
    loop {
        let p = jetmail_common::records::load_progress(&topo, "bench")
            .await
            .unwrap_or_default();
        if p.sent + p.failed + p.dead >= n {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "campaign did not finish: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p = jetmail_common::records::load_progress(&topo, "bench")
        .await
        .unwrap_or_default();
    let elapsed = (p.last_sent_ms.saturating_sub(started_ms) as f64 / 1000.0).max(0.001);
    let first_to_last = (p.last_sent_ms - p.first_sent_ms) as f64 / 1000.0;

    // Latency from publish to SMTP accept, from the `sent` events.
    let consumer = topo
        .events
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: topology::event_subject("bench", Outcome::Sent),
            ..Default::default()
        })
        .await?;
    let mut msgs = consumer.messages().await?;
    let mut lat = Vec::with_capacity(recipients);
    let mut sent_at_ms = Vec::with_capacity(recipients);
    while lat.len() < recipients {
        let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), msgs.next()).await
        else {
            break;
        };
        if let Ok(ev) = serde_json::from_slice::<DeliveryEvent>(&m.payload) {
            lat.push(ev.at_ms.saturating_sub(ev.published_ms));
            sent_at_ms.push(ev.at_ms);
        }
    }
    lat.sort_unstable();
    sent_at_ms.sort_unstable();
    let run = Run {
        end_to_end: n as f64 / elapsed,
        sent_at_ms,
    };
    if !report {
        return Ok(run);
    }

    println!(
        "== {senders} sender(s), {recipients} recipients, concurrency {} ==",
        args.concurrency
    );
    println!("  delivered at the sink     {}", sink.messages());
    println!(
        "  end to end                {:.0} msg/s ({elapsed:.2}s from submit to the last accept)",
        n as f64 / elapsed
    );
    println!(
        "  sending (first→last)      {:.0} msg/s",
        n as f64 / first_to_last.max(0.001)
    );
    println!(
        "  ingest (during the run)   {:.0} recipients/s ({ingest_secs:.2}s)",
        n as f64 / ingest_secs
    );
    println!(
        "  publish → SMTP accept     p50 {} ms, p99 {} ms, max {} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0)
    );
    for s in &procs {
        println!(
            "  peak RSS {:<16} {:.1} MiB",
            s.name,
            peak_rss_mib(s.pid().unwrap_or(0))
        );
    }
    println!(
        "  peak RSS {:<16} {:.1} MiB",
        "monitor",
        peak_rss_mib(monitor.pid().unwrap_or(0))
    );
    println!("  peak RSS {:<16} {:.1} MiB", "ingest", ingest_rss);
    println!(
        "  peak RSS {:<16} {:.1} MiB",
        "nats-server",
        peak_rss_mib(nats.pid().unwrap_or(0))
    );
    Ok(run)
}

/// The steady rate of a limited run: sends per second from [`SETTLE_MS`] after the first to
/// the last, and the busiest and quietest whole seconds in between.
fn held_rate(sent_at_ms: &[u64]) -> Option<(f64, u64, u64)> {
    let from = sent_at_ms.first()? + SETTLE_MS;
    let to = *sent_at_ms.last()?;
    if to <= from + 1_000 {
        return None;
    }
    let steady = sent_at_ms
        .iter()
        .filter(|t| **t >= from && **t < to)
        .count();
    let mut per_second = vec![0u64; ((to - from) / 1_000) as usize];
    for t in sent_at_ms.iter().filter(|t| **t >= from) {
        if let Some(n) = per_second.get_mut(((t - from) / 1_000) as usize) {
            *n += 1;
        }
    }
    let max = per_second.iter().copied().max().unwrap_or(0);
    let min = per_second.iter().copied().min().unwrap_or(0);
    Some((steady as f64 * 1_000.0 / (to - from) as f64, min, max))
}

/// The sending policy's cost (no limit versus a limit that never bites, in the same run) and
/// its precision (the rate held under `--held-limit`).
async fn limits(args: &Args) -> anyhow::Result<()> {
    let n = args.limits_recipients;
    let senders = args.senders.iter().copied().max().unwrap_or(3);
    let rate: Rate = args.held_limit.parse()?;
    println!("== sending policy: {senders} sender(s), {n} recipients per run ==");
    // Alternated, twice each: one run against the other is within this machine's noise.
    let (mut free, mut high) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        free.push(end_to_end(args, senders, n, None, false).await?.end_to_end);
        high.push(
            end_to_end(args, senders, n, Some(UNREACHABLE_LIMIT), false)
                .await?
                .end_to_end,
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  no limit set              {:.0} msg/s end to end (runs: {})",
        mean(&free),
        list(&free)
    );
    println!(
        "  global limit {UNREACHABLE_LIMIT:<12} {:.0} msg/s end to end (runs: {}; {:+.1}% against no limit)",
        mean(&high),
        list(&high),
        (mean(&high) / mean(&free) - 1.0) * 100.0
    );
    let held = end_to_end(args, senders, n, Some(&args.held_limit), false).await?;
    match held_rate(&held.sent_at_ms) {
        Some((mean, min, max)) => {
            let limit = rate.per_second();
            println!(
                "  global limit {:<12} held {mean:.0} msg/s after the first {}s ({:+.1}% of the limit), whole seconds {min}..{max}",
                args.held_limit,
                SETTLE_MS / 1_000,
                (mean / limit - 1.0) * 100.0
            );
        }
        None => println!(
            "  global limit {:<12} the run was too short to measure: raise --limits-recipients",
            args.held_limit
        ),
    }
    Ok(())
}

async fn ingest_only(sizes: &[usize]) -> anyhow::Result<()> {
    println!("== ingest only (no senders) ==");
    for &n in sizes {
        let dir = TempDir::new("bench-ingest");
        let nats = NatsServer::start().await?;
        let csv = dir.path().join("r.csv");
        write_csv(&csv, n)?;
        let body = dir.path().join("body.txt");
        std::fs::write(&body, "Hello {{ name }}")?;
        let size = std::fs::metadata(&csv)?.len() as f64 / 1024.0 / 1024.0;
        let (secs, rss, _) = submit(&nats.url(), &csv, &body, "ingest")?;
        println!(
            "  {n:>9} recipients ({size:.0} MiB CSV): {:.0} recipients/s, peak RSS {rss:.1} MiB",
            n as f64 / secs
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ingest_only(&args.ingest_sizes).await?;
    for &s in &args.senders {
        end_to_end(&args, s, args.recipients, None, true).await?;
    }
    if args.limits_recipients > 0 {
        limits(&args).await?;
    }
    Ok(())
}
