//! Bounces (DSNs) and complaints (ARF reports) that come back after sending: each raw message
//! is read by [`parse`] and what it proves is put on the suppression list (`hard_bounce`,
//! `complaint`) with the campaign of its VERP address. Soft bounces are counted only. Used by
//! `jetmail-ingest bounces import` and `POST /v1/bounces`.

pub mod parse;

use jetmail_common::api::{BounceReport, Suppressed};
use jetmail_common::compliance::SuppressionReason;
use jetmail_common::topology::Topology;

pub use parse::{ReportError, Verdict};

use crate::suppressions::{self, SuppressError};

/// Why a bounce message was not applied.
#[derive(Debug, thiserror::Error)]
pub enum BounceError {
    /// Not a report ingest can act on: nothing was suppressed.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A recipient the report names is not an address: nothing was suppressed.
    #[error("the report names {address:?}, which is not an address")]
    BadRecipient { address: String },
    #[error(transparent)]
    Store(#[from] jetmail_common::store::StoreError),
}

/// Reads one raw report and suppresses what it proves. Every address is checked before the
/// first write, so a report is applied whole or not at all.
pub async fn apply(topo: &Topology, raw: &[u8]) -> Result<BounceReport, BounceError> {
    let report = parse::parse(raw)?;
    let mut answer = BounceReport {
        kind: report.kind,
        campaign: report.campaign.clone(),
        suppressed: Vec::new(),
        soft_bounces: 0,
        ignored: 0,
    };
    let mut entries = Vec::new();
    for v in report.verdicts {
        let (address, reason, detail) = match v {
            Verdict::Hard { address, status } => (address, SuppressionReason::HardBounce, status),
            Verdict::Complaint { address } => {
                (address, SuppressionReason::Complaint, "abuse".to_string())
            }
            Verdict::Soft { .. } => {
                answer.soft_bounces += 1;
                continue;
            }
            Verdict::Ignored { .. } => {
                answer.ignored += 1;
                continue;
            }
        };
        let entry = suppressions::entry(
            &address,
            reason,
            report.campaign.clone(),
            Some(detail.clone()),
        )
        .map_err(|e| match e {
            SuppressError::Store(s) => BounceError::Store(s),
            _ => BounceError::BadRecipient { address },
        })?;
        entries.push((entry, detail));
    }
    for (entry, detail) in entries {
        let added = suppressions::insert(topo, &entry).await?;
        answer.suppressed.push(Suppressed {
            address: entry.address,
            reason: entry.reason,
            detail,
            added,
        });
    }
    Ok(answer)
}
