//! jetmail's cluster and durability benchmark: the release binaries end to end (ingest's
//! `submit`, N senders, a fast SMTP sink) on one JetStream node and on a 3-node cluster on
//! this machine (every stream and bucket at 3 replicas), each with the server's default
//! fsync and with `sync_interval: always`. Prints end-to-end messages per second (submit to
//! the last ledger write) for each sender count. Run it with `scripts/bench.sh --cluster`.

use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use jetmail_common::topology::{self, TopologyOptions};
use jetmail_testkit::bench::{write_csv, PostfixSink};
use jetmail_testkit::cluster::Sync;
use jetmail_testkit::{bin_path, NatsCluster, Service, TempDir};

#[derive(Parser)]
#[command(about = "jetmail end-to-end throughput on one node and on a 3-node cluster")]
struct Args {
    /// Recipients per run.
    #[arg(long, default_value_t = 50_000)]
    recipients: usize,
    /// Sender counts to measure, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    senders: Vec<usize>,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Node counts to measure (1: a single server, 3: a cluster at 3 replicas).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    nodes: Vec<usize>,
    /// Also measure every setup with `sync_interval: always`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    sync_always: bool,
}

/// One campaign of `recipients` through `senders` senders on `nodes` nodes: msg/s from the
/// start of submit until the ledger holds every recipient.
async fn run(args: &Args, nodes: usize, sync: Sync, senders: usize) -> anyhow::Result<f64> {
    let dir = TempDir::new("cluster-bench");
    let cluster = NatsCluster::start_nodes(nodes, sync).await?;
    let client = cluster.client().await?;
    let js = jetmail_common::config::jetstream_context(client.clone(), 8192);
    let options = TopologyOptions {
        replicas: Some(nodes),
    };
    topology::ensure_with(&js, &options).await?;
    let sink = PostfixSink::start(dir.path(), 1024, None)?;
    let nats = cluster.service_args();
    let mut procs = Vec::new();
    for i in 0..senders {
        let mut a = nats.clone();
        a.extend([
            "--smtp-url".into(),
            format!("smtp://127.0.0.1:{}", sink.port),
            "--concurrency".into(),
            args.concurrency.to_string(),
            "--id".into(),
            format!("bench{i}"),
        ]);
        procs.push(Service::spawn(
            &format!("sender{i}"),
            "jetmail-sender",
            &a,
            &[],
            dir.path(),
        )?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let csv = dir.path().join("r.csv");
    write_csv(&csv, args.recipients)?;
    let body = dir.path().join("body.txt");
    std::fs::write(&body, "Hello {{ name }},\nthis is a benchmark mail.\n")?;

    let started = Instant::now();
    let out = Command::new(bin_path("jetmail-ingest")?)
        .args(&nats)
        .args(["submit", "--from", "bench@example.com", "--subject", "Hi"])
        .arg("--text")
        .arg(&body)
        .arg("--recipients")
        .arg(&csv)
        .args(["--campaign-id", "bench"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One `sent` event per recipient (the ledger): nothing else happens in this run.
    let ledger = topology::EVENTS_STREAM;
    loop {
        let (state, _) = topology::stream_replication(&js, ledger).await?;
        if state.messages >= args.recipients as u64 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "{} of {} sent after 10 minutes",
            state.messages,
            args.recipients
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(args.recipients as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut syncs = vec![Sync::Default];
    if args.sync_always {
        syncs.push(Sync::Always);
    }
    println!(
        "{} recipients, concurrency {} per sender, end-to-end msg/s (submit to the last ledger write)",
        args.recipients, args.concurrency
    );
    for &nodes in &args.nodes {
        for &sync in &syncs {
            let setup = match nodes {
                1 => "1 node".to_string(),
                n => format!("{n}-node cluster, R{n}"),
            };
            let fsync = match sync {
                Sync::Default => "default fsync (2 min)",
                Sync::Always => "sync_interval: always",
            };
            let mut line = format!("{setup:<20} {fsync:<22}");
            for &senders in &args.senders {
                let rate = run(&args, nodes, sync, senders).await?;
                line += &format!("  {senders} senders {rate:>7.0}");
            }
            println!("{line}");
        }
    }
    Ok(())
}
