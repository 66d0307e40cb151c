//! The live state behind every page: one [`Hub`] per process watches `mail_campaigns` (records
//! and progress) and `mail_senders` with history, asks MAIL_OUTBOX how many messages each
//! campaign still has, and fans changes out to Server-Sent Event streams. Pages never poll:
//! a browser holds one SSE connection, and the broker pushes KV changes to the hub.
//!
//! The hub only reads. It keeps a short history of counters per campaign (one sample a
//! second while the campaign moves) for the throughput chart: that history starts when this
//! process starts watching.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt, TryStreamExt};
use jetmail_common::now_ms;
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{
    CampaignProgress, CampaignRecord, CampaignStatus, CircuitState, SenderHealth, SenderState,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::AppState;

/// How often campaign counters are sampled, pending counts refreshed and rates recomputed.
pub const TICK: Duration = Duration::from_secs(1);
/// How often sender entries are checked for silence.
pub const SENDER_SWEEP: Duration = Duration::from_millis(200);
/// Missed heartbeat intervals after which the page shows a sender down, whatever the monitor
/// has written yet (the monitor uses the same number).
pub const MISSED_BEATS: u64 = 3;
/// The window "messages per second" is measured over.
pub const RATE_WINDOW_MS: u64 = 5_000;
/// Samples kept per campaign; beyond it the older half is thinned, so a long campaign keeps
/// its whole shape at a coarser grain.
pub const MAX_SAMPLES: usize = 720;
/// A watch that fails is re-created after this.
const REWATCH_DELAY: Duration = Duration::from_secs(1);
const CHANNEL: usize = 1024;
/// The campaign list shows (and streams) this many, newest first.
pub const LIST_LIMIT: usize = 200;

/// SSE event names.
pub const EV_CAMPAIGN: &str = "campaign";
pub const EV_CAMPAIGN_REMOVED: &str = "campaign_removed";
pub const EV_SENDER: &str = "sender";
pub const EV_SENDER_REMOVED: &str = "sender_removed";

/// One change, serialized once for every subscriber.
#[derive(Debug)]
pub struct LiveEvent {
    pub kind: &'static str,
    pub id: String,
    pub data: String,
}

/// Counters of one campaign at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: u64,
    pub sent: u64,
    /// Failed and dead together.
    pub failed: u64,
}

/// A campaign as pages and events show it.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignSummary {
    pub id: String,
    pub from: String,
    pub subject: String,
    pub status: &'static str,
    pub created_ms: u64,
    pub created: String,
    /// Recipients accepted and published so far.
    pub published: u64,
    pub publishing_complete: bool,
    pub rejected: u64,
    pub duplicates: u64,
    pub sent: u64,
    pub failed: u64,
    pub dead: u64,
    pub deferred: u64,
    pub cancelled: u64,
    pub suppressed: u64,
    /// Still in MAIL_OUTBOX, by the broker's count.
    pub pending: u64,
    pub settled: u64,
    /// Messages sent per second over the last few seconds.
    pub rate: f64,
    /// Sent per second from the first to the latest send.
    pub avg_rate: f64,
    /// Shares of `published` for the progress bar, in percent.
    pub pct_sent: f64,
    pub pct_failed: f64,
    pub pct_other: f64,
    pub sample: Option<Sample>,
    pub now_ms: u64,
}

/// One relay of a sender.
#[derive(Debug, Clone, Serialize)]
pub struct RelayView {
    pub url: String,
    pub circuit: &'static str,
    pub consecutive_failures: u32,
}

/// A sender as pages and events show it.
#[derive(Debug, Clone, Serialize)]
pub struct SenderView {
    pub id: String,
    pub host: String,
    /// What the page shows: the reported state, or `down` once heartbeats stopped.
    pub state: &'static str,
    /// What the sender (or the monitor) last wrote.
    pub reported_state: &'static str,
    pub relays: Vec<RelayView>,
    pub in_flight: u64,
    pub sent: u64,
    pub failed: u64,
    pub deferred: u64,
    pub rate: f64,
    pub interval_ms: u64,
    /// When the monitor last heard from it (the monitor's clock).
    pub last_seen_ms: u64,
    pub last_seen: String,
    /// How long ago this web UI last received its entry (this process's clock, so a clock
    /// difference between hosts cannot make a live sender look dead).
    pub age_ms: u64,
    pub now_ms: u64,
}

pub fn sender_state_str(s: SenderState) -> &'static str {
    match s {
        SenderState::Up => "up",
        SenderState::Blocked => "blocked",
        SenderState::Disconnected => "disconnected",
        SenderState::Draining => "draining",
        SenderState::Stopped => "stopped",
        SenderState::Down => "down",
    }
}

pub fn circuit_str(c: CircuitState) -> &'static str {
    match c {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half_open",
    }
}

/// The state a page shows for a sender whose entry arrived at `received_ms`: `down` after
/// [`MISSED_BEATS`] intervals without a new entry, even before the monitor says so. The
/// monitor rewrites the entry on every heartbeat, so a silent entry is a silent sender.
pub fn shown_sender_state(h: &SenderHealth, received_ms: u64, now: u64) -> &'static str {
    let silent = now.saturating_sub(received_ms) > MISSED_BEATS * h.interval_ms.max(100);
    if silent {
        "down"
    } else {
        sender_state_str(h.state)
    }
}

fn sender_view(h: &SenderHealth, received_ms: u64, now: u64) -> SenderView {
    SenderView {
        id: h.id.clone(),
        host: h.host.clone(),
        state: shown_sender_state(h, received_ms, now),
        reported_state: sender_state_str(h.state),
        relays: h
            .relays
            .iter()
            .map(|r| RelayView {
                url: r.url.clone(),
                circuit: circuit_str(r.circuit),
                consecutive_failures: r.consecutive_failures,
            })
            .collect(),
        in_flight: h.in_flight,
        sent: h.sent,
        failed: h.failed,
        deferred: h.deferred,
        rate: h.rate,
        interval_ms: h.interval_ms,
        last_seen_ms: h.last_seen_ms,
        last_seen: crate::render::format_utc(h.last_seen_ms),
        age_ms: now.saturating_sub(received_ms),
        now_ms: now,
    }
}

#[derive(Default)]
struct CampaignLive {
    record: Option<CampaignRecord>,
    progress: CampaignProgress,
    pending: u64,
    samples: VecDeque<Sample>,
    /// Nothing moves: final status, counters unchanged, rate already reported as zero.
    quiet: bool,
}

impl CampaignLive {
    fn counters(&self, at_ms: u64) -> Sample {
        Sample {
            at_ms,
            sent: self.progress.sent,
            failed: self.progress.failed + self.progress.dead,
        }
    }

    fn push_sample(&mut self, s: Sample) {
        if let Some(last) = self.samples.back() {
            if last.at_ms >= s.at_ms {
                return;
            }
        }
        self.samples.push_back(s);
        if self.samples.len() > MAX_SAMPLES {
            thin(&mut self.samples);
        }
    }

    fn rate(&self, now: u64) -> f64 {
        let sent = self.progress.sent;
        let from = self
            .samples
            .iter()
            .rev()
            .find(|s| now.saturating_sub(s.at_ms) >= RATE_WINDOW_MS)
            .or(self.samples.front());
        match from {
            Some(s) if now > s.at_ms && sent >= s.sent => {
                (sent - s.sent) as f64 * 1000.0 / (now - s.at_ms) as f64
            }
            _ => 0.0,
        }
    }

    fn summary(&self, now: u64) -> Option<CampaignSummary> {
        let r = self.record.as_ref()?;
        let p = &self.progress;
        let published = r.publish.published_through;
        let pct = |n: u64| {
            if published == 0 {
                0.0
            } else {
                (n as f64 * 100.0 / published as f64).min(100.0)
            }
        };
        let avg_rate = if p.last_sent_ms > p.first_sent_ms && p.sent > 1 {
            (p.sent - 1) as f64 * 1000.0 / (p.last_sent_ms - p.first_sent_ms) as f64
        } else {
            0.0
        };
        Some(CampaignSummary {
            id: r.id.clone(),
            from: r.spec.from.clone(),
            subject: r.spec.subject.clone(),
            status: r.status.as_str(),
            created_ms: r.created_ms,
            created: crate::render::format_utc(r.created_ms),
            published,
            publishing_complete: r.publish.complete,
            rejected: r.publish.rejected,
            duplicates: r.publish.duplicates,
            sent: p.sent,
            failed: p.failed,
            dead: p.dead,
            deferred: p.deferred,
            cancelled: p.cancelled,
            suppressed: p.suppressed,
            pending: self.pending,
            settled: p.settled(),
            rate: self.rate(now),
            avg_rate,
            pct_sent: pct(p.sent),
            pct_failed: pct(p.failed + p.dead),
            pct_other: pct(p.cancelled + p.suppressed),
            sample: self.samples.back().copied(),
            now_ms: now,
        })
    }
}

/// Drops every other sample of the older half.
fn thin(samples: &mut VecDeque<Sample>) {
    let half = samples.len() / 2;
    let mut kept = VecDeque::with_capacity(samples.len());
    for (i, s) in samples.drain(..).enumerate() {
        if i >= half || i % 2 == 0 {
            kept.push_back(s);
        }
    }
    *samples = kept;
}

#[derive(Default)]
struct HubState {
    campaigns: HashMap<String, CampaignLive>,
    /// Each sender's entry and when it arrived here.
    senders: BTreeMap<String, (SenderHealth, u64)>,
    /// The state last sent for each sender, so a silent one is announced once.
    sender_shown: HashMap<String, &'static str>,
}

struct HubInner {
    state: Mutex<HubState>,
    tx: broadcast::Sender<Arc<LiveEvent>>,
    topo: Topology,
}

/// The shared live state; clone it freely.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

fn event<T: Serialize>(kind: &'static str, id: &str, value: &T) -> Arc<LiveEvent> {
    Arc::new(LiveEvent {
        kind,
        id: id.to_string(),
        data: serde_json::to_string(value).unwrap_or_else(|_| "null".into()),
    })
}

impl Hub {
    /// Starts the watches and the ticker on `tasks`; they end with `shutdown`.
    pub fn start(topo: Topology, tasks: &TaskTracker, shutdown: CancellationToken) -> Self {
        let (tx, _) = broadcast::channel(CHANNEL);
        let hub = Hub {
            inner: Arc::new(HubInner {
                state: Mutex::new(HubState::default()),
                tx,
                topo,
            }),
        };
        let bucket = hub.inner.topo.campaigns.clone();
        tasks.spawn(hub.clone().watch(
            bucket,
            topology::CAMPAIGNS_BUCKET,
            shutdown.clone(),
            Hub::apply_campaign_entry,
        ));
        let bucket = hub.inner.topo.senders.clone();
        tasks.spawn(hub.clone().watch(
            bucket,
            topology::SENDERS_BUCKET,
            shutdown.clone(),
            Hub::apply_sender_entry,
        ));
        tasks.spawn(hub.clone().tick(shutdown));
        hub
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.inner.tx.subscribe()
    }

    fn send(&self, ev: Arc<LiveEvent>) {
        // No subscriber is not an error: nobody is looking.
        let _ = self.inner.tx.send(ev);
    }

    /// Follows every key of `bucket` from its current values on, re-watching after a failure.
    async fn watch(
        self,
        bucket: kv::Store,
        name: &'static str,
        shutdown: CancellationToken,
        apply: fn(&Hub, kv::Entry),
    ) {
        loop {
            match bucket.watch_with_history(">").await {
                Ok(mut w) => loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        next = w.next() => match next {
                            Some(Ok(entry)) => apply(&self, entry),
                            Some(Err(e)) => {
                                tracing::warn!(bucket = name, error = %e, "watch failed: watching again");
                                break;
                            }
                            None => {
                                tracing::warn!(bucket = name, "watch ended: watching again");
                                break;
                            }
                        }
                    }
                },
                Err(e) => tracing::warn!(bucket = name, error = %e, "cannot watch bucket"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(REWATCH_DELAY) => {}
            }
        }
    }

    fn apply_campaign_entry(&self, entry: kv::Entry) {
        let now = now_ms();
        let put = entry.operation == kv::Operation::Put;
        let (id, is_progress) = match entry.key.strip_suffix(".progress") {
            Some(id) => (id.to_string(), true),
            None => (entry.key.clone(), false),
        };
        let mut st = self.inner.state.lock().unwrap();
        if !is_progress && !put {
            st.campaigns.remove(&id);
            drop(st);
            self.send(event(
                EV_CAMPAIGN_REMOVED,
                &id,
                &serde_json::json!({ "id": id }),
            ));
            return;
        }
        let c = st.campaigns.entry(id.clone()).or_default();
        if is_progress {
            c.progress = if put {
                match serde_json::from_slice(&entry.value) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(campaign = %id, error = %e, "unreadable campaign progress");
                        return;
                    }
                }
            } else {
                CampaignProgress::default()
            };
        } else {
            match serde_json::from_slice::<CampaignRecord>(&entry.value) {
                Ok(r) => c.record = Some(r),
                Err(e) => {
                    tracing::warn!(campaign = %id, error = %e, "unreadable campaign record");
                    return;
                }
            }
        }
        c.quiet = false;
        if c.samples.is_empty() {
            // The first sight is the baseline the rate and the chart start from.
            let s = c.counters(now);
            c.push_sample(s);
        }
        let summary = c.summary(now);
        drop(st);
        if let Some(s) = summary {
            self.send(event(EV_CAMPAIGN, &id, &s));
        }
    }

    fn apply_sender_entry(&self, entry: kv::Entry) {
        let now = now_ms();
        let id = entry.key.clone();
        let mut st = self.inner.state.lock().unwrap();
        if entry.operation != kv::Operation::Put {
            st.senders.remove(&id);
            st.sender_shown.remove(&id);
            drop(st);
            self.send(event(
                EV_SENDER_REMOVED,
                &id,
                &serde_json::json!({ "id": id }),
            ));
            return;
        }
        let h: SenderHealth = match serde_json::from_slice(&entry.value) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(sender = %id, error = %e, "unreadable sender health");
                return;
            }
        };
        let view = sender_view(&h, now, now);
        st.sender_shown.insert(id.clone(), view.state);
        st.senders.insert(id.clone(), (h, now));
        drop(st);
        self.send(event(EV_SENDER, &id, &view));
    }

    async fn tick(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        let mut sweep = tokio::time::interval(SENDER_SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    // Counting the outbox costs a broker request: only while someone watches.
                    if self.inner.tx.receiver_count() > 0 {
                        self.refresh_pending().await;
                    }
                    self.sample_campaigns();
                }
                _ = sweep.tick() => self.sweep_senders(),
            }
        }
    }

    fn sample_campaigns(&self) {
        let now = now_ms();
        let mut out = Vec::new();
        {
            let mut st = self.inner.state.lock().unwrap();
            for (id, c) in st.campaigns.iter_mut() {
                if c.quiet {
                    continue;
                }
                let s = c.counters(now);
                c.push_sample(s);
                let Some(summary) = c.summary(now) else {
                    continue;
                };
                let finished = matches!(
                    c.record.as_ref().map(|r| r.status),
                    Some(CampaignStatus::Done | CampaignStatus::Cancelled)
                );
                if finished && summary.rate == 0.0 && summary.pending == 0 {
                    c.quiet = true;
                }
                out.push(event(EV_CAMPAIGN, id, &summary));
            }
        }
        for ev in out {
            self.send(ev);
        }
    }

    fn sweep_senders(&self) {
        let now = now_ms();
        let mut out = Vec::new();
        {
            let mut st = self.inner.state.lock().unwrap();
            let st = &mut *st;
            for (id, (h, received)) in &st.senders {
                let shown = shown_sender_state(h, *received, now);
                if st.sender_shown.get(id) != Some(&shown) {
                    st.sender_shown.insert(id.clone(), shown);
                    out.push(event(EV_SENDER, id, &sender_view(h, *received, now)));
                }
            }
        }
        for ev in out {
            self.send(ev);
        }
    }

    /// Asks MAIL_OUTBOX how many messages each campaign still has (one request for all).
    pub async fn refresh_pending(&self) {
        let filter = format!("{}.>", topology::OUTBOX_SUBJECT_PREFIX);
        let counts: Vec<(String, usize)> =
            match self.inner.topo.outbox.info_with_subjects(filter).await {
                Ok(s) => match s.try_collect().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot count the outbox");
                        return;
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "cannot count the outbox");
                    return;
                }
            };
        let mut per_campaign: HashMap<&str, u64> = HashMap::new();
        let prefix = format!("{}.", topology::OUTBOX_SUBJECT_PREFIX);
        for (subject, n) in &counts {
            let Some(rest) = subject.strip_prefix(&prefix) else {
                continue;
            };
            let campaign = rest.split_once('.').map_or(rest, |(c, _)| c);
            *per_campaign.entry(campaign).or_default() += *n as u64;
        }
        let mut st = self.inner.state.lock().unwrap();
        for (id, c) in st.campaigns.iter_mut() {
            let pending = per_campaign.get(id.as_str()).copied().unwrap_or(0);
            if pending != c.pending {
                c.pending = pending;
                c.quiet = false;
            }
        }
    }

    /// Every campaign, newest first.
    pub fn campaigns(&self) -> Vec<CampaignSummary> {
        let now = now_ms();
        let st = self.inner.state.lock().unwrap();
        let mut v: Vec<CampaignSummary> = st
            .campaigns
            .values()
            .filter_map(|c| c.summary(now))
            .collect();
        v.sort_by(|a, b| {
            b.created_ms
                .cmp(&a.created_ms)
                .then_with(|| b.id.cmp(&a.id))
        });
        v
    }

    pub fn campaign(&self, id: &str) -> Option<CampaignSummary> {
        let st = self.inner.state.lock().unwrap();
        st.campaigns.get(id).and_then(|c| c.summary(now_ms()))
    }

    /// The template sources of a campaign, for its page.
    pub fn record(&self, id: &str) -> Option<CampaignRecord> {
        let st = self.inner.state.lock().unwrap();
        st.campaigns.get(id).and_then(|c| c.record.clone())
    }

    /// The counter history of a campaign, oldest first.
    pub fn samples(&self, id: &str) -> Vec<Sample> {
        let st = self.inner.state.lock().unwrap();
        st.campaigns
            .get(id)
            .map(|c| c.samples.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every sender, by id.
    pub fn senders(&self) -> Vec<SenderView> {
        let now = now_ms();
        let st = self.inner.state.lock().unwrap();
        st.senders
            .values()
            .map(|(h, received)| sender_view(h, *received, now))
            .collect()
    }

    /// Adds a campaign read directly from the bucket (a page asked before the watch saw it).
    pub fn insert_record(&self, record: CampaignRecord, progress: CampaignProgress) {
        let now = now_ms();
        let mut st = self.inner.state.lock().unwrap();
        let c = st.campaigns.entry(record.id.clone()).or_default();
        if c.record.is_none() {
            c.record = Some(record);
            c.progress = progress;
            c.quiet = false;
            if c.samples.is_empty() {
                let s = c.counters(now);
                c.push_sample(s);
            }
        }
    }

    fn snapshot(&self, topic: &Topic) -> Vec<Arc<LiveEvent>> {
        match topic {
            Topic::Campaigns(None) => self
                .campaigns()
                .iter()
                .take(LIST_LIMIT)
                .rev()
                .map(|c| event(EV_CAMPAIGN, &c.id, c))
                .collect(),
            Topic::Campaigns(Some(id)) => self
                .campaign(id)
                .map(|c| vec![event(EV_CAMPAIGN, &c.id, &c)])
                .unwrap_or_default(),
            Topic::Senders => self
                .senders()
                .iter()
                .map(|s| event(EV_SENDER, &s.id, s))
                .collect(),
        }
    }
}

/// What one SSE stream carries.
#[derive(Debug, Clone)]
enum Topic {
    Campaigns(Option<String>),
    Senders,
}

impl Topic {
    fn matches(&self, ev: &LiveEvent) -> bool {
        match self {
            Topic::Campaigns(id) => {
                (ev.kind == EV_CAMPAIGN || ev.kind == EV_CAMPAIGN_REMOVED)
                    && id.as_ref().is_none_or(|id| *id == ev.id)
            }
            Topic::Senders => ev.kind == EV_SENDER || ev.kind == EV_SENDER_REMOVED,
        }
    }
}

/// The current state first, then every change; a subscriber that falls behind gets the
/// current state again rather than a gap. Ends when the server shuts down.
fn live_stream(app: &AppState, topic: Topic) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before the snapshot, so nothing between the two is missed.
    let rx = app.hub.subscribe();
    let queue: VecDeque<Arc<LiveEvent>> = app.hub.snapshot(&topic).into();
    let hub = app.hub.clone();
    let stream = futures::stream::unfold((rx, queue), move |(mut rx, mut queue)| {
        let hub = hub.clone();
        let topic = topic.clone();
        async move {
            loop {
                if let Some(ev) = queue.pop_front() {
                    let e = Event::default().event(ev.kind).data(ev.data.as_str());
                    return Some((Ok(e), (rx, queue)));
                }
                match rx.recv().await {
                    Ok(ev) if topic.matches(&ev) => queue.push_back(ev),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        queue.extend(hub.snapshot(&topic));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    })
    .take_until(app.shutdown.clone().cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[derive(Debug, Deserialize)]
pub struct CampaignEventsQuery {
    id: Option<String>,
}

/// `GET /events/campaigns[?id=…]`: `campaign` and `campaign_removed` events.
pub async fn campaign_events(
    State(app): State<AppState>,
    Query(q): Query<CampaignEventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    live_stream(&app, Topic::Campaigns(q.id.filter(|i| !i.is_empty())))
}

/// `GET /events/senders`: `sender` and `sender_removed` events.
pub async fn sender_events(
    State(app): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    live_stream(&app, Topic::Senders)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetmail_common::wire::RelayHealth;

    fn health(state: SenderState, last_seen_ms: u64) -> SenderHealth {
        SenderHealth {
            v: 1,
            id: "s1".into(),
            host: "h".into(),
            state,
            relays: vec![RelayHealth {
                url: "smtp://r".into(),
                circuit: CircuitState::HalfOpen,
                consecutive_failures: 2,
                last_error: None,
            }],
            in_flight: 1,
            sent: 2,
            failed: 0,
            deferred: 0,
            rate: 0.0,
            interval_ms: 500,
            last_seen_ms,
        }
    }

    #[test]
    fn a_silent_sender_is_shown_down_after_three_intervals() {
        let h = health(SenderState::Up, 10_000);
        assert_eq!(shown_sender_state(&h, 10_000, 11_500), "up");
        assert_eq!(shown_sender_state(&h, 10_000, 11_501), "down");
        // The monitor's clock does not matter, only when the entry arrived here.
        assert_eq!(shown_sender_state(&h, 50_000, 51_000), "up");
        let h = health(SenderState::Draining, 10_000);
        assert_eq!(shown_sender_state(&h, 10_000, 10_100), "draining");
        let v = sender_view(&h, 10_000, 10_100);
        assert_eq!(v.relays[0].circuit, "half_open");
        assert_eq!(v.age_ms, 100);
        let h = health(SenderState::Down, 10_000);
        assert_eq!(shown_sender_state(&h, 10_000, 10_000), "down");
    }

    #[test]
    fn rate_covers_the_last_window() {
        let mut c = CampaignLive::default();
        for i in 0..=10u64 {
            c.push_sample(Sample {
                at_ms: i * 1000,
                sent: i * 10,
                failed: 0,
            });
        }
        c.progress.sent = 100;
        let r = c.rate(10_000);
        assert!((r - 10.0).abs() < 0.01, "{r}");
        // Nothing sent for a while: the rate falls to zero.
        c.push_sample(Sample {
            at_ms: 16_000,
            sent: 100,
            failed: 0,
        });
        assert_eq!(c.rate(21_000), 0.0);
    }

    #[test]
    fn thinning_keeps_the_newest_half_whole() {
        let mut c = CampaignLive::default();
        for i in 0..(MAX_SAMPLES as u64 + 1) {
            c.push_sample(Sample {
                at_ms: i + 1,
                sent: i,
                failed: 0,
            });
        }
        assert!(c.samples.len() < MAX_SAMPLES);
        assert_eq!(c.samples.back().unwrap().at_ms, MAX_SAMPLES as u64 + 1);
        assert_eq!(c.samples.front().unwrap().at_ms, 1);
    }
}
