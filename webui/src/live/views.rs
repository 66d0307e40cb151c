//! What pages and live events show: campaigns and senders as view models, built by pure
//! functions from the wire types, so the templates, the JavaScript and the tests read the
//! same fields.

use jetmail_common::wire::{
    self, CampaignProgress, CampaignRecord, CircuitState, SenderHealth, SenderState,
};
use serde::Serialize;

use super::samples::{Sample, Samples};
use crate::render::format_utc;

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
    /// Not delivered by the deadline: dead-lettered as `expired`.
    pub expired: u64,
    /// Still waiting, in MAIL_OUTBOX or held in MAIL_HELD, by the broker's count.
    pub pending: u64,
    /// The schedule as pages show it (empty when not set): send-at, deadline, own rate.
    pub send_at: String,
    pub deadline: String,
    pub schedule_rate: String,
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
    /// Why the relay itself fails (connect, TLS, AUTH …), as the sender reported it.
    pub last_error: Option<String>,
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
/// [`wire::MISSED_BEATS`] intervals without a new entry, even before the monitor says so (the
/// monitor applies the same rule). The monitor rewrites the entry on every heartbeat, so a
/// silent entry is a silent sender.
pub fn shown_sender_state(h: &SenderHealth, received_ms: u64, now: u64) -> &'static str {
    if wire::missed_beats(received_ms, h.interval_ms, now) {
        "down"
    } else {
        sender_state_str(h.state)
    }
}

pub(super) fn sender_view(h: &SenderHealth, received_ms: u64, now: u64) -> SenderView {
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
                last_error: r.last_error.clone(),
            })
            .collect(),
        in_flight: h.in_flight,
        sent: h.sent,
        failed: h.failed,
        deferred: h.deferred,
        rate: h.rate,
        interval_ms: h.interval_ms,
        last_seen_ms: h.last_seen_ms,
        last_seen: format_utc(h.last_seen_ms),
        age_ms: now.saturating_sub(received_ms),
        now_ms: now,
    }
}

/// A campaign's summary from its record, its progress, the broker's pending count and its
/// counter history.
pub(super) fn campaign_summary(
    r: &CampaignRecord,
    p: &CampaignProgress,
    pending: u64,
    samples: &Samples,
    now: u64,
) -> CampaignSummary {
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
    CampaignSummary {
        id: r.id.clone(),
        from: r.spec.from.clone(),
        subject: r.spec.subject.clone(),
        status: r.status.as_str(),
        created_ms: r.created_ms,
        created: format_utc(r.created_ms),
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
        expired: p.expired,
        pending,
        send_at: r.schedule.send_at_ms.map(format_utc).unwrap_or_default(),
        deadline: r.schedule.deadline_ms.map(format_utc).unwrap_or_default(),
        schedule_rate: r.schedule.rate.map(|r| r.to_string()).unwrap_or_default(),
        settled: p.settled(),
        rate: samples.rate(p.sent, now),
        avg_rate,
        pct_sent: pct(p.sent),
        pct_failed: pct(p.failed + p.dead),
        pct_other: pct(p.cancelled + p.suppressed + p.expired),
        sample: samples.last(),
        now_ms: now,
    }
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
                last_error: Some("connect: refused".into()),
            }],
            in_flight: 1,
            sent: 2,
            failed: 0,
            deferred: 0,
            rate: 0.0,
            concurrency: 32,
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
        assert_eq!(v.relays[0].last_error.as_deref(), Some("connect: refused"));
        assert_eq!(v.age_ms, 100);
        let h = health(SenderState::Down, 10_000);
        assert_eq!(shown_sender_state(&h, 10_000, 10_000), "down");
    }
}
