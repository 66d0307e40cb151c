//! The whole pipeline as real processes: nats-server, an SMTP sink, N `jetmail-sender`s and a
//! `jetmail-monitor`, plus helpers to submit campaigns and read the broker's state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use jetmail_common::config::{parse_duration, parse_duration_list};
use jetmail_common::records::{load_progress, load_record};
use jetmail_common::topology::{self, SendersPolicy, Topology};
use jetmail_common::wire::{
    CampaignProgress, CampaignRecord, CampaignStatus, DeadLetter, SenderHealth,
};

use crate::{free_port, wait_for, NatsServer, Service, SmtpSink, TempDir};

/// A running stack; everything is stopped on drop.
pub struct Stack {
    // Field order is drop order: processes before the broker they talk to.
    pub senders: Vec<Service>,
    pub monitor: Option<Service>,
    pub sink: SmtpSink,
    pub nats: NatsServer,
    pub topo: Topology,
    pub client: async_nats::Client,
    pub dir: TempDir,
    /// Extra arguments every sender started by [`Stack::spawn_sender`] gets.
    pub sender_args: Vec<String>,
    pub monitor_port: u16,
}

impl Stack {
    /// Starts nats-server, the sink, the monitor and `senders` senders (`s1`, `s2`, …) with
    /// `sender_args` added to each, under the default delivery policy.
    pub async fn start(senders: usize, sender_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_policy(senders, &SendersPolicy::default(), sender_args).await
    }

    /// Like [`Stack::start`], with the fleet's delivery policy (retry schedule, ack wait) set
    /// on the senders consumer before any sender starts: senders follow the consumer, not
    /// their own `--retry-backoff`/`--ack-wait` flags.
    pub async fn start_with_policy(
        senders: usize,
        policy: &SendersPolicy,
        sender_args: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_on(NatsServer::start().await?, senders, policy, sender_args).await
    }

    /// Like [`Stack::start`], on the shipped `nats.conf` with its users (and TLS when `access`
    /// has certificates): every service runs as its own user.
    pub async fn start_secure(
        access: crate::NatsAccess,
        senders: usize,
        sender_args: &[&str],
    ) -> anyhow::Result<Self> {
        let nats = NatsServer::start_secure(access).await?;
        Self::start_on(nats, senders, &SendersPolicy::default(), sender_args).await
    }

    async fn start_on(
        nats: NatsServer,
        senders: usize,
        policy: &SendersPolicy,
        sender_args: &[&str],
    ) -> anyhow::Result<Self> {
        let sink = SmtpSink::start().await?;
        let client = nats.client().await?;
        let topo = apply_senders_policy(&client, policy).await?;
        let mut stack = Self {
            senders: Vec::new(),
            monitor: None,
            sink,
            nats,
            topo,
            client,
            dir: TempDir::new("stack"),
            sender_args: sender_args.iter().map(|s| s.to_string()).collect(),
            monitor_port: free_port(),
        };
        stack.start_monitor()?;
        for i in 1..=senders {
            stack.spawn_sender(&format!("s{i}"), &[])?;
        }
        Ok(stack)
    }

    /// Changes the fleet's delivery policy. Running senders keep the policy they read at
    /// start-up (until they re-create their consumer handle): restart them to be sure.
    pub async fn apply_policy(&self, policy: &SendersPolicy) -> anyhow::Result<()> {
        topology::apply_senders_policy(&self.topo, policy).await?;
        Ok(())
    }

    pub fn start_monitor(&mut self) -> anyhow::Result<()> {
        self.start_monitor_with(&[])
    }

    /// Starts the monitor with extra environment variables.
    pub fn start_monitor_with(&mut self, envs: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut args = self.nats.service_args("monitor");
        args.extend([
            "--listen".into(),
            format!("127.0.0.1:{}", self.monitor_port),
        ]);
        self.monitor = Some(Service::spawn(
            "monitor",
            "jetmail-monitor",
            &args,
            envs,
            self.dir.path(),
        )?);
        Ok(())
    }

    /// Starts a sender `id` against the stack's sink, with the stack's and `extra` arguments.
    pub fn spawn_sender(&mut self, id: &str, extra: &[&str]) -> anyhow::Result<()> {
        self.spawn_sender_with(id, &self.sink.url(), extra, &[])
    }

    /// Starts a sender with its own relay URL and environment.
    pub fn spawn_sender_with(
        &mut self,
        id: &str,
        smtp_url: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let mut args = self.nats.service_args("sender");
        args.extend([
            "--smtp-url".into(),
            smtp_url.to_string(),
            "--id".into(),
            id.to_string(),
            "--heartbeat-interval".into(),
            "500ms".into(),
        ]);
        args.extend(self.sender_args.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let s = Service::spawn(id, "jetmail-sender", &args, envs, self.dir.path())?;
        self.senders.push(s);
        Ok(())
    }

    /// Waits until sender `id` has exited (a crash hook, a kill), up to `timeout`.
    pub async fn wait_sender_exited(
        &mut self,
        id: &str,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let what = format!("sender {id} to exit");
        wait_for(&what, timeout, || {
            let status = self.sender(id).exited();
            async move { status }
        })
        .await
    }

    pub fn sender(&mut self, id: &str) -> &mut Service {
        self.senders
            .iter_mut()
            .find(|s| s.name == id)
            .expect("no such sender")
    }

    /// Writes a CSV of `n` recipients `user<i>@example.com` with a `name` column.
    pub fn write_csv(&self, name: &str, n: usize) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        let path = self.dir.path().join(name);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        writeln!(f, "email,name")?;
        for i in 0..n {
            writeln!(f, "user{i}@example.com,Name {i}")?;
        }
        f.flush()?;
        Ok(path)
    }

    /// Runs `jetmail-ingest submit` and returns its output; fails if it exits non-zero.
    pub fn submit(&self, csv: &Path, campaign: &str, extra: &[&str]) -> anyhow::Result<String> {
        let out = self.submit_raw(csv, campaign, extra)?;
        if !out.status.success() {
            anyhow::bail!(
                "submit failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `jetmail-ingest submit`, whatever its exit status.
    pub fn submit_raw(
        &self,
        csv: &Path,
        campaign: &str,
        extra: &[&str],
    ) -> anyhow::Result<std::process::Output> {
        let text = self.dir.path().join("body.txt");
        std::fs::write(&text, "Hello {{ name }}, this mail is for {{ email }}.\n")?;
        let out = std::process::Command::new(crate::bin_path("jetmail-ingest")?)
            .args(self.nats.service_args("ingest"))
            .args(["submit", "--from", "News <news@example.com>"])
            .args(["--subject", "Hi {{ name }}", "--text"])
            .arg(&text)
            .arg("--recipients")
            .arg(csv)
            .args(["--campaign-id", campaign])
            .args(extra)
            .output()?;
        Ok(out)
    }

    /// Runs `jetmail-ingest ARGS…` against this stack's broker; its stdout and stderr, or an
    /// error with its stderr when it exits non-zero.
    pub fn ingest(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new(crate::bin_path("jetmail-ingest")?)
            .args(self.nats.service_args("ingest"))
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "jetmail-ingest {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// `jetmail-ingest control ACTION CAMPAIGN`.
    pub fn control(&self, action: &str, campaign: &str) -> anyhow::Result<()> {
        self.ingest(&["control", action, campaign]).map(|_| ())
    }

    pub async fn record(&self, id: &str) -> Option<CampaignRecord> {
        load_record(&self.topo, id)
            .await
            .ok()
            .flatten()
            .map(|(r, _)| r)
    }

    pub async fn progress(&self, id: &str) -> CampaignProgress {
        load_progress(&self.topo, id).await.unwrap_or_default()
    }

    /// Waits until the monitor marks campaign `id` done.
    pub async fn wait_done(&self, id: &str, timeout: Duration) -> anyhow::Result<CampaignProgress> {
        wait_for(&format!("campaign {id} done"), timeout, || async {
            let r = self.record(id).await?;
            (r.status == CampaignStatus::Done).then_some(())
        })
        .await?;
        Ok(self.progress(id).await)
    }

    /// Messages left in MAIL_OUTBOX.
    pub async fn outbox_len(&self) -> u64 {
        let mut s = self.topo.outbox.clone();
        s.info().await.map(|i| i.state.messages).unwrap_or(u64::MAX)
    }

    /// Recipients waiting in the broker: in MAIL_OUTBOX, or in MAIL_HELD (held back by a limit
    /// or a schedule, or handed back untried at their last delivery).
    pub async fn waiting_len(&self) -> u64 {
        let mut held = self.topo.held.clone();
        let held = held.info().await.map(|i| i.state.messages).unwrap_or(0);
        self.outbox_len().await.saturating_add(held)
    }

    /// Every dead letter in MAIL_DEAD.
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let mut s = self.topo.dead.clone();
        let last = s.info().await?.state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(m) = s.get_raw_message(seq).await {
                out.push(serde_json::from_slice(&m.payload)?);
            }
        }
        Ok(out)
    }

    pub async fn sender_health(&self, id: &str) -> Option<SenderHealth> {
        let b = self.topo.senders.get(id).await.ok()??;
        serde_json::from_slice(&b).ok()
    }

    pub async fn all_sender_health(&self) -> Vec<SenderHealth> {
        let keys: Vec<String> = match self.topo.senders.keys().await {
            Ok(k) => k.try_collect().await.unwrap_or_default(),
            Err(_) => return Vec::new(),
        };
        let mut out = Vec::new();
        for k in keys {
            if let Some(h) = self.sender_health(&k).await {
                out.push(h);
            }
        }
        out
    }
}

/// A delivery policy written the way the flags write it: `policy("500ms,1s,2s", "6s")` is a
/// MaxDeliver of 4 with those nak delays and a 6 s ack wait. Panics on a typo: tests only.
pub fn policy(retry_backoff: &str, ack_wait: &str) -> SendersPolicy {
    SendersPolicy {
        retry_backoff: parse_duration_list(retry_backoff).expect("retry backoff"),
        ack_wait: parse_duration(ack_wait).expect("ack wait"),
    }
}

/// Makes sure the topology exists on the broker `client` talks to and sets the fleet's
/// delivery policy on the senders consumer (what `jetmail-ingest topology apply` does), for
/// tests that start their own services rather than a [`Stack`].
pub async fn apply_senders_policy(
    client: &async_nats::Client,
    policy: &SendersPolicy,
) -> anyhow::Result<Topology> {
    let js = jetmail_common::config::jetstream_context(client.clone(), 8192);
    let topo = topology::ensure(&js).await?;
    let applied = topology::apply_senders_policy(&topo, policy).await?;
    anyhow::ensure!(
        &applied == policy,
        "the senders consumer kept another policy: {applied:?}"
    );
    Ok(topo)
}
