//! `jetmail-ingest topology show`: every stream and bucket with its message count and where
//! its copies are (replicas, leader, each follower's lag), and the senders consumer with the
//! fleet's delivery policy. Read afresh from the broker, never from cached handles.

use std::fmt;

use jetmail_common::store::StoreError;
use jetmail_common::topology::{
    all_stores, senders_consumer, stream_replication, Replication, SendersPolicy, Topology,
    TopologyError, SENDERS_CONSUMER,
};

use super::topology::PolicyLine;

/// One stream or bucket as `topology show` prints it.
#[derive(Debug, Clone)]
pub struct StoreLine {
    pub kind: &'static str,
    pub name: &'static str,
    pub messages: u64,
    pub bytes: u64,
    pub replication: Replication,
}

/// The senders consumer as `topology show` prints it.
#[derive(Debug, Clone)]
pub struct ConsumerLine {
    /// Messages not yet delivered to any sender.
    pub pending: u64,
    /// Delivered and not yet acked (in flight, or waiting for a retry).
    pub ack_pending: usize,
    pub redelivered: usize,
    pub policy: SendersPolicy,
    /// Its own copies (it follows its stream's replica count).
    pub replicas: usize,
    pub leader: Option<String>,
}

/// Everything `topology show` prints.
#[derive(Debug, Clone)]
pub struct TopologyReport {
    pub stores: Vec<StoreLine>,
    pub senders: ConsumerLine,
}

#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

/// Reads the state of every stream, bucket and the senders consumer from the broker.
pub async fn show(topo: &Topology) -> Result<TopologyReport, ShowError> {
    let mut stores = Vec::new();
    for store in all_stores() {
        let (state, replication) = stream_replication(&topo.js, &store.stream).await?;
        stores.push(StoreLine {
            kind: store.kind.as_str(),
            name: store.name,
            // A bucket keeps one value per key (history 1): its messages are its values.
            messages: state.messages,
            bytes: state.bytes,
            replication,
        });
    }
    let (mut consumer, policy) = senders_consumer(&topo.outbox).await?;
    let info = consumer.info().await.map_err(StoreError::broker)?;
    let cluster = info.cluster.clone().unwrap_or_default();
    Ok(TopologyReport {
        stores,
        senders: ConsumerLine {
            pending: info.num_pending,
            ack_pending: info.num_ack_pending,
            redelivered: info.num_redelivered,
            policy,
            replicas: cluster.replicas.len() + 1,
            leader: cluster.leader,
        },
    })
}

/// `replicas 3, leader n1, lag n2 0, n3 12 (offline)`.
struct ReplicationLine<'a>(&'a Replication);

impl fmt::Display for ReplicationLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(
            f,
            "replicas {}, leader {}",
            r.replicas,
            r.leader.as_deref().unwrap_or("-")
        )?;
        for (i, p) in r.followers.iter().enumerate() {
            let sep = if i == 0 { ", lag " } else { ", " };
            let state = match (p.offline, p.current) {
                (true, _) => " (offline)",
                (false, false) => " (catching up)",
                (false, true) => "",
            };
            write!(f, "{sep}{} {}{state}", p.server, p.lag)?;
        }
        Ok(())
    }
}

impl fmt::Display for TopologyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.stores {
            writeln!(
                f,
                "{:<7} {:<17} {:>12} messages {:>14} bytes  {}",
                s.kind,
                s.name,
                s.messages,
                s.bytes,
                ReplicationLine(&s.replication)
            )?;
        }
        let c = &self.senders;
        writeln!(
            f,
            "consumer {:<16} {:>12} pending {:>8} ack pending {:>8} redelivered  replicas {}, leader {}",
            SENDERS_CONSUMER,
            c.pending,
            c.ack_pending,
            c.redelivered,
            c.replicas,
            c.leader.as_deref().unwrap_or("-")
        )?;
        writeln!(f, "  policy: {}", PolicyLine(&c.policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetmail_common::topology::Follower;

    #[test]
    fn a_line_names_the_leader_and_each_followers_lag() {
        let r = Replication {
            replicas: 3,
            leader: Some("n1".into()),
            followers: vec![
                Follower {
                    server: "n2".into(),
                    current: true,
                    offline: false,
                    lag: 0,
                },
                Follower {
                    server: "n3".into(),
                    current: false,
                    offline: true,
                    lag: 12,
                },
            ],
        };
        assert_eq!(
            ReplicationLine(&r).to_string(),
            "replicas 3, leader n1, lag n2 0, n3 12 (offline)"
        );
        assert!(!r.in_sync());
        assert_eq!(r.max_lag(), 12);
    }
}
