//! Reading and changing campaign records in `mail_campaigns`. Several processes write a record
//! (ingest's progress, campaign control, the monitor's `done`), so every change is a
//! compare-and-set that is retried on a concurrent write.

use async_nats::jetstream::kv;
use bytes::Bytes;

use crate::store::StoreError;
use crate::topology::{self, Topology};
use crate::wire::{CampaignProgress, CampaignRecord};

/// Compare-and-set attempts before [`update_record`] gives up with [`StoreError::Conflict`].
const CAS_ATTEMPTS: usize = 50;

/// Reads a campaign record with its KV revision. A record that exists but cannot be decoded
/// is [`StoreError::Corrupt`], not "absent": its messages must not wait for it forever.
pub async fn load_record(
    topo: &Topology,
    id: &str,
) -> Result<Option<(CampaignRecord, u64)>, StoreError> {
    let key = topology::campaign_key(id);
    match topo.campaigns.entry(&key).await {
        Ok(Some(e)) if e.operation == kv::Operation::Put => serde_json::from_slice(&e.value)
            .map(|r| Some((r, e.revision)))
            .map_err(|source| StoreError::Corrupt {
                what: format!("campaign record {id}"),
                source,
            }),
        Ok(_) => Ok(None),
        Err(e) => Err(StoreError::broker(e)),
    }
}

/// Applies `change` to a record with compare-and-set, retrying on concurrent writes.
pub async fn update_record(
    topo: &Topology,
    id: &str,
    mut change: impl FnMut(&mut CampaignRecord),
) -> Result<CampaignRecord, StoreError> {
    let key = topology::campaign_key(id);
    for _ in 0..CAS_ATTEMPTS {
        let Some((mut rec, rev)) = load_record(topo, id).await? else {
            return Err(StoreError::NotFound(format!("campaign {id}")));
        };
        let before = rec.clone();
        change(&mut rec);
        if rec == before {
            return Ok(rec);
        }
        let bytes = Bytes::from(serde_json::to_vec(&rec).expect("a record always serialises"));
        match topo.campaigns.update(&key, bytes, rev).await {
            Ok(_) => return Ok(rec),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(StoreError::broker(e)),
        }
    }
    Err(StoreError::Conflict(format!("campaign {id}")))
}

/// A campaign's delivery progress (zero when the monitor has not written it yet).
pub async fn load_progress(topo: &Topology, id: &str) -> Result<CampaignProgress, StoreError> {
    match topo.campaigns.get(topology::progress_key(id)).await {
        Ok(Some(b)) => serde_json::from_slice(&b).map_err(|source| StoreError::Corrupt {
            what: format!("progress of campaign {id}"),
            source,
        }),
        Ok(None) => Ok(CampaignProgress::default()),
        Err(e) => Err(StoreError::broker(e)),
    }
}

/// The ids of every campaign with a record (progress keys and foreign keys left out).
pub async fn list_campaign_ids(topo: &Topology) -> Result<Vec<String>, StoreError> {
    use futures::TryStreamExt;
    let keys: Vec<String> = topo
        .campaigns
        .keys()
        .await
        .map_err(StoreError::broker)?
        .try_collect()
        .await
        .map_err(StoreError::broker)?;
    Ok(keys
        .iter()
        .filter_map(|k| match topology::CampaignsKey::parse(k) {
            Some(topology::CampaignsKey::Record(id)) => Some(id.to_string()),
            _ => None,
        })
        .collect())
}
