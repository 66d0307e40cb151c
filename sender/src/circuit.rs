//! A circuit breaker per relay: after `threshold` consecutive transient failures it opens and
//! the sender stops using the relay; after `cooldown` one probe is let through (half-open); a
//! success closes it, a failure opens it again.

use std::time::{Duration, Instant};

use jetmail_common::wire::CircuitState;

#[derive(Debug)]
pub struct Circuit {
    state: CircuitState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
    threshold: u32,
    cooldown: Duration,
}

impl Circuit {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            state: CircuitState::Closed,
            consecutive_failures: 0,
            opened_at: None,
            probe_in_flight: false,
            threshold: threshold.max(1),
            cooldown,
        }
    }

    pub fn state(&self) -> CircuitState {
        self.state
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Whether a send may start now; in half-open state only one (the probe) may.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.state {
            CircuitState::Closed => true,
            CircuitState::Open => {
                if self
                    .opened_at
                    .is_some_and(|t| now.duration_since(t) >= self.cooldown)
                {
                    self.state = CircuitState::HalfOpen;
                    self.probe_in_flight = true;
                    true
                } else {
                    false
                }
            }
            CircuitState::HalfOpen => {
                if self.probe_in_flight {
                    false
                } else {
                    self.probe_in_flight = true;
                    true
                }
            }
        }
    }

    /// Whether [`Circuit::try_acquire`] would succeed, without taking the probe.
    pub fn would_allow(&self, now: Instant) -> bool {
        match self.state {
            CircuitState::Closed => true,
            CircuitState::Open => self
                .opened_at
                .is_some_and(|t| now.duration_since(t) >= self.cooldown),
            CircuitState::HalfOpen => !self.probe_in_flight,
        }
    }

    /// Time until an open circuit lets a probe through.
    pub fn until_probe(&self, now: Instant) -> Duration {
        match (self.state, self.opened_at) {
            (CircuitState::Open, Some(t)) => self.cooldown.saturating_sub(now.duration_since(t)),
            _ => Duration::ZERO,
        }
    }

    /// The relay worked (including a permanent 5xx answer: the relay itself is fine).
    pub fn on_success(&mut self) {
        self.state = CircuitState::Closed;
        self.consecutive_failures = 0;
        self.opened_at = None;
        self.probe_in_flight = false;
    }

    /// A transient failure; returns true if this opened the circuit.
    pub fn on_failure(&mut self, now: Instant) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.state {
            CircuitState::HalfOpen => {
                self.state = CircuitState::Open;
                self.opened_at = Some(now);
                self.probe_in_flight = false;
                true
            }
            CircuitState::Closed if self.consecutive_failures >= self.threshold => {
                self.state = CircuitState::Open;
                self.opened_at = Some(now);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_probes_once_and_closes() {
        let t0 = Instant::now();
        let mut c = Circuit::new(3, Duration::from_secs(5));
        assert!(!c.on_failure(t0));
        assert!(!c.on_failure(t0));
        assert!(c.on_failure(t0));
        assert_eq!(c.state(), CircuitState::Open);
        assert!(!c.try_acquire(t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(5);
        assert!(c.try_acquire(later));
        assert_eq!(c.state(), CircuitState::HalfOpen);
        assert!(!c.try_acquire(later), "only one probe");
        c.on_success();
        assert_eq!(c.state(), CircuitState::Closed);
        assert!(c.try_acquire(later));
    }

    #[test]
    fn failed_probe_reopens() {
        let t0 = Instant::now();
        let mut c = Circuit::new(1, Duration::from_secs(1));
        c.on_failure(t0);
        let t1 = t0 + Duration::from_secs(1);
        assert!(c.try_acquire(t1));
        assert!(c.on_failure(t1));
        assert_eq!(c.state(), CircuitState::Open);
        assert!(!c.would_allow(t1));
        assert_eq!(c.until_probe(t1), Duration::from_secs(1));
    }
}
