//! One benchmark deployment: a nats-server (with its monitoring port, for `/varz`), Postfix's
//! smtp-sink, the monitor and N senders, all release binaries on this machine.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jetmail_common::limits::LimitSpec;
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{DeliveryEvent, Outcome, SenderHealth, SenderState};
use jetmail_testkit::bench::{peak_rss_mib, PostfixSink, Varz};
use jetmail_testkit::{bin_path, free_port, NatsServer, Service};

pub struct Fleet {
    pub nats: NatsServer,
    pub monitor_port: u16,
    pub sink: PostfixSink,
    pub monitor: Service,
    pub senders: Vec<Service>,
    pub topo: Topology,
}

/// How one fleet is set up.
pub struct FleetSpec<'a> {
    pub senders: usize,
    pub concurrency: usize,
    /// smtp-sink's delay before each DATA reply (a distant MX).
    pub sink_delay: Option<Duration>,
    pub global_limit: Option<&'a str>,
}

impl Fleet {
    pub async fn start(dir: &Path, spec: &FleetSpec<'_>) -> anyhow::Result<Self> {
        let monitor_port = free_port();
        let nats = NatsServer::start_with(vec!["-m".into(), monitor_port.to_string()]).await?;
        let backlog = (spec.senders * spec.concurrency * 2).max(1024) as u32;
        let sink = PostfixSink::start(dir, backlog, spec.sink_delay)?;
        let client = nats.client().await?;
        let js = jetmail_common::config::jetstream_context(client, 8192);
        let topo = topology::ensure(&js).await?;
        if let Some(rate) = spec.global_limit {
            let limit = LimitSpec::new(&[], rate, None, None)?;
            topo.limits
                .put(
                    topology::limit_key(&limit.scope),
                    serde_json::to_vec(&limit)?.into(),
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
            dir,
        )?;
        let mut senders = Vec::new();
        for i in 0..spec.senders {
            senders.push(Service::spawn(
                &format!("sender{i}"),
                "jetmail-sender",
                &[
                    "--nats-url".into(),
                    nats.url(),
                    "--smtp-url".into(),
                    format!("smtp://127.0.0.1:{}", sink.port),
                    "--concurrency".into(),
                    spec.concurrency.to_string(),
                    "--id".into(),
                    format!("bench{i}"),
                ],
                &[],
                dir,
            )?);
        }
        // Every sender connected and pulling: its heartbeat is in the health map as `up`.
        let ids: Vec<String> = (0..spec.senders).map(|i| format!("bench{i}")).collect();
        jetmail_testkit::wait_for("every sender up", Duration::from_secs(60), || async {
            for id in &ids {
                let entry = topo.senders.get(id).await.ok()??;
                let health: SenderHealth = serde_json::from_slice(&entry).ok()?;
                (health.state == SenderState::Up).then_some(())?;
            }
            Some(())
        })
        .await?;
        Ok(Self {
            nats,
            monitor_port,
            sink,
            monitor,
            senders,
            topo,
        })
    }

    /// The processes whose CPU counts per recipient: the broker, the senders, the monitor.
    pub fn measured(&self) -> Vec<(String, u32)> {
        let mut p = vec![("nats-server".to_string(), self.nats.pid().unwrap_or(0))];
        for s in &self.senders {
            p.push((s.name.clone(), s.pid().unwrap_or(0)));
        }
        p.push(("monitor".into(), self.monitor.pid().unwrap_or(0)));
        p
    }

    pub async fn varz(&self) -> Varz {
        Varz::read(self.monitor_port).await
    }

    /// Waits until the monitor counts `n` final outcomes of `campaign`; the time of its last
    /// accept (ms since the epoch).
    pub async fn wait_done(&self, campaign: &str, n: u64, limit: Duration) -> anyhow::Result<u64> {
        let started = Instant::now();
        loop {
            let p = jetmail_common::records::load_progress(&self.topo, campaign)
                .await
                .unwrap_or_default();
            if p.sent + p.failed + p.dead >= n {
                return Ok(p.last_sent_ms);
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "campaign {campaign} did not finish: {p:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// (published, accepted) times in ms since the epoch of every `sent` event of `campaign`
    /// (all campaigns when `None`), from the events themselves.
    pub async fn sent_times(
        &self,
        campaign: Option<&str>,
        n: usize,
    ) -> anyhow::Result<Vec<(u64, u64)>> {
        let consumer = self
            .topo
            .events
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: topology::events_of(campaign, Some(Outcome::Sent)),
                ..Default::default()
            })
            .await?;
        let mut msgs = consumer.messages().await?;
        let mut lat = Vec::with_capacity(n);
        while lat.len() < n {
            let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), msgs.next()).await
            else {
                break;
            };
            if let Ok(ev) = serde_json::from_slice::<DeliveryEvent>(&m.payload) {
                lat.push((ev.published_ms, ev.at_ms));
            }
        }
        Ok(lat)
    }

    pub fn print_peak_rss(&self, ingest_rss: Option<f64>) {
        for (name, pid) in self.measured() {
            println!("  peak RSS {name:<16} {:.1} MiB", peak_rss_mib(pid));
        }
        if let Some(rss) = ingest_rss {
            println!("  peak RSS {:<16} {rss:.1} MiB", "ingest");
        }
    }
}

/// A text body that makes a message of about `bytes` on the wire (headers take ~400), with a
/// variable in its first line.
pub fn write_body(path: &Path, bytes: usize) -> anyhow::Result<()> {
    let mut body = String::from("Hello {{ name }},\n\n");
    let line = "This is jetmail's benchmark mail: one campaign, personalised per recipient.\n";
    while body.len() + line.len() < bytes.saturating_sub(400) {
        body.push_str(line);
    }
    std::fs::write(path, body)?;
    Ok(())
}

/// Runs `jetmail-ingest submit` and returns (seconds, peak RSS MiB).
pub fn submit(nats: &str, csv: &Path, body: &Path, campaign: &str) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let child = Command::new(bin_path("jetmail-ingest")?)
        .args(["--nats-url", nats, "submit", "--from", "bench@example.com"])
        .args(["--subject", "Hi {{ name }}"])
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
    Ok((secs, usage.ru_maxrss as f64 / 1024.0))
}
