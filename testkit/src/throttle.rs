//! Test support for the sending policy: setting limits the way `jetmail-ingest limits set`
//! stores them (without going through ingest), reading a scope's back-off and the held
//! queue, and measuring the rate a relay saw from the sink's arrival times.

use std::time::{Duration, Instant};

use jetmail_common::limits::{Backoff, LimitSpec, Scope};
use jetmail_common::topology;

use crate::Stack;

/// What a relay saw over one period: the mean rate and the busiest and quietest 1-second
/// windows (sliding, in steps of [`WINDOW_STEP`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateReport {
    /// Arrivals in the period.
    pub count: usize,
    pub seconds: f64,
    /// Arrivals per second over the whole period.
    pub mean: f64,
    /// Most arrivals in any 1-second window inside the period.
    pub max_window: usize,
    /// Fewest arrivals in any 1-second window inside the period.
    pub min_window: usize,
    /// Arrivals in each tenth of the busiest window: a spike in one tenth is a burst (sends
    /// that skipped the budget, or a stall that ended), an even spread a rate held too high.
    pub busiest_tenths: [usize; 10],
}

/// Step between the starts of two sliding windows.
pub const WINDOW_STEP: Duration = Duration::from_millis(50);
const WINDOW: Duration = Duration::from_secs(1);

impl std::fmt::Display for RateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in {:.2}s: mean {:.1}/s, 1-s windows {}..{} (busiest by tenths {:?})",
            self.count,
            self.seconds,
            self.mean,
            self.min_window,
            self.max_window,
            self.busiest_tenths
        )
    }
}

/// The rate of `times` (sorted) between `from` and `to`.
pub fn rate_between(times: &[Instant], from: Instant, to: Instant) -> RateReport {
    let count = |a: Instant, b: Instant| {
        let lo = times.partition_point(|t| *t < a);
        let hi = times.partition_point(|t| *t < b);
        hi - lo
    };
    let seconds = to.saturating_duration_since(from).as_secs_f64();
    let total = count(from, to);
    let (mut max_window, mut min_window) = (0, usize::MAX);
    let mut busiest_start = from;
    let mut start = from;
    while start + WINDOW <= to {
        let n = count(start, start + WINDOW);
        if n > max_window {
            max_window = n;
            busiest_start = start;
        }
        min_window = min_window.min(n);
        start += WINDOW_STEP;
    }
    let tenth = WINDOW / 10;
    let busiest_tenths = std::array::from_fn(|i| {
        let a = busiest_start + tenth * i as u32;
        count(a, a + tenth)
    });
    RateReport {
        count: total,
        seconds,
        mean: total as f64 / seconds.max(1e-9),
        max_window,
        min_window: if min_window == usize::MAX {
            0
        } else {
            min_window
        },
        busiest_tenths,
    }
}

/// Arrivals in each whole second from `from` (the last one may be partial): what a failed
/// rate assertion prints, to show where a stall or a burst was.
pub fn per_second(times: &[Instant], from: Instant) -> Vec<usize> {
    let mut out = Vec::new();
    for t in times.iter().filter(|t| **t >= from) {
        let i = (*t - from).as_secs() as usize;
        if out.len() <= i {
            out.resize(i + 1, 0);
        }
        out[i] += 1;
    }
    out
}

impl Stack {
    /// Stores `limit.<scope>` in `mail_limits` as `jetmail-ingest limits set` does: `domains`
    /// empty for the global limit; `cooldown` of a 421 back-off (default one minute).
    pub async fn set_limit(
        &self,
        domains: &[&str],
        rate: &str,
        cooldown: Option<Duration>,
    ) -> anyhow::Result<LimitSpec> {
        let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
        let spec = LimitSpec::new(&domains, rate, None, cooldown.map(|c| c.as_millis() as u64))?;
        self.put_limit(spec).await
    }

    /// Like [`Stack::set_limit`] with a fleet-wide session cap (`limits set --concurrency`).
    pub async fn set_limit_capped(
        &self,
        domains: &[&str],
        rate: &str,
        concurrency: u32,
    ) -> anyhow::Result<LimitSpec> {
        let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
        self.put_limit(LimitSpec::new(&domains, rate, Some(concurrency), None)?)
            .await
    }

    async fn put_limit(&self, spec: LimitSpec) -> anyhow::Result<LimitSpec> {
        self.topo
            .limits
            .put(
                topology::limit_key(&spec.scope),
                serde_json::to_vec(&spec)?.into(),
            )
            .await?;
        Ok(spec)
    }

    /// The back-off a 421 or 4.7.x reply left on `scope`, if any.
    pub async fn backoff(&self, scope: &Scope) -> Option<Backoff> {
        let b = self
            .topo
            .limits
            .get(topology::backoff_key(scope))
            .await
            .ok()??;
        serde_json::from_slice(&b).ok()
    }

    /// Messages waiting in MAIL_HELD.
    pub async fn held_len(&self) -> u64 {
        let mut s = self.topo.held.clone();
        s.info().await.map(|i| i.state.messages).unwrap_or(u64::MAX)
    }

    /// When each recipient whose address ends with `suffix` arrived at the sink, sorted.
    pub fn arrival_times(&self, suffix: &str) -> Vec<Instant> {
        let mut t: Vec<Instant> = self
            .sink
            .arrivals()
            .into_iter()
            .filter(|a| a.rcpt.ends_with(suffix))
            .map(|a| a.at)
            .collect();
        t.sort_unstable();
        t
    }

    /// Writes a CSV with an `email` column holding `emails`, in that order.
    pub fn write_emails(
        &self,
        name: &str,
        emails: impl IntoIterator<Item = String>,
    ) -> anyhow::Result<std::path::PathBuf> {
        use std::io::Write;
        let path = self.dir.path().join(name);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        writeln!(f, "email")?;
        for e in emails {
            writeln!(f, "{e}")?;
        }
        f.flush()?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_what_falls_inside() {
        let t0 = Instant::now();
        // 10/s for 3 s, then a burst of 20 in the last 100 ms.
        let mut times: Vec<Instant> = (0..30)
            .map(|i| t0 + Duration::from_millis(i * 100))
            .collect();
        times.extend((0..20).map(|i| t0 + Duration::from_millis(2_900 + i * 5)));
        times.sort_unstable();
        let r = rate_between(&times, t0, t0 + Duration::from_secs(3));
        assert_eq!(r.count, 50);
        assert_eq!(r.min_window, 10);
        assert_eq!(r.max_window, 30);
        assert!((r.mean - 50.0 / 3.0).abs() < 1e-9);
    }
}
