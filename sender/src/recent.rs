//! Recovery after the broker comes back: what this sender sent lately, kept in memory, written
//! again, and a window in which every delivery is checked against the ledger.
//!
//! Measured (the fault suite's broker kill, 3 senders, 8,000 recipients): a `kill -9` of
//! nats-server restarted on its store redelivered a run of recipients sent just before the kill.
//! Two things were lost with the process, although the broker had acknowledged them: the
//! consumer's acks (so the redeliveries arrived with a delivery count of 1, and the ledger,
//! consulted only above 1, was skipped: 65 of 95 duplicates in one run), and some ledger
//! writes themselves (the other 30: the ledger did not know them). The senders knew every
//! outcome. So after a reconnect a sender:
//! 1. waits for its own sends in flight to finish and record their outcome (it takes every
//!    send slot, which also keeps its pull loop and held lanes from pulling meanwhile);
//! 2. writes the `sent` events (which are the ledger) of everything it sent in the last
//!    [`RECENT_WINDOW`] again (an event with the same id: a no-op for what survived, a repair
//!    for what did not);
//! 3. waits [`RECONNECT_GRACE`] before pulling, so that every other sender has repaired too;
//! 4. checks the ledger on every delivery, whatever its count, for a minute (at least two
//!    ack waits) after that.
//!
//! On the hot path this costs one push into a queue in memory per sent recipient; nothing is
//! asked of the broker until it has actually restarted.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jetmail_common::wire::{DeliveryEvent, Outcome, WIRE_VERSION};
use jetmail_common::{now_ms, outcomes, topology};
use tokio::sync::Semaphore;

use crate::Ctx;

/// How far back a sender repairs after a reconnect. The broker's losses measured on a `kill
/// -9` were the last moments before it; a minute leaves a wide margin at a small cost.
pub const RECENT_WINDOW: Duration = Duration::from_secs(60);
/// Most sends remembered, whatever the rate (about 48 bytes each).
const RECENT_MAX: usize = 200_000;
/// How long one repair write is retried (the broker may still be recovering its streams).
const REPAIR_RETRY_FOR: Duration = Duration::from_secs(60);
/// Repairs in flight at once after a reconnect.
const REPAIR_WINDOW: usize = 256;
/// How long a sender keeps from pulling after its repair: every other sender must have
/// repaired, and finished writing the outcomes of its own sends in flight at the crash, before
/// anyone is handed a redelivery. async-nats reconnects within 4 s of the server's return (its
/// longest reconnect delay) and a ledger write waiting for the broker retries every 2 s at
/// most, so all of that is done within this.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(10);
/// How long after the grace every delivery is checked against the ledger (at least two ack
/// waits: what was in flight at the crash comes back after one).
const SUSPECT_AFTER_GRACE: Duration = Duration::from_secs(60);

/// One recipient this sender's relay accepted.
struct SentRecently {
    at: Instant,
    campaign: std::sync::Arc<str>,
    seq: u64,
    replay: u32,
    published_ms: u64,
    at_ms: u64,
}

/// What this sender sent in the last [`RECENT_WINDOW`], and until when deliveries are suspect.
#[derive(Default)]
pub struct Recent {
    sent: Mutex<VecDeque<SentRecently>>,
    suspect_until: Mutex<Option<Instant>>,
    /// The client's connection count, and the count the last recovery answered: one more
    /// connection means the broker came back (or another server of the cluster took over),
    /// and what it acknowledged just before may be lost.
    stats: std::sync::OnceLock<std::sync::Arc<async_nats::Statistics>>,
    /// Leader elections of the streams and consumers a sender depends on, seen so far: in a
    /// cluster the client stays connected while a new leader takes over, possibly without
    /// the last acks and ledger writes (measured: 17-24 duplicates of 20,000 per leader kill).
    elections: std::sync::atomic::AtomicU64,
    recovered: std::sync::atomic::AtomicU64,
}

impl Recent {
    /// Follows the client's connections from now on.
    pub fn watch_connects(&self, stats: std::sync::Arc<async_nats::Statistics>) {
        let now = stats.connects.load(Ordering::Relaxed) + self.elections.load(Ordering::Relaxed);
        self.recovered.store(now, Ordering::Relaxed);
        let _ = self.stats.set(stats);
    }

    /// A stream or consumer this sender depends on elected a new leader.
    pub fn leader_elected(&self) {
        self.elections.fetch_add(1, Ordering::Relaxed);
    }

    /// The count of reconnects and elections when one has not been recovered from yet. Until
    /// it is, no message may be sent: its delivery count may lie and its ledger entry may be
    /// lost.
    pub fn reconnect_pending(&self) -> Option<u64> {
        let now = self.stats.get()?.connects.load(Ordering::Relaxed)
            + self.elections.load(Ordering::Relaxed);
        (now != self.recovered.load(Ordering::Relaxed)).then_some(now)
    }

    /// Remembers an accepted send (called after its `sent` event was written).
    pub fn record(&self, campaign: &str, seq: u64, replay: u32, published_ms: u64) {
        let now = Instant::now();
        let mut sent = self.sent.lock().unwrap();
        while sent
            .front()
            .is_some_and(|s| now.duration_since(s.at) > RECENT_WINDOW)
            || sent.len() >= RECENT_MAX
        {
            sent.pop_front();
        }
        // Consecutive sends are mostly of one campaign: share its name.
        let campaign = match sent.back() {
            Some(last) if &*last.campaign == campaign => last.campaign.clone(),
            _ => std::sync::Arc::from(campaign),
        };
        sent.push_back(SentRecently {
            at: now,
            campaign,
            seq,
            replay,
            published_ms,
            at_ms: now_ms(),
        });
    }

    fn suspect_for(&self, d: Duration) {
        *self.suspect_until.lock().unwrap() = Some(Instant::now() + d);
    }

    /// True while a delivery's count cannot be trusted to say it is the first.
    pub fn suspect(&self) -> bool {
        self.suspect_until
            .lock()
            .unwrap()
            .is_some_and(|until| Instant::now() < until)
    }

    fn snapshot(&self) -> Vec<(std::sync::Arc<str>, u64, u32, u64, u64)> {
        let now = Instant::now();
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| now.duration_since(s.at) <= RECENT_WINDOW)
            .map(|s| (s.campaign.clone(), s.seq, s.replay, s.published_ms, s.at_ms))
            .collect()
    }
}

/// Counts the leader elections of the streams and consumers a sender depends on until
/// `shutdown` (core-NATS advisories; a missed one during a disconnect is covered by the
/// reconnect itself).
pub async fn watch_elections(
    ctx: std::sync::Arc<Ctx>,
    client: async_nats::Client,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut subs = Vec::new();
    for subject in topology::leader_elected_advisories() {
        match client.subscribe(subject.clone()).await {
            Ok(s) => subs.push(s),
            Err(e) => tracing::warn!(%subject, error = %e, "cannot follow leader elections"),
        }
    }
    let mut all = futures::stream::select_all(subs);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            next = all.next() => match next {
                Some(m) => {
                    tracing::info!(subject = %m.subject, "a new leader: recovering as after a reconnect");
                    ctx.recent.leader_elected();
                }
                None => return,
            }
        }
    }
}

/// Runs the recovery above; returns when this sender may pull again.
pub async fn recover(ctx: &Ctx, slots: &Semaphore, connects: u64) {
    let started = Instant::now();
    // Every slot: the sends in flight have finished (and written their ledger entries, which
    // wait for the broker), and nothing new is pulled until the repair is done.
    let all = u32::try_from(ctx.cfg.concurrency).unwrap_or(u32::MAX);
    // A send in flight ends within its timeout; its outcome's writes then wait for the broker
    // (retried for up to a minute): give them that long.
    let wait_for_in_flight = ctx.cfg.send_timeout + Duration::from_secs(60);
    let permits = match tokio::time::timeout(wait_for_in_flight, slots.acquire_many(all)).await {
        Ok(Ok(p)) => Some(p),
        _ => {
            tracing::warn!(
                in_flight = ctx.stats.in_flight.load(Ordering::Relaxed),
                "sends still in flight after the reconnect; repairing without waiting for them"
            );
            None
        }
    };
    // Suspect from now: a redelivery that arrives while we repair is checked too.
    ctx.recent
        .suspect_for(SUSPECT_AFTER_GRACE + RECONNECT_GRACE);
    let recent = ctx.recent.snapshot();
    let repaired = futures::stream::iter(recent.iter())
        .map(|(campaign, seq, replay, published_ms, at_ms)| {
            async move {
                let ev = DeliveryEvent {
                    v: WIRE_VERSION,
                    campaign: campaign.to_string(),
                    seq: *seq,
                    outcome: Outcome::Sent,
                    undoes: None,
                    sender: ctx.cfg.id.clone(),
                    at_ms: *at_ms,
                    published_ms: *published_ms,
                };
                let id = topology::event_msg_id(campaign, *seq, *replay, Outcome::Sent, None);
                // A broker that just restarted may accept connections before JetStream has
                // recovered its streams: keep trying, for as long as an outcome's own writes do.
                until_ok(|| outcomes::publish_event(&ctx.topo.js, &ev, &id)).await
            }
        })
        .buffer_unordered(REPAIR_WINDOW)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    tokio::time::sleep(RECONNECT_GRACE).await;
    ctx.recent.recovered.store(connects, Ordering::Relaxed);
    // The redeliveries come first of all once pulling resumes; a late one after the ack wait.
    ctx.recent
        .suspect_for(SUSPECT_AFTER_GRACE.max(ctx.policy.ack_wait * 2));
    drop(permits);
    tracing::info!(
        recent = recent.len(),
        repaired,
        ms = started.elapsed().as_millis() as u64,
        "reconnected: recent outcomes written again; checking every delivery against the ledger for one ack wait"
    );
}

/// Retries a repair write for up to a minute; true once it succeeded.
async fn until_ok<T, E, F, Fut>(mut write: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let give_up = Instant::now() + REPAIR_RETRY_FOR;
    let mut wait = Duration::from_millis(100);
    loop {
        if write().await.is_ok() {
            return true;
        }
        if Instant::now() >= give_up {
            return false;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_recent_sends_and_shares_campaign_names() {
        let r = Recent::default();
        r.record("c1", 1, 0, 5);
        r.record("c1", 2, 0, 5);
        r.record("c2", 1, 1, 5);
        let s = r.snapshot();
        assert_eq!(s.len(), 3);
        assert!(std::sync::Arc::ptr_eq(&s[0].0, &s[1].0));
        assert_eq!((&*s[2].0, s[2].1, s[2].2), ("c2", 1, 1));
        assert!(!r.suspect());
        *r.suspect_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(5));
        assert!(r.suspect());
    }
}
