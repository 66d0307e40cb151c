//! The cost of sending like a good citizen, on the release binaries: one sender's throughput
//! with no DKIM, with RSA-2048 and with Ed25519 (same run, same machine, the same recipients
//! published beforehand, so only the sender is measured), then the suppression list at a
//! million entries: how long a sender takes to load it before pulling, its RSS then, and the
//! throughput with the list loaded. Recipients and suppressions are written to the broker
//! directly (as ingest writes them), so nothing but the sender is timed. Run it with
//! `scripts/bench.sh --compliance`.

use std::future::IntoFuture;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::stream::{FuturesUnordered, StreamExt};
use jetmail_common::compliance::{
    normalize_address, suppression_key, Suppression, SuppressionReason,
};
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{
    CampaignRecord, CampaignSchedule, CampaignSpec, CampaignStatus, OutboxMessage, PublishProgress,
    UnsubscribeLinks,
};
use jetmail_testkit::{NatsServer, Service, SmtpSink, TempDir};

#[derive(Parser)]
#[command(about = "jetmail DKIM and suppression-list benchmark")]
struct Args {
    /// Recipients per throughput run.
    #[arg(long, default_value_t = 20_000)]
    recipients: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Suppressed addresses loaded for the list measurement (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    suppressions: usize,
}

/// Publishes in a window this wide: under async-nats' default of 5,000 un-acked publishes.
const WINDOW: usize = 4_000;

async fn publish_campaign(topo: &Topology, id: &str, n: usize) -> anyhow::Result<()> {
    let record = CampaignRecord {
        v: 1,
        id: id.into(),
        spec: CampaignSpec {
            from: "News <news@example.com>".into(),
            subject: "Hello {{ email }}".into(),
            text: "Hello {{ email }},\nthis is a benchmark mail.\nLeave: {{ unsubscribe_url }}\n"
                .into(),
            html: None,
        },
        status: CampaignStatus::Running,
        created_ms: jetmail_common::now_ms(),
        publish: PublishProgress {
            published_through: n as u64,
            complete: true,
            ..Default::default()
        },
        idempotency_key: None,
        request_fingerprint: None,
        schedule: CampaignSchedule::default(),
        unsubscribe: Some(UnsubscribeLinks {
            base_url: "https://news.example.com".into(),
            mailto: None,
        }),
        test: false,
    };
    topo.campaigns
        .put(
            topology::campaign_key(id),
            serde_json::to_vec(&record)?.into(),
        )
        .await?;
    let mut acks = FuturesUnordered::new();
    for seq in 1..=n as u64 {
        let m = OutboxMessage {
            v: 1,
            campaign: id.into(),
            seq,
            email: format!("user{seq}@example.com"),
            vars: Default::default(),
            replay: 0,
            published_ms: jetmail_common::now_ms(),
            // The shape of a real token (base64url claim . base64url tag), not a valid one.
            unsubscribe_token: Some(format!(
                "eyJjIjoiYmVuY2gi{seq:012}.c2lnbmF0dXJlLW9mLTMyLWJ5dGVzLWxvbmctLS0"
            )),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            topology::outbox_msg_id(id, seq, 0).as_str(),
        );
        acks.push(
            topo.js
                .publish_with_headers(
                    topology::outbox_subject(id, "example_com"),
                    headers,
                    serde_json::to_vec(&m)?.into(),
                )
                .await?
                .into_future(),
        );
        if acks.len() >= WINDOW {
            acks.next().await.transpose()?;
        }
    }
    while let Some(a) = acks.next().await {
        a?;
    }
    Ok(())
}

/// Puts `n` suppressions (addresses nobody is mailed) straight into the bucket's stream.
async fn load_suppressions(topo: &Topology, n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    for i in 0..n {
        let address = normalize_address(&format!("gone{i}@suppressed.example"))?;
        let entry = Suppression {
            v: 1,
            address: address.clone(),
            reason: SuppressionReason::Unsubscribed,
            at_ms: jetmail_common::now_ms(),
            campaign: Some("bench".into()),
            detail: None,
        };
        acks.push(
            topo.js
                .publish(
                    format!(
                        "$KV.{}.{}",
                        topology::SUPPRESSIONS_BUCKET,
                        suppression_key(&address)
                    ),
                    serde_json::to_vec(&entry)?.into(),
                )
                .await?
                .into_future(),
        );
        if acks.len() >= WINDOW {
            acks.next().await.transpose()?;
        }
    }
    while let Some(a) = acks.next().await {
        a?;
    }
    Ok(started.elapsed().as_secs_f64())
}

struct Run {
    rate: f64,
    rss: f64,
    load_ms: Option<u64>,
}

/// Starts one sender with `extra`, lets it drain the campaign published before it started
/// (`--recipients` of them), and reports its rate.
async fn run_sender(
    dir: &Path,
    nats: &NatsServer,
    sink: &SmtpSink,
    args: &Args,
    name: &str,
    extra: &[String],
) -> anyhow::Result<Run> {
    let before = sink.total();
    let mut sargs = vec![
        "--nats-url".to_string(),
        nats.url(),
        "--smtp-url".into(),
        sink.url(),
        "--concurrency".into(),
        args.concurrency.to_string(),
        "--id".into(),
        name.into(),
    ];
    sargs.extend(extra.iter().cloned());
    let started = Instant::now();
    let mut sender = Service::spawn(name, "jetmail-sender", &sargs, &[], dir)?;
    // Time to the list being loaded, from the sender's own log line.
    let mut load_ms = None;
    let mut first = None;
    let n = args.recipients as u64;
    loop {
        let done = sink.total() - before;
        if first.is_none() && done > 0 {
            first = Some(Instant::now());
        }
        if load_ms.is_none() {
            let log = sender.log();
            load_ms = log
                .lines()
                .find(|l| l.contains("suppression list loaded"))
                .and_then(|l| l.split("ms=").nth(1))
                .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
        }
        if done >= n {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "{name}: only {done} of {n} sent\n{}",
            sender.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64()).max(1e-3);
    let rss = sender
        .pid()
        .map_or(0.0, jetmail_testkit::bench::peak_rss_mib);
    sender.terminate(Duration::from_secs(10))?;
    Ok(Run {
        rate: n as f64 / secs,
        rss,
        load_ms,
    })
}

fn openssl(dir: &Path, script: &str) -> anyhow::Result<()> {
    let ok = Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .status()?
        .success();
    anyhow::ensure!(ok, "openssl failed: {script}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = TempDir::new("compliance-bench");
    openssl(dir.path(), "openssl genrsa -out rsa.pem 2048 2>/dev/null")?;
    openssl(dir.path(), "openssl genpkey -algorithm ed25519 -out ed.pem")?;
    let nats = NatsServer::start().await?;
    let sink = SmtpSink::start_on("127.0.0.1:0".parse()?, false, None).await?;
    let client = nats.client().await?;
    let js = jetmail_common::config::jetstream_context(client.clone(), 8192);
    let topo = topology::ensure(&js).await?;
    let key = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let modes: [(&str, Vec<String>); 3] = [
        ("no DKIM", vec![]),
        (
            "RSA-2048",
            vec![
                "--dkim-selector".into(),
                "r1".into(),
                "--dkim-key".into(),
                key("rsa.pem"),
            ],
        ),
        (
            "Ed25519",
            vec![
                "--dkim-selector".into(),
                "e1".into(),
                "--dkim-key".into(),
                key("ed.pem"),
            ],
        ),
    ];
    println!(
        "DKIM: one sender, --concurrency {}, {} recipients each (published first)",
        args.concurrency, args.recipients
    );
    let mut baseline = None;
    for (i, (name, extra)) in modes.iter().enumerate() {
        let id = format!("dkim{i}");
        publish_campaign(&topo, &id, args.recipients).await?;
        let r = run_sender(dir.path(), &nats, &sink, &args, &format!("s{i}"), extra).await?;
        let base = *baseline.get_or_insert(r.rate);
        println!(
            "  {name:<9} {:>8.0} msg/s  ({:>5.1}% of no DKIM)  sender peak RSS {:.1} MiB",
            r.rate,
            100.0 * r.rate / base,
            r.rss
        );
    }
    if args.suppressions > 0 {
        let secs = load_suppressions(&topo, args.suppressions).await?;
        println!(
            "suppressions: {} entries written in {secs:.1}s",
            args.suppressions
        );
        publish_campaign(&topo, "supp", args.recipients).await?;
        let r = run_sender(dir.path(), &nats, &sink, &args, "s-supp", &[]).await?;
        println!(
            "  sender with the list: loaded in {} ms before pulling, peak RSS {:.1} MiB, {:.0} msg/s ({:.1}% of no list)",
            r.load_ms.map_or("?".into(), |m| m.to_string()),
            r.rss,
            r.rate,
            100.0 * r.rate / baseline.unwrap_or(r.rate)
        );
    }
    Ok(())
}
