//! The suppression list in `mail_suppressions`: adding (by hand, from an import, from an
//! unsubscribe or a bounce report), removing, listing, exporting, and the set a submit loads
//! once to skip suppressed recipients without a broker round trip per recipient.
//!
//! One address is one entry, whatever case its domain was written in or which form its IDN
//! domain took ([`normalize_address`]); an entry that exists is never overwritten, so an
//! address keeps the reason and campaign it was first suppressed for.

use std::collections::HashSet;
use std::io::Read;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::kv;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use jetmail_common::address::AddressError;
use jetmail_common::api::{SuppressReport, SuppressionList, SuppressionQuery};
use jetmail_common::compliance::{
    address_key_bits, normalize_address, suppression_key, suppression_key_bits, Suppression,
    SuppressionReason,
};
use jetmail_common::store::StoreError;
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{DeliveryEvent, Outcome, RejectedRow, WIRE_VERSION};

use crate::recipients::{FormatError, Row, RowClassifier};

/// KV writes in flight during an add or an import.
const WRITE_CONCURRENCY: usize = 64;
/// Header of a KV entry's operation on the bucket's stream (`DEL`, `PURGE`; absent or `PUT`
/// for a value): part of the KV protocol, not exported by async-nats.
const KV_OPERATION_HEADER: &str = "KV-Operation";
/// The CSV column of an import that gives a row's reason.
pub const REASON_COLUMN: &str = "reason";

/// Why a suppression-list operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SuppressError {
    /// Nothing was changed: every address of a request is checked before any is written.
    #[error("{address:?} is not an address: {source}")]
    InvalidAddress {
        address: String,
        #[source]
        source: AddressError,
    },
    #[error("{0}")]
    Format(#[from] FormatError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new entry for `raw`, normalised.
pub fn entry(
    raw: &str,
    reason: SuppressionReason,
    campaign: Option<String>,
    detail: Option<String>,
) -> Result<Suppression, SuppressError> {
    let address = normalize_address(raw).map_err(|source| SuppressError::InvalidAddress {
        address: raw.to_string(),
        source,
    })?;
    Ok(Suppression {
        v: WIRE_VERSION,
        address,
        reason,
        at_ms: jetmail_common::now_ms(),
        campaign,
        detail,
    })
}

/// Stores `entry` unless its address is already suppressed. True when it was added.
pub async fn insert(topo: &Topology, entry: &Suppression) -> Result<bool, StoreError> {
    let bytes = Bytes::from(serde_json::to_vec(entry).expect("an entry serialises"));
    match topo
        .suppressions
        .create(suppression_key(&entry.address), bytes)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(StoreError::broker(e)),
    }
}

/// Stores many entries, [`WRITE_CONCURRENCY`] at a time, counting them into `report`.
async fn insert_all(
    topo: &Topology,
    entries: Vec<Suppression>,
    report: &mut SuppressReport,
) -> Result<(), StoreError> {
    let mut writes = futures::stream::iter(entries)
        .map(|e| async move { insert(topo, &e).await })
        .buffer_unordered(WRITE_CONCURRENCY);
    while let Some(added) = writes.next().await {
        if added? {
            report.added += 1;
        } else {
            report.already += 1;
        }
    }
    Ok(())
}

/// Suppresses `addresses` for `reason`; refuses the whole request if one is not an address.
pub async fn add(
    topo: &Topology,
    addresses: &[String],
    reason: SuppressionReason,
) -> Result<SuppressReport, SuppressError> {
    let entries = addresses
        .iter()
        .map(|a| entry(a, reason, None, None))
        .collect::<Result<Vec<_>, _>>()?;
    let mut report = SuppressReport::default();
    insert_all(topo, entries, &mut report).await?;
    Ok(report)
}

/// The entry of `raw`'s address, if it is suppressed.
pub async fn get(topo: &Topology, raw: &str) -> Result<Option<Suppression>, SuppressError> {
    let e = entry(raw, SuppressionReason::Manual, None, None)?;
    match topo.suppressions.get(suppression_key(&e.address)).await {
        Ok(Some(b)) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                what: format!("suppression of {}", e.address),
                source,
            })
            .map_err(Into::into),
        Ok(None) => Ok(None),
        Err(e) => Err(StoreError::broker(e).into()),
    }
}

/// Takes `raw`'s address off the list: it may be mailed again. False when it was not on it.
pub async fn remove(topo: &Topology, raw: &str) -> Result<bool, SuppressError> {
    if get(topo, raw).await?.is_none() {
        return Ok(false);
    }
    let address = normalize_address(raw).expect("checked by get");
    topo.suppressions
        .delete(suppression_key(&address))
        .await
        .map_err(StoreError::broker)?;
    Ok(true)
}

/// Imports a CSV with an `email` column and an optional `reason` column, or bare addresses
/// one a line, read with ingest's recipients reader: a bad row (not an address, an unknown
/// reason) is reported with its line and never stops the good ones.
pub async fn import<R: Read + Send + 'static>(
    topo: &Topology,
    input: R,
    default_reason: SuppressionReason,
) -> Result<SuppressReport, SuppressError> {
    let (mut rows, _) = crate::feed::rows_from_reader_with(input, RowClassifier::without_dedup())?;
    let mut report = SuppressReport::default();
    let mut batch = Vec::with_capacity(1024);
    let reject = |report: &mut SuppressReport, r: RejectedRow| {
        report.rejected_count += 1;
        if report.rejected.len() < crate::publish::REJECTED_SAMPLE {
            report.rejected.push(r);
        }
    };
    while let Some(row) = rows.next().await {
        match row {
            Row::Accepted(a) => {
                let reason = match a.vars.get(REASON_COLUMN).map(|r| r.trim()) {
                    None | Some("") => default_reason,
                    Some(r) => match r.parse() {
                        Ok(r) => r,
                        Err(e) => {
                            let e: jetmail_common::compliance::UnknownReason = e;
                            reject(
                                &mut report,
                                RejectedRow {
                                    line: a.line,
                                    email: a.email,
                                    reason: e.to_string(),
                                },
                            );
                            continue;
                        }
                    },
                };
                match entry(&a.email, reason, None, None) {
                    Ok(e) => batch.push(e),
                    Err(e) => reject(
                        &mut report,
                        RejectedRow {
                            line: a.line,
                            email: a.email,
                            reason: e.to_string(),
                        },
                    ),
                }
            }
            Row::Rejected(r) => reject(&mut report, r),
            Row::Duplicate { .. } => {}
        }
        if batch.len() >= 1024 {
            insert_all(topo, std::mem::take(&mut batch), &mut report).await?;
        }
    }
    insert_all(topo, batch, &mut report).await?;
    Ok(report)
}

/// Reads the bucket's stream once, last value per key, and calls `each` with the key and (unless
/// `headers_only`) the value of every entry still present: one pass rather than one request per
/// key.
async fn scan_entries(
    topo: &Topology,
    headers_only: bool,
    mut each: impl FnMut(&str, &[u8]),
) -> Result<(), StoreError> {
    let mut stream = topo.suppressions.stream.clone();
    let info = stream.info().await.map_err(StoreError::broker)?;
    if info.state.messages == 0 {
        return Ok(());
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::LastPerSubject,
            filter_subject: format!("{}>", topo.suppressions.prefix),
            headers_only,
            ..Default::default()
        })
        .await
        .map_err(StoreError::broker)?;
    let mut messages = consumer.messages().await.map_err(StoreError::broker)?;
    while let Some(m) = messages.try_next().await.map_err(StoreError::broker)? {
        let pending = m.info().map(|i| i.pending).unwrap_or(0);
        let deleted = m
            .headers
            .as_ref()
            .and_then(|h| h.get(KV_OPERATION_HEADER))
            .is_some_and(|op| op.as_str() != "PUT");
        if !deleted {
            let key = m
                .subject
                .as_str()
                .strip_prefix(topo.suppressions.prefix.as_str())
                .unwrap_or_default();
            each(key, &m.payload);
        }
        if pending == 0 {
            break;
        }
    }
    Ok(())
}

/// Calls `each` with every entry of the list, in no particular order.
pub async fn scan(topo: &Topology, mut each: impl FnMut(Suppression)) -> Result<(), StoreError> {
    scan_entries(topo, false, |key, value| {
        match serde_json::from_slice::<Suppression>(value) {
            Ok(s) => each(s),
            // One bad entry must not hide the list; it still suppresses its address.
            Err(e) => tracing::error!(%key, error = %e, "unreadable suppression entry"),
        }
    })
    .await
}

/// The entries matching `q`, sorted by address, at most `q.limit` of them.
pub async fn list(topo: &Topology, q: &SuppressionQuery) -> Result<SuppressionList, StoreError> {
    let search = q.search.as_deref().map(str::to_lowercase);
    let mut found = Vec::new();
    scan(topo, |s| {
        let hit = q.reason.is_none_or(|r| r == s.reason)
            && search
                .as_deref()
                .is_none_or(|t| s.address.to_lowercase().contains(t));
        if hit {
            found.push(s);
        }
    })
    .await?;
    let total = found.len() as u64;
    found.sort_by(|a, b| a.address.cmp(&b.address));
    found.truncate(q.limit);
    Ok(SuppressionList {
        suppressions: found,
        total,
    })
}

/// The whole list, sorted by address (what `suppress export` writes).
pub async fn all(topo: &Topology) -> Result<Vec<Suppression>, StoreError> {
    let mut all = Vec::new();
    scan(topo, |s| all.push(s)).await?;
    all.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(all)
}

/// Every suppressed address's key, loaded once per submit: a listing of the bucket's keys
/// (headers only), ~16 bytes of memory per address, so that checking a recipient costs a
/// hash and no broker round trip. An address suppressed after the load is caught by the
/// sender's own check.
#[derive(Debug, Default)]
pub struct SuppressedSet(HashSet<u128>);

impl SuppressedSet {
    pub async fn load(topo: &Topology) -> Result<Self, StoreError> {
        let mut set = HashSet::new();
        // Headers only: the keys are in the subjects, so no value crosses the wire.
        scan_entries(topo, true, |key, _| {
            if let Some(bits) = suppression_key_bits(key) {
                set.insert(bits);
            }
        })
        .await?;
        Ok(Self(set))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the address `email` (as a recipient reader accepted it) is suppressed.
    pub fn contains(&self, email: &str) -> bool {
        !self.0.is_empty() && address_key_bits(email).is_some_and(|k| self.0.contains(&k))
    }
}

/// The `suppressed` event that settles recipient `seq` of `campaign` skipped at submit, as
/// subject, headers (its `Nats-Msg-Id`) and payload: published in the submit's window like a
/// recipient message, so the campaign's progress counts it and the campaign can finish.
pub fn skipped_event(campaign: &str, seq: u64) -> (String, HeaderMap, Bytes) {
    let ev = DeliveryEvent {
        v: WIRE_VERSION,
        campaign: campaign.to_string(),
        seq,
        outcome: Outcome::Suppressed,
        undoes: None,
        sender: "ingest".into(),
        at_ms: jetmail_common::now_ms(),
        published_ms: jetmail_common::now_ms(),
    };
    let mut headers = HeaderMap::new();
    let id = topology::event_msg_id(campaign, seq, 0, Outcome::Suppressed, None);
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    let payload = Bytes::from(serde_json::to_vec(&ev).expect("an event serialises"));
    (
        topology::event_subject(campaign, Outcome::Suppressed, seq),
        headers,
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_to_their_bits() {
        let k = suppression_key("ann@example.com");
        let mut set = SuppressedSet::default();
        set.0.insert(suppression_key_bits(&k).unwrap());
        assert!(set.contains("ann@EXAMPLE.com"));
        assert!(!set.contains("Ann@example.com"));
        assert!(!set.contains("bob@example.com"));
    }
}
