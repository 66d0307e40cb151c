//! How much PIPELINING (RFC 2920) is worth against a distant relay: one `jetmail-sender`
//! delivers the same campaign twice through the project's SMTP sink with every reply delayed
//! (a relay that far away), once pipelining the envelope and once with `?pipelining=false`.
//! Run it with `scripts/bench.sh` (after the main benchmark) or `scripts/bench.sh --pipelining`.

use std::time::{Duration, Instant};

use clap::Parser;
use jetmail_common::config::parse_duration;
use jetmail_testkit::{wait_for, Stack};

#[derive(Parser)]
#[command(about = "jetmail PIPELINING benchmark against a relay with a delay on every reply")]
struct Args {
    /// Delay of every relay reply after its command arrived (the relay's distance).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    latency: Duration,
    #[arg(long, default_value_t = 2_000)]
    recipients: usize,
    /// The sender's --concurrency (connections to the relay).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

/// Delivers `args.recipients` through a sender whose relay URL ends in `query`; messages per
/// second from the first accepted message to the last.
async fn run(args: &Args, query: &str) -> anyhow::Result<f64> {
    let mut stack = Stack::start(0, &[]).await?;
    stack.sink.set_faults(|f| f.delay = args.latency);
    let url = format!("{}{query}", stack.sink.url());
    let concurrency = args.concurrency.to_string();
    stack.spawn_sender_with("bench", &url, &["--concurrency", &concurrency], &[])?;
    let csv = stack.write_csv("r.csv", args.recipients)?;
    stack.submit(&csv, "relaybench", &[])?;
    let n = args.recipients as u64;
    let limit = Duration::from_secs(30) + args.latency * (8 * n as u32);
    wait_for("the first message", limit, || async {
        (stack.sink.total() > 0).then_some(())
    })
    .await?;
    let (first, started) = (stack.sink.total(), Instant::now());
    wait_for("every message", limit, || async {
        (stack.sink.total() >= n).then_some(())
    })
    .await?;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    anyhow::ensure!(
        stack.sink.duplicates() == 0 && stack.sink.distinct() == args.recipients,
        "not delivered exactly once"
    );
    Ok((n - first) as f64 / secs)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ms = args.latency.as_secs_f64() * 1000.0;
    println!(
        "== PIPELINING: 1 sender, concurrency {}, {} recipients, every relay reply {ms:.0} ms late ==",
        args.concurrency, args.recipients
    );
    let piped = run(&args, "").await?;
    let plain = run(&args, "?pipelining=false").await?;
    // Each connection carries one message at a time: its time per message is what one
    // message costs in round trips.
    let per_message = |rate: f64| args.concurrency as f64 / rate * 1000.0;
    println!(
        "  pipelined (MAIL, RCPT, DATA together)  {piped:>6.0} msg/s   {:>4.0} ms a message on a connection",
        per_message(piped)
    );
    println!(
        "  one command at a time                  {plain:>6.0} msg/s   {:>4.0} ms a message on a connection",
        per_message(plain)
    );
    println!(
        "  speed-up                               {:>6.2}x",
        piped / plain
    );
    Ok(())
}
