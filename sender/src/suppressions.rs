//! The suppression list as a sender sees it: every key of `mail_suppressions`, held in
//! memory and kept current by a KV watch, so the check just before a send costs a hash and a
//! set look-up, never a broker round trip. The watch starts with the bucket's history; the
//! sender pulls nothing until that history is loaded ([`Suppressions::loaded`]), so a sender
//! that starts with a half-loaded list cannot mail someone already on it.
//!
//! Keys are kept as the 128 bits they spell ([`suppression_key`] is `s.` and 32 hex
//! digits), 16 bytes an entry rather than a string: a million entries fit in tens of MB.
//!
//! It also writes the list: a permanent failure whose enhanced status code says the mailbox
//! does not exist suppresses the address as `hard_bounce` ([`hard_bounce_code`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures::StreamExt;
use jetmail_common::compliance::{
    address_key_bits, normalize_address, suppression_key, suppression_key_bits, Suppression,
    SuppressionReason,
};
use jetmail_common::wire::{OutboxMessage, WIRE_VERSION};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The in-memory suppression set, fed by [`Suppressions::watch`].
#[derive(Default)]
pub struct Suppressions {
    keys: RwLock<HashSet<u128>>,
    loaded: AtomicBool,
    loaded_notify: Notify,
}

impl Suppressions {
    pub fn new() -> Self {
        Self::default()
    }

    /// True when `email` is on the list. Costs parsing the address, a SHA-256 and a look-up.
    pub fn contains(&self, email: &str) -> bool {
        address_key_bits(email).is_some_and(|k| self.keys.read().unwrap().contains(&k))
    }

    pub fn len(&self) -> usize {
        self.keys.read().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Returns once the bucket's history at start has been read.
    pub async fn loaded(&self) {
        loop {
            let notified = self.loaded_notify.notified();
            if self.is_loaded() {
                return;
            }
            notified.await;
        }
    }

    fn mark_loaded(&self) {
        if !self.loaded.swap(true, Ordering::AcqRel) {
            self.loaded_notify.notify_waiters();
        }
    }

    fn insert(&self, key: u128) {
        self.keys.write().unwrap().insert(key);
    }

    /// Adds a key without the broker, for the lookup-cost example only.
    #[doc(hidden)]
    pub fn insert_for_bench(&self, key: u128) {
        self.insert(key)
    }

    /// Follows `mail_suppressions` until `shutdown`, history first; re-creates the watch when
    /// it fails (a broker restart ends it). A re-created watch replays the history, deletes
    /// included, so nothing missed in between is lost.
    pub async fn watch(&self, store: kv::Store, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            // An empty bucket sends no history at all: nothing to wait for.
            let empty = match store.status().await {
                Ok(s) => {
                    // Sized once for the whole history: growing by doubling would hold two
                    // tables at once at every step (measured: peak RSS 100 MiB for 1M).
                    let mut keys = self.keys.write().unwrap();
                    let want = (s.values() as usize).saturating_sub(keys.len());
                    keys.reserve(want);
                    s.values() == 0
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the suppression bucket; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            // The last value (or delete marker) of every key, then live changes.
            let mut watch = match store.watch_with_history(">").await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch suppressions; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if empty {
                self.mark_loaded();
            }
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = watch.next() => n,
                };
                match next {
                    Some(Ok(entry)) => {
                        if let Some(k) = suppression_key_bits(&entry.key) {
                            if entry.operation == kv::Operation::Put {
                                self.insert(k);
                            } else {
                                self.keys.write().unwrap().remove(&k);
                            }
                        }
                        // `delta` counts what the watch still has to deliver: zero is the
                        // end of the history, and later entries are live changes.
                        if entry.delta == 0 && !self.is_loaded() {
                            self.mark_loaded();
                            tracing::info!(
                                entries = self.len(),
                                ms = started.elapsed().as_millis() as u64,
                                "suppression list loaded"
                            );
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "suppression watch failed; re-creating it");
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    /// Puts `email` on the list as a hard bounce of `campaign`, unless it is on it already
    /// (the first reason stays). The local set learns it at once, the fleet through the KV.
    pub async fn add_hard_bounce(
        &self,
        store: &kv::Store,
        email: &str,
        campaign: &str,
        reply: &str,
    ) -> Result<bool, SuppressError> {
        let address = normalize_address(email).map_err(|_| SuppressError::Address)?;
        let key = suppression_key(&address);
        let entry = Suppression {
            v: WIRE_VERSION,
            address,
            reason: SuppressionReason::HardBounce,
            at_ms: jetmail_common::now_ms(),
            campaign: Some(campaign.to_string()),
            detail: Some(reply.to_string()),
        };
        let value = serde_json::to_vec(&entry).expect("a suppression serialises");
        if let Some(k) = suppression_key_bits(&key) {
            self.insert(k);
        }
        match store.create(&key, value.into()).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(SuppressError::Store(e)),
        }
    }
}

/// After a permanent failure: a reply whose enhanced code says the mailbox does not exist
/// ([`hard_bounce_code`]) suppresses the address. A failure to record it is logged and the
/// message settled as usual (the dead letter keeps the reply).
pub async fn on_permanent_failure(ctx: &crate::Ctx, m: &OutboxMessage, reply: &str) {
    let Some((class, subject, detail)) = hard_bounce_code(reply) else {
        return;
    };
    let store = &ctx.topo.suppressions;
    match ctx
        .suppressions
        .add_hard_bounce(store, &m.email, &m.campaign, reply)
        .await
    {
        Ok(added) => tracing::info!(
            campaign = %m.campaign,
            seq = m.seq,
            code = %format!("{class}.{subject}.{detail}"),
            added,
            "hard bounce: address suppressed"
        ),
        Err(e) => tracing::warn!(
            campaign = %m.campaign,
            seq = m.seq,
            error = %e,
            "hard bounce not recorded on the suppression list"
        ),
    }
}

/// A hard bounce that could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum SuppressError {
    #[error("the address does not parse")]
    Address,
    #[error("cannot write the suppression: {0}")]
    Store(#[source] kv::CreateError),
}

/// The enhanced status code (RFC 3463) of a permanent failure that says the address will
/// never take mail, or `None`:
/// - 5.1.1 bad destination mailbox (the mailbox does not exist),
/// - 5.1.2 bad destination system (the domain does not exist or takes no mail),
/// - 5.1.3 bad destination address syntax,
/// - 5.1.6 mailbox moved, no forwarding address,
/// - 5.1.10 null MX (RFC 7505: the domain declares it takes no mail).
///
/// Not 5.1.0 ("other address status"): servers use it for anything about an address,
/// sender-side policy included, so it does not prove the mailbox is gone. Not 5.2.x (a full
/// or disabled mailbox may come back) and not 5.7.x (policy or content: the next mail may
/// pass). Only the enhanced code decides, never the reply's wording.
pub fn hard_bounce_code(reply: &str) -> Option<(u8, u16, u16)> {
    match crate::hold::enhanced_code(reply)? {
        c @ (5, 1, 1 | 2 | 3 | 6 | 10) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_address_codes_are_hard_bounces() {
        assert!(hard_bounce_code("550 5.1.1 user unknown").is_some());
        assert!(hard_bounce_code("permanent error (550): 5.1.10 null MX").is_some());
        assert!(hard_bounce_code("550 5.1.2 host unknown").is_some());
        assert!(hard_bounce_code("550 5.7.1 message refused as spam").is_none());
        assert!(hard_bounce_code("550 5.1.0 address rejected").is_none());
        assert!(hard_bounce_code("552 5.2.2 mailbox full").is_none());
        assert!(hard_bounce_code("450 4.1.1 try later").is_none());
        assert!(
            hard_bounce_code("550 user unknown").is_none(),
            "no enhanced code: no guess"
        );
    }

    #[test]
    fn keys_round_trip_through_bits() {
        let a = normalize_address("Ann@Bücher.Example").unwrap();
        let k = suppression_key(&a);
        let bits = suppression_key_bits(&k).unwrap();
        assert_eq!(format!("s.{bits:032x}"), k);
        assert_eq!(address_key_bits("Ann@xn--bcher-kva.example"), Some(bits));
        assert_eq!(suppression_key_bits("s.zz"), None);
        assert_eq!(suppression_key_bits("other"), None);
        let s = Suppressions::new();
        s.insert(bits);
        assert!(s.contains("Ann@BÜCHER.example"));
        assert!(
            !s.contains("ann@bücher.example"),
            "the local part is case-sensitive"
        );
        assert!(!s.contains("not an address"));
    }
}
