//! `jetmail-ingest bounces import FILE…|-`: one raw bounce or complaint message per file
//! (`-`: one from stdin, so a relay's pipe transport or a mailbox script can feed it). Each
//! message gets one line; a message that is not a usable report is an error line, and the
//! others are still applied. Exits non-zero when any message failed.

use std::io::Read;
use std::path::PathBuf;

use jetmail_common::topology::Topology;

use crate::bounces;

#[derive(Debug, clap::Subcommand)]
pub enum BouncesCommand {
    /// Apply DSN (RFC 3464) and ARF (RFC 5965) reports: hard bounces and complaints are
    /// suppressed, soft bounces counted.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub async fn run(topo: &Topology, c: BouncesCommand) -> anyhow::Result<()> {
    let BouncesCommand::Import { files } = c;
    let mut failed = 0usize;
    let (mut suppressed, mut soft) = (0usize, 0u64);
    for f in &files {
        let name = f.display().to_string();
        let raw = if name == "-" {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map(|_| buf)
        } else {
            std::fs::read(f)
        };
        let raw = match raw {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{name}: error: cannot read: {e}");
                failed += 1;
                continue;
            }
        };
        match bounces::apply(topo, &raw).await {
            Ok(r) => {
                suppressed += r.suppressed.len();
                soft += r.soft_bounces;
                let list: Vec<String> = r
                    .suppressed
                    .iter()
                    .map(|s| format!("{} ({}, {})", s.address, s.reason, s.detail))
                    .collect();
                println!(
                    "{name}: {:?} campaign {}: suppressed [{}], soft {}, ignored {}",
                    r.kind,
                    r.campaign.as_deref().unwrap_or("-"),
                    list.join(", "),
                    r.soft_bounces,
                    r.ignored
                );
            }
            Err(e) => {
                eprintln!("{name}: error: {e}");
                failed += 1;
            }
        }
    }
    println!(
        "{} messages: {} suppressed, {} soft bounces, {} errors",
        files.len(),
        suppressed,
        soft,
        failed
    );
    anyhow::ensure!(failed == 0, "{failed} messages could not be applied");
    Ok(())
}
