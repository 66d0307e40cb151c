//! jetmail's benchmark: the release binaries end to end against a fast SMTP sink (Postfix's
//! `smtp-sink` when installed, else `jetmail-sink`). Reports end-to-end messages per second
//! for 1 and 3 senders, ingest's publish rate, publish-to-SMTP-accept latency and the peak
//! RSS of every process. Run it with `scripts/bench.sh`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
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
}

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

async fn end_to_end(args: &Args, senders: usize) -> anyhow::Result<()> {
    let dir = TempDir::new("bench");
    let nats = NatsServer::start().await?;
    let sink = Sink::start(dir.path())?;
    let client = nats.client().await?;
    let js = jetmail_common::config::jetstream_context(client.clone(), 8192);
    let topo = topology::ensure(&js).await?;
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
    write_csv(&csv, args.recipients)?;
    let body = dir.path().join("body.txt");
    std::fs::write(
        &body,
        "Hello {{ name }},\nthis is a benchmark mail for {{ email }}.\n",
    )?;

    let started = Instant::now();
    let started_ms = jetmail_common::now_ms();
    let (ingest_secs, ingest_rss, _) = submit(&nats.url(), &csv, &body, "bench")?;
    let n = args.recipients as u64;
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
    let mut lat = Vec::with_capacity(args.recipients);
    while lat.len() < args.recipients {
        let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), msgs.next()).await
        else {
            break;
        };
        if let Ok(ev) = serde_json::from_slice::<DeliveryEvent>(&m.payload) {
            lat.push(ev.at_ms.saturating_sub(ev.published_ms));
        }
    }
    lat.sort_unstable();

    println!(
        "== {senders} sender(s), {} recipients, concurrency {} ==",
        args.recipients, args.concurrency
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
        end_to_end(&args, s).await?;
    }
    Ok(())
}
