//! The hub: the live state kept from the KV watches (campaign records and progress, sender
//! health), the pending counts asked of MAIL_OUTBOX and MAIL_HELD, and the ticker that
//! samples counters and notices silent senders. Every change goes out once on a broadcast channel that the SSE
//! streams ([`super::sse`]) filter.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::stream::Stream;
use futures::{StreamExt, TryStreamExt};
use jetmail_common::now_ms;
use jetmail_common::topology::{self, CampaignsKey, HeldSubject, OutboxSubject, Topology};
use jetmail_common::wire::{CampaignProgress, CampaignRecord, CampaignStatus, SenderHealth};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::samples::{Sample, Samples};
use super::views::{
    campaign_summary, sender_view, shown_sender_state, CampaignSummary, SenderView,
};
use super::{
    event, LiveEvent, EV_CAMPAIGN, EV_CAMPAIGN_REMOVED, EV_SENDER, EV_SENDER_REMOVED, SENDER_SWEEP,
    TICK,
};

/// A watch that fails is re-created after this.
const REWATCH_DELAY: Duration = Duration::from_secs(1);
/// Events a slow subscriber may fall behind by before it is sent the whole state again.
const CHANNEL: usize = 1024;

#[derive(Default)]
struct CampaignLive {
    record: Option<CampaignRecord>,
    progress: CampaignProgress,
    pending: u64,
    samples: Samples,
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

    /// Takes a sample of the counters now.
    fn sample(&mut self, now: u64) {
        let s = self.counters(now);
        self.samples.push(s);
    }

    fn summary(&self, now: u64) -> Option<CampaignSummary> {
        let r = self.record.as_ref()?;
        Some(campaign_summary(
            r,
            &self.progress,
            self.pending,
            &self.samples,
            now,
        ))
    }
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
        let (id, is_progress) = match CampaignsKey::parse(&entry.key) {
            Some(CampaignsKey::Record(id)) => (id.to_string(), false),
            Some(CampaignsKey::Progress(id)) => (id.to_string(), true),
            None => {
                tracing::debug!(key = %entry.key, "not a campaign key: ignored");
                return;
            }
        };
        // A test send has a record so that senders can build its mail, but no page lists it.
        if jetmail_common::compliance::is_test_campaign(&id) {
            return;
        }
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
            c.sample(now);
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
                c.sample(now);
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

    /// Asks MAIL_OUTBOX and MAIL_HELD how many messages each campaign still has (one request
    /// a stream for all campaigns).
    pub async fn refresh_pending(&self) {
        let topo = &self.inner.topo;
        let (Some(outbox), Some(held)) = (
            subject_counts(&topo.outbox, topology::outbox_filter()).await,
            subject_counts(&topo.held, topology::held_filter()).await,
        ) else {
            return;
        };
        let mut per_campaign: HashMap<&str, u64> = HashMap::new();
        for (subject, n) in &outbox {
            if let Some(s) = OutboxSubject::parse(subject) {
                *per_campaign.entry(s.campaign).or_default() += *n as u64;
            }
        }
        for (subject, n) in &held {
            if let Some(s) = HeldSubject::parse(subject) {
                *per_campaign.entry(s.campaign).or_default() += *n as u64;
            }
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
            .map(|c| c.samples.to_vec())
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
                c.sample(now);
            }
        }
    }
}

/// Messages per subject of `stream` under `filter`; `None` when the broker cannot say.
async fn subject_counts(stream: &Stream, filter: String) -> Option<Vec<(String, usize)>> {
    let counted = match stream.clone().info_with_subjects(filter).await {
        Ok(s) => s.try_collect().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    counted
        .map_err(|e| tracing::debug!(error = %e, "cannot count waiting messages"))
        .ok()
}
