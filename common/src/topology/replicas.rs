//! Replication: how many copies of every stream and KV bucket a cluster keeps. [`ensure_with`]
//! creates objects with the replicas a service was started with (`--replicas`); only
//! [`set_replicas`] (`jetmail-ingest topology apply --replicas N`) changes existing ones, so
//! a service started with another count never rescales a running deployment by itself.
//!
//! A KV bucket is a stream named `KV_<bucket>`, so both are scaled the same way: a stream
//! config update with a new `num_replicas`, which the server performs in place (the new peers
//! catch up from the leader; nothing is re-published, so nothing can be lost). Consumers are
//! created with replicas 0 ("as many as the stream"), but the server does not rescale an
//! existing consumer of a limits stream with it, so [`set_replicas`] moves every durable
//! consumer after its stream. (A work-queue stream's consumers must match it: the server
//! moves those itself and refuses any other count.)

use async_nats::jetstream::{self, consumer, stream};

use super::*;

/// The replica count a stream has when nobody asked for another.
pub const DEFAULT_REPLICAS: usize = 1;
/// NATS allows at most 5 replicas per stream.
pub const MAX_REPLICAS: usize = 5;

/// Every stream [`ensure`] creates, by name.
pub const STREAMS: &[&str] = &[
    OUTBOX_STREAM,
    HELD_STREAM,
    EVENTS_STREAM,
    DEAD_STREAM,
    ADVISORIES_STREAM,
];

/// Every KV bucket [`ensure`] creates, by name.
pub const BUCKETS: &[&str] = &[
    CAMPAIGNS_BUCKET,
    SENDERS_BUCKET,
    ATTEMPTS_BUCKET,
    LIMITS_BUCKET,
    SUPPRESSIONS_BUCKET,
];

/// The stream that holds KV bucket `bucket`.
pub fn bucket_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// A stream or a bucket, as the operator names it, with the stream that stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreName {
    pub kind: StoreKind,
    /// The stream or bucket name.
    pub name: &'static str,
    /// The stream that holds it (`KV_<bucket>` for a bucket).
    pub stream: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Stream,
    Bucket,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Stream => "stream",
            StoreKind::Bucket => "bucket",
        }
    }
}

/// Every stream and bucket, streams first.
pub fn all_stores() -> Vec<StoreName> {
    let streams = STREAMS.iter().map(|&name| StoreName {
        kind: StoreKind::Stream,
        name,
        stream: name.to_string(),
    });
    let buckets = BUCKETS.iter().map(|&name| StoreName {
        kind: StoreKind::Bucket,
        name,
        stream: bucket_stream(name),
    });
    streams.chain(buckets).collect()
}

/// How [`ensure_with`] creates what is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopologyOptions {
    /// Replicas of every stream and bucket created; `None`: [`DEFAULT_REPLICAS`], and
    /// nothing to compare existing objects with.
    pub replicas: Option<usize>,
}

impl TopologyOptions {
    /// The replica count objects are created with.
    pub fn create_replicas(&self) -> usize {
        self.replicas.unwrap_or(DEFAULT_REPLICAS)
    }
}

/// One stream whose replica count [`set_replicas`] looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaChange {
    pub store: StoreName,
    pub before: usize,
    pub after: usize,
}

/// Sets every stream's and bucket's replica count to `replicas` (streams already there are
/// left alone). The server moves the data; messages keep flowing meanwhile.
pub async fn set_replicas(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<Vec<ReplicaChange>, TopologyError> {
    if !(1..=MAX_REPLICAS).contains(&replicas) {
        return Err(TopologyError::BadReplicas(replicas));
    }
    let mut changes = Vec::new();
    for store in all_stores() {
        let config = stream_config(js, &store.stream).await?;
        let before = config.num_replicas.max(1);
        if before != replicas {
            let next = stream::Config {
                num_replicas: replicas,
                ..config
            };
            js.update_stream(next)
                .await
                .map_err(|source| TopologyError::UpdateStream {
                    name: store.stream.clone(),
                    source,
                })?;
        }
        // A work-queue stream's consumers must have its replica count: the server moves
        // them with the stream. The others' are moved here.
        set_consumer_replicas(js, &store.stream, replicas).await?;
        changes.push(ReplicaChange {
            store,
            before,
            after: replicas,
        });
    }
    Ok(changes)
}

/// Moves every durable consumer of `stream` to `replicas` copies. Ephemeral consumers (KV
/// watchers, ordered consumers) are left alone: they are recreated on demand.
async fn set_consumer_replicas(
    js: &jetstream::Context,
    stream: &str,
    replicas: usize,
) -> Result<(), TopologyError> {
    use futures::TryStreamExt;
    let consumer_error =
        |source: async_nats::jetstream::stream::ConsumersError| TopologyError::ListConsumers {
            stream: stream.to_string(),
            source,
        };
    let s = js
        .get_stream(stream)
        .await
        .map_err(|source| TopologyError::GetStream {
            name: stream.to_string(),
            source,
        })?;
    let consumers: Vec<_> = s.consumers().try_collect().await.map_err(consumer_error)?;
    for info in consumers {
        if info.config.durable_name.is_none() || info.config.num_replicas == replicas {
            continue;
        }
        let config = consumer::Config {
            num_replicas: replicas,
            ..info.config
        };
        s.update_consumer(config)
            .await
            .map_err(|source| TopologyError::UpdateStreamConsumer {
                stream: stream.to_string(),
                consumer: info.name.clone(),
                source,
            })?;
    }
    Ok(())
}

async fn stream_config(
    js: &jetstream::Context,
    name: &str,
) -> Result<stream::Config, TopologyError> {
    Ok(stream_info(js, name).await?.config)
}

async fn stream_info(js: &jetstream::Context, name: &str) -> Result<stream::Info, TopologyError> {
    let mut s = js
        .get_stream(name)
        .await
        .map_err(|source| TopologyError::GetStream {
            name: name.to_string(),
            source,
        })?;
    let info = s.info().await.map_err(|source| TopologyError::StreamInfo {
        name: name.to_string(),
        source,
    })?;
    Ok(info.clone())
}

/// Where a stream's copies are, from its info's `cluster` field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replication {
    /// The configured replica count.
    pub replicas: usize,
    /// The server holding the leader copy (on a single server, that server when it reports it).
    pub leader: Option<String>,
    /// The other copies.
    pub followers: Vec<Follower>,
}

/// A follower copy of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    pub server: String,
    /// Up to date with the leader.
    pub current: bool,
    /// Considered offline by the group.
    pub offline: bool,
    /// Operations behind the leader.
    pub lag: u64,
}

impl Replication {
    /// Every copy is there and up to date: the leader and `replicas - 1` current followers.
    pub fn in_sync(&self) -> bool {
        self.leader.is_some()
            && self.followers.len() + 1 == self.replicas
            && self.followers.iter().all(|f| f.current && !f.offline)
    }

    /// The largest lag of any follower.
    pub fn max_lag(&self) -> u64 {
        self.followers.iter().map(|f| f.lag).max().unwrap_or(0)
    }
}

impl Replication {
    fn of(info: &stream::Info) -> Self {
        let cluster = info.cluster.clone().unwrap_or_default();
        Self {
            replicas: info.config.num_replicas.max(1),
            leader: cluster.leader,
            followers: cluster
                .replicas
                .into_iter()
                .map(|p| Follower {
                    server: p.name,
                    current: p.current,
                    offline: p.offline,
                    lag: p.lag.unwrap_or(0),
                })
                .collect(),
        }
    }
}

/// A stream's state and where its copies are, read afresh from the broker.
pub async fn stream_replication(
    js: &jetstream::Context,
    name: &str,
) -> Result<(stream::State, Replication), TopologyError> {
    let info = stream_info(js, name).await?;
    Ok((info.state.clone(), Replication::of(&info)))
}

/// Logs, at WARN, every object whose replica count differs from the one asked for: a service
/// started with `--replicas 3` against a deployment still at 1 runs, but is not replicated
/// until an operator runs `topology apply`.
pub(super) async fn warn_on_other_replicas(js: &jetstream::Context, wanted: usize) {
    for store in all_stores() {
        match stream_config(js, &store.stream).await {
            Ok(c) if c.num_replicas.max(1) != wanted => tracing::warn!(
                stream = %store.stream,
                replicas = c.num_replicas,
                wanted,
                "replicas differ from --replicas: run `jetmail-ingest topology apply --replicas {wanted}`"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not compare replicas"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_store_is_listed_once_with_its_stream() {
        let all = all_stores();
        assert_eq!(all.len(), STREAMS.len() + BUCKETS.len());
        let attempts = all.iter().find(|s| s.name == ATTEMPTS_BUCKET).unwrap();
        assert_eq!(attempts.stream, "KV_mail_attempts");
        assert_eq!(attempts.kind, StoreKind::Bucket);
        let mut streams: Vec<&str> = all.iter().map(|s| s.stream.as_str()).collect();
        streams.sort();
        streams.dedup();
        assert_eq!(streams.len(), all.len());
    }

    #[test]
    fn replicas_default_to_one() {
        assert_eq!(TopologyOptions::default().create_replicas(), 1);
        let three = TopologyOptions { replicas: Some(3) };
        assert_eq!(three.create_replicas(), 3);
    }
}
