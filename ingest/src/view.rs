//! Campaigns as the API and `jetmail-ingest status` show them: the record, the monitor's
//! delivery progress and the broker's count of recipients still waiting (outbox and held).

use async_nats::jetstream::stream::Stream;
use futures::TryStreamExt;
use jetmail_common::api::CampaignView;
use jetmail_common::records::{list_campaign_ids, load_progress, load_record};
use jetmail_common::store::StoreError;
use jetmail_common::topology::{self, Topology};

/// Reads a campaign, its progress and its pending count; `None` when there is no such
/// campaign (an id that cannot be a campaign's is none either).
pub async fn campaign_view(topo: &Topology, id: &str) -> Result<Option<CampaignView>, StoreError> {
    if topology::validate_campaign_id(id).is_err() {
        return Ok(None);
    }
    let Some((record, _)) = load_record(topo, id).await? else {
        return Ok(None);
    };
    let progress = load_progress(topo, id).await?;
    let pending = pending_count(topo, id).await?;
    Ok(Some(CampaignView {
        record,
        progress,
        pending,
    }))
}

/// Every campaign, newest first. A campaign whose record cannot be decoded is left out and
/// logged, so that one bad record does not hide every other campaign.
pub async fn campaign_views(topo: &Topology) -> Result<Vec<CampaignView>, StoreError> {
    let mut out = Vec::new();
    for id in list_campaign_ids(topo).await? {
        match campaign_view(topo, &id).await {
            // A test send is no campaign: listed nowhere.
            Ok(Some(v)) if v.record.test => {}
            Ok(Some(v)) => out.push(v),
            // Removed since the listing.
            Ok(None) => {}
            Err(e @ StoreError::Corrupt { .. }) => {
                tracing::error!(campaign = %id, error = %e, "campaign left out of the list")
            }
            Err(e) => return Err(e),
        }
    }
    out.sort_by_key(|v| std::cmp::Reverse(v.record.created_ms));
    Ok(out)
}

/// Messages of one campaign still waiting: in MAIL_OUTBOX, or held in MAIL_HELD for a limit
/// or its send-at. The broker answers per subject.
pub async fn pending_count(topo: &Topology, id: &str) -> Result<u64, StoreError> {
    let outbox = subject_total(&topo.outbox, topology::outbox_campaign_filter(id)).await?;
    let held = subject_total(&topo.held, topology::held_campaign_filter(id)).await?;
    Ok(outbox + held)
}

async fn subject_total(stream: &Stream, filter: String) -> Result<u64, StoreError> {
    let subjects = stream
        .clone()
        .info_with_subjects(filter)
        .await
        .map_err(StoreError::broker)?;
    let counts: Vec<(String, usize)> = subjects.try_collect().await.map_err(StoreError::broker)?;
    Ok(counts.into_iter().map(|(_, n)| n as u64).sum())
}
