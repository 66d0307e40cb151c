//! The publish window of a submit: many messages to JetStream with a bounded number of acks
//! in flight, and how far the acknowledged prefix reaches.
//!
//! Each message is a plain publish whose reply subject is `<inbox>.<seq>` on one subscription
//! of this window, rather than the JetStream context's publish: that one makes an inbox
//! string, a one-shot channel, an entry in the client's request map, a semaphore permit and a
//! boxed future per message, and decodes every ack as JSON. Profiled at 1,000,000
//! recipients, that was a fifth of ingest's CPU. Here an ack costs a look-up by its subject's
//! last token, and only an error is decoded. What the broker does is the same: it stores the
//! message (dropping a repeated `Nats-Msg-Id`) and answers the reply subject.

use std::collections::VecDeque;
use std::fmt::Write;
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::{Client, HeaderMap, Message, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use jetmail_common::store::StoreError;

/// How long the window waits for its oldest ack before giving up: the JetStream context's
/// own request timeout (`config::jetstream_context`).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream's answer to a refused publish.
#[derive(serde::Deserialize)]
struct ErrorAck {
    error: async_nats::jetstream::Error,
}

/// What became of one message in flight.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Waiting,
    Stored,
    Refused,
}

/// Publishes with at most `limit` acks outstanding.
pub struct PublishWindow {
    client: Client,
    acks: Subscriber,
    /// `<inbox>.`: a reply subject is this and the message's sequence number.
    prefix: String,
    /// The sequence numbers not yet in the acknowledged prefix, oldest first.
    pending: VecDeque<(u64, Fate)>,
    /// Entries of `pending` still waiting for their ack.
    waiting: usize,
    limit: usize,
    /// Every sequence number up to this one is acknowledged.
    through: u64,
    /// The stream the messages go to, for errors.
    pub stream: &'static str,
    /// The first refusal, until it is returned; every ack before it still counts.
    failed: Option<StoreError>,
    /// Whether a publish was refused: `through` stops before it for good.
    refused: bool,
}

impl PublishWindow {
    /// A window whose acknowledged prefix starts after `through`.
    pub async fn open(
        client: Client,
        stream: &'static str,
        limit: usize,
        through: u64,
    ) -> Result<Self, StoreError> {
        let prefix = format!("{}.", client.new_inbox());
        let acks = client
            .subscribe(format!("{prefix}*"))
            .await
            .map_err(StoreError::broker)?;
        Ok(Self {
            client,
            acks,
            prefix,
            pending: VecDeque::with_capacity(limit),
            waiting: 0,
            limit,
            through,
            stream,
            failed: None,
            refused: false,
        })
    }

    /// Every sequence number up to this one is stored.
    pub fn through(&self) -> u64 {
        self.through
    }

    /// Publishes message `seq` (one above the last one published) once the window has room.
    pub async fn publish(
        &mut self,
        seq: u64,
        subject: Subject,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), StoreError> {
        while self.waiting >= self.limit {
            self.wait_for_ack().await?;
        }
        self.check()?;
        let mut reply = String::with_capacity(self.prefix.len() + 20);
        reply.push_str(&self.prefix);
        let _ = write!(reply, "{seq}");
        self.client
            .publish_with_reply_and_headers(subject, reply, headers, payload)
            .await
            .map_err(StoreError::broker)?;
        self.pending.push_back((seq, Fate::Waiting));
        self.waiting += 1;
        // Take the acks already here, so that `through` keeps up for checkpoints.
        while let Some(Some(ack)) = self.acks.next().now_or_never() {
            self.settle(ack);
        }
        self.check()
    }

    /// Waits for every ack in flight; the first refusal, if any, is the error.
    pub async fn finish(&mut self) -> Result<(), StoreError> {
        while self.waiting > 0 && !self.refused {
            self.wait_for_ack().await?;
        }
        self.check()
    }

    /// After a failure: waits (within the ack timeout) for the acks of what was published
    /// before the first refusal, so that `through` is as far as publishing truly got.
    pub async fn settle_in_flight(&mut self) {
        loop {
            let before_refusal = self
                .pending
                .iter()
                .take_while(|(_, fate)| *fate != Fate::Refused)
                .any(|(_, fate)| *fate == Fate::Waiting);
            if !before_refusal || self.wait_for_ack().await.is_err() {
                return;
            }
        }
    }

    fn check(&mut self) -> Result<(), StoreError> {
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn wait_for_ack(&mut self) -> Result<(), StoreError> {
        match tokio::time::timeout(ACK_TIMEOUT, self.acks.next()).await {
            Ok(Some(ack)) => {
                self.settle(ack);
                Ok(())
            }
            Ok(None) => Err(StoreError::from_publish(
                self.stream,
                PublishError::new(PublishErrorKind::BrokenPipe),
            )),
            Err(_) => Err(StoreError::from_publish(
                self.stream,
                PublishError::new(PublishErrorKind::TimedOut),
            )),
        }
    }

    /// Records one ack: the message is stored, or the broker refused it.
    fn settle(&mut self, ack: Message) {
        let Some(seq) = ack
            .subject
            .as_str()
            .strip_prefix(self.prefix.as_str())
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return;
        };
        // In flight, sequence numbers are consecutive from the front's.
        let Some(&(first, _)) = self.pending.front() else {
            return;
        };
        let Some(entry) = seq
            .checked_sub(first)
            .and_then(|i| self.pending.get_mut(i as usize))
            .filter(|(s, fate)| *s == seq && *fate == Fate::Waiting)
        else {
            return; // not ours, or already settled
        };
        self.waiting -= 1;
        match refusal(&ack) {
            None => entry.1 = Fate::Stored,
            Some(refusal) => {
                entry.1 = Fate::Refused;
                if !self.refused {
                    self.refused = true;
                    self.failed = Some(StoreError::from_publish(self.stream, refusal));
                }
            }
        }
        let before = self.through;
        while let Some(&(seq, Fate::Stored)) = self.pending.front() {
            self.pending.pop_front();
            self.through = seq;
        }
        if self.through > before {
            crate::telemetry::published(self.through - before);
        }
    }
}

/// Why the broker refused a publish, from its answer; `None` when it stored the message.
fn refusal(ack: &Message) -> Option<PublishError> {
    if ack.status == Some(StatusCode::NO_RESPONDERS) {
        return Some(PublishError::new(PublishErrorKind::StreamNotFound));
    }
    // A stored message's ack is `{"stream":…,"seq":…}`: only a refusal names an error.
    if !ack.payload.windows(7).any(|w| w == b"\"error\"") {
        return None;
    }
    Some(match serde_json::from_slice::<ErrorAck>(&ack.payload) {
        Ok(e) => PublishError::with_source(PublishErrorKind::Other, e.error),
        Err(e) => PublishError::with_source(PublishErrorKind::Other, e),
    })
}
