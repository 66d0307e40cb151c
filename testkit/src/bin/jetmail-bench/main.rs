//! jetmail's benchmark: the release binaries end to end against Postfix's `smtp-sink`, every
//! figure printed beside its reference from the same run (`smtp-source` into the same kind of
//! sink), because these machines drift by ±50% between days. Prints, for the main run: msg/s
//! and the ratio to the reference, CPU per recipient of nats-server, senders and monitor, the
//! broker's messages per recipient, a publish → SMTP-accept latency histogram and every
//! process's peak RSS; then Postfix relaying into the same kind of sink, the latency at a quarter of the peak rate, a relay that answers
//! after 1 s at `--concurrency 2000` against smtp-source with 2,000 sessions, a million
//! recipients, ingest alone, and the sending policy's cost. Run it with `scripts/bench.sh`.

mod fleet;
mod limits;

use std::time::{Duration, Instant};

use clap::Parser;
use jetmail_testkit::bench::{postfix_relay, smtp_source, write_csv, CpuMeter, Histogram, Varz};
use jetmail_testkit::{bin_path, free_port, Service, TempDir};

use fleet::{submit, write_body, Fleet, FleetSpec};

#[derive(Parser)]
#[command(about = "jetmail end-to-end benchmark")]
pub struct Args {
    /// Recipients of the main run.
    #[arg(long, default_value_t = 100_000)]
    recipients: usize,
    /// Sender counts to measure, one main run each.
    #[arg(long, value_delimiter = ',', default_value = "3")]
    senders: Vec<usize>,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Size of the message on the wire, for jetmail and for smtp-source.
    #[arg(long, default_value_t = 3_100)]
    message_bytes: usize,
    /// smtp-source's parallel sessions (connections reused) for the reference.
    #[arg(long, default_value_t = 32)]
    reference_sessions: usize,
    /// Messages smtp-source gives a private Postfix instance relaying into the same kind of
    /// sink, the mail server people would otherwise use (0 skips it; needs root).
    #[arg(long, default_value_t = 10_000)]
    postfix_messages: usize,
    /// Seconds of traffic at a quarter of the measured peak, for the latency at light load (0
    /// skips it).
    #[arg(long, default_value_t = 10)]
    quarter_secs: u64,
    /// One sender's concurrency against a relay answering every DATA after 1 s (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    slow_concurrency: usize,
    #[arg(long, default_value_t = 20_000)]
    slow_recipients: usize,
    /// Recipients of the large run (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    million: usize,
    /// CSV sizes for the ingest-only runs (publish rate and ingest's peak RSS).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    ingest_sizes: Vec<usize>,
    /// Recipients per run of the limits comparison (0 skips it).
    #[arg(long, default_value_t = 50_000)]
    limits_recipients: usize,
    /// The global limit whose precision is measured.
    #[arg(long, default_value = "5000/s")]
    held_limit: String,
}

/// What one campaign run measured.
pub struct Run {
    /// Recipients per second from submit to the last SMTP accept.
    pub msg_per_s: f64,
    /// When each recipient was accepted (ms since the epoch), sorted.
    pub accepted_ms: Vec<u64>,
}

/// Runs one campaign of `recipients` through `senders` senders, under `global_limit` if set;
/// prints the full report when `reference` is given (smtp-source's msg/s).
pub async fn run_campaign(
    args: &Args,
    senders: usize,
    recipients: usize,
    global_limit: Option<&str>,
    reference: Option<f64>,
) -> anyhow::Result<Run> {
    let dir = TempDir::new("bench");
    let fleet = Fleet::start(
        dir.path(),
        &FleetSpec {
            senders,
            concurrency: args.concurrency,
            sink_delay: None,
            global_limit,
        },
    )
    .await?;
    let csv = dir.path().join("r.csv");
    write_csv(&csv, recipients)?;
    let body = dir.path().join("body.txt");
    write_body(&body, args.message_bytes)?;

    let cpu = CpuMeter::start(&fleet.measured());
    let sink_cpu = CpuMeter::start(&[("sink".into(), fleet.sink.pid())]);
    let varz = fleet.varz().await;
    let started_ms = jetmail_common::now_ms();
    let (ingest_secs, ingest_rss) = submit(&fleet.nats.url(), &csv, &body, "bench")?;
    let n = recipients as u64;
    let last = fleet
        .wait_done("bench", n, Duration::from_secs(3_600))
        .await?;
    let cpu = cpu.stop();
    let sink_cpu = sink_cpu.stop()[0].1;
    let varz = fleet.varz().await.since(varz);
    let elapsed = (last.saturating_sub(started_ms) as f64 / 1000.0).max(0.001);
    let times = fleet.sent_times(Some("bench"), recipients).await?;
    let mut accepted_ms: Vec<u64> = times.iter().map(|(_, at)| *at).collect();
    accepted_ms.sort_unstable();
    let run = Run {
        msg_per_s: n as f64 / elapsed,
        accepted_ms,
    };
    let Some(reference) = reference else {
        return Ok(run);
    };
    println!(
        "== jetmail: {senders} sender(s) at concurrency {}, {recipients} recipients, ~{} B message ==",
        args.concurrency, args.message_bytes
    );
    println!("  delivered at the sink     {}", fleet.sink.messages());
    println!(
        "  end to end                {:.0} msg/s ({elapsed:.2} s from submit to the last accept) = {:.2} x smtp-source",
        run.msg_per_s,
        run.msg_per_s / reference
    );
    println!(
        "  ingest (during the run)   {:.0} recipients/s ({ingest_secs:.2} s)",
        n as f64 / ingest_secs
    );
    print_cpu(&cpu, n, sink_cpu);
    print_broker(varz, n);
    println!("  publish -> SMTP accept under full load:");
    Histogram::new(times.iter().map(|(p, a)| a.saturating_sub(*p)).collect()).print("    ");
    fleet.print_peak_rss(Some(ingest_rss));
    Ok(run)
}

fn print_cpu(cpu: &[(String, u64)], n: u64, sink_us: u64) {
    let per = |us: u64| us as f64 / n as f64;
    let of = |prefix: &str| -> u64 {
        cpu.iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, us)| us)
            .sum()
    };
    let (nats, senders, monitor) = (of("nats-server"), of("sender"), of("monitor"));
    println!(
        "  CPU per recipient         {:.0} us: nats-server {:.0}, senders {:.0}, monitor {:.0} (goal <= 180); the sink {:.0}",
        per(nats + senders + monitor),
        per(nats),
        per(senders),
        per(monitor),
        per(sink_us)
    );
}

fn print_broker(varz: Varz, n: u64) {
    println!(
        "  broker messages           {:.2} in + {:.2} out per recipient (nats-server /varz: every publish, request, reply, ack, pull and heartbeat)",
        varz.in_msgs as f64 / n as f64,
        varz.out_msgs as f64 / n as f64
    );
}

/// Latency at a quarter of the peak: recipients arrive through ingest's API in small
/// campaigns, ten a second, at `rate`/s in all, for `--quarter-secs`.
async fn quarter(args: &Args, senders: usize, rate: f64) -> anyhow::Result<()> {
    let dir = TempDir::new("bench-quarter");
    let fleet = Fleet::start(
        dir.path(),
        &FleetSpec {
            senders,
            concurrency: args.concurrency,
            sink_delay: None,
            global_limit: None,
        },
    )
    .await?;
    let port = free_port();
    let _ingest = Service::spawn(
        "ingest",
        "jetmail-ingest",
        &[
            "--nats-url".into(),
            fleet.nats.url(),
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--insecure-no-auth".into(),
        ],
        &[],
        dir.path(),
    )?;
    jetmail_testkit::wait_for("ingest to answer", Duration::from_secs(20), || async {
        jetmail_testkit::http_request(port, "GET", "/healthz", "").await
    })
    .await?;
    let body = dir.path().join("body.txt");
    write_body(&body, args.message_bytes)?;
    let text = std::fs::read_to_string(&body)?;
    let per_tick = ((rate / 10.0).round() as usize).max(1);
    let ticks = args.quarter_secs * 10;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut total = 0usize;
    for t in 0..ticks {
        tick.tick().await;
        let recipients: Vec<serde_json::Value> = (0..per_tick)
            .map(|i| {
                serde_json::json!({
                    "email": format!("q{t}x{i}@domain{}.example.com", i % 50),
                    "name": format!("Name {i}"),
                })
            })
            .collect();
        let req = serde_json::json!({
            "from": "bench@example.com",
            "subject": "Hi {{ name }}",
            "text": text,
            "recipients": recipients,
            "campaign_id": format!("q{t}"),
        });
        let answer =
            jetmail_testkit::http_request(port, "POST", "/v1/campaigns", &req.to_string()).await;
        anyhow::ensure!(answer.is_some(), "ingest refused campaign q{t}");
        total += per_tick;
    }
    let started = Instant::now();
    while (fleet.sink.messages() as usize) < total {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "only {} of {total} delivered",
            fleet.sink.messages()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let times = fleet.sent_times(None, total).await?;
    println!(
        "== latency at a quarter of the peak: {rate:.0} recipients/s offered for {} s ({total}, in campaigns of {per_tick} every 100 ms) ==",
        args.quarter_secs
    );
    println!("  publish -> SMTP accept:");
    Histogram::new(times.iter().map(|(p, a)| a.saturating_sub(*p)).collect()).print("    ");
    Ok(())
}

/// Postfix as a relay into the same kind of sink, fed by smtp-source with the reference's
/// sessions: the row people compare jetmail with.
fn postfix(args: &Args, reference: f64, jetmail: Option<f64>) -> anyhow::Result<()> {
    let dir = TempDir::new("bench-postfix");
    let n = args.postfix_messages;
    let Some((rate, version)) =
        postfix_relay(dir.path(), args.reference_sessions, n, args.message_bytes)?
    else {
        println!(
            "== Postfix relay: not measured (Postfix is not installed, or this is not root) =="
        );
        return Ok(());
    };
    println!(
        "== Postfix {version} relaying into the same kind of sink: smtp-source, {} sessions, {n} messages ==",
        args.reference_sessions
    );
    print!(
        "  {rate:.0} msg/s from the first connection to the last message at the sink = {:.2} x smtp-source",
        rate / reference
    );
    match jetmail {
        Some(j) => println!("; jetmail's main run = {:.1} x Postfix", j / rate),
        None => println!(),
    }
    Ok(())
}

/// A relay that answers each DATA after 1 s: one sender at `--slow-concurrency` against
/// smtp-source with as many sessions, each into its own sink.
async fn slow_relay(args: &Args) -> anyhow::Result<()> {
    let n = args.slow_recipients;
    let c = args.slow_concurrency;
    let dir = TempDir::new("bench-slow");
    let delay = Duration::from_secs(1);
    let reference = smtp_source(dir.path(), c, n, args.message_bytes, Some(delay))?;
    let fleet = Fleet::start(
        dir.path(),
        &FleetSpec {
            senders: 1,
            concurrency: c,
            sink_delay: Some(delay),
            global_limit: None,
        },
    )
    .await?;
    let csv = dir.path().join("r.csv");
    write_csv(&csv, n)?;
    let body = dir.path().join("body.txt");
    write_body(&body, args.message_bytes)?;
    let started_ms = jetmail_common::now_ms();
    submit(&fleet.nats.url(), &csv, &body, "slow")?;
    let last = fleet
        .wait_done("slow", n as u64, Duration::from_secs(600))
        .await?;
    let rate = n as f64 / (last.saturating_sub(started_ms) as f64 / 1000.0).max(0.001);
    println!("== a relay answering each DATA after 1 s: {n} messages ==");
    println!(
        "  smtp-source, {c} sessions    {:.0} msg/s",
        reference.msg_per_s
    );
    println!(
        "  jetmail, 1 sender at --concurrency {c}: {rate:.0} msg/s = {:.2} x smtp-source (goal >= 0.9)",
        rate / reference.msg_per_s
    );
    Ok(())
}

async fn ingest_only(sizes: &[usize]) -> anyhow::Result<()> {
    println!("== ingest only (no senders) ==");
    for &n in sizes.iter().filter(|n| **n > 0) {
        let dir = TempDir::new("bench-ingest");
        let nats = jetmail_testkit::NatsServer::start().await?;
        let csv = dir.path().join("r.csv");
        write_csv(&csv, n)?;
        let body = dir.path().join("body.txt");
        std::fs::write(&body, "Hello {{ name }}")?;
        let size = std::fs::metadata(&csv)?.len() as f64 / 1024.0 / 1024.0;
        let (secs, rss) = submit(&nats.url(), &csv, &body, "ingest")?;
        println!(
            "  {n:>9} recipients ({size:.0} MiB CSV): {:.0} recipients/s (goal >= 100000), peak RSS {rss:.1} MiB",
            n as f64 / secs
        );
    }
    Ok(())
}

/// 2,000 sessions need more descriptors than the usual soft limit of 1,024.
fn raise_fd_limit() {
    // SAFETY: reading and setting this process's own limit with valid pointers.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_fd_limit();
    bin_path("jetmail-sender")?;
    let dir = TempDir::new("bench-ref");
    let reference = smtp_source(
        dir.path(),
        args.reference_sessions,
        args.recipients,
        args.message_bytes,
        None,
    )?;
    println!(
        "== reference: smtp-source -> smtp-sink, {} sessions reusing their connections, {} messages of {} B ==",
        args.reference_sessions, args.recipients, args.message_bytes
    );
    println!(
        "  {:.0} msg/s; the sink's CPU {:.0} us per message",
        reference.msg_per_s, reference.sink_cpu_us
    );
    let mut peak: Option<(usize, f64)> = None;
    for &s in args.senders.iter().filter(|s| **s > 0) {
        let run = run_campaign(&args, s, args.recipients, None, Some(reference.msg_per_s)).await?;
        if peak.is_none_or(|(_, r)| run.msg_per_s > r) {
            peak = Some((s, run.msg_per_s));
        }
    }
    if args.postfix_messages > 0 {
        postfix(&args, reference.msg_per_s, peak.map(|(_, r)| r))?;
    }
    if let Some((senders, rate)) = peak {
        if args.quarter_secs > 0 {
            quarter(&args, senders, rate / 4.0).await?;
        }
        if args.million > 0 {
            let big = run_campaign(
                &args,
                senders,
                args.million,
                None,
                Some(reference.msg_per_s),
            )
            .await?;
            println!(
                "  {} recipients: {:.0} msg/s against {rate:.0} for {}: {:+.1}%",
                args.million,
                big.msg_per_s,
                args.recipients,
                (big.msg_per_s / rate - 1.0) * 100.0
            );
        }
    }
    if args.slow_concurrency > 0 {
        slow_relay(&args).await?;
    }
    ingest_only(&args.ingest_sizes).await?;
    if args.limits_recipients > 0 {
        limits::limits(&args).await?;
    }
    Ok(())
}
