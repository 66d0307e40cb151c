//! The live state behind every page: one [`Hub`] per process watches `mail_campaigns` (records
//! and progress) and `mail_senders` with history, asks MAIL_OUTBOX how many messages each
//! campaign still has, and fans changes out to Server-Sent Event streams. Pages never poll:
//! a browser holds one SSE connection, and the broker pushes KV changes to the hub.
//!
//! The hub only reads. It keeps a short history of counters per campaign (one sample a
//! second while the campaign moves) for the throughput chart: that history starts when this
//! process starts watching.
//!
//! - [`views`]: what pages and events show (pure functions of the wire types);
//! - [`samples`]: the counter history and the rate measured over it;
//! - [`hub`]: the state kept from the watches, and the ticker;
//! - [`sse`]: the event streams browsers hold.

mod hub;
mod samples;
mod sse;
mod views;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use hub::Hub;
pub use samples::{Sample, MAX_SAMPLES, RATE_WINDOW_MS};
pub use sse::{campaign_events, sender_events, CampaignEventsQuery};
pub use views::{
    circuit_str, sender_state_str, shown_sender_state, CampaignSummary, RelayView, SenderView,
};

/// How often campaign counters are sampled, pending counts refreshed and rates recomputed.
pub const TICK: Duration = Duration::from_secs(1);
/// How often sender entries are checked for silence.
pub const SENDER_SWEEP: Duration = Duration::from_millis(200);
/// The campaign list shows (and streams) this many, newest first.
pub const LIST_LIMIT: usize = 200;

/// SSE event names.
pub const EV_CAMPAIGN: &str = "campaign";
pub const EV_CAMPAIGN_REMOVED: &str = "campaign_removed";
pub const EV_SENDER: &str = "sender";
pub const EV_SENDER_REMOVED: &str = "sender_removed";

/// One change, serialized once for every subscriber.
#[derive(Debug)]
pub struct LiveEvent {
    pub kind: &'static str,
    pub id: String,
    pub data: String,
}

fn event<T: Serialize>(kind: &'static str, id: &str, value: &T) -> Arc<LiveEvent> {
    Arc::new(LiveEvent {
        kind,
        id: id.to_string(),
        data: serde_json::to_string(value).unwrap_or_else(|_| "null".into()),
    })
}
