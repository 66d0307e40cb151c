//! The Server-Sent Event streams pages hold: the current state first, then every change the
//! hub announces that concerns the page. They end when the server shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::{
    event, Hub, LiveEvent, EV_CAMPAIGN, EV_CAMPAIGN_REMOVED, EV_SENDER, EV_SENDER_REMOVED,
    LIST_LIMIT,
};
use crate::AppState;

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What one SSE stream carries.
#[derive(Debug, Clone)]
enum Topic {
    /// Every campaign, or one.
    Campaigns(Option<String>),
    Senders,
}

impl Topic {
    fn matches(&self, ev: &LiveEvent) -> bool {
        match self {
            Topic::Campaigns(id) => {
                (ev.kind == EV_CAMPAIGN || ev.kind == EV_CAMPAIGN_REMOVED)
                    && id.as_ref().is_none_or(|id| *id == ev.id)
            }
            Topic::Senders => ev.kind == EV_SENDER || ev.kind == EV_SENDER_REMOVED,
        }
    }
}

/// The whole current state of `topic`, as events.
fn snapshot(hub: &Hub, topic: &Topic) -> Vec<Arc<LiveEvent>> {
    match topic {
        Topic::Campaigns(None) => hub
            .campaigns()
            .iter()
            .take(LIST_LIMIT)
            .rev()
            .map(|c| event(EV_CAMPAIGN, &c.id, c))
            .collect(),
        Topic::Campaigns(Some(id)) => hub
            .campaign(id)
            .map(|c| vec![event(EV_CAMPAIGN, &c.id, &c)])
            .unwrap_or_default(),
        Topic::Senders => hub
            .senders()
            .iter()
            .map(|s| event(EV_SENDER, &s.id, s))
            .collect(),
    }
}

/// The current state first, then every change; a subscriber that falls behind gets the
/// current state again rather than a gap. Ends when the server shuts down.
fn live_stream(app: &AppState, topic: Topic) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before the snapshot, so nothing between the two is missed.
    let rx = app.hub.subscribe();
    let queue: VecDeque<Arc<LiveEvent>> = snapshot(&app.hub, &topic).into();
    let hub = app.hub.clone();
    let stream = futures::stream::unfold((rx, queue), move |(mut rx, mut queue)| {
        let hub = hub.clone();
        let topic = topic.clone();
        async move {
            loop {
                if let Some(ev) = queue.pop_front() {
                    let e = Event::default().event(ev.kind).data(ev.data.as_str());
                    return Some((Ok(e), (rx, queue)));
                }
                match rx.recv().await {
                    Ok(ev) if topic.matches(&ev) => queue.push_back(ev),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        queue.extend(snapshot(&hub, &topic));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    })
    .take_until(app.shutdown.clone().cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

#[derive(Debug, Deserialize)]
pub struct CampaignEventsQuery {
    id: Option<String>,
}

/// `GET /events/campaigns[?id=…]`: `campaign` and `campaign_removed` events.
pub async fn campaign_events(
    State(app): State<AppState>,
    Query(q): Query<CampaignEventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    live_stream(&app, Topic::Campaigns(q.id.filter(|i| !i.is_empty())))
}

/// `GET /events/senders`: `sender` and `sender_removed` events.
pub async fn sender_events(
    State(app): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    live_stream(&app, Topic::Senders)
}
