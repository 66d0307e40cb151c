//! jetmail sender: pulls recipients from the shared durable consumer, only as many as it has
//! free send slots, delivers them over SMTP and settles each one (DESIGN.md, "Sender, per
//! message"). Many instances share the consumer; the broker balances the load.

pub mod campaigns;
pub mod check;
pub mod circuit;
pub mod deliver;
pub mod dkim;
pub mod heartbeat;
pub mod hold;
pub mod lanes;
pub mod message;
pub mod metrics;
pub mod recent;
pub mod settle;
pub mod smtp;
pub mod suppressions;
pub mod throttle;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, Consumer};
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use jetmail_common::config::{format_duration, format_durations};
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::SenderState;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::campaigns::Campaigns;
use crate::circuit::Circuit;
use crate::smtp::{Relay, RelayUrl};

/// Everything a sender needs to know, from its command line.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub id: String,
    pub host: String,
    pub relays: Vec<RelayUrl>,
    /// EHLO name, private CA, connection limit: what every relay shares.
    pub relay_options: smtp::RelayOptions,
    pub concurrency: usize,
    pub heartbeat_interval: Duration,
    /// The retry schedule this sender was told to expect (`--retry-backoff`). The fleet's
    /// schedule is the topology's ([`topology::SendersPolicy`]); a different one is reported.
    pub retry_backoff: Option<Vec<Duration>>,
    pub send_timeout: Duration,
    /// The ack wait this sender was told to expect (`--ack-wait`), reported like
    /// [`SenderConfig::retry_backoff`] when the fleet's differs.
    pub ack_wait: Option<Duration>,
    pub drain_timeout: Duration,
    pub circuit_failures: u32,
    pub circuit_cooldown: Duration,
    /// Nak delay for a message of a paused campaign.
    pub paused_retry: Duration,
    /// Nak delay for a message handed back untried (every circuit open, campaign unreadable).
    pub blocked_retry: Duration,
    /// Test-only (`JETMAIL_TEST_CRASH_ON`): abort the process when this recipient comes up
    /// (`<email>`), or right after its send was accepted and recorded in the ledger, before
    /// the ack (`sent:<email>`).
    pub crash_on: Option<String>,
    /// DKIM keys and the VERP bounce domain (`--dkim-*`, `--bounce-domain`).
    pub message: message::MessageOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot use the senders consumer: {0}")]
    Consumer(#[source] topology::TopologyError),
    #[error(transparent)]
    Relay(#[from] smtp::RelayConfigError),
}

/// Counters reported in heartbeats.
#[derive(Default)]
pub struct Stats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub deferred: AtomicU64,
    pub dead: AtomicU64,
    pub in_flight: AtomicU64,
}

/// State shared by the pull loop and every send task.
pub struct Ctx {
    pub cfg: SenderConfig,
    pub topo: Topology,
    pub campaigns: Campaigns,
    /// Limits in force and this sender's share of them.
    pub throttle: Arc<throttle::Throttle>,
    /// What this sender sent lately, for the repair after a broker restart.
    pub recent: recent::Recent,
    pub relays: Vec<Relay>,
    /// The suppression list, in memory (see [`suppressions`]).
    pub suppressions: Arc<suppressions::Suppressions>,
    pub stats: Stats,
    /// The fleet's retry schedule and ack wait, read from the senders consumer.
    pub policy: topology::SendersPolicy,
    pub max_deliver: i64,
    pub crash_on: Option<String>,
    next_relay: AtomicUsize,
    state: std::sync::Mutex<SenderState>,
}

impl Ctx {
    /// A relay whose circuit lets a send through, round-robin; `None` if every circuit is open.
    pub fn pick_relay(&self) -> Option<usize> {
        let n = self.relays.len();
        let start = self.next_relay.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.relays[i].circuit.lock().unwrap().try_acquire(now))
    }

    /// The nak delay after failed delivery number `delivery` (1-based).
    pub fn retry_delay(&self, delivery: i64) -> Duration {
        self.policy.retry_delay(delivery)
    }

    fn any_relay_usable(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut wait = Duration::MAX;
        for r in &self.relays {
            let c = r.circuit.lock().unwrap();
            if c.would_allow(now) {
                return Ok(());
            }
            wait = wait.min(c.until_probe(now));
        }
        Err(wait.max(Duration::from_millis(50)))
    }

    pub fn state(&self) -> SenderState {
        *self.state.lock().unwrap()
    }

    fn set_state(&self, s: SenderState) {
        let mut cur = self.state.lock().unwrap();
        if *cur != s {
            tracing::info!(from = ?*cur, to = ?s, "sender state");
            *cur = s;
        }
    }
}

impl SenderConfig {
    pub fn validate(&self) -> Result<(), SenderError> {
        if self.relays.is_empty() {
            return Err(SenderError::Config(
                "at least one --smtp-url is needed".into(),
            ));
        }
        if self.concurrency == 0 {
            return Err(SenderError::Config(
                "--concurrency must be at least 1".into(),
            ));
        }
        if self.retry_backoff.as_ref().is_some_and(Vec::is_empty) {
            return Err(SenderError::Config(
                "--retry-backoff needs at least one delay".into(),
            ));
        }
        Ok(())
    }

    /// Checks this sender against the fleet's policy: a send still running when the ack wait
    /// expires would see its message redelivered, so that is refused; other differences are
    /// reported, and the fleet's policy followed.
    pub fn check_policy(&self, policy: &topology::SendersPolicy) -> Result<(), SenderError> {
        if self.send_timeout * 2 > policy.ack_wait {
            return Err(SenderError::Config(format!(
                "--send-timeout ({}) must be at most half of the senders consumer's ack wait ({}); \
                 lower it, or raise the ack wait with `jetmail-ingest topology apply --ack-wait`",
                format_duration(self.send_timeout),
                format_duration(policy.ack_wait)
            )));
        }
        if let Some(mine) = &self.retry_backoff {
            if mine != &policy.retry_backoff {
                tracing::warn!(
                    flag = %format_durations(mine),
                    fleet = %format_durations(&policy.retry_backoff),
                    "--retry-backoff differs from the fleet's schedule on the senders consumer; \
                     following the fleet's (change it with `jetmail-ingest topology apply`)"
                );
            }
        }
        if let Some(mine) = self.ack_wait {
            if mine != policy.ack_wait {
                tracing::warn!(
                    flag = %format_duration(mine),
                    fleet = %format_duration(policy.ack_wait),
                    "--ack-wait differs from the senders consumer's; following the consumer's"
                );
            }
        }
        Ok(())
    }
}

/// How long shutdown waits for each background task (watches, heartbeats) once cancelled.
const BACKGROUND_STOP: Duration = Duration::from_secs(2);

/// How long one pull request waits for messages when the queue is empty.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// Runs a sender until `shutdown`, then drains: stops pulling, finishes what is in flight
/// (up to `drain_timeout`), publishes a last `stopped` heartbeat.
pub async fn run(
    cfg: SenderConfig,
    client: async_nats::Client,
    topo: Topology,
    shutdown: CancellationToken,
) -> Result<(), SenderError> {
    cfg.validate()?;
    let (consumer, policy) = senders_consumer(&topo).await?;
    cfg.check_policy(&policy)?;
    // The broker hands the whole fleet at most MaxAckPending messages at once: a larger
    // --concurrency would be a promise the consumer breaks (the monitor checks the fleet's sum).
    let max_ack_pending = consumer.cached_info().config.max_ack_pending;
    if max_ack_pending > 0 && cfg.concurrency as i64 > max_ack_pending {
        tracing::warn!(
            concurrency = cfg.concurrency,
            max_ack_pending,
            "--concurrency is above the senders consumer's MaxAckPending: the broker caps this \
             sender's sends in flight"
        );
    }
    let max_deliver = policy.max_deliver();
    let relays = smtp::build_relays(&cfg.relays, &cfg.relay_options, cfg.concurrency, || {
        Circuit::new(cfg.circuit_failures, cfg.circuit_cooldown)
    })?;
    let ctx = Arc::new(Ctx {
        campaigns: Campaigns::new(topo.campaigns.clone()),
        recent: recent::Recent::default(),
        throttle: Arc::new(throttle::Throttle::new(
            topo.limits.clone(),
            topo.senders.clone(),
            cfg.id.clone(),
        )),
        relays,
        suppressions: Arc::new(suppressions::Suppressions::new()),
        stats: Stats::default(),
        policy,
        max_deliver,
        crash_on: cfg.crash_on.clone(),
        next_relay: AtomicUsize::new(0),
        state: std::sync::Mutex::new(SenderState::Up),
        topo,
        cfg,
    });
    let background = CancellationToken::new();
    let watch = tokio::spawn(ctx.campaigns.clone().watch(background.clone()));
    let limits = tokio::spawn(ctx.throttle.clone().watch(background.clone()));
    let elections = tokio::spawn(recent::watch_elections(
        ctx.clone(),
        client.clone(),
        background.clone(),
    ));
    let beats = tokio::spawn(heartbeat::run(
        ctx.clone(),
        client.clone(),
        background.clone(),
    ));
    let suppressed = tokio::spawn({
        let (ctx, stop) = (ctx.clone(), background.clone());
        async move {
            let store = ctx.topo.suppressions.clone();
            ctx.suppressions.watch(store, stop).await
        }
    });
    // Nothing is pulled before the whole list and the limits are known: a half-loaded list
    // would let a suppressed recipient through, a sender without its limits would send at
    // full speed until its watch caught up.
    tokio::select! {
        _ = async { tokio::join!(ctx.suppressions.loaded(), ctx.throttle.loaded()) } => {}
        _ = shutdown.cancelled() => {}
    }
    tracing::info!(id = %ctx.cfg.id, concurrency = ctx.cfg.concurrency, relays = ctx.relays.len(), "sender ready");

    let tracker = TaskTracker::new();
    // One set of send slots for the outbox pull and every held lane.
    let slots = Arc::new(Semaphore::new(ctx.cfg.concurrency));
    let lanes = tokio::spawn(lanes::run(
        ctx.clone(),
        slots.clone(),
        tracker.clone(),
        shutdown.clone(),
    ));
    pull_loop(&ctx, &client, consumer, slots, &tracker, &shutdown).await;
    let _ = lanes.await;

    ctx.set_state(SenderState::Draining);
    tracker.close();
    let in_flight = ctx.stats.in_flight.load(Ordering::Relaxed);
    tracing::info!(in_flight, "draining: finishing sends in flight");
    // Past the deadline the unfinished sends are dropped unsettled: their messages come back
    // after the ack wait, and the ledger keeps an accepted one from being mailed twice.
    jetmail_common::shutdown::finish_within(
        tracker.wait(),
        ctx.cfg.drain_timeout,
        "sends in flight (they will be redelivered)",
        || Some(ctx.stats.in_flight.load(Ordering::Relaxed)),
    )
    .await;
    for r in &ctx.relays {
        let _ = tokio::time::timeout(Duration::from_secs(2), r.close()).await;
    }
    ctx.set_state(SenderState::Stopped);
    background.cancel();
    // The watches may be inside a broker request when cancelled (each gives up after the
    // context's 10 s timeout when the broker is gone): they hold nothing worth waiting for.
    for task in [watch, limits, suppressed, elections] {
        if tokio::time::timeout(BACKGROUND_STOP, task).await.is_err() {
            tracing::debug!("a background watch did not stop in time; leaving it");
        }
    }
    let _ = tokio::time::timeout(BACKGROUND_STOP, beats).await; // the final `stopped` heartbeat
    jetmail_common::config::flush_before_exit(&client, Duration::from_secs(5)).await;
    tracing::info!("sender stopped");
    Ok(())
}

/// The shared consumer as the topology made it; never rewritten from this sender's flags.
async fn senders_consumer(
    topo: &Topology,
) -> Result<(Consumer<pull::Config>, topology::SendersPolicy), SenderError> {
    topology::senders_consumer(&topo.outbox)
        .await
        .map_err(SenderError::Consumer)
}

async fn pull_loop(
    ctx: &Arc<Ctx>,
    client: &async_nats::Client,
    mut consumer: Consumer<pull::Config>,
    slots: Arc<Semaphore>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let mut failures = 0u32;
    // The last pull brought nothing: the outbox is idle.
    let mut idle = false;
    ctx.recent.watch_connects(client.statistics());
    while !shutdown.is_cancelled() {
        if client.connection_state() != async_nats::connection::State::Connected {
            // Start no send whose outcome we could not record.
            ctx.set_state(SenderState::Disconnected);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
            }
        }
        if let Some(connects) = ctx.recent.reconnect_pending() {
            recent::recover(ctx, &slots, connects).await;
        }
        if let Err(wait) = ctx.any_relay_usable() {
            ctx.set_state(SenderState::Blocked);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => continue,
            }
        }
        ctx.set_state(SenderState::Up);
        // Pull only as many messages as there are free slots: a buffered message's ack wait
        // runs while it waits, and an expired one is delivered twice.
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let mut permits = vec![first];
        // An idle outbox is long-polled with one slot: a pull holds its slots until it
        // expires, and the held lanes (which share the slots) would wait that long for one.
        // The first message back ends the idleness; the next pull takes every free slot.
        if !idle {
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
        }
        // A half-open circuit wants one probe, not a batch.
        if ctx.relays.iter().all(|r| {
            r.circuit.lock().unwrap().state() != jetmail_common::wire::CircuitState::Closed
        }) {
            permits.truncate(1);
        }
        let batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "pull request failed");
                if failures >= 3 {
                    // After a reconnect a consumer handle can stay broken: make a new one.
                    if let Ok((c, _)) = senders_consumer(&ctx.topo).await {
                        consumer = c;
                        failures = 0;
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                }
            }
        };
        let mut stopping = false;
        let mut got = 0usize;
        loop {
            let next = if stopping {
                // Messages of a pull already sent keep arriving: hand them back at once.
                tokio::time::timeout(PULL_EXPIRES, batch.next())
                    .await
                    .ok()
                    .flatten()
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => { stopping = true; continue; }
                    n = batch.next() => n,
                }
            };
            match next {
                Some(Ok(msg)) => {
                    failures = 0;
                    if stopping {
                        // Not at once: this pull is still open, and a message nak'ed without
                        // a delay comes straight back to it, again and again, each time
                        // spending a delivery, until MaxDeliver makes it a dead letter.
                        let _ = msg.ack_with(AckKind::Nak(Some(PULL_EXPIRES * 2))).await;
                        continue;
                    }
                    let Some(permit) = permits.pop() else {
                        // More than requested cannot happen; never hold one without a slot.
                        let _ = msg.ack_with(AckKind::Nak(None)).await;
                        continue;
                    };
                    got += 1;
                    tracker.spawn(deliver::handle(ctx.clone(), msg, permit));
                }
                Some(Err(e)) => {
                    failures += 1;
                    tracing::debug!(error = %e, "pull batch ended with an error");
                    break;
                }
                None => break,
            }
        }
        idle = got == 0;
        drop(permits);
    }
}
