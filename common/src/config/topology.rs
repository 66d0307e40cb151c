//! The command-line side of the topology every service ensures at start-up: how many replicas
//! a cluster keeps of each stream and bucket. Flattened into [`super::NatsArgs`], so every
//! binary takes it the same way.

use crate::topology::{TopologyOptions, MAX_REPLICAS};

/// Replication of the JetStream objects.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TopologyArgs {
    /// Replicas of every stream and KV bucket (default 1; 3 on a 3-node cluster). Objects
    /// are created with it; existing ones keep theirs until `jetmail-ingest topology apply`
    /// moves them (given to `topology apply`, it is the count applied)
    #[arg(long, global = true, env = "JETMAIL_REPLICAS", value_parser = parse_replicas)]
    pub replicas: Option<usize>,
}

impl TopologyArgs {
    pub fn options(&self) -> TopologyOptions {
        TopologyOptions {
            replicas: self.replicas,
        }
    }
}

/// A replica count outside what NATS allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("replicas must be a number from 1 to {MAX_REPLICAS}")]
pub struct ReplicasError;

fn parse_replicas(s: &str) -> Result<usize, ReplicasError> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(n),
        _ => Err(ReplicasError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_one_to_five() {
        assert_eq!(parse_replicas("3"), Ok(3));
        assert_eq!(parse_replicas("0"), Err(ReplicasError));
        assert_eq!(parse_replicas("6"), Err(ReplicasError));
        assert_eq!(parse_replicas("three"), Err(ReplicasError));
    }
}
