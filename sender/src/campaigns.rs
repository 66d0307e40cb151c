//! The sender's view of campaigns: records from `mail_campaigns`, kept current by a KV watch
//! (so a pause or cancel is seen within a second), with each campaign's templates compiled
//! once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use jetmail_common::store::StoreError;
use jetmail_common::template::{CampaignTemplates, TemplateError};
use jetmail_common::topology::{self, CAMPAIGN_RECORDS_FILTER};
use jetmail_common::wire::{CampaignRecord, CampaignStatus};
use tokio_util::sync::CancellationToken;

/// One campaign as a sender uses it.
pub struct Campaign {
    pub record: CampaignRecord,
    /// `Err` when the stored templates do not compile (ingest refuses those; kept for safety).
    pub templates: Arc<Result<CampaignTemplates, TemplateError>>,
    /// The sender mailbox, parsed once per campaign rather than per message.
    pub from: Result<lettre::message::Mailbox, lettre::address::AddressError>,
}

impl Campaign {
    pub fn status(&self) -> CampaignStatus {
        self.record.status
    }
}

/// Campaign records by id, shared by every send task.
#[derive(Clone)]
pub struct Campaigns {
    store: kv::Store,
    cache: Arc<RwLock<HashMap<String, Arc<Campaign>>>>,
}

impl Campaigns {
    pub fn new(store: kv::Store) -> Self {
        Self {
            store,
            cache: Arc::default(),
        }
    }

    fn apply(&self, record: CampaignRecord) {
        let mut cache = self.cache.write().unwrap();
        let templates = match cache.get(&record.id) {
            // Same spec (only the status or counters changed): keep the compiled templates.
            Some(old) if old.record.spec == record.spec => old.templates.clone(),
            _ => Arc::new(CampaignTemplates::compile(&record.spec)),
        };
        let from = record.spec.from.trim().parse();
        let entry = Arc::new(Campaign {
            record,
            templates,
            from,
        });
        cache.insert(entry.record.id.clone(), entry);
    }

    /// The campaign, from the cache or (the watch may lag a new campaign) from the bucket.
    /// A record that exists but cannot be decoded is [`StoreError::Corrupt`]: waiting will not
    /// fix it, so its messages must not wait for it.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<Campaign>>, StoreError> {
        if let Some(c) = self.cache.read().unwrap().get(id) {
            return Ok(Some(c.clone()));
        }
        match self.store.get(topology::campaign_key(id)).await {
            Ok(Some(bytes)) => {
                let record: CampaignRecord =
                    serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                        what: format!("campaign record {id}"),
                        source,
                    })?;
                self.apply(record);
                Ok(self.cache.read().unwrap().get(id).cloned())
            }
            Ok(None) => Ok(None),
            Err(e) => Err(StoreError::broker(e)),
        }
    }

    /// The campaign if the cache has it (no broker round trip).
    pub fn cached(&self, id: &str) -> Option<Arc<Campaign>> {
        self.cache.read().unwrap().get(id).cloned()
    }

    /// The campaign scopes whose held queues need a lane: campaigns with their own rate or a
    /// send-at time, still to be settled.
    pub fn held_scopes(&self, now_ms: u64) -> Vec<jetmail_common::limits::Scope> {
        self.cache
            .read()
            .unwrap()
            .values()
            .filter(|c| c.status() != CampaignStatus::Done)
            .filter(|c| c.record.schedule.rate.is_some() || c.record.schedule.send_at_ms.is_some())
            .filter(|c| {
                c.status() != CampaignStatus::Cancelled || c.record.schedule.waiting(now_ms)
            })
            .map(|c| jetmail_common::limits::Scope::Campaign(c.record.id.clone()))
            .collect()
    }

    /// Follows changes to campaign records until `shutdown`; re-creates the watch when it
    /// fails (a broker restart ends it).
    pub async fn watch(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let mut watch = match self.store.watch_with_history(CAMPAIGN_RECORDS_FILTER).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch campaigns; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = watch.next() => n,
                };
                match next {
                    Some(Ok(entry)) if entry.operation == kv::Operation::Put => {
                        match serde_json::from_slice::<CampaignRecord>(&entry.value) {
                            Ok(rec) => self.apply(rec),
                            Err(e) => {
                                tracing::warn!(key = %entry.key, error = %e, "unreadable campaign record")
                            }
                        }
                    }
                    Some(Ok(entry)) => {
                        self.cache.write().unwrap().remove(&entry.key);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "campaign watch failed; re-creating it");
                        break;
                    }
                    None => break,
                }
            }
        }
    }
}
