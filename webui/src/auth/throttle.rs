//! Login attempts throttled per client address and globally: past [`LoginLimits::per_client`]
//! failures from one address, or [`LoginLimits::global`] from everyone, within
//! [`LoginLimits::window`], the next attempt is refused at once (429) without checking the
//! password, until the window has passed. Behind a reverse proxy every client has the
//! proxy's address, so the per-client limit acts as a second global one.
//!
//! A global lockout lets a guesser keep the operator out for a window; the alternative is
//! letting a distributed guesser try unbounded passwords. The window is short.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Clients tracked at once; past it, the oldest entries are dropped (the global limit
/// still holds).
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// How many failed logins are tolerated, and over how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    pub per_client: usize,
    pub global: usize,
    pub window: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            per_client: 5,
            global: 50,
            window: Duration::from_secs(60),
        }
    }
}

/// Whether an attempt may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Allowed,
    /// Refused; the next one may succeed after this long.
    Refused {
        retry_after: Duration,
    },
}

/// The failures seen recently.
#[derive(Debug)]
pub struct LoginThrottle {
    limits: LoginLimits,
    state: Mutex<Failures>,
}

#[derive(Debug, Default)]
struct Failures {
    by_client: HashMap<Option<IpAddr>, VecDeque<Instant>>,
    all: VecDeque<Instant>,
}

fn expire(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
        q.pop_front();
    }
}

impl LoginThrottle {
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(Failures::default()),
        }
    }

    /// Whether `client` (its address; `None` when unknown) may try a password now.
    pub fn check(&self, client: Option<IpAddr>, now: Instant) -> Attempt {
        let w = self.limits.window;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        expire(&mut s.all, now, w);
        let mine = s.by_client.get_mut(&client).map(|q| {
            expire(q, now, w);
            q.clone()
        });
        let over = |q: &VecDeque<Instant>, limit: usize| {
            (q.len() >= limit).then(|| w.saturating_sub(now.duration_since(q[q.len() - limit])))
        };
        let wait = [
            mine.as_ref()
                .and_then(|q| over(q, self.limits.per_client.max(1))),
            over(&s.all, self.limits.global.max(1)),
        ]
        .into_iter()
        .flatten()
        .max();
        match wait {
            Some(retry_after) => Attempt::Refused { retry_after },
            None => Attempt::Allowed,
        }
    }

    /// Records a wrong password from `client`.
    pub fn failed(&self, client: Option<IpAddr>, now: Instant) {
        let w = self.limits.window;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.by_client.len() >= MAX_TRACKED_CLIENTS && !s.by_client.contains_key(&client) {
            s.by_client.retain(|_, q| {
                expire(q, now, w);
                !q.is_empty()
            });
            if s.by_client.len() >= MAX_TRACKED_CLIENTS {
                s.by_client.clear();
            }
        }
        s.by_client.entry(client).or_default().push_back(now);
        s.all.push_back(now);
    }

    /// A good password from `client`: its failures are forgotten.
    pub fn succeeded(&self, client: Option<IpAddr>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.by_client.remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_client_past_its_limit_waits_out_the_window() {
        let t = LoginThrottle::new(LoginLimits {
            per_client: 3,
            global: 100,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(t.check(ip(1), t0), Attempt::Allowed, "attempt {i}");
            t.failed(ip(1), t0);
        }
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            t.check(ip(1), later),
            Attempt::Refused {
                retry_after: Duration::from_secs(50)
            }
        );
        assert_eq!(t.check(ip(2), later), Attempt::Allowed, "others are not");
        assert_eq!(
            t.check(ip(1), t0 + Duration::from_secs(60)),
            Attempt::Allowed
        );
    }

    #[test]
    fn many_clients_together_hit_the_global_limit() {
        let t = LoginThrottle::new(LoginLimits {
            per_client: 3,
            global: 4,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        for i in 0..4 {
            t.failed(ip(i), t0);
        }
        assert!(matches!(t.check(ip(200), t0), Attempt::Refused { .. }));
        t.succeeded(ip(0));
        assert!(
            matches!(t.check(ip(0), t0), Attempt::Refused { .. }),
            "global still"
        );
    }
}
