//! Admission: whether a recipient may be sent now under its campaign's schedule and rate, its
//! domain's limit and the global limit, and if not, where it waits. A recipient that must
//! wait is *moved* to its scope's held queue in MAIL_HELD (published there, then acked here):
//! it spends no delivery, sits in no sender and in no nak, and the messages behind it in the
//! outbox go on at once, so a throttled domain never delays the others. The held queues are
//! drained by [`crate::lanes`] at each scope's rate.
//!
//! Scopes are checked in one order, campaign, then domain, then global; a message pulled from
//! a scope's held queue has passed that scope and every scope listed in its
//! [`PASSED_HEADER`], so it never goes back to one it already waited for.

use std::time::Duration;

use async_nats::jetstream::Message;
use async_nats::HeaderMap;
use jetmail_common::limits::Scope;
use jetmail_common::now_ms;
use jetmail_common::topology::{self, HeldSubject, OutboxSubject};
use jetmail_common::wire::OutboxMessage;
use tokio::sync::OwnedSemaphorePermit;

use crate::campaigns::Campaign;
use crate::Ctx;

/// Header listing the scopes a moved message already waited for (space-separated tokens).
pub const PASSED_HEADER: &str = "Jetmail-Passed";
/// A send waits at most this long for the global budget before it is moved to the global
/// queue instead: longer waits would hold a send slot and run down the message's ack wait.
const GLOBAL_WAIT: Duration = Duration::from_secs(2);

/// Where a message came from: the outbox, or one scope's held queue.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The held scope it was pulled from, if any.
    pub held: Option<Scope>,
    /// Scopes it has waited for already.
    pub passed: Vec<Scope>,
    /// Its recipient's domain, as a subject token.
    pub domain_token: String,
}

impl Origin {
    pub fn of(msg: &Message) -> Option<Self> {
        let (held, domain_token) = if let Some(h) = HeldSubject::parse(&msg.subject) {
            (Some(h.scope), h.domain_token.to_string())
        } else {
            let o = OutboxSubject::parse(&msg.subject)?;
            (None, o.domain_token.to_string())
        };
        let mut passed: Vec<Scope> = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(PASSED_HEADER))
            .map(|v| {
                v.as_str()
                    .split(' ')
                    .filter_map(|t| Scope::parse(t).ok())
                    .collect()
            })
            .unwrap_or_default();
        passed.extend(held.clone());
        Some(Self {
            held,
            passed,
            domain_token,
        })
    }

    fn passed(&self, scope: &Scope) -> bool {
        self.passed.contains(scope)
    }
}

/// What to do with a recipient now.
pub enum Admission {
    /// Send it; the session (of a capped domain) is held until the send ends.
    Send(Option<OwnedSemaphorePermit>),
    /// It waits in this scope's held queue.
    Hold(Scope),
    /// Its campaign's deadline passed: dead-letter it as expired.
    Expired,
}

/// Decides for one recipient. `lane_session` is the session a domain lane already took.
pub async fn admit(
    ctx: &Ctx,
    origin: &Origin,
    campaign: &Campaign,
    lane_session: Option<OwnedSemaphorePermit>,
) -> Admission {
    let schedule = campaign.record.schedule;
    let now = now_ms();
    if schedule.expired(now) {
        return Admission::Expired;
    }
    let own = Scope::Campaign(campaign.record.id.clone());
    if (schedule.waiting(now) || schedule.rate.is_some()) && !origin.passed(&own) {
        return Admission::Hold(own);
    }
    let mut session = lane_session;
    if let Some(scope) = ctx.throttle.domain_scope(&origin.domain_token) {
        if !origin.passed(&scope) {
            match ctx.throttle.session(&scope) {
                None => {}
                Some(Ok(p)) => session = Some(p),
                Some(Err(())) => return Admission::Hold(scope),
            }
            if let Some(rate) = ctx.throttle.effective_rate(&scope) {
                if ctx.throttle.try_take(&scope, rate).await.is_err() {
                    return Admission::Hold(scope);
                }
            }
        }
    }
    if ctx.throttle.has_global() && !origin.passed(&Scope::Global) {
        let rate = || ctx.throttle.effective_rate(&Scope::Global);
        let never = tokio_util::sync::CancellationToken::new();
        if !ctx
            .throttle
            .take(&Scope::Global, rate, Some(GLOBAL_WAIT), &never)
            .await
        {
            return Admission::Hold(Scope::Global);
        }
    }
    Admission::Send(session)
}

/// Why a move to a held queue did not happen; the message is then handed back as untried.
#[derive(Debug, thiserror::Error)]
#[error("cannot move the recipient to MAIL_HELD: {0}")]
pub struct HoldError(#[source] jetmail_common::store::StoreError);

/// Moves `msg` to `scope`'s held queue: publish (with an id that makes a retried move a
/// no-op) and wait for the broker's ack; the caller acks the original only then, so a crash
/// in between leaves the original to be moved again, never lost.
pub async fn move_to(
    ctx: &Ctx,
    msg: &Message,
    m: &OutboxMessage,
    origin: &Origin,
    scope: &Scope,
) -> Result<(), HoldError> {
    let id = topology::held_msg_id(scope, &m.campaign, m.seq, m.replay);
    publish_held(ctx, msg, m, origin, scope, &id).await
}

/// Re-publishes a message handed back at its last delivery to `scope`'s held queue, with an
/// id of its own (the original's stream and sequence: one re-queue per original), so it
/// starts again with a fresh delivery count.
pub async fn requeue(
    ctx: &Ctx,
    msg: &Message,
    m: &OutboxMessage,
    origin: &Origin,
    scope: &Scope,
    stream: &str,
    stream_seq: u64,
) -> Result<(), HoldError> {
    let id = topology::requeue_msg_id(stream, stream_seq);
    publish_held(ctx, msg, m, origin, scope, &id).await
}

async fn publish_held(
    ctx: &Ctx,
    msg: &Message,
    m: &OutboxMessage,
    origin: &Origin,
    scope: &Scope,
    msg_id: &str,
) -> Result<(), HoldError> {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    // The scope it goes to is not "passed": only the ones it already waited for.
    let passed: Vec<String> = origin
        .passed
        .iter()
        .filter(|s| *s != scope)
        .map(Scope::token)
        .collect();
    if !passed.is_empty() {
        headers.insert(PASSED_HEADER, passed.join(" ").as_str());
    }
    let subject = topology::held_subject(scope, &m.campaign, &origin.domain_token);
    let what = topology::HELD_STREAM;
    ctx.topo
        .js
        .publish_with_headers(subject, headers, msg.payload.clone())
        .await
        .map_err(|e| HoldError(jetmail_common::store::StoreError::from_publish(what, e)))?
        .await
        .map_err(|e| HoldError(jetmail_common::store::StoreError::from_publish(what, e)))?;
    ctx.throttle.note_held(scope);
    Ok(())
}

/// The enhanced status code (RFC 3463) at the start of an SMTP reply's text, e.g. `4.7.0`.
pub fn enhanced_code(text: &str) -> Option<(u8, u16, u16)> {
    text.split(|c: char| c.is_whitespace() || c == ':' || c == '(' || c == ')')
        .filter(|t| !t.is_empty())
        .take(6)
        .find_map(|t| {
            let mut p = t.split('.');
            let class: u8 = p.next()?.parse().ok()?;
            let subject: u16 = p.next()?.parse().ok()?;
            let detail: u16 = p.next()?.parse().ok()?;
            (p.next().is_none() && matches!(class, 2 | 4 | 5)).then_some((class, subject, detail))
        })
}

/// A reply that asks the sender to slow down: 421, or any 4.7.x (rate limited, too many
/// connections).
pub fn asks_to_slow_down(code: Option<u16>, text: &str) -> bool {
    code == Some(421) || matches!(enhanced_code(text), Some((4, 7, _)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_enhanced_codes_in_replies() {
        assert_eq!(
            enhanced_code("4.7.0 Try again later, closing connection."),
            Some((4, 7, 0))
        );
        assert_eq!(
            enhanced_code("transient error (450): 4.7.28 rate limited"),
            Some((4, 7, 28))
        );
        assert_eq!(enhanced_code("550 5.1.1 user unknown"), Some((5, 1, 1)));
        assert_eq!(enhanced_code("mailbox busy"), None);
        assert_eq!(enhanced_code("version 1.2.3.4"), None);
        assert!(asks_to_slow_down(Some(421), "service not available"));
        assert!(asks_to_slow_down(Some(450), "4.7.1 too many connections"));
        assert!(!asks_to_slow_down(Some(450), "4.2.0 mailbox busy"));
    }
}
