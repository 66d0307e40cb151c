//! The counter history of one campaign, one sample a tick while it moves, and the send rate
//! measured over it. Kept bounded: a long campaign keeps its whole shape at a coarser grain.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The window "messages per second" is measured over.
pub const RATE_WINDOW_MS: u64 = 5_000;
/// Samples kept per campaign; beyond it the older half is thinned.
pub const MAX_SAMPLES: usize = 720;

/// Counters of one campaign at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: u64,
    pub sent: u64,
    /// Failed and dead together.
    pub failed: u64,
}

/// Samples, oldest first, strictly increasing in time.
#[derive(Debug, Default)]
pub(super) struct Samples(VecDeque<Sample>);

impl Samples {
    /// Adds `s` unless it is not newer than the last one.
    pub(super) fn push(&mut self, s: Sample) {
        if self.0.back().is_some_and(|last| last.at_ms >= s.at_ms) {
            return;
        }
        self.0.push_back(s);
        if self.0.len() > MAX_SAMPLES {
            self.thin();
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn last(&self) -> Option<Sample> {
        self.0.back().copied()
    }

    pub(super) fn to_vec(&self) -> Vec<Sample> {
        self.0.iter().copied().collect()
    }

    /// Sent per second from the newest sample at least [`RATE_WINDOW_MS`] old (or the oldest)
    /// to `sent` now.
    pub(super) fn rate(&self, sent: u64, now: u64) -> f64 {
        let from = self
            .0
            .iter()
            .rev()
            .find(|s| now.saturating_sub(s.at_ms) >= RATE_WINDOW_MS)
            .or(self.0.front());
        match from {
            Some(s) if now > s.at_ms && sent >= s.sent => {
                (sent - s.sent) as f64 * 1000.0 / (now - s.at_ms) as f64
            }
            _ => 0.0,
        }
    }

    /// Drops every other sample of the older half.
    fn thin(&mut self) {
        let half = self.0.len() / 2;
        let mut kept = VecDeque::with_capacity(self.0.len());
        for (i, s) in self.0.drain(..).enumerate() {
            if i >= half || i % 2 == 0 {
                kept.push_back(s);
            }
        }
        self.0 = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_covers_the_last_window() {
        let mut s = Samples::default();
        for i in 0..=10u64 {
            s.push(Sample {
                at_ms: i * 1000,
                sent: i * 10,
                failed: 0,
            });
        }
        let r = s.rate(100, 10_000);
        assert!((r - 10.0).abs() < 0.01, "{r}");
        // Nothing sent for a while: the rate falls to zero.
        s.push(Sample {
            at_ms: 16_000,
            sent: 100,
            failed: 0,
        });
        assert_eq!(s.rate(100, 21_000), 0.0);
    }

    #[test]
    fn older_or_equal_samples_are_ignored() {
        let mut s = Samples::default();
        let at = |at_ms| Sample {
            at_ms,
            sent: at_ms,
            failed: 0,
        };
        s.push(at(5));
        s.push(at(5));
        s.push(at(4));
        assert_eq!(s.to_vec(), vec![at(5)]);
    }

    #[test]
    fn thinning_keeps_the_newest_half_whole() {
        let mut s = Samples::default();
        for i in 0..(MAX_SAMPLES as u64 + 1) {
            s.push(Sample {
                at_ms: i + 1,
                sent: i,
                failed: 0,
            });
        }
        let v = s.to_vec();
        assert!(v.len() < MAX_SAMPLES);
        assert_eq!(v.last().unwrap().at_ms, MAX_SAMPLES as u64 + 1);
        assert_eq!(v.first().unwrap().at_ms, 1);
        // The newest half is every sample, one millisecond apart.
        let newest = &v[v.len() - MAX_SAMPLES / 2..];
        assert!(newest.windows(2).all(|w| w[1].at_ms == w[0].at_ms + 1));
    }
}
