//! A rate budget shared by every sender without a central counter: the scope's schedule lives
//! in one KV key of `mail_limits` (`budget.<scope>`) and each sender takes a *slice* of it with
//! a compare-and-set, so the broker sees a few writes per second per scope, not one per
//! message, and the limit holds whatever the number of senders.
//!
//! The schedule is GCRA (the generic cell rate algorithm): the key holds the theoretical
//! arrival time (TAT) of the next send, in microseconds since the epoch. Taking `n` sends at a
//! rate of one per `T` moves it `n·T` later; a take is allowed while the TAT stays within
//! [`BURST_WINDOW`] of now. So any window of length `W` grants at most `W/T + BURST_WINDOW/T`
//! sends: a 1-second window at most 105 % of the rate, plus what a sender holds back
//! ([`HOLD`]), 110 % in all. Idle time is never banked beyond the burst window.
//!
//! Senders' clocks take part (the TAT is wall-clock time): a sender whose clock runs ahead
//! makes the others wait a little longer, never send faster; keep hosts on NTP.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;

use crate::limits::Scope;
use crate::store::StoreError;
use crate::topology;

/// How far ahead of now the schedule may run: the burst a scope allows, and the size of the
/// largest slice one take can grant.
pub const BURST_WINDOW: Duration = Duration::from_millis(50);
/// Granted sends a sender has not used within this are dropped, so a slice taken long ago
/// cannot add to a later window.
pub const HOLD: Duration = Duration::from_millis(50);
/// A take asks for at least this long's worth of the rate (when that is more than the sends
/// waiting): at high rates one round trip then serves many sends, at the cost of at most this
/// much of the budget left unused when the sends stop. Measured (release, 3 senders, a global
/// limit that never bites, on a shared 2-core machine): 12-27% below no limit when a take asked
/// only for the sends waiting, within the runs' noise (±7%) with this floor.
const MIN_SLICE: Duration = Duration::from_millis(5);
/// The shortest wait before asking again after a refusal.
const MIN_RETRY: Duration = Duration::from_millis(2);
const CAS_ATTEMPTS: usize = 20;

/// What one take got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Sends granted now (0 when the schedule is full).
    pub granted: u32,
    /// With nothing granted: when to ask again.
    pub retry_after: Duration,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The pure GCRA step: with the schedule at `tat` (µs), a send every `interval_us`, at `now`,
/// how many of `want` may go, and the new TAT.
pub fn gcra(tat: u64, now: u64, interval_us: u64, want: u32) -> (u32, u64) {
    let interval_us = interval_us.max(1);
    let tau = (BURST_WINDOW.as_micros() as u64).max(interval_us);
    let tat = tat.max(now);
    let room = (now + tau).saturating_sub(tat) / interval_us;
    let granted = room.min(want as u64) as u32;
    (granted, tat + granted as u64 * interval_us)
}

/// Takes up to `want` sends of `scope`'s budget at `per_second`, with compare-and-set on the
/// scope's key. Concurrent takers retry on a lost race.
pub async fn take(
    store: &kv::Store,
    scope: &Scope,
    want: u32,
    per_second: f64,
) -> Result<Grant, StoreError> {
    let key = topology::budget_key(scope);
    let interval_us = (1e6 / per_second.max(1e-6)).round().max(1.0) as u64;
    for _ in 0..CAS_ATTEMPTS {
        let entry = store.entry(&key).await.map_err(StoreError::broker)?;
        let (stored, revision) = match &entry {
            Some(e) if e.operation == kv::Operation::Put => (
                std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0),
                Some(e.revision),
            ),
            Some(e) => (0, Some(e.revision)),
            None => (0, None),
        };
        let now = now_us();
        let (granted, tat) = gcra(stored, now, interval_us, want);
        if granted == 0 {
            let tau = (BURST_WINDOW.as_micros() as u64).max(interval_us);
            let wait_us = (stored.max(now) + interval_us).saturating_sub(now + tau);
            return Ok(Grant {
                granted: 0,
                retry_after: Duration::from_micros(wait_us).max(MIN_RETRY),
            });
        }
        let value = Bytes::from(tat.to_string());
        let written = match revision {
            Some(rev) => store
                .update(&key, value, rev)
                .await
                .map(|_| ())
                .map_err(|e| {
                    (e.kind() == kv::UpdateErrorKind::WrongLastRevision)
                        .then_some(())
                        .ok_or_else(|| StoreError::broker(e))
                }),
            None => store.create(&key, value).await.map(|_| ()).map_err(|e| {
                (e.kind() == kv::CreateErrorKind::AlreadyExists)
                    .then_some(())
                    .ok_or_else(|| StoreError::broker(e))
            }),
        };
        match written {
            Ok(()) => {
                return Ok(Grant {
                    granted,
                    retry_after: Duration::ZERO,
                })
            }
            // Another sender took a slice first: read again.
            Err(Ok(())) => continue,
            Err(Err(e)) => return Err(e),
        }
    }
    Err(StoreError::Conflict(key))
}

/// One sender's share of one scope's budget: sends granted and not used yet. Tasks of a sender
/// share it behind a lock and call [`Taker::acquire`] for each send.
#[derive(Debug)]
pub struct Taker {
    scope: Scope,
    tokens: u32,
    granted_at: Instant,
    /// After a refusal, asking the broker again before this is pointless: callers get the
    /// remaining wait without a round trip.
    not_before: Instant,
}

impl Taker {
    pub fn new(scope: Scope) -> Self {
        Self {
            scope,
            tokens: 0,
            granted_at: Instant::now(),
            not_before: Instant::now(),
        }
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// One send, now if a granted one is in hand, else after taking a slice; returns the wait
    /// before asking again when the schedule is full. `per_second` is the scope's effective
    /// rate; `waiting` how many sends want one (the slice asked for).
    pub async fn try_acquire(
        &mut self,
        store: &kv::Store,
        per_second: f64,
        waiting: u32,
    ) -> Result<Result<(), Duration>, StoreError> {
        if self.tokens > 0 && self.granted_at.elapsed() < HOLD {
            self.tokens -= 1;
            return Ok(Ok(()));
        }
        self.tokens = 0;
        let now = Instant::now();
        if now < self.not_before {
            return Ok(Err(self.not_before - now));
        }
        let slice = ((per_second * HOLD.as_secs_f64()).floor() as u32).max(1);
        let ahead = (per_second * MIN_SLICE.as_secs_f64()).floor() as u32;
        let g = take(
            store,
            &self.scope,
            waiting.max(ahead).clamp(1, slice),
            per_second,
        )
        .await?;
        if g.granted == 0 {
            self.not_before = Instant::now() + g.retry_after;
            return Ok(Err(g.retry_after));
        }
        self.tokens = g.granted - 1;
        self.granted_at = Instant::now();
        Ok(Ok(()))
    }

    /// Up to `want` sends at once, without waiting: the granted ones in hand first, then one
    /// take for the rest. Returns how many were granted (0 when the schedule is full). For a
    /// batch, one round trip instead of one per send.
    pub async fn try_acquire_many(
        &mut self,
        store: &kv::Store,
        per_second: f64,
        want: u32,
    ) -> Result<u32, StoreError> {
        if self.granted_at.elapsed() >= HOLD {
            self.tokens = 0;
        }
        let in_hand = self.tokens.min(want);
        self.tokens -= in_hand;
        if in_hand == want || Instant::now() < self.not_before {
            return Ok(in_hand);
        }
        let slice = ((per_second * HOLD.as_secs_f64()).floor() as u32).max(1);
        let g = take(store, &self.scope, (want - in_hand).min(slice), per_second).await?;
        if g.granted == 0 {
            self.not_before = Instant::now() + g.retry_after;
        }
        Ok(in_hand + g.granted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_grants_the_burst_then_one_per_interval() {
        // 100/s: one send every 10 ms, a 50 ms burst window.
        let (g, tat) = gcra(0, 1_000_000, 10_000, 100);
        assert_eq!(g, 5);
        assert_eq!(tat, 1_050_000);
        let (g, _) = gcra(tat, 1_000_000, 10_000, 100);
        assert_eq!(g, 0);
        let (g, tat2) = gcra(tat, 1_010_000, 10_000, 100);
        assert_eq!((g, tat2), (1, 1_060_000));
        // Idle time is not banked beyond the burst.
        let (g, _) = gcra(tat2, 9_000_000, 10_000, 1000);
        assert_eq!(g, 5);
    }

    #[test]
    fn gcra_never_grants_more_than_the_rate_plus_the_burst() {
        // Simulate greedy takers asking every millisecond for 2 s at 150/s.
        let interval = (1e6f64 / 150.0).round() as u64;
        let mut tat = 0;
        let mut grants = Vec::new();
        for ms in 0..2000u64 {
            let now = 10_000_000 + ms * 1000;
            let (g, t) = gcra(tat, now, interval, 1000);
            tat = t;
            grants.extend(std::iter::repeat_n(ms, g as usize));
        }
        for start in 0..1000u64 {
            let in_window = grants
                .iter()
                .filter(|&&m| m >= start && m < start + 1000)
                .count();
            assert!(in_window <= 158, "window at {start}: {in_window}");
        }
        assert!(grants.len() >= 295, "{}", grants.len());
    }
}
