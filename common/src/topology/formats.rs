//! Every subject, KV key and message id jetmail builds from the names in [`super`], and the
//! parsers that read them back: a format is written here once, built by one function and
//! parsed by its twin, and nowhere else.

use super::*;

/// `mail.outbox.<campaign>.<domain token>`.
pub fn outbox_subject(campaign: &str, domain_token: &str) -> String {
    format!("{OUTBOX_SUBJECT_PREFIX}.{campaign}.{domain_token}")
}
/// Every outbox subject of one campaign, for counting and purging.
pub fn outbox_campaign_filter(campaign: &str) -> String {
    format!("{OUTBOX_SUBJECT_PREFIX}.{campaign}.*")
}
/// Every outbox subject: what the senders consumer and the outbox stream cover.
pub fn outbox_filter() -> String {
    format!("{OUTBOX_SUBJECT_PREFIX}.>")
}

/// `mail.held.<scope>.<campaign>.<domain token>`: where a recipient waits for `scope`.
pub fn held_subject(scope: &crate::limits::Scope, campaign: &str, domain_token: &str) -> String {
    format!("{HELD_SUBJECT_PREFIX}.{scope}.{campaign}.{domain_token}")
}
/// Every held subject of one scope: what its consumer reads.
pub fn held_scope_filter(scope: &crate::limits::Scope) -> String {
    format!("{HELD_SUBJECT_PREFIX}.{scope}.>")
}
/// Every held subject of one campaign, whatever the scope (counting, purging).
pub fn held_campaign_filter(campaign: &str) -> String {
    format!("{HELD_SUBJECT_PREFIX}.*.{campaign}.*")
}
/// Every held subject.
pub fn held_filter() -> String {
    format!("{HELD_SUBJECT_PREFIX}.>")
}
/// Name of the durable consumer of one held scope.
pub fn held_consumer_name(scope: &crate::limits::Scope) -> String {
    format!("{HELD_CONSUMER_PREFIX}{scope}")
}
/// `Nats-Msg-Id` of a recipient moved to a held scope: a retried move is dropped.
pub fn held_msg_id(scope: &crate::limits::Scope, campaign: &str, seq: u64, replay: u32) -> String {
    format!("held.{scope}.{campaign}.{seq}.r{replay}")
}

/// The parts of a held subject, parsed by [`HeldSubject::parse`] only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSubject<'a> {
    pub scope: crate::limits::Scope,
    pub campaign: &'a str,
    pub domain_token: &'a str,
}

impl<'a> HeldSubject<'a> {
    pub fn parse(subject: &'a str) -> Option<Self> {
        let rest = subject
            .strip_prefix(HELD_SUBJECT_PREFIX)?
            .strip_prefix('.')?;
        let mut parts = rest.splitn(3, '.');
        let scope = crate::limits::Scope::parse(parts.next()?).ok()?;
        let campaign = parts.next()?;
        let domain_token = parts.next()?;
        if validate_campaign_id(campaign).is_err()
            || domain_token.is_empty()
            || domain_token.contains('.')
        {
            return None;
        }
        Some(Self {
            scope,
            campaign,
            domain_token,
        })
    }
}

/// The broker's advisories that a stream or the consumer a sender depends on has a new leader: in
/// a cluster the new leader may not have the last acks and ledger writes the old one
/// acknowledged (its `sent` events are the ledger), so a sender treats one like a reconnect (`sender/src/recent.rs`).
pub fn leader_elected_advisories() -> Vec<String> {
    let stream = |s: &str| format!("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{s}");
    vec![
        stream(OUTBOX_STREAM),
        stream(HELD_STREAM),
        stream(EVENTS_STREAM),
        format!("$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.{OUTBOX_STREAM}.{SENDERS_CONSUMER}"),
        // Not the held consumers': lanes create them on demand (a fresh consumer's election
        // is no loss, and would pause the fleet), and a held message's ledger entry is always
        // checked before it is sent.
    ]
}

/// The parts of an outbox subject, parsed by [`OutboxSubject::parse`] and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxSubject<'a> {
    pub campaign: &'a str,
    /// The recipient's domain as a subject token (see [`crate::address::domain_token`]).
    pub domain_token: &'a str,
}

impl<'a> OutboxSubject<'a> {
    /// `None` for anything that is not `mail.outbox.<valid campaign id>.<token>`.
    pub fn parse(subject: &'a str) -> Option<Self> {
        let rest = subject
            .strip_prefix(OUTBOX_SUBJECT_PREFIX)?
            .strip_prefix('.')?;
        let (campaign, domain_token) = rest.split_once('.')?;
        if validate_campaign_id(campaign).is_err()
            || domain_token.is_empty()
            || domain_token.contains('.')
        {
            return None;
        }
        Some(Self {
            campaign,
            domain_token,
        })
    }
}

/// Subject of one recipient's outcome event: `mail.events.<campaign>.<outcome>.<seq>`. A
/// subject per recipient makes the `sent` events the idempotency ledger as well: "was this
/// recipient mailed?" is the last message on `mail.events.<campaign>.sent.<seq>`.
pub fn event_subject(campaign: &str, outcome: crate::wire::Outcome, seq: u64) -> String {
    format!(
        "{EVENTS_SUBJECT_PREFIX}.{campaign}.{}.{seq}",
        outcome.as_str()
    )
}
/// Every event subject, for the monitor's consumer.
pub fn events_filter() -> String {
    format!("{EVENTS_SUBJECT_PREFIX}.>")
}
/// The events of one campaign (or every campaign), of one outcome (or every outcome).
pub fn events_of(campaign: Option<&str>, outcome: Option<crate::wire::Outcome>) -> String {
    format!(
        "{EVENTS_SUBJECT_PREFIX}.{}.{}.*",
        campaign.unwrap_or("*"),
        outcome.map(|o| o.as_str()).unwrap_or("*")
    )
}
pub fn dead_subject(campaign: &str) -> String {
    format!("{DEAD_SUBJECT_PREFIX}.{campaign}")
}
pub fn dead_filter(campaign: Option<&str>) -> String {
    match campaign {
        Some(c) => dead_subject(c),
        None => format!("{DEAD_SUBJECT_PREFIX}.>"),
    }
}
pub fn heartbeat_subject(sender: &str) -> String {
    format!("{HEARTBEAT_SUBJECT_PREFIX}.{sender}")
}
pub fn heartbeat_filter() -> String {
    format!("{HEARTBEAT_SUBJECT_PREFIX}.*")
}

/// Key of a campaign's record in [`CAMPAIGNS_BUCKET`]: the campaign id itself.
pub fn campaign_key(campaign: &str) -> String {
    campaign.to_string()
}
/// Key of a campaign's delivery progress in [`CAMPAIGNS_BUCKET`]. Kept apart from the record
/// so that senders, which watch records for status changes, are not woken by every counter.
pub fn progress_key(campaign: &str) -> String {
    format!("{campaign}{PROGRESS_KEY_SUFFIX}")
}
const PROGRESS_KEY_SUFFIX: &str = ".progress";
/// Key filter matching campaign records only (single-token keys), not progress keys.
pub const CAMPAIGN_RECORDS_FILTER: &str = "*";

/// What a key of [`CAMPAIGNS_BUCKET`] holds, parsed by [`CampaignsKey::parse`] only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignsKey<'a> {
    /// The record of this campaign.
    Record(&'a str),
    /// The delivery progress of this campaign.
    Progress(&'a str),
}

impl<'a> CampaignsKey<'a> {
    /// `None` for a key jetmail does not write.
    pub fn parse(key: &'a str) -> Option<Self> {
        let (id, kind) = match key.strip_suffix(PROGRESS_KEY_SUFFIX) {
            Some(id) => (id, CampaignsKey::Progress as fn(&'a str) -> Self),
            None => (key, CampaignsKey::Record as fn(&'a str) -> Self),
        };
        validate_campaign_id(id).ok().map(|_| kind(id))
    }

    pub fn campaign(self) -> &'a str {
        match self {
            CampaignsKey::Record(c) | CampaignsKey::Progress(c) => c,
        }
    }
}

/// Key of a limit in [`LIMITS_BUCKET`].
pub fn limit_key(scope: &crate::limits::Scope) -> String {
    format!("{LIMIT_KEY_PREFIX}.{scope}")
}
/// Key of a scope's shared budget in [`LIMITS_BUCKET`].
pub fn budget_key(scope: &crate::limits::Scope) -> String {
    format!("{BUDGET_KEY_PREFIX}.{scope}")
}
/// Key of a scope's fleet-wide back-off in [`LIMITS_BUCKET`].
pub fn backoff_key(scope: &crate::limits::Scope) -> String {
    format!("{BACKOFF_KEY_PREFIX}.{scope}")
}
const LIMIT_KEY_PREFIX: &str = "limit";
const BUDGET_KEY_PREFIX: &str = "budget";
const BACKOFF_KEY_PREFIX: &str = "backoff";
/// Key filter of every limit (what senders watch).
pub fn limits_filter() -> String {
    format!("{LIMIT_KEY_PREFIX}.*")
}
/// Key filter of every back-off.
pub fn backoffs_filter() -> String {
    format!("{BACKOFF_KEY_PREFIX}.*")
}

/// What a key of [`LIMITS_BUCKET`] holds, parsed by [`LimitsKey::parse`] only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitsKey {
    Limit(crate::limits::Scope),
    Budget(crate::limits::Scope),
    Backoff(crate::limits::Scope),
}

impl LimitsKey {
    pub fn parse(key: &str) -> Option<Self> {
        let (kind, scope) = key.split_once('.')?;
        let scope = crate::limits::Scope::parse(scope).ok()?;
        match kind {
            LIMIT_KEY_PREFIX => Some(LimitsKey::Limit(scope)),
            BUDGET_KEY_PREFIX => Some(LimitsKey::Budget(scope)),
            BACKOFF_KEY_PREFIX => Some(LimitsKey::Backoff(scope)),
            _ => None,
        }
    }
}

/// Key of one recipient's failed attempts in [`ATTEMPTS_BUCKET`].
pub fn attempts_key(campaign: &str, seq: u64) -> String {
    format!("{campaign}.{seq}")
}

/// `Nats-Msg-Id` of a recipient message: the same campaign and sequence always get the same
/// id, so a retried publish is dropped by the broker. A replayed dead letter adds its replay
/// generation, because the broker remembers ids for the duplicate window.
pub fn outbox_msg_id(campaign: &str, seq: u64, replay: u32) -> String {
    if replay == 0 {
        format!("{campaign}.{seq}")
    } else {
        format!("{campaign}.{seq}.r{replay}")
    }
}
/// `Nats-Msg-Id` of a message a sender re-queued to MAIL_HELD to restart its delivery count
/// (by the original's stream and sequence: one re-queue per original).
pub fn requeue_msg_id(stream: &str, stream_seq: u64) -> String {
    format!("requeue.{stream}.{stream_seq}")
}
/// Id of an outcome event. Deferrals carry their delivery number: each is its own event.
pub fn event_msg_id(
    campaign: &str,
    seq: u64,
    replay: u32,
    outcome: crate::wire::Outcome,
    delivery: Option<i64>,
) -> String {
    match delivery {
        Some(d) => format!("{campaign}.{seq}.r{replay}.{}.{d}", outcome.as_str()),
        None => format!("{campaign}.{seq}.r{replay}.{}", outcome.as_str()),
    }
}
/// Id of a dead letter: one per recipient and replay generation.
pub fn dead_msg_id(campaign: &str, seq: u64, replay: u32) -> String {
    format!("{campaign}.{seq}.r{replay}.dead")
}
/// Id of the dead letter of an undecodable message, by its stream and stream sequence.
pub fn poison_msg_id(stream: &str, stream_seq: u64) -> String {
    format!("poison.{stream}.{stream_seq}")
}

/// A campaign id that cannot be a subject token or KV key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CampaignIdError {
    #[error("campaign id must be 1 to 64 characters")]
    Length,
    #[error("campaign id may hold only letters, digits, '-' and '_'")]
    Alphabet,
}

/// Campaign ids become subject tokens and KV keys: keep them to a safe alphabet.
pub fn validate_campaign_id(id: &str) -> Result<(), CampaignIdError> {
    if id.is_empty() || id.len() > 64 {
        return Err(CampaignIdError::Length);
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(CampaignIdError::Alphabet);
    }
    Ok(())
}

/// Sender ids are subject tokens and KV keys too.
pub fn sanitize_sender_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Outcome;

    #[test]
    fn outbox_subjects_round_trip() {
        let s = outbox_subject("c-1_x", "example_com");
        assert_eq!(
            OutboxSubject::parse(&s),
            Some(OutboxSubject {
                campaign: "c-1_x",
                domain_token: "example_com"
            })
        );
        for bad in [
            "mail.outbox",
            "mail.outbox.c1",
            "mail.outbox.c1.",
            "mail.outbox..example_com",
            "mail.outbox.c1.example.com",
            "mail.outboxx.c1.example_com",
            "mail.events.c1.sent",
        ] {
            assert_eq!(OutboxSubject::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn held_subjects_round_trip() {
        let scope = crate::limits::Scope::for_domains("gmail.com");
        let s = held_subject(&scope, "c1", "gmail_com");
        assert_eq!(s, "mail.held.d-gmail_com.c1.gmail_com");
        let p = HeldSubject::parse(&s).unwrap();
        assert_eq!(
            (p.scope, p.campaign, p.domain_token),
            (scope, "c1", "gmail_com")
        );
        assert!(HeldSubject::parse("mail.held.nope.c1.x_y").is_none());
        assert!(HeldSubject::parse("mail.held.global.c1").is_none());
        assert_eq!(
            held_consumer_name(&crate::limits::Scope::Campaign("c1".into())),
            "held_c-c1"
        );
    }

    #[test]
    fn limits_keys_round_trip() {
        use crate::limits::Scope;
        let g = Scope::Global;
        assert_eq!(
            LimitsKey::parse(&limit_key(&g)),
            Some(LimitsKey::Limit(g.clone()))
        );
        assert_eq!(
            LimitsKey::parse(&budget_key(&g)),
            Some(LimitsKey::Budget(g.clone()))
        );
        assert_eq!(
            LimitsKey::parse(&backoff_key(&g)),
            Some(LimitsKey::Backoff(g))
        );
        assert_eq!(LimitsKey::parse("limit.nope"), None);
    }

    #[test]
    fn campaign_keys_round_trip() {
        assert_eq!(
            CampaignsKey::parse(&campaign_key("c1")),
            Some(CampaignsKey::Record("c1"))
        );
        assert_eq!(
            CampaignsKey::parse(&progress_key("c1")),
            Some(CampaignsKey::Progress("c1"))
        );
        assert_eq!(CampaignsKey::parse("c1.other"), None);
        assert_eq!(CampaignsKey::parse(""), None);
        assert_eq!(CampaignsKey::Progress("c9").campaign(), "c9");
    }

    #[test]
    fn message_ids_are_distinct_per_purpose() {
        let ids = [
            outbox_msg_id("c", 1, 0),
            outbox_msg_id("c", 1, 1),
            event_msg_id("c", 1, 0, Outcome::Sent, None),
            event_msg_id("c", 1, 0, Outcome::Deferred, Some(2)),
            dead_msg_id("c", 1, 0),
            poison_msg_id(OUTBOX_STREAM, 1),
            poison_msg_id(HELD_STREAM, 1),
            requeue_msg_id(OUTBOX_STREAM, 1),
        ];
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn campaign_ids_keep_to_a_safe_alphabet() {
        assert!(validate_campaign_id("c1-a_b").is_ok());
        assert_eq!(validate_campaign_id(""), Err(CampaignIdError::Length));
        assert_eq!(validate_campaign_id("a.b"), Err(CampaignIdError::Alphabet));
        assert_eq!(validate_campaign_id("a*"), Err(CampaignIdError::Alphabet));
    }
}
