//! `jetmail-ingest topology show|apply`: the operator's view of the JetStream objects and the
//! one way to change the fleet's delivery policy. Senders no longer rewrite the senders
//! consumer from their own flags (the last one started used to win), so the retry schedule
//! and ack wait are changed here, once, for every sender.
//!
//! `apply` is a list of optional changes, each applied only when its flag is given; a new
//! setting is one more field of [`ApplyArgs`], one more step in [`apply`] and one more line
//! in [`Applied`]. The replica count is the global `--replicas` (`JETMAIL_REPLICAS`) every
//! service takes: given to `apply`, every stream and bucket is moved to it; `show` prints
//! where each one's copies are (see [`super::topology_show`]).

use std::fmt;
use std::time::Duration;

use jetmail_common::config::{format_duration, format_durations, parse_duration};
use jetmail_common::topology::{
    apply_senders_policy, senders_consumer, set_replicas, ReplicaChange, SendersPolicy, Topology,
    TopologyError, SENDERS_CONSUMER,
};

pub use super::topology_show::{show, ConsumerLine, ShowError, StoreLine, TopologyReport};

#[derive(Debug, clap::Subcommand)]
pub enum TopologyCommand {
    /// Print every stream and bucket with its message count, replicas, leader and lag, and
    /// the senders consumer with the fleet's delivery policy.
    Show,
    /// Change the fleet's delivery policy, and with --replicas the replica count of every
    /// stream and bucket (only what the flags given say).
    Apply(ApplyArgs),
}

/// The changes `topology apply` makes; a flag not given leaves its setting as it is.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ApplyArgs {
    /// Retry schedule: the nak delay after the 1st, 2nd, … failed delivery (`30s,2m,10m`).
    /// Its length sets MaxDeliver (one first attempt plus one per delay).
    #[arg(long, env = "JETMAIL_RETRY_BACKOFF", value_delimiter = ',', value_parser = parse_duration)]
    pub retry_backoff: Option<Vec<Duration>>,
    /// Ack wait: a message whose sender died is redelivered after this. Keep it at least
    /// twice the senders' `--send-timeout` (they refuse to start otherwise).
    #[arg(long, env = "JETMAIL_ACK_WAIT", value_parser = parse_duration)]
    pub ack_wait: Option<Duration>,
}

/// A change `topology apply` refuses, or could not make.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("--retry-backoff needs at least one delay")]
    NoRetryDelays,
    #[error("--retry-backoff delays must be above zero")]
    ZeroRetryDelay,
    #[error("--ack-wait must be above zero")]
    ZeroAckWait,
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

impl ApplyArgs {
    /// The policy `current` becomes with these changes.
    pub fn senders_policy(&self, current: &SendersPolicy) -> Result<SendersPolicy, ApplyError> {
        let mut next = current.clone();
        if let Some(delays) = &self.retry_backoff {
            if delays.is_empty() {
                return Err(ApplyError::NoRetryDelays);
            }
            if delays.contains(&Duration::ZERO) {
                return Err(ApplyError::ZeroRetryDelay);
            }
            next.retry_backoff = delays.clone();
        }
        if let Some(wait) = self.ack_wait {
            if wait.is_zero() {
                return Err(ApplyError::ZeroAckWait);
            }
            next.ack_wait = wait;
        }
        Ok(next)
    }
}

/// What `topology apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub senders_before: SendersPolicy,
    /// As the broker has it after the change.
    pub senders_after: SendersPolicy,
    /// Every stream's replicas before and after, when `--replicas` was given.
    pub replicas: Vec<ReplicaChange>,
}

impl Applied {
    pub fn changed(&self) -> bool {
        self.senders_before != self.senders_after
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.replicas {
            let what = if c.before == c.after {
                "unchanged"
            } else {
                "changed"
            };
            writeln!(
                f,
                "{:<7} {:<17} replicas {} -> {} ({what})",
                c.store.kind.as_str(),
                c.store.name,
                c.before,
                c.after
            )?;
        }
        if !self.changed() {
            return writeln!(f, "consumer {SENDERS_CONSUMER}: unchanged");
        }
        writeln!(f, "consumer {SENDERS_CONSUMER}: changed")?;
        writeln!(f, "  before: {}", PolicyLine(&self.senders_before))?;
        writeln!(f, "  after:  {}", PolicyLine(&self.senders_after))
    }
}

/// Applies `args` (and the replica count the command was started with, if any) to the
/// broker's topology. Only what differs is rewritten, so running it twice is harmless.
pub async fn apply(topo: &Topology, args: &ApplyArgs) -> Result<Applied, ApplyError> {
    let replicas = match topo.options.replicas {
        Some(r) => set_replicas(&topo.js, r).await?,
        None => Vec::new(),
    };
    let (_, before) = senders_consumer(&topo.outbox).await?;
    let wanted = args.senders_policy(&before)?;
    let after = if wanted == before {
        before.clone()
    } else {
        apply_senders_policy(topo, &wanted).await?
    };
    Ok(Applied {
        senders_before: before,
        senders_after: after,
        replicas,
    })
}

/// A policy on one line: `retry 30s,2m (max deliver 3), ack wait 2m`.
pub(super) struct PolicyLine<'a>(pub(super) &'a SendersPolicy);

impl fmt::Display for PolicyLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        write!(
            f,
            "retry backoff {} (max deliver {}), ack wait {}",
            format_durations(&p.retry_backoff),
            p.max_deliver(),
            format_duration(p.ack_wait)
        )
    }
}

/// Runs `topology show` or `topology apply`.
pub async fn run(topo: &Topology, command: TopologyCommand) -> anyhow::Result<()> {
    match command {
        TopologyCommand::Show => print!("{}", show(topo).await?),
        TopologyCommand::Apply(args) => print!("{}", apply(topo, &args).await?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_flags_given_change_the_policy() {
        let current = SendersPolicy::default();
        let wait_only = ApplyArgs {
            ack_wait: Some(Duration::from_secs(300)),
            ..Default::default()
        };
        let next = wait_only.senders_policy(&current).unwrap();
        assert_eq!(next.retry_backoff, current.retry_backoff);
        assert_eq!(next.ack_wait, Duration::from_secs(300));
        assert_eq!(
            ApplyArgs::default().senders_policy(&current).unwrap(),
            current
        );
        let empty = ApplyArgs {
            retry_backoff: Some(vec![]),
            ..Default::default()
        };
        assert!(matches!(
            empty.senders_policy(&current),
            Err(ApplyError::NoRetryDelays)
        ));
    }
}
