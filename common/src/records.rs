//! Reading and changing campaign records in `mail_campaigns`. Several processes write a record
//! (ingest's progress, campaign control, the monitor's `done`), so every change is a
//! compare-and-set that is retried on a concurrent write.

use async_nats::jetstream::kv;
use bytes::Bytes;

use crate::topology::{self, Topology};
use crate::wire::{CampaignProgress, CampaignRecord};

/// Reads a campaign record with its KV revision.
pub async fn load_record(
    topo: &Topology,
    id: &str,
) -> Result<Option<(CampaignRecord, u64)>, String> {
    match topo.campaigns.entry(id).await {
        Ok(Some(e)) if e.operation == kv::Operation::Put => Ok(serde_json::from_slice(&e.value)
            .ok()
            .map(|r| (r, e.revision))),
        Ok(_) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Applies `change` to a record with compare-and-set, retrying on concurrent writes.
pub async fn update_record(
    topo: &Topology,
    id: &str,
    mut change: impl FnMut(&mut CampaignRecord),
) -> Result<CampaignRecord, String> {
    for _ in 0..50 {
        let Some((mut rec, rev)) = load_record(topo, id).await? else {
            return Err(format!("campaign {id} not found"));
        };
        let before = rec.clone();
        change(&mut rec);
        if rec == before {
            return Ok(rec);
        }
        let bytes = Bytes::from(serde_json::to_vec(&rec).map_err(|e| e.to_string())?);
        match topo.campaigns.update(id, bytes, rev).await {
            Ok(_) => return Ok(rec),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("campaign {id}: too many concurrent updates"))
}

/// A campaign's delivery progress (zero when the monitor has not written it yet).
pub async fn load_progress(topo: &Topology, id: &str) -> Result<CampaignProgress, String> {
    match topo.campaigns.get(topology::progress_key(id)).await {
        Ok(Some(b)) => serde_json::from_slice(&b).map_err(|e| e.to_string()),
        Ok(None) => Ok(CampaignProgress::default()),
        Err(e) => Err(e.to_string()),
    }
}
