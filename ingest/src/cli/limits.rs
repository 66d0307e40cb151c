//! `jetmail-ingest limits set|list|remove`: the fleet's sending limits, written straight to
//! `mail_limits` through [`crate::limits`] (the same checks as `PUT /v1/limits/{scope}`).

use jetmail_common::api::{LimitRequest, LimitView};
use jetmail_common::config::format_duration;
use jetmail_common::limits::Scope;
use jetmail_common::topology::Topology;

use crate::limits;

#[derive(Debug, clap::Subcommand)]
pub enum LimitsCommand {
    /// Set a limit: without --domain the global one (every sender, every domain together);
    /// several domains share one budget. Replaces the limit of the same scope.
    Set {
        /// Domains sharing this limit (comma-separated, e.g. gmail.com,googlemail.com).
        #[arg(long, value_delimiter = ',')]
        domain: Vec<String>,
        /// N/s, N/m or N/h.
        #[arg(long)]
        rate: String,
        /// Simultaneous SMTP sessions to these domains across the whole fleet.
        #[arg(long)]
        concurrency: Option<u32>,
        /// How long a 421 / 4.7.x back-off halving lasts (default 60s).
        #[arg(long)]
        cooldown: Option<String>,
    },
    /// List the limits: configured and effective rate (after a back-off), concurrency,
    /// cool-down, domains.
    List,
    /// Remove the global limit, or with --domain the limit that lists that domain.
    Remove {
        #[arg(long)]
        domain: Option<String>,
    },
}

/// Runs one `limits` command. `list` prints a header line and one tab-separated line a limit;
/// `set` and `remove` print one line each.
pub async fn run(topo: &Topology, command: LimitsCommand) -> anyhow::Result<()> {
    match command {
        LimitsCommand::Set {
            domain,
            rate,
            concurrency,
            cooldown,
        } => {
            let spec = limits::spec(&LimitRequest {
                domains: domain,
                rate,
                concurrency,
                cooldown,
            })?;
            let v = limits::set(topo, &spec).await?;
            println!("limit {} set: {}", v.scope, line(&v));
        }
        LimitsCommand::List => {
            let list = limits::list(topo).await?;
            println!("scope\trate\teffective\tconcurrency\tcooldown\tdomains");
            for v in &list {
                println!("{}\t{}", v.scope, line(v));
            }
            eprintln!("{} limits", list.len());
        }
        LimitsCommand::Remove { domain } => {
            let scope = match domain {
                Some(d) => limits::scope_of_domain(topo, &d).await?,
                None => Scope::Global,
            };
            let spec = limits::remove(topo, &scope).await?;
            println!("limit {} removed (it was {})", scope, spec.rate);
        }
    }
    Ok(())
}

/// One limit's columns after its scope, tab-separated.
fn line(v: &LimitView) -> String {
    let effective = if v.backoff_level > 0 {
        format!(
            "{}/s (backed off {}x)",
            per_second(v.effective_per_second),
            v.backoff_level
        )
    } else {
        format!("{}/s", per_second(v.effective_per_second))
    };
    format!(
        "{}\t{}\t{}\t{}\t{}",
        v.rate,
        effective,
        v.concurrency
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
        format_duration(std::time::Duration::from_millis(v.cooldown_ms)),
        if v.domains.is_empty() {
            "-".to_string()
        } else {
            v.domains.join(",")
        }
    )
}

/// A rate without trailing zeros: `150`, `12.5`, `0.017`.
fn per_second(r: f64) -> String {
    let s = format!("{r:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_print_without_trailing_zeros() {
        assert_eq!(per_second(150.0), "150");
        assert_eq!(per_second(12.5), "12.5");
        assert_eq!(per_second(1.0 / 60.0), "0.017");
    }
}
