//! The one owner of every JetStream name and config: streams, consumers, subjects and KV
//! buckets are written here once and nowhere else. [`ensure`] creates what is missing and is
//! idempotent, so every service calls it at start-up and any service may start first.
//! [`formats`] builds and parses every subject, key and message id made from these names;
//! [`policy`] is the fleet's delivery policy, kept on the senders consumer; [`replicas`]
//! how many copies a cluster keeps of each stream and bucket.

mod formats;
mod policy;
mod replicas;

pub use formats::*;
pub use policy::*;
pub use replicas::*;

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
/// KV bucket of failed attempts per recipient (`<campaign>.<seq>`), so that the dead letter
/// written by whichever sender makes the last attempt carries every earlier one.
pub const ATTEMPTS_BUCKET: &str = "mail_attempts";
/// KV bucket of the suppression list: one key per address ([`crate::compliance::suppression_key`]),
/// never mailed again while present.
pub const SUPPRESSIONS_BUCKET: &str = "mail_suppressions";
/// KV bucket of sending limits (`limit.<scope>`), their shared budgets (`budget.<scope>`)
/// and fleet-wide back-offs (`backoff.<scope>`): see [`crate::limits`] and [`crate::budget`].
pub const LIMITS_BUCKET: &str = "mail_limits";
/// Stream that keeps the broker's max-deliveries advisories for MAIL_OUTBOX and MAIL_HELD, so
/// that one published while the monitor is down waits for it instead of being lost.
pub const ADVISORIES_STREAM: &str = "MAIL_ADVISORIES";
/// The monitor's durable consumer of [`ADVISORIES_STREAM`].
pub const ADVISORIES_CONSUMER: &str = "monitor";
pub const ADVISORIES_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

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
/// How long outcome events are kept. The `sent` events are also the idempotency ledger: a
/// redelivery later than this could be mailed again.
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEAD_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 3600);
/// Sender entries that stop being refreshed disappear after this.
pub const SENDERS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long a recipient's failed attempts are kept for its dead letter.
pub const ATTEMPTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

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
    #[error("replicas must be between 1 and {MAX_REPLICAS}, not {0}")]
    BadReplicas(usize),
    #[error("stream {name}: {source}")]
    GetStream {
        name: String,
        source: async_nats::jetstream::context::GetStreamError,
    },
    #[error("stream {name}: {source}")]
    StreamInfo {
        name: String,
        source: async_nats::jetstream::context::RequestError,
    },
    #[error("listing the consumers of stream {stream}: {source}")]
    ListConsumers {
        stream: String,
        source: async_nats::jetstream::stream::ConsumersError,
    },
    #[error("changing consumer {consumer} of stream {stream}: {source}")]
    UpdateStreamConsumer {
        stream: String,
        consumer: String,
        source: async_nats::jetstream::stream::ConsumerUpdateError,
    },
    #[error("changing stream {name}: {source}")]
    UpdateStream {
        name: String,
        source: async_nats::jetstream::context::UpdateStreamError,
    },
}

/// Handles to everything [`ensure`] made sure exists.
#[derive(Clone)]
pub struct Topology {
    pub js: jetstream::Context,
    pub outbox: stream::Stream,
    /// Recipients held back by a limit or a schedule.
    pub held: stream::Stream,
    /// Max-deliveries advisories waiting for the monitor.
    pub advisories: stream::Stream,
    pub events: stream::Stream,
    pub dead: stream::Stream,
    pub campaigns: kv::Store,
    pub senders: kv::Store,
    pub attempts: kv::Store,
    /// Sending limits, budgets and back-offs.
    pub limits: kv::Store,
    /// The suppression list.
    pub suppressions: kv::Store,
    /// What this service asked for (`--replicas`): `topology apply` applies it.
    pub options: TopologyOptions,
}

/// A work queue of recipients: file storage, and when full it refuses (discard `new`), so
/// ingest or the sender moving a recipient gets an error it reports; nothing is dropped.
fn work_queue_config(name: &str, description: &str, subject: String) -> stream::Config {
    stream::Config {
        name: name.into(),
        description: Some(description.into()),
        subjects: vec![subject],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        duplicate_window: OUTBOX_DUPLICATE_WINDOW,
        max_bytes: OUTBOX_MAX_BYTES,
        max_messages: OUTBOX_MAX_MESSAGES,
        ..Default::default()
    }
}

pub fn outbox_config() -> stream::Config {
    work_queue_config(
        OUTBOX_STREAM,
        "jetmail: one message per recipient still to deliver",
        outbox_filter(),
    )
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

/// The broker's subject for "a message of `stream` reached MaxDeliver" (any consumer).
pub fn max_deliveries_advisory(stream: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.*")
}

pub fn advisories_config() -> stream::Config {
    stream::Config {
        name: ADVISORIES_STREAM.into(),
        description: Some(
            "jetmail: max-deliveries advisories of the outbox and held queues, for the monitor"
                .into(),
        ),
        subjects: vec![
            max_deliveries_advisory(OUTBOX_STREAM),
            max_deliveries_advisory(HELD_STREAM),
        ],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: ADVISORIES_MAX_AGE,
        ..Default::default()
    }
}

/// The monitor's consumer of the advisories: each is acked once its message is settled.
pub fn advisories_consumer_config() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(ADVISORIES_CONSUMER.into()),
        description: Some("jetmail monitor: settles messages that reached MaxDeliver".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(60),
        ..Default::default()
    }
}

pub fn held_config() -> stream::Config {
    work_queue_config(
        HELD_STREAM,
        "jetmail: recipients waiting for a limit or a send-at time",
        held_filter(),
    )
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
/// changed by hand stays changed. One replica each: see [`ensure_with`].
pub async fn ensure(js: &jetstream::Context) -> Result<Topology, TopologyError> {
    ensure_with(js, &TopologyOptions::default()).await
}

/// [`ensure`], creating what is missing with `options` (the replica count). Existing objects
/// keep theirs; a difference is logged (see [`set_replicas`] to change them).
pub async fn ensure_with(
    js: &jetstream::Context,
    options: &TopologyOptions,
) -> Result<Topology, TopologyError> {
    let r = options.create_replicas();
    let outbox = get_or_create_stream(js, OUTBOX_STREAM, outbox_config(), r).await?;
    let held = get_or_create_stream(js, HELD_STREAM, held_config(), r).await?;
    let events = get_or_create_stream(js, EVENTS_STREAM, events_config(), r).await?;
    let advisories = get_or_create_stream(js, ADVISORIES_STREAM, advisories_config(), r).await?;
    let dead = get_or_create_stream(js, DEAD_STREAM, dead_config(), r).await?;
    senders_consumer(&outbox).await?;
    let bucket = |name: &'static str, description: &str, max_age: Duration| kv::Config {
        num_replicas: r,
        ..kv_config(name, description, max_age)
    };
    let campaigns = get_or_create_bucket(
        js,
        CAMPAIGNS_BUCKET,
        bucket(
            CAMPAIGNS_BUCKET,
            "jetmail campaigns: spec, status, progress",
            Duration::ZERO,
        ),
    )
    .await?;
    let senders = get_or_create_bucket(
        js,
        SENDERS_BUCKET,
        bucket(SENDERS_BUCKET, "jetmail sender health map", SENDERS_MAX_AGE),
    )
    .await?;
    let attempts = get_or_create_bucket(
        js,
        ATTEMPTS_BUCKET,
        bucket(
            ATTEMPTS_BUCKET,
            "jetmail failed attempts per recipient",
            ATTEMPTS_MAX_AGE,
        ),
    )
    .await?;
    let limits = get_or_create_bucket(
        js,
        LIMITS_BUCKET,
        bucket(
            LIMITS_BUCKET,
            "jetmail sending limits, shared budgets and back-offs",
            Duration::ZERO,
        ),
    )
    .await?;
    let suppressions = get_or_create_bucket(
        js,
        SUPPRESSIONS_BUCKET,
        bucket(
            SUPPRESSIONS_BUCKET,
            "jetmail suppression list: never mailed again",
            Duration::ZERO,
        ),
    )
    .await?;
    if let Some(wanted) = options.replicas {
        warn_on_other_replicas(js, wanted).await;
    }
    Ok(Topology {
        js: js.clone(),
        options: *options,
        limits,
        suppressions,
        advisories,
        held,
        attempts,
        outbox,
        events,
        dead,
        campaigns,
        senders,
    })
}

async fn get_or_create_stream(
    js: &jetstream::Context,
    name: &'static str,
    config: stream::Config,
    replicas: usize,
) -> Result<stream::Stream, TopologyError> {
    let config = stream::Config {
        num_replicas: replicas,
        ..config
    };
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
