//! The one owner of every JetStream name and config: streams, the consumer, subjects and KV
//! buckets are written here once and nowhere else. [`ensure`] creates what is missing and is
//! idempotent, so every service calls it at start-up and any service may start first.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};

/// Work-queue stream holding one message per recipient still to be delivered.
pub const OUTBOX_STREAM: &str = "MAIL_OUTBOX";
/// Prefix of outbox subjects: `mail.outbox.<campaign>.<domain>`.
pub const OUTBOX_SUBJECT_PREFIX: &str = "mail.outbox";
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
pub fn event_subject(campaign: &str, outcome: crate::wire::Outcome) -> String {
    format!("{EVENTS_SUBJECT_PREFIX}.{campaign}.{}", outcome.as_str())
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
/// Key of a campaign's delivery progress in [`CAMPAIGNS_BUCKET`]. Kept apart from the record
/// so that senders, which watch records for status changes, are not woken by every counter.
pub fn progress_key(campaign: &str) -> String {
    format!("{campaign}.progress")
}
/// Key filter matching campaign records only (single-token keys), not progress keys.
pub const CAMPAIGN_RECORDS_FILTER: &str = "*";
pub fn sent_key(campaign: &str, seq: u64) -> String {
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

/// Campaign ids become subject tokens and KV keys: keep them to a safe alphabet.
pub fn validate_campaign_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("campaign id must be 1 to 64 characters".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("campaign id may hold only letters, digits, '-' and '_'".into());
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
    #[error("stream {name}: {source}")]
    GetStream {
        name: &'static str,
        source: async_nats::jetstream::context::GetStreamError,
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
    pub events: stream::Stream,
    pub dead: stream::Stream,
    pub campaigns: kv::Store,
    pub senders: kv::Store,
    pub sent: kv::Store,
    pub attempts: kv::Store,
}

pub fn outbox_config() -> stream::Config {
    stream::Config {
        name: OUTBOX_STREAM.into(),
        description: Some("jetmail: one message per recipient still to deliver".into()),
        subjects: vec![format!("{OUTBOX_SUBJECT_PREFIX}.>")],
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
        subjects: vec![format!("{EVENTS_SUBJECT_PREFIX}.>")],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: EVENTS_MAX_AGE,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

pub fn dead_config() -> stream::Config {
    stream::Config {
        name: DEAD_STREAM.into(),
        description: Some(
            "jetmail: recipients that could not be delivered, with every attempt".into(),
        ),
        subjects: vec![format!("{DEAD_SUBJECT_PREFIX}.>")],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: DEAD_MAX_AGE,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// The senders consumer for a retry schedule of `retries` delays: MaxDeliver is one first
/// attempt plus one per retry. No BackOff array: it applies to ack-wait expiry, not to naks,
/// so senders compute the delay themselves from the delivery count.
pub fn senders_consumer_config(retries: usize, ack_wait: Duration) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(SENDERS_CONSUMER.into()),
        description: Some("jetmail senders: shared by every sender instance".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_deliver: retries as i64 + 1,
        max_ack_pending: SENDERS_MAX_ACK_PENDING,
        ..Default::default()
    }
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
    let events = get_or_create_stream(js, EVENTS_STREAM, events_config()).await?;
    let dead = get_or_create_stream(js, DEAD_STREAM, dead_config()).await?;
    if outbox.consumer_info(SENDERS_CONSUMER).await.is_err() {
        outbox
            .create_consumer(senders_consumer_config(
                DEFAULT_RETRY_BACKOFF.len(),
                SENDERS_ACK_WAIT,
            ))
            .await
            .map_err(|source| TopologyError::Consumer {
                name: SENDERS_CONSUMER,
                source,
            })?;
    }
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
    Ok(Topology {
        js: js.clone(),
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
    if let Ok(s) = js.get_stream(name).await {
        return Ok(s);
    }
    match js.create_stream(config).await {
        Ok(s) => Ok(s),
        // Another service created it between our look-up and our create.
        Err(_) => js
            .get_stream(name)
            .await
            .map_err(|source| TopologyError::GetStream { name, source }),
    }
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
