//! The sending policy as one sender applies it: the limits of `mail_limits` (kept current by a
//! KV watch, so a change is followed within a second), each scope's share of the fleet's
//! budget ([`jetmail_common::budget`]), each capped domain's share of the fleet's sessions,
//! and the fleet-wide back-off after a 421 or 4.7.x reply.
//!
//! Nothing here holds a message: a send either gets what it needs at once or is moved to the
//! scope's held queue (see [`crate::lanes`]), so waiting for a limit never costs a delivery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;
use jetmail_common::address::domain_token;
use jetmail_common::budget::Taker;
use jetmail_common::limits::{concurrency_share, Backoff, LimitSpec, Rate, Scope, SHARE_REFRESH};
use jetmail_common::now_ms;
use jetmail_common::store::StoreError;
use jetmail_common::topology::{self, LimitsKey};
use jetmail_common::wire::{SenderHealth, SenderState};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct View {
    limits: HashMap<Scope, LimitSpec>,
    by_domain: HashMap<String, Scope>,
    backoffs: HashMap<Scope, Backoff>,
}

impl View {
    /// One change of `mail_limits`: a limit set or removed, a back-off written or gone.
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        match LimitsKey::parse(key) {
            Some(LimitsKey::Limit(scope)) => {
                // The watch's history repeats what the load at start applied: not news.
                let unchanged = value
                    .and_then(|v| serde_json::from_slice::<LimitSpec>(v).ok())
                    .is_some_and(|spec| self.limits.get(&scope) == Some(&spec));
                if unchanged {
                    return;
                }
                self.limits.remove(&scope);
                self.by_domain.retain(|_, s| *s != scope);
                let Some(v) = value else {
                    tracing::info!(%scope, "limit removed");
                    return;
                };
                match serde_json::from_slice::<LimitSpec>(v) {
                    Ok(spec) => {
                        for d in &spec.domains {
                            self.by_domain.insert(domain_token(d), scope.clone());
                        }
                        tracing::info!(%scope, rate = %spec.rate, concurrency = ?spec.concurrency, "limit in force");
                        self.limits.insert(scope, spec);
                    }
                    Err(e) => tracing::warn!(%key, error = %e, "unreadable limit ignored"),
                }
            }
            Some(LimitsKey::Backoff(scope)) => match value.map(serde_json::from_slice::<Backoff>) {
                Some(Ok(b)) => {
                    self.backoffs.insert(scope, b);
                }
                _ => {
                    self.backoffs.remove(&scope);
                }
            },
            _ => {}
        }
    }
}

/// One scope's budget in this sender: the granted sends in hand, and how many sends wait.
struct Budget {
    taker: tokio::sync::Mutex<Taker>,
    waiting: AtomicU32,
}

/// One capped scope's sessions in this sender: its share of the fleet's cap.
struct Sessions {
    share: u32,
    permits: Arc<Semaphore>,
}

/// The limits in force and this sender's share of each.
pub struct Throttle {
    store: kv::Store,
    senders: kv::Store,
    me: String,
    view: RwLock<View>,
    budgets: Mutex<HashMap<Scope, Arc<Budget>>>,
    sessions: Mutex<HashMap<Scope, Sessions>>,
    live: RwLock<Vec<String>>,
    /// Scopes this sender just moved a recipient to, for the lanes manager to start their
    /// lanes at once rather than at its next look at MAIL_HELD's subjects.
    noted: Mutex<std::collections::HashSet<Scope>>,
    /// Woken when a scope is noted, so its lane starts now, not at the manager's next tick.
    noted_wake: tokio::sync::Notify,
    /// Set once the limits in force at start are known; see [`Throttle::loaded`].
    loaded: tokio::sync::watch::Sender<bool>,
}

impl Throttle {
    pub fn new(limits: kv::Store, senders: kv::Store, me: String) -> Self {
        Self {
            store: limits,
            senders,
            me,
            view: RwLock::default(),
            budgets: Mutex::default(),
            sessions: Mutex::default(),
            live: RwLock::default(),
            noted: Mutex::default(),
            noted_wake: tokio::sync::Notify::new(),
            loaded: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Returns once the limits and back-offs in force at start have been read. A sender pulls
    /// nothing before: one that did would send its first batch as if there were no limit
    /// (measured: a sender joining a 100/s campaign added its 32 slots to one 100 ms).
    pub async fn loaded(&self) {
        let mut rx = self.loaded.subscribe();
        let _ = rx.wait_for(|l| *l).await;
    }

    /// Reads every limit and back-off in force now (the watch follows what changes after).
    async fn load(&self) -> Result<usize, StoreError> {
        let mut keys = self.store.keys().await.map_err(StoreError::broker)?;
        let mut found = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(StoreError::broker)?;
            if matches!(
                LimitsKey::parse(&k),
                Some(LimitsKey::Limit(_) | LimitsKey::Backoff(_))
            ) {
                found.push(k);
            }
        }
        let n = found.len();
        for k in found {
            // Gone since it was listed: nothing to apply (the watch says so too).
            if let Some(v) = self.store.get(&k).await.map_err(StoreError::broker)? {
                self.apply(&k, Some(&v));
            }
        }
        Ok(n)
    }

    /// The limit of the group a domain belongs to, if any, by the domain's subject token
    /// (what the outbox subject carries; unique, since IDNA domains hold no `_`).
    pub fn domain_scope(&self, domain_token: &str) -> Option<Scope> {
        self.view
            .read()
            .unwrap()
            .by_domain
            .get(domain_token)
            .cloned()
    }

    /// Every scope with a limit (each gets a held lane).
    pub fn limited_scopes(&self) -> Vec<Scope> {
        self.view.read().unwrap().limits.keys().cloned().collect()
    }

    /// Notes that a recipient was just moved to `scope`'s held queue.
    pub fn note_held(&self, scope: &Scope) {
        if self.noted.lock().unwrap().insert(scope.clone()) {
            self.noted_wake.notify_one();
        }
    }

    /// Returns once a scope was noted (at once if one was since the last wait).
    pub async fn noted(&self) {
        self.noted_wake.notified().await
    }

    /// The scopes noted since the last call.
    pub fn take_noted(&self) -> Vec<Scope> {
        self.noted.lock().unwrap().drain().collect()
    }

    /// True when a global limit is set.
    pub fn has_global(&self) -> bool {
        self.view
            .read()
            .unwrap()
            .limits
            .contains_key(&Scope::Global)
    }

    /// The rate `scope` may send at now (its limit, after any back-off); `None` without one.
    pub fn effective_rate(&self, scope: &Scope) -> Option<f64> {
        let view = self.view.read().unwrap();
        let spec = view.limits.get(scope)?;
        let backoff = view.backoffs.get(scope).copied().unwrap_or_default();
        Some(backoff.effective_per_second(spec.rate, now_ms(), spec.cooldown_ms))
    }

    /// The rate of a campaign's own scope (`--rate` on submit); no back-off applies to it.
    pub fn campaign_rate(rate: Rate) -> f64 {
        rate.per_second()
    }

    fn budget(&self, scope: &Scope) -> Arc<Budget> {
        self.budgets
            .lock()
            .unwrap()
            .entry(scope.clone())
            .or_insert_with(|| {
                Arc::new(Budget {
                    taker: tokio::sync::Mutex::new(Taker::new(scope.clone())),
                    waiting: AtomicU32::new(0),
                })
            })
            .clone()
    }

    /// One send of `scope` at `per_second` if the budget has one now; otherwise how long
    /// until it may.
    pub async fn try_take(&self, scope: &Scope, per_second: f64) -> Result<(), Duration> {
        let b = self.budget(scope);
        let waiting = b.waiting.load(Ordering::Relaxed) + 1;
        let mut taker = b.taker.lock().await;
        match taker.try_acquire(&self.store, per_second, waiting).await {
            Ok(r) => r,
            Err(e) => {
                // A budget the broker cannot serve must not stop sending altogether: wait a
                // little and ask again, like a full schedule.
                tracing::warn!(%scope, error = %e, "cannot take from a shared budget");
                Err(Duration::from_millis(250))
            }
        }
    }

    /// Up to `want` sends of `scope` at `per_second`, as many as the budget has now (one
    /// round trip to the broker at most).
    pub async fn try_take_many(&self, scope: &Scope, per_second: f64, want: u32) -> u32 {
        if want == 0 {
            return 0;
        }
        let b = self.budget(scope);
        let mut taker = b.taker.lock().await;
        match taker.try_acquire_many(&self.store, per_second, want).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(%scope, error = %e, "cannot take from a shared budget");
                0
            }
        }
    }

    /// Waits for one send of `scope`, following the rate as it changes (`rate` is asked again
    /// after each wait; `None` means the limit was removed). Gives up (false) when the next
    /// chance is past `within`, or when `shutdown` comes first.
    pub async fn take(
        &self,
        scope: &Scope,
        rate: impl Fn() -> Option<f64>,
        within: Option<Duration>,
        shutdown: &CancellationToken,
    ) -> bool {
        let give_up = within.map(|w| tokio::time::Instant::now() + w);
        let b = self.budget(scope);
        // Counted while waiting, so that the next slice taken is sized for every waiter.
        b.waiting.fetch_add(1, Ordering::Relaxed);
        let got = loop {
            let Some(per_second) = rate() else { break true };
            match self.try_take(scope, per_second).await {
                Ok(()) => break true,
                Err(wait) => {
                    if give_up.is_some_and(|g| tokio::time::Instant::now() + wait > g) {
                        break false;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break false,
                        _ = tokio::time::sleep(wait.min(Duration::from_millis(500))) => {}
                    }
                }
            }
        };
        b.waiting.fetch_sub(1, Ordering::Relaxed);
        got
    }

    /// A session of a capped scope, if this sender's share has one free: `None` when the scope
    /// has no cap, `Some(Err(()))` when its share is in use.
    pub fn session(&self, scope: &Scope) -> Option<Result<OwnedSemaphorePermit, ()>> {
        let cap = self.view.read().unwrap().limits.get(scope)?.concurrency?;
        let share = concurrency_share(cap, &self.me, &self.live.read().unwrap());
        let mut sessions = self.sessions.lock().unwrap();
        let s = sessions.entry(scope.clone()).or_insert_with(|| Sessions {
            share,
            permits: Arc::new(Semaphore::new(share as usize)),
        });
        if s.share != share {
            // The fleet changed: a new share. Sessions still open on the old one finish there.
            *s = Sessions {
                share,
                permits: Arc::new(Semaphore::new(share as usize)),
            };
        }
        Some(s.permits.clone().try_acquire_owned().map_err(|_| ()))
    }

    /// A 421 or 4.7.x reply from `scope`'s domains: halve its rate fleet-wide for a cool-down
    /// (compare-and-set on `backoff.<scope>`, so several senders seeing the same congestion
    /// halve it once).
    pub async fn refused(&self, scope: &Scope) -> Result<(), StoreError> {
        let Some(cooldown) = self
            .view
            .read()
            .unwrap()
            .limits
            .get(scope)
            .map(|l| l.cooldown_ms)
        else {
            return Ok(());
        };
        let key = topology::backoff_key(scope);
        for _ in 0..10 {
            let entry = self.store.entry(&key).await.map_err(StoreError::broker)?;
            let (current, revision) = match &entry {
                Some(e) if e.operation == kv::Operation::Put => (
                    serde_json::from_slice::<Backoff>(&e.value).unwrap_or_default(),
                    Some(e.revision),
                ),
                Some(e) => (Backoff::default(), Some(e.revision)),
                None => (Backoff::default(), None),
            };
            let next = current.after_refusal(now_ms(), cooldown);
            if next == current {
                return Ok(());
            }
            let value = Bytes::from(serde_json::to_vec(&next).expect("a back-off serialises"));
            let written = match revision {
                Some(rev) => self.store.update(&key, value, rev).await.is_ok(),
                None => self.store.create(&key, value).await.is_ok(),
            };
            if written {
                tracing::warn!(%scope, level = next.level, "the domain asked us to slow down: rate halved fleet-wide");
                self.view
                    .write()
                    .unwrap()
                    .backoffs
                    .insert(scope.clone(), next);
                return Ok(());
            }
        }
        Err(StoreError::Conflict(key))
    }

    fn apply(&self, key: &str, value: Option<&[u8]>) {
        self.view.write().unwrap().apply(key, value);
    }

    /// Follows `mail_limits` until `shutdown`, re-creating the watch when it ends (a broker
    /// restart), and refreshes the live senders for session shares.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let refresher = tokio::spawn(self.clone().refresh_live(shutdown.clone()));
        while !shutdown.is_cancelled() && !*self.loaded.borrow() {
            match self.load().await {
                Ok(n) => {
                    // A joining sender's share of a session cap counts the others from its
                    // first send, not the whole cap until the first refresh.
                    self.read_live().await;
                    tracing::debug!(entries = n, "limits loaded");
                    self.loaded.send_replace(true);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the limits; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        while !shutdown.is_cancelled() {
            let filters = [topology::limits_filter(), topology::backoffs_filter()];
            let mut watch = match self.store.watch_many_with_history(filters).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch limits; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    n = watch.next() => n,
                };
                match next {
                    Some(Ok(e)) if e.operation == kv::Operation::Put => {
                        self.apply(&e.key, Some(&e.value))
                    }
                    Some(Ok(e)) => self.apply(&e.key, None),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "limits watch failed; re-creating it");
                        break;
                    }
                    None => break,
                }
            }
        }
        let _ = refresher.await;
    }

    async fn refresh_live(self: Arc<Self>, shutdown: CancellationToken) {
        // The first read is part of the load at start (see `watch`).
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + SHARE_REFRESH, SHARE_REFRESH);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.read_live().await;
        }
    }

    /// Reads which senders are live from the health map (for session shares); on a broker
    /// error the last list stays.
    async fn read_live(&self) {
        let Ok(keys) = self.senders.keys().await else {
            return;
        };
        let keys: Vec<String> = keys.filter_map(|k| async { k.ok() }).collect().await;
        let mut live = Vec::with_capacity(keys.len());
        for k in keys {
            if let Ok(Some(v)) = self.senders.get(&k).await {
                if let Ok(h) = serde_json::from_slice::<SenderHealth>(&v) {
                    if matches!(h.state, SenderState::Up | SenderState::Blocked) {
                        live.push(h.id);
                    }
                }
            }
        }
        *self.live.write().unwrap() = live;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_maps_its_domains_and_its_removal_unmaps_them() {
        let mut view = View::default();
        let spec = LimitSpec::new(
            &["Gmail.com".into(), "googlemail.com".into()],
            "25/s",
            Some(4),
            None,
        )
        .unwrap();
        let key = topology::limit_key(&spec.scope);
        view.apply(&key, Some(&serde_json::to_vec(&spec).unwrap()));
        let scope = Scope::Domains("gmail_com".into());
        assert_eq!(view.by_domain.get("googlemail_com"), Some(&scope));
        assert_eq!(view.by_domain.get("gmail_com"), Some(&scope));
        assert_eq!(view.limits[&scope].concurrency, Some(4));
        // A changed group drops the domains it no longer lists.
        let narrower = LimitSpec::new(&["gmail.com".into()], "5/s", None, None).unwrap();
        view.apply(&key, Some(&serde_json::to_vec(&narrower).unwrap()));
        assert_eq!(view.by_domain.get("googlemail_com"), None);
        view.apply(&key, None);
        assert!(view.by_domain.is_empty() && view.limits.is_empty());
        // Budgets and unknown keys are not limits.
        view.apply(&topology::budget_key(&scope), Some(b"123"));
        view.apply("junk", Some(b"{}"));
        assert!(view.limits.is_empty());
        let b = Backoff {
            level: 2,
            since_ms: 5,
        };
        view.apply(
            &topology::backoff_key(&scope),
            Some(&serde_json::to_vec(&b).unwrap()),
        );
        assert_eq!(view.backoffs[&scope], b);
    }
}
