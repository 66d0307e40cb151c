//! The system on a real 3-node JetStream cluster (three nats-servers on loopback, every stream
//! and bucket at 3 replicas), every service given all three URLs. A node is `kill -9`ed in the
//! middle of a campaign (the MAIL_OUTBOX leader, the MAIL_EVENTS leader, whose `sent` events are the ledger) and left down, or all
//! three are restarted one after the other: nothing is lost, the campaign is marked done,
//! duplicates stay within the sends in flight, and every service carries on by itself on the
//! surviving nodes. Each test prints one `CLUSTER` line with what it measured.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jetmail_common::config::jetstream_context;
use jetmail_common::records::load_record;
use jetmail_common::topology::{self, TopologyOptions, EVENTS_STREAM, OUTBOX_STREAM};
use jetmail_common::wire::{CampaignStatus, SenderHealth, SenderState};
use jetmail_testkit::{free_port, policy, wait_for, NatsCluster, Service, SmtpSink, TempDir};

const N: usize = 20_000;
const SENDERS: usize = 3;
/// Sends in flight per sender: the duplicate bound is this times the senders.
const CONCURRENCY: usize = 16;
/// Per-campaign deadline; a 20,000 campaign takes ~10-20 s here.
const CAMPAIGN_TIMEOUT: Duration = Duration::from_secs(180);

/// The whole stack on a cluster. Field order is drop order: processes before the broker.
struct ClusterStack {
    senders: Vec<Service>,
    monitor: Service,
    ingest: Service,
    webui: Service,
    sink: SmtpSink,
    cluster: NatsCluster,
    client: async_nats::Client,
    topo: topology::Topology,
    dir: TempDir,
    monitor_port: u16,
    ingest_port: u16,
    webui_port: u16,
}

impl ClusterStack {
    async fn start() -> anyhow::Result<Self> {
        let cluster = NatsCluster::start().await?;
        let client = cluster.client().await?;
        let js = jetstream_context(client.clone(), 8192);
        let options = TopologyOptions {
            replicas: Some(cluster.len()),
        };
        let topo = topology::ensure_with(&js, &options).await?;
        // A short ack wait, so a delivery whose ack died with a node comes back in seconds.
        topology::apply_senders_policy(&topo, &policy("500ms,1s,2s,4s,8s,16s", "6s")).await?;
        let sink = SmtpSink::start().await?;
        let dir = TempDir::new("cluster-stack");
        let (monitor_port, ingest_port, webui_port) = (free_port(), free_port(), free_port());
        let nats = cluster.service_args();
        let with = |extra: &[String]| [nats.clone(), extra.to_vec()].concat();
        let mut senders = Vec::new();
        for i in 1..=SENDERS {
            let id = format!("s{i}");
            let args = with(&strings(&[
                "--smtp-url",
                &sink.url(),
                "--id",
                &id,
                "--heartbeat-interval",
                "500ms",
                "--concurrency",
                &CONCURRENCY.to_string(),
                "--send-timeout",
                "2s",
                "--drain-timeout",
                "10s",
            ]));
            senders.push(Service::spawn(
                &id,
                "jetmail-sender",
                &args,
                &[],
                dir.path(),
            )?);
        }
        let listen = |port: u16| format!("127.0.0.1:{port}");
        let monitor = Service::spawn(
            "monitor",
            "jetmail-monitor",
            &with(&strings(&["--listen", &listen(monitor_port)])),
            &[],
            dir.path(),
        )?;
        let ingest = Service::spawn(
            "ingest",
            "jetmail-ingest",
            &with(&strings(&[
                "serve",
                "--listen",
                &listen(ingest_port),
                "--insecure-no-auth",
            ])),
            &[],
            dir.path(),
        )?;
        let webui = Service::spawn(
            "webui",
            "jetmail-webui",
            &with(&strings(&[
                "--ingest-url",
                &format!("http://{}", listen(ingest_port)),
                "--listen",
                &listen(webui_port),
            ])),
            &[("JETMAIL_WEBUI_PASSWORD", "cluster-test-password")],
            dir.path(),
        )?;
        Ok(Self {
            senders,
            monitor,
            ingest,
            webui,
            sink,
            cluster,
            client,
            topo,
            dir,
            monitor_port,
            ingest_port,
            webui_port,
        })
    }

    /// Publishes `n` recipients `user<i>@example.com` with `jetmail-ingest submit`.
    fn submit(&self, campaign: &str, n: usize) -> anyhow::Result<()> {
        use std::io::Write;
        let csv = self.dir.path().join(format!("{campaign}.csv"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        writeln!(f, "email,name")?;
        for i in 0..n {
            writeln!(f, "user{i}@example.com,Name {i}")?;
        }
        f.flush()?;
        let text = self.dir.path().join("body.txt");
        std::fs::write(&text, "Hello {{ name }}.\n")?;
        let out = std::process::Command::new(jetmail_testkit::bin_path("jetmail-ingest")?)
            .args(self.cluster.service_args())
            .args(["submit", "--from", "news@example.com", "--subject", "Hi"])
            .arg("--text")
            .arg(&text)
            .arg("--recipients")
            .arg(&csv)
            .args(["--campaign-id", campaign])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "submit failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    async fn wait_done(&self, campaign: &str) -> anyhow::Result<()> {
        wait_for(
            &format!("campaign {campaign} done"),
            CAMPAIGN_TIMEOUT,
            || async {
                let (r, _) = load_record(&self.topo, campaign).await.ok()??;
                (r.status == CampaignStatus::Done).then_some(())
            },
        )
        .await
    }

    /// Recipients `user<i>` (i < n) the relay never received.
    fn lost(&self, n: usize) -> Vec<String> {
        let counts: HashMap<String, u64> = self.sink.counts();
        (0..n)
            .map(|i| format!("user{i}@example.com"))
            .filter(|a| !counts.contains_key(a))
            .collect()
    }

    /// Every service is still running and answering: the monitor lists every sender up (its
    /// heartbeats arrive), the web UI answers, and ingest's API takes and delivers a campaign.
    async fn assert_services_healthy(&mut self) -> anyhow::Result<()> {
        for s in
            self.senders
                .iter_mut()
                .chain([&mut self.monitor, &mut self.ingest, &mut self.webui])
        {
            assert!(s.exited().is_none(), "{} exited:\n{}", s.name, s.log());
        }
        let port = self.monitor_port;
        wait_for(
            "the monitor to see every sender up",
            Duration::from_secs(30),
            || async {
                let body = jetmail_testkit::http_request(port, "GET", "/v1/senders", "").await?;
                let health: Vec<SenderHealth> = serde_json::from_str(&body).ok()?;
                let up = health.iter().filter(|h| h.state == SenderState::Up).count();
                (up == SENDERS).then_some(())
            },
        )
        .await?;
        let webui = self.webui_port;
        wait_for("the web UI to answer", Duration::from_secs(10), || {
            jetmail_testkit::http_request(webui, "GET", "/healthz", "")
        })
        .await?;
        let campaign = serde_json::json!({
            "from": "news@example.com", "subject": "Hi", "text": "Hello",
            "recipients": ["after-a@example.com", "after-b@example.com"],
            "campaign_id": "after",
        });
        let ingest = self.ingest_port;
        let body = campaign.to_string();
        wait_for("ingest to take a campaign", Duration::from_secs(30), || {
            jetmail_testkit::http_request(ingest, "POST", "/v1/campaigns", &body)
        })
        .await?;
        self.wait_done("after").await
    }
}

/// Every recipient delivered, and no more of them twice than the sends in flight (`bound`).
fn assert_nothing_lost_and_duplicates_within(lost: &[String], duplicates: u64, bound: u64) {
    assert!(
        lost.is_empty(),
        "lost {}: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates, bound {bound}"
    );
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// Waits until the relay has received `n` messages.
async fn wait_delivered(stack: &ClusterStack, n: u64) -> anyhow::Result<()> {
    wait_for(&format!("{n} delivered"), CAMPAIGN_TIMEOUT, || async {
        (stack.sink.total() >= n).then_some(())
    })
    .await
}

/// Kills the node leading `stream` a third of the way through a campaign and leaves it down.
async fn kill_the_leader_of(stream: &str, campaign: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut stack = ClusterStack::start().await?;
    stack.submit(campaign, N)?;
    wait_delivered(&stack, N as u64 / 3).await?;
    let leader = stack
        .cluster
        .leader(&stack.client, stream)
        .await
        .expect("the stream has a leader");
    stack.cluster.kill(leader);
    let killed_at = Instant::now();
    stack.wait_done(campaign).await?;
    let recovered = killed_at.elapsed();
    let lost = stack.lost(N);
    let duplicates = stack.sink.duplicates();
    let bound = (SENDERS * CONCURRENCY) as u64;
    println!(
        "CLUSTER kill -9 the {stream} leader ({}) and leave it down: lost {}, duplicates {duplicates} \
         (bound {bound}), done {:.1}s after the kill, test {:.1}s",
        stack.cluster.name(leader),
        lost.len(),
        recovered.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_nothing_lost_and_duplicates_within(&lost, duplicates, bound);
    let new_leader = stack.cluster.leader(&stack.client, stream).await;
    assert!(
        new_leader.is_some_and(|l| l != leader),
        "a surviving node leads {stream}: {new_leader:?}"
    );
    stack.assert_services_healthy().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_the_outbox_leader_and_leave_it_down() -> anyhow::Result<()> {
    kill_the_leader_of(OUTBOX_STREAM, "outbox-leader").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_the_events_leader_which_holds_the_ledger_and_leave_it_down() -> anyhow::Result<()> {
    kill_the_leader_of(EVENTS_STREAM, "events-leader").await
}

/// Every node is killed and restarted in turn during one campaign; each comes back before
/// the next goes, and the cluster is in sync again before the next kill (as an operator's
/// rolling upgrade would wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_loses_nothing() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut stack = ClusterStack::start().await?;
    stack.submit("rolling", N)?;
    for i in 0..stack.cluster.len() {
        wait_delivered(&stack, (N * (i + 1) / 5) as u64).await?;
        stack.cluster.kill(i);
        tokio::time::sleep(Duration::from_millis(500)).await;
        stack.cluster.restart(i).await?;
        stack
            .cluster
            .wait_in_sync(&stack.client, Duration::from_secs(60))
            .await?;
    }
    stack.wait_done("rolling").await?;
    let lost = stack.lost(N);
    let duplicates = stack.sink.duplicates();
    let bound = (stack.cluster.len() * SENDERS * CONCURRENCY) as u64;
    println!(
        "CLUSTER rolling restart of 3 nodes: lost {}, duplicates {duplicates} (bound {bound}), \
         test {:.1}s",
        lost.len(),
        started.elapsed().as_secs_f64()
    );
    assert_nothing_lost_and_duplicates_within(&lost, duplicates, bound);
    stack.assert_services_healthy().await
}

/// `topology apply --replicas` moves a running single-replica deployment to 3 and back, with
/// every message still there, and `topology show` reports the copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_apply_moves_replicas_from_one_to_three_and_back() -> anyhow::Result<()> {
    let cluster = NatsCluster::start().await?;
    let client = cluster.client().await?;
    let topo = topology::ensure(&jetstream_context(client.clone(), 8192)).await?;
    for i in 0..100 {
        topo.attempts.put(format!("c.{i}"), "1".into()).await?;
    }
    let ingest = |args: &[&str]| -> anyhow::Result<String> {
        let out = std::process::Command::new(jetmail_testkit::bin_path("jetmail-ingest")?)
            .args(["--nats-url", &cluster.urls()])
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    for replicas in [3, 1] {
        let applied = ingest(&["topology", "apply", "--replicas", &replicas.to_string()])?;
        assert!(
            applied.contains(&format!("-> {replicas} (changed)")),
            "{applied}"
        );
        let js = jetstream_context(client.clone(), 8192);
        wait_for("every copy in sync", Duration::from_secs(30), || async {
            for store in topology::all_stores() {
                let (_, r) = topology::stream_replication(&js, &store.stream)
                    .await
                    .ok()?;
                (r.replicas == replicas && r.in_sync()).then_some(())?;
            }
            Some(())
        })
        .await?;
        let (state, _) = topology::stream_replication(&js, "KV_mail_attempts").await?;
        assert_eq!(
            state.messages, 100,
            "no message lost at {replicas} replicas"
        );
        let outbox = js.get_stream(OUTBOX_STREAM).await?;
        wait_for(
            "the senders consumer to follow its stream",
            Duration::from_secs(20),
            || async {
                let mut c = outbox
                    .get_consumer::<async_nats::jetstream::consumer::pull::Config>("senders")
                    .await
                    .ok()?;
                let info = c.info().await.ok()?;
                let n = info.cluster.as_ref()?.replicas.len() + 1;
                (n == replicas).then_some(())
            },
        )
        .await?;
        let shown = ingest(&["topology", "show"])?;
        println!("{shown}");
        assert!(
            shown.contains(&format!("replicas {replicas}, leader n")),
            "{shown}"
        );
    }
    Ok(())
}

/// A service started while the cluster has no quorum (two of three nodes down) cannot create
/// its replicated streams yet: it waits, saying why, instead of exiting, and sets them up once
/// the nodes are back (compose's first `up` of the cluster profile gave up on services that
/// exited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_before_the_cluster_has_a_quorum_waits_for_it() -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start().await?;
    cluster.kill(1);
    cluster.kill(2);
    let dir = TempDir::new("quorum");
    let port = free_port();
    let mut args = cluster.service_args();
    args.extend(strings(&["--listen", &format!("127.0.0.1:{port}")]));
    let mut monitor = Service::spawn("monitor", "jetmail-monitor", &args, &[], dir.path())?;
    // Its first attempt has failed (a JetStream request times out after 10 s): without the
    // retry it exits there, and this line never comes.
    wait_for("the monitor to retry", Duration::from_secs(30), || {
        let retrying = monitor
            .log()
            .contains("cannot set up JetStream yet; retrying");
        async move { retrying.then_some(()) }
    })
    .await?;
    assert!(
        monitor.exited().is_none(),
        "the monitor gave up without a quorum:\n{}",
        monitor.log()
    );
    let waited = Instant::now();
    cluster.restart(1).await?;
    cluster.restart(2).await?;
    wait_for("the monitor to answer", Duration::from_secs(60), || {
        jetmail_testkit::http_request(port, "GET", "/healthz", "")
    })
    .await?;
    println!(
        "CLUSTER a monitor started without a quorum: up {:.1}s after the nodes came back",
        waited.elapsed().as_secs_f64()
    );
    assert!(monitor
        .log()
        .contains("cannot set up JetStream yet; retrying"));
    Ok(())
}
