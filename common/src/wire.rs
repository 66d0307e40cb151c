//! Types that cross process boundaries. They are a contract between processes that may run
//! different versions during a rolling upgrade: each carries a version field `v`, new fields
//! are added with `#[serde(default)]`, and none is an internal type re-used for convenience.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const WIRE_VERSION: u32 = 1;

/// Serde default of every `v` field: a message without one is version 1.
pub fn wire_version() -> u32 {
    WIRE_VERSION
}

/// Template variables of one recipient (CSV columns other than `email`).
pub type Vars = BTreeMap<String, String>;

/// One recipient of a campaign, as published to MAIL_OUTBOX. Never the body: that is stored
/// once, in the campaign record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    #[serde(default = "wire_version")]
    pub v: u32,
    pub campaign: String,
    /// 1-based position of the recipient among the campaign's accepted recipients.
    pub seq: u64,
    pub email: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: Vars,
    /// How many times this recipient was replayed from MAIL_DEAD (0 for the first publish).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replay: u32,
    /// When ingest published it (ms since epoch), for latency measurement.
    #[serde(default)]
    pub published_ms: u64,
    /// The recipient's signed one-click unsubscribe token
    /// ([`crate::compliance::UnsubscribeKey::sign`]), made by ingest, which alone holds the
    /// secret; the sender only puts it in the links of [`CampaignRecord::unsubscribe`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe_token: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a campaign sends: stored once in `mail_campaigns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignSpec {
    pub from: String,
    /// minijinja template of the subject.
    pub subject: String,
    /// minijinja template of the text body.
    pub text: String,
    /// minijinja template of the HTML body; with it the mail is multipart/alternative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    /// Ingest is still publishing recipients.
    Publishing,
    /// Published, waiting for its send-at time (see [`CampaignSchedule::send_at_ms`]).
    Scheduled,
    Running,
    Paused,
    Cancelled,
    /// Every recipient is accounted for.
    Done,
}

impl CampaignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Publishing => "publishing",
            CampaignStatus::Scheduled => "scheduled",
            CampaignStatus::Running => "running",
            CampaignStatus::Paused => "paused",
            CampaignStatus::Cancelled => "cancelled",
            CampaignStatus::Done => "done",
        }
    }
}

/// How far ingest got. A resubmitted campaign resumes after `published_through`, which is
/// what makes a retried submit safe beyond the broker's duplicate window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishProgress {
    /// Every recipient with `seq <= published_through` has a publish ack.
    pub published_through: u64,
    /// Set when the whole input was read and acknowledged.
    pub complete: bool,
    pub rejected: u64,
    pub duplicates: u64,
    /// Recipients on the suppression list at submit: each took a sequence number and was
    /// settled at once as a `suppressed` event, never published to MAIL_OUTBOX.
    #[serde(default)]
    pub suppressed: u64,
    /// First rejected rows (capped), so a replayed request can answer as the first did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected_sample: Vec<RejectedRow>,
}

/// A row refused at submit time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRow {
    /// Line number in the file (1-based, the header is line 1), or index + 1 in a JSON list.
    pub line: u64,
    pub email: String,
    pub reason: String,
}

/// When and how fast a campaign may send: set at submit, send-at changeable until it starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CampaignSchedule {
    /// Nothing is delivered before this (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at_ms: Option<u64>,
    /// Nothing is delivered after this; what is left is dead-lettered as `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// The campaign's own rate (warm-up of a new sending domain), fleet-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<crate::limits::Rate>,
}

impl CampaignSchedule {
    pub fn is_empty(&self) -> bool {
        *self == CampaignSchedule::default()
    }

    /// True while `now_ms` is before the send-at time.
    pub fn waiting(&self, now_ms: u64) -> bool {
        self.send_at_ms.is_some_and(|at| now_ms < at)
    }

    /// True once `now_ms` is past the deadline.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.deadline_ms.is_some_and(|d| now_ms >= d)
    }
}

/// Where a campaign's unsubscribe links point: `<base_url>/unsubscribe/<token>` (RFC 8058
/// one-click) and, when a mailbox is configured, `mailto:<mailto>?subject=unsubscribe-<token>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubscribeLinks {
    /// `--public-url` of ingest, without a trailing slash.
    pub base_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailto: Option<String>,
}

/// The record of one campaign, key `<campaign>` in `mail_campaigns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRecord {
    #[serde(default = "wire_version")]
    pub v: u32,
    pub id: String,
    pub spec: CampaignSpec,
    pub status: CampaignStatus,
    pub created_ms: u64,
    #[serde(default)]
    pub publish: PublishProgress,
    /// The Idempotency-Key it was created with over HTTP, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Hash of the request that created it: the same key with another request is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "CampaignSchedule::is_empty")]
    pub schedule: CampaignSchedule,
    /// Unsubscribe links of every mail of this campaign (absent: no List-Unsubscribe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<UnsubscribeLinks>,
    /// A test send: delivered like a campaign, but listed and counted nowhere.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
}

/// Delivery progress of one campaign, key `<campaign>.progress`, written by the monitor only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CampaignProgress {
    #[serde(default = "wire_version")]
    pub v: u32,
    pub sent: u64,
    pub failed: u64,
    pub dead: u64,
    pub deferred: u64,
    pub cancelled: u64,
    pub suppressed: u64,
    /// Not delivered by the campaign's deadline: in MAIL_DEAD with reason `expired`.
    #[serde(default)]
    pub expired: u64,
    /// Stream sequence of the last MAIL_EVENTS event folded into these counters: the monitor
    /// skips anything at or below it, so counting survives a monitor restart.
    pub last_event_seq: u64,
    pub updated_ms: u64,
    /// Time of the first and latest `sent` event, for rates.
    #[serde(default)]
    pub first_sent_ms: u64,
    #[serde(default)]
    pub last_sent_ms: u64,
}

impl CampaignProgress {
    /// Recipients that reached a final outcome.
    pub fn settled(&self) -> u64 {
        self.sent + self.failed + self.dead + self.cancelled + self.suppressed + self.expired
    }
}

/// Outcome of one delivery attempt or of a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The relay accepted it.
    Sent,
    /// A transient failure; it will be retried.
    Deferred,
    /// A permanent failure (5xx): in MAIL_DEAD.
    Failed,
    /// Retries exhausted, undecodable, or crashed its sender every time: in MAIL_DEAD.
    Dead,
    /// Not sent on purpose. Reserved for the suppression list (unsubscribes, complaints,
    /// hard bounces), which comes next: no sender produces it yet, but the monitor counts it
    /// and the web UI shows it, so events from a newer sender are understood by an older
    /// monitor during a rolling upgrade.
    Suppressed,
    /// Its campaign was cancelled.
    Cancelled,
    /// Not delivered by its campaign's deadline: in MAIL_DEAD.
    Expired,
    /// A dead letter was replayed: it leaves the failed/dead count and is pending again.
    Replayed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Deferred => "deferred",
            Outcome::Failed => "failed",
            Outcome::Dead => "dead",
            Outcome::Suppressed => "suppressed",
            Outcome::Cancelled => "cancelled",
            Outcome::Expired => "expired",
            Outcome::Replayed => "replayed",
        }
    }
}

/// One event in MAIL_EVENTS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryEvent {
    #[serde(default = "wire_version")]
    pub v: u32,
    pub campaign: String,
    pub seq: u64,
    pub outcome: Outcome,
    /// For `replayed`: the outcome being undone (`failed` or `dead`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<Outcome>,
    #[serde(default)]
    pub sender: String,
    pub at_ms: u64,
    /// Publish time of the recipient message, for end-to-end latency.
    #[serde(default)]
    pub published_ms: u64,
}

impl DeliveryEvent {
    /// The event for `outcome` of recipient `m`, reported by `sender`, now.
    pub fn new(m: &OutboxMessage, outcome: Outcome, sender: &str) -> Self {
        Self {
            v: WIRE_VERSION,
            campaign: m.campaign.clone(),
            seq: m.seq,
            outcome,
            undoes: None,
            sender: sender.to_string(),
            at_ms: crate::now_ms(),
            published_ms: m.published_ms,
        }
    }
}

/// One failed delivery attempt, as kept in a dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub at_ms: u64,
    pub sender: String,
    pub relay: String,
    /// SMTP reply code when the relay answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    pub error: String,
}

/// One entry of MAIL_DEAD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    #[serde(default = "wire_version")]
    pub v: u32,
    pub campaign: String,
    /// Absent when the original could not be decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// `failed` (permanent) or `dead` (retries exhausted, undecodable, crashed its sender).
    pub outcome: Outcome,
    /// A short reason, e.g. `550 5.1.1 user unknown` or `undecodable: …`.
    pub reason: String,
    /// The original message body, as published.
    pub original: String,
    /// The original subject.
    pub original_subject: String,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    pub at_ms: u64,
}

/// Circuit breaker state of one relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayHealth {
    /// The relay URL without its password.
    pub url: String,
    pub circuit: CircuitState,
    pub consecutive_failures: u32,
    /// Why the relay itself is failing (connect, TLS, EHLO, AUTH, MAIL FROM), password
    /// redacted; `None` while it works. Older senders do not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Life-cycle state a sender reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderState {
    /// Pulling and sending.
    Up,
    /// Every relay's circuit is open: not pulling.
    Blocked,
    /// Lost the broker connection: starting no new send.
    Disconnected,
    /// SIGTERM received: finishing what is in flight.
    Draining,
    /// Exited cleanly.
    Stopped,
    /// Set by the monitor after missed heartbeats.
    Down,
}

/// Published by each sender on `mail.heartbeat.<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    #[serde(default = "wire_version")]
    pub v: u32,
    pub id: String,
    pub host: String,
    pub state: SenderState,
    pub relays: Vec<RelayHealth>,
    pub in_flight: u64,
    pub sent: u64,
    pub failed: u64,
    pub deferred: u64,
    pub concurrency: u64,
    pub interval_ms: u64,
    pub started_ms: u64,
    pub at_ms: u64,
}

/// Heartbeat intervals a sender may miss before it is shown `down` (by the monitor in the
/// health map, by the web UI on its own clock).
pub const MISSED_BEATS: u64 = 3;

/// True when a sender last heard of at `last_seen_ms`, beating every `interval_ms`, has been
/// silent for more than [`MISSED_BEATS`] intervals at `now_ms`.
pub fn missed_beats(last_seen_ms: u64, interval_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(last_seen_ms) > MISSED_BEATS * interval_ms.max(100)
}

/// What the monitor keeps per sender in `mail_senders`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SenderHealth {
    #[serde(default = "wire_version")]
    pub v: u32,
    pub id: String,
    pub host: String,
    /// The sender's own state, or `down` once it missed three heartbeats.
    pub state: SenderState,
    pub relays: Vec<RelayHealth>,
    pub in_flight: u64,
    pub sent: u64,
    pub failed: u64,
    pub deferred: u64,
    /// Messages per second over the last heartbeat interval.
    pub rate: f64,
    /// Its send slots (`--concurrency`): the fleet's sum must fit the consumer's MaxAckPending.
    #[serde(default)]
    pub concurrency: u64,
    pub interval_ms: u64,
    pub last_seen_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_message_round_trips_and_tolerates_unknown_fields() {
        let m = OutboxMessage {
            v: 1,
            campaign: "c1".into(),
            seq: 7,
            email: "a@example.com".into(),
            vars: [("name".to_string(), "Ann".to_string())].into(),
            replay: 0,
            published_ms: 5,
            unsubscribe_token: None,
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<OutboxMessage>(&json).unwrap(), m);
        let newer = r#"{"v":2,"campaign":"c1","seq":1,"email":"a@example.com","future":true}"#;
        assert_eq!(serde_json::from_str::<OutboxMessage>(newer).unwrap().seq, 1);
    }
}
