//! `jetmail-ingest suppress add|remove|list|import|export`: the suppression list from a shell.
//! The last line of each is what scripts read (`added N, already M`, `removed N`, …).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use jetmail_common::api::SuppressionQuery;
use jetmail_common::compliance::SuppressionReason;
use jetmail_common::topology::Topology;

use crate::suppressions;

/// Parses a reason for clap with its one parser.
fn reason(s: &str) -> Result<SuppressionReason, jetmail_common::compliance::UnknownReason> {
    s.parse()
}

#[derive(Debug, clap::Subcommand)]
pub enum SuppressCommand {
    /// Suppress addresses: they are never mailed again (skipped at submit and at send).
    Add {
        #[arg(required = true)]
        addresses: Vec<String>,
        /// unsubscribed, hard_bounce, complaint or manual.
        #[arg(long, default_value = "manual", value_parser = reason)]
        reason: SuppressionReason,
    },
    /// Take addresses off the list: they may be mailed again.
    Remove {
        #[arg(required = true)]
        addresses: Vec<String>,
    },
    /// Print entries as `address<TAB>reason<TAB>when<TAB>campaign<TAB>detail`.
    List {
        /// Only addresses containing this text (case-insensitive).
        #[arg(long)]
        search: Option<String>,
        #[arg(long, value_parser = reason)]
        reason: Option<SuppressionReason>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Import a CSV with an `email` column and an optional `reason` column, or bare
    /// addresses one a line (`-` for stdin). Bad rows are reported with their line.
    Import {
        file: PathBuf,
        /// The reason of rows without one.
        #[arg(long, default_value = "manual", value_parser = reason)]
        reason: SuppressionReason,
    },
    /// Write the whole list as CSV to stdout (`email,reason,at,campaign,detail`).
    Export,
}

pub async fn run(topo: &Topology, c: SuppressCommand) -> anyhow::Result<()> {
    match c {
        SuppressCommand::Add { addresses, reason } => {
            let r = suppressions::add(topo, &addresses, reason).await?;
            println!("added {}, already suppressed {}", r.added, r.already);
        }
        SuppressCommand::Remove { addresses } => {
            let mut removed = 0;
            for a in &addresses {
                if suppressions::remove(topo, a).await? {
                    removed += 1;
                } else {
                    eprintln!("{a}: not suppressed");
                }
            }
            println!("removed {removed}");
        }
        SuppressCommand::List {
            search,
            reason,
            limit,
        } => {
            let q = SuppressionQuery {
                search,
                reason,
                limit,
            };
            let list = suppressions::list(topo, &q).await?;
            for s in &list.suppressions {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    s.address,
                    s.reason,
                    jetmail_common::schedule::format_ms(s.at_ms),
                    s.campaign.as_deref().unwrap_or("-"),
                    s.detail.as_deref().unwrap_or("")
                );
            }
            eprintln!(
                "{} suppressions match ({} shown)",
                list.total,
                list.suppressions.len()
            );
        }
        SuppressCommand::Import { file, reason } => {
            let input: Box<dyn std::io::Read + Send> = if file.as_os_str() == "-" {
                Box::new(std::io::stdin())
            } else {
                Box::new(
                    std::fs::File::open(&file)
                        .with_context(|| format!("cannot open {}", file.display()))?,
                )
            };
            let r = suppressions::import(topo, input, reason)
                .await
                .with_context(|| format!("{}", file.display()))?;
            for row in &r.rejected {
                eprintln!(
                    "rejected line {}: {:?}: {}",
                    row.line, row.email, row.reason
                );
            }
            println!(
                "added {}, already suppressed {}, rejected {}",
                r.added, r.already, r.rejected_count
            );
        }
        SuppressCommand::Export => {
            let all = suppressions::all(topo).await?;
            let stdout = std::io::stdout();
            let mut w = csv::Writer::from_writer(stdout.lock());
            w.write_record([
                "email",
                suppressions::REASON_COLUMN,
                "at",
                "campaign",
                "detail",
            ])?;
            for s in &all {
                w.write_record([
                    s.address.as_str(),
                    s.reason.as_str(),
                    &jetmail_common::schedule::format_ms(s.at_ms),
                    s.campaign.as_deref().unwrap_or(""),
                    s.detail.as_deref().unwrap_or(""),
                ])?;
            }
            w.flush()?;
            drop(w);
            std::io::stdout().flush()?;
            eprintln!("exported {}", all.len());
        }
    }
    Ok(())
}
