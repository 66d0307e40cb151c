//! The sending policy's cost (no limit versus a limit that never bites, in the same run) and
//! its precision (the rate held under `--held-limit`).

use jetmail_common::limits::Rate;

use crate::{run_campaign, Args};

/// A global limit far above what the machine can send: every send takes from the shared
/// budget, but the budget never refuses.
const UNREACHABLE_LIMIT: &str = "1000000/s";
/// The start of a limited run is not judged: senders start and take their first slices.
const SETTLE_MS: u64 = 2_000;

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

pub async fn limits(args: &Args) -> anyhow::Result<()> {
    let n = args.limits_recipients;
    let senders = args.senders.iter().copied().max().unwrap_or(3);
    let rate: Rate = args.held_limit.parse()?;
    println!("== sending policy: {senders} sender(s), {n} recipients per run ==");
    // Alternated, twice each: one run against the other is within this machine's noise.
    let (mut free, mut high) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        free.push(run_campaign(args, senders, n, None, None).await?.msg_per_s);
        high.push(
            run_campaign(args, senders, n, Some(UNREACHABLE_LIMIT), None)
                .await?
                .msg_per_s,
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
    let held = run_campaign(args, senders, n, Some(&args.held_limit), None).await?;
    match held_rate(&held.accepted_ms) {
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
