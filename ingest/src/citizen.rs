//! What a submit does to send like a good citizen (issue 9), in one value the publisher
//! takes: the unsubscribe links and per-recipient tokens, whether suppressed recipients are
//! skipped, and whether the campaign is a test send (listed and counted nowhere).

use std::sync::Arc;

use jetmail_common::store::StoreError;
use jetmail_common::topology::Topology;
use jetmail_common::wire::UnsubscribeLinks;

use crate::suppressions::SuppressedSet;
use crate::unsubscribe::Unsubscribe;

/// The good-citizen side of one submit. `Default` is none of it (a bare publisher).
#[derive(Debug, Clone, Default)]
pub struct Compliance {
    /// Signs each recipient's token; the record gets the links when the key has them.
    pub unsubscribe: Option<Arc<Unsubscribe>>,
    /// Skip recipients on the suppression list (loaded once per submit).
    pub check_suppressions: bool,
    /// A test send: the record says so, and nothing lists or counts it.
    pub test: bool,
}

impl Compliance {
    /// A campaign: suppressed recipients skipped, links when configured.
    pub fn campaign(unsubscribe: Option<Arc<Unsubscribe>>) -> Self {
        Self {
            unsubscribe,
            check_suppressions: true,
            test: false,
        }
    }

    /// The links the campaign record carries.
    pub fn links(&self) -> Option<UnsubscribeLinks> {
        self.unsubscribe.as_ref().and_then(|u| u.links.clone())
    }

    /// The token of one recipient, when the campaign has links to put it in.
    pub fn token(&self, campaign: &str, address: &str) -> Option<String> {
        let u = self.unsubscribe.as_ref().filter(|u| u.links.is_some())?;
        Some(u.token(campaign, address))
    }

    /// The suppressed addresses to skip (none when not checking).
    pub async fn suppressed(&self, topo: &Topology) -> Result<SuppressedSet, StoreError> {
        if !self.check_suppressions {
            return Ok(SuppressedSet::default());
        }
        let started = std::time::Instant::now();
        let set = SuppressedSet::load(topo).await?;
        tracing::debug!(
            addresses = set.len(),
            ms = started.elapsed().as_millis() as u64,
            "suppression list loaded"
        );
        Ok(set)
    }
}
