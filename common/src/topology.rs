//! The one owner of every JetStream name and config: streams, the consumer, subjects and KV
//! buckets are written here once and nowhere else. [`ensure`] creates what is missing and is
//! idempotent, so every service calls it at start-up and any service may start first.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};

/// Work-queue stream holding one message per recipient still to be delivered.
pub const OUTBOX_STREAM: &str = "MAIL_OUTBOX";
/// Prefix of outbox subjects: `mail.outbox.<campaign>.<domain>`.
pub const OUTBOX_SUBJECT_PREFIX: &str = "mail.outbox";
/// Work-queue stream of recipients held back by a limit or a schedule, one subject per scope:
/// `mail.held.<scope>.<campaign>.<domain>`. A held message waits here, not in a sender and
/// not in a nak: it spends no delivery and no MaxAckPending, and never blocks other scopes.
pub const HELD_STREAM: &str = "MAIL_HELD";
pub const HELD_SUBJECT_PREFIX: &str = "mail.held";
/// Held-scope consumers are named `held_<scope>`; the server removes one idle this long.
pub const HELD_CONSUMER_PREFIX: &str = "held_";
pub const HELD_CONSUMER_INACTIVE: Duration = Duration::from_secs(3600);
/// The durable pull consumer every sender shares; the broker balances the load across it.
pub const SENDERS_CONSUMER: &str = "senders";
/// Stream of per-recipient outcome events: `mail.events.<campaign>.<outcome>`.
pub const EVENTS_STREAM: &str = "MAIL_EVENTS";
pub const EVENTS_SUBJECT_PREFIX: &str = "mail.events";
/// Stream of dead letters: `mail.dead.<campaign>`.
pub const DEAD_STREAM: &str = "MAIL_DEAD";
pub const DEAD_SUBJECT_PREFIX: &str = "mail.dead";
/// Core-NATS subject of sender heartbeats: `mail.heartbeat.<sender>`.
pub const HEARTBEAT_SUBJECT_PREFIX: &str = "mail.heartbeat";
/// KV bucket of campaign records (spec, status, publishing progress) and their delivery
/// progress (`<campaign>.progress`).
pub const CAMPAIGNS_BUCKET: &str = "mail_campaigns";
/// KV bucket of sender health, one key per sender id.
pub const SENDERS_BUCKET: &str = "mail_senders";
/// KV bucket used as the idempotency ledger: `<campaign>.<seq>` once the relay accepted it.
pub const SENT_BUCKET: &str = "mail_sent";
/// KV bucket of failed attempts per recipient (`<campaign>.<seq>`), so that the dead letter
/// written by whichever sender makes the last attempt carries every earlier one.
pub const ATTEMPTS_BUCKET: &str = "mail_attempts";
/// KV bucket of the suppression list: one key per address ([`crate::compliance::suppression_key`]),
/// never mailed again while present.
pub const SUPPRESSIONS_BUCKET: &str = "mail_suppressions";
/// KV bucket of sending limits (`limit.<scope>`), their shared budgets (`budget.<scope>`)
/// and fleet-wide back-offs (`backoff.<scope>`): see [`crate::limits`] and [`crate::budget`].
pub const LIMITS_BUCKET: &str = "mail_limits";
/// JetStream advisory published when a message of the senders consumer reaches MaxDeliver.
pub const MAX_DELIVERIES_ADVISORY: &str =
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.MAIL_OUTBOX.senders";

/// How long publish ids are remembered for de-duplication. It covers an ingest retry after a
/// crash; longer protection comes from the campaign record's `published_through`.
pub const OUTBOX_DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Default outbox limits; an operator may raise them with `nats stream edit`, and [`ensure`]
/// never lowers them back.
pub const OUTBOX_MAX_BYTES: i64 = 8 * 1024 * 1024 * 1024;
pub const OUTBOX_MAX_MESSAGES: i64 = 50_000_000;
/// Default ack wait of the senders consumer (`jetmail-sender --ack-wait`): at least twice the
/// longest SMTP send a sender allows itself (`--send-timeout`, checked at start-up), so a live
/// send never sees its message redelivered.
pub const SENDERS_ACK_WAIT: Duration = Duration::from_secs(120);
/// Messages nak'ed with a retry delay still count as pending, so this bounds how many
/// recipients can wait for a retry before the consumer stops delivering to *every* sender. It
/// is sized for a million-recipient campaign whose relay is down (about 60 bytes of server
/// memory each), not for the fleet's concurrency.
pub const SENDERS_MAX_ACK_PENDING: i64 = 1_000_000;
/// Default retry schedule; `jetmail-sender --retry-backoff` replaces it.
pub const DEFAULT_RETRY_BACKOFF: &[Duration] = &[
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
];
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEAD_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 3600);
/// Sender entries that stop being refreshed disappear after this.
pub const SENDERS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long the ledger remembers a delivery; a redelivery later than this could mail again.
pub const SENT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

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

pub fn event_subject(campaign: &str, outcome: crate::wire::Outcome) -> String {
    format!("{EVENTS_SUBJECT_PREFIX}.{campaign}.{}", outcome.as_str())
}
/// Every event subject, for the monitor's consumer.
pub fn events_filter() -> String {
    format!("{EVENTS_SUBJECT_PREFIX}.>")
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

/// Key of one recipient in [`SENT_BUCKET`] and [`ATTEMPTS_BUCKET`].
pub fn sent_key(campaign: &str, seq: u64) -> String {
    format!("{campaign}.{seq}")
}
/// Same key in both buckets: one recipient's failed attempts.
pub fn attempts_key(campaign: &str, seq: u64) -> String {
    sent_key(campaign, seq)
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
/// `Nats-Msg-Id` of a message a sender re-published to restart its delivery count (outbox
/// stream sequence of the original: one re-publish per original).
pub fn requeue_msg_id(stream_seq: u64) -> String {
    format!("requeue.{stream_seq}")
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
/// Id of the dead letter of an undecodable outbox message, by its outbox stream sequence.
pub fn poison_msg_id(stream_seq: u64) -> String {
    format!("poison.{stream_seq}")
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

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("stream {name}: {source}")]
    Stream {
        name: &'static str,
        source: async_nats::jetstream::context::CreateStreamError,
    },
    #[error("consumer {name}: {source}")]
    Consumer {
        name: &'static str,
        source: async_nats::jetstream::stream::ConsumerError,
    },
    #[error("changing consumer {name}: {source}")]
    UpdateConsumer {
        name: &'static str,
        source: async_nats::jetstream::stream::ConsumerUpdateError,
    },
    #[error("bucket {name}: {source}")]
    Bucket {
        name: &'static str,
        source: async_nats::jetstream::context::CreateKeyValueError,
    },
}

/// Handles to everything [`ensure`] made sure exists.
#[derive(Clone)]
pub struct Topology {
    pub js: jetstream::Context,
    pub outbox: stream::Stream,
    /// Recipients held back by a limit or a schedule.
    pub held: stream::Stream,
    pub events: stream::Stream,
    pub dead: stream::Stream,
    pub campaigns: kv::Store,
    pub senders: kv::Store,
    pub sent: kv::Store,
    pub attempts: kv::Store,
    /// Sending limits, budgets and back-offs.
    pub limits: kv::Store,
    /// The suppression list.
    pub suppressions: kv::Store,
}

pub fn outbox_config() -> stream::Config {
    stream::Config {
        name: OUTBOX_STREAM.into(),
        description: Some("jetmail: one message per recipient still to deliver".into()),
        subjects: vec![outbox_filter()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        // Full means ingest gets an error it reports to its caller; nothing is dropped.
        discard: stream::DiscardPolicy::New,
        duplicate_window: OUTBOX_DUPLICATE_WINDOW,
        max_bytes: OUTBOX_MAX_BYTES,
        max_messages: OUTBOX_MAX_MESSAGES,
        ..Default::default()
    }
}

pub fn events_config() -> stream::Config {
    stream::Config {
        name: EVENTS_STREAM.into(),
        description: Some("jetmail: one event per recipient outcome".into()),
        subjects: vec![events_filter()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: EVENTS_MAX_AGE,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

pub fn held_config() -> stream::Config {
    stream::Config {
        name: HELD_STREAM.into(),
        description: Some("jetmail: recipients waiting for a limit or a send-at time".into()),
        subjects: vec![held_filter()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        duplicate_window: OUTBOX_DUPLICATE_WINDOW,
        max_bytes: OUTBOX_MAX_BYTES,
        max_messages: OUTBOX_MAX_MESSAGES,
        ..Default::default()
    }
}

/// The consumer of one held scope: the fleet's policy, like the senders consumer, and removed
/// by the server once idle for [`HELD_CONSUMER_INACTIVE`].
pub fn held_consumer_config(
    scope: &crate::limits::Scope,
    policy: &SendersPolicy,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(held_consumer_name(scope)),
        description: Some(format!("jetmail senders: recipients held for {scope}")),
        filter_subject: held_scope_filter(scope),
        inactive_threshold: HELD_CONSUMER_INACTIVE,
        ..policy.consumer_config()
    }
}

pub fn dead_config() -> stream::Config {
    stream::Config {
        name: DEAD_STREAM.into(),
        description: Some(
            "jetmail: recipients that could not be delivered, with every attempt".into(),
        ),
        subjects: vec![dead_filter(None)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: DEAD_MAX_AGE,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// The fleet-wide delivery policy, kept on the senders consumer itself so that every sender
/// follows the same one: the retry schedule (MaxDeliver is one first attempt plus one per
/// delay; the delays are in the consumer's metadata) and the ack wait. [`ensure`] creates the
/// consumer once with [`SendersPolicy::default`]; only [`apply_senders_policy`] (`jetmail-ingest
/// topology apply`) changes it. A sender started with other flags says so and follows this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendersPolicy {
    /// Nak delay after the n-th failed delivery.
    pub retry_backoff: Vec<Duration>,
    /// A message whose sender died is redelivered after this.
    pub ack_wait: Duration,
}

impl Default for SendersPolicy {
    fn default() -> Self {
        Self {
            retry_backoff: DEFAULT_RETRY_BACKOFF.to_vec(),
            ack_wait: SENDERS_ACK_WAIT,
        }
    }
}

/// Consumer metadata key holding the retry delays (`30s,2m,…`).
const RETRY_BACKOFF_METADATA: &str = "jetmail.retry_backoff";

impl SendersPolicy {
    /// Deliveries allowed per message: the first plus one per retry delay.
    pub fn max_deliver(&self) -> i64 {
        self.retry_backoff.len() as i64 + 1
    }

    /// The nak delay after failed delivery number `delivery` (1-based); the last delay repeats.
    pub fn retry_delay(&self, delivery: i64) -> Duration {
        let i = (delivery.max(1) as usize - 1).min(self.retry_backoff.len().saturating_sub(1));
        self.retry_backoff
            .get(i)
            .copied()
            .unwrap_or(DEFAULT_RETRY_BACKOFF[0])
    }

    /// The consumer configuration carrying this policy.
    pub fn consumer_config(&self) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(SENDERS_CONSUMER.into()),
            description: Some("jetmail senders: shared by every sender instance".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver(),
            max_ack_pending: SENDERS_MAX_ACK_PENDING,
            metadata: [(
                RETRY_BACKOFF_METADATA.to_string(),
                crate::config::format_durations(&self.retry_backoff),
            )]
            .into(),
            ..Default::default()
        }
    }

    /// The policy a consumer carries. A consumer edited by hand may have lost the delays or
    /// changed MaxDeliver: the count follows MaxDeliver, the delays what is left of them.
    pub fn of(config: &consumer::Config) -> Self {
        let mut delays: Vec<Duration> = config
            .metadata
            .get(RETRY_BACKOFF_METADATA)
            .and_then(|s| crate::config::parse_duration_list(s).ok())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| DEFAULT_RETRY_BACKOFF.to_vec());
        if config.max_deliver > 0 {
            let retries = (config.max_deliver - 1) as usize;
            let last = *delays.last().expect("never empty");
            delays.resize(retries, last);
        }
        Self {
            retry_backoff: delays,
            ack_wait: config.ack_wait,
        }
    }
}

/// The senders consumer (made by [`ensure`] if it is still missing), with the policy it
/// carries as the broker has it.
pub async fn senders_consumer(
    outbox: &stream::Stream,
) -> Result<(consumer::Consumer<consumer::pull::Config>, SendersPolicy), TopologyError> {
    let c = outbox
        .get_or_create_consumer(SENDERS_CONSUMER, SendersPolicy::default().consumer_config())
        .await
        .map_err(|source| TopologyError::Consumer {
            name: SENDERS_CONSUMER,
            source,
        })?;
    let policy = SendersPolicy::of(&c.cached_info().config);
    Ok((c, policy))
}

/// Changes the fleet's delivery policy: the one deliberate rewrite of the senders consumer.
/// Running senders pick it up when they next (re)create their consumer handle; new senders
/// at once.
pub async fn apply_senders_policy(
    topo: &Topology,
    policy: &SendersPolicy,
) -> Result<SendersPolicy, TopologyError> {
    let c = topo
        .outbox
        .update_consumer(policy.consumer_config())
        .await
        .map_err(|source| TopologyError::UpdateConsumer {
            name: SENDERS_CONSUMER,
            source,
        })?;
    Ok(SendersPolicy::of(&c.cached_info().config))
}

fn kv_config(bucket: &str, description: &str, max_age: Duration) -> kv::Config {
    kv::Config {
        bucket: bucket.into(),
        description: description.into(),
        history: 1,
        max_age,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// Creates every stream, the senders consumer and every bucket that does not exist yet, and
/// returns handles to them. Existing objects are left as they are, so a limit an operator
/// changed by hand stays changed.
pub async fn ensure(js: &jetstream::Context) -> Result<Topology, TopologyError> {
    let outbox = get_or_create_stream(js, OUTBOX_STREAM, outbox_config()).await?;
    let held = get_or_create_stream(js, HELD_STREAM, held_config()).await?;
    let events = get_or_create_stream(js, EVENTS_STREAM, events_config()).await?;
    let dead = get_or_create_stream(js, DEAD_STREAM, dead_config()).await?;
    senders_consumer(&outbox).await?;
    let campaigns = get_or_create_bucket(
        js,
        CAMPAIGNS_BUCKET,
        kv_config(
            CAMPAIGNS_BUCKET,
            "jetmail campaigns: spec, status, progress",
            Duration::ZERO,
        ),
    )
    .await?;
    let senders = get_or_create_bucket(
        js,
        SENDERS_BUCKET,
        kv_config(SENDERS_BUCKET, "jetmail sender health map", SENDERS_MAX_AGE),
    )
    .await?;
    let sent = get_or_create_bucket(
        js,
        SENT_BUCKET,
        kv_config(SENT_BUCKET, "jetmail idempotency ledger", SENT_MAX_AGE),
    )
    .await?;
    let attempts = get_or_create_bucket(
        js,
        ATTEMPTS_BUCKET,
        kv_config(
            ATTEMPTS_BUCKET,
            "jetmail failed attempts per recipient",
            SENT_MAX_AGE,
        ),
    )
    .await?;
    let limits = get_or_create_bucket(
        js,
        LIMITS_BUCKET,
        kv_config(
            LIMITS_BUCKET,
            "jetmail sending limits, shared budgets and back-offs",
            Duration::ZERO,
        ),
    )
    .await?;
    let suppressions = get_or_create_bucket(
        js,
        SUPPRESSIONS_BUCKET,
        kv_config(
            SUPPRESSIONS_BUCKET,
            "jetmail suppression list: never mailed again",
            Duration::ZERO,
        ),
    )
    .await?;
    Ok(Topology {
        js: js.clone(),
        limits,
        suppressions,
        held,
        attempts,
        outbox,
        events,
        dead,
        campaigns,
        senders,
        sent,
    })
}

async fn get_or_create_stream(
    js: &jetstream::Context,
    name: &'static str,
    config: stream::Config,
) -> Result<stream::Stream, TopologyError> {
    js.get_or_create_stream(config)
        .await
        .map_err(|source| TopologyError::Stream { name, source })
}

async fn get_or_create_bucket(
    js: &jetstream::Context,
    name: &'static str,
    config: kv::Config,
) -> Result<kv::Store, TopologyError> {
    if let Ok(s) = js.get_key_value(name).await {
        return Ok(s);
    }
    match js.create_key_value(config.clone()).await {
        Ok(s) => Ok(s),
        Err(source) => match js.get_key_value(name).await {
            Ok(s) => Ok(s),
            Err(_) => Err(TopologyError::Bucket { name, source }),
        },
    }
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
            poison_msg_id(1),
            requeue_msg_id(1),
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

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn the_policy_round_trips_through_the_consumer_config() {
        let p = SendersPolicy {
            retry_backoff: vec![Duration::from_millis(200), Duration::from_secs(90)],
            ack_wait: Duration::from_secs(4),
        };
        let cfg = p.consumer_config();
        assert_eq!(cfg.max_deliver, 3);
        let general = consumer::Config {
            max_deliver: cfg.max_deliver,
            ack_wait: cfg.ack_wait,
            metadata: cfg.metadata.clone(),
            ..Default::default()
        };
        assert_eq!(SendersPolicy::of(&general), p);
        assert_eq!(p.retry_delay(1), Duration::from_millis(200));
        assert_eq!(p.retry_delay(9), Duration::from_secs(90));
    }

    #[test]
    fn a_hand_edited_max_deliver_wins_over_the_stored_delays() {
        let general = consumer::Config {
            max_deliver: 4,
            ack_wait: Duration::from_secs(60),
            ..Default::default()
        };
        let p = SendersPolicy::of(&general);
        assert_eq!(p.max_deliver(), 4);
        assert_eq!(p.retry_backoff[..3], DEFAULT_RETRY_BACKOFF[..3]);
    }
}
