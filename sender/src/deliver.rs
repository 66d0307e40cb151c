//! What a sender does with one message (DESIGN.md, "Sender, per message"). Every path ends
//! in exactly one settlement: ack, nak with a delay, or terminate after a dead letter; a bad
//! message is settled, never fatal.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{AckKind, Message};
use jetmail_common::limits::Scope;
use jetmail_common::now_ms;
use jetmail_common::store::StoreError;
use jetmail_common::wire::{
    Attempt, CampaignStatus, DeadLetter, DeliveryEvent, OutboxMessage, Outcome, WIRE_VERSION,
};
use jetmail_common::{outcomes, topology};
use tokio::sync::OwnedSemaphorePermit;

use crate::hold::{self, Admission, Origin};
use crate::message;
pub use crate::message::BuildError;
use crate::recent;
use crate::settle::{ack_msg, ack_settled, hand_back, retry, settle};
use crate::smtp::SendOutcome;
use crate::suppressions;
use crate::Ctx;

/// Handles one message to the end. `_permit` frees the send slot when dropped.
pub async fn handle(ctx: Arc<Ctx>, msg: Message, _permit: tokio::sync::OwnedSemaphorePermit) {
    ctx.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    process(&ctx, &msg, None).await;
    ctx.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
}

/// Handles one message pulled by a held lane, which already took the scope's budget and,
/// for a capped domain, one of its sessions (held until the send ends).
pub async fn handle_held(
    ctx: Arc<Ctx>,
    msg: Message,
    _permit: tokio::sync::OwnedSemaphorePermit,
    session: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    ctx.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    process(&ctx, &msg, session).await;
    ctx.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
}

fn delivered(msg: &Message) -> i64 {
    msg.info().map(|i| i.delivered).unwrap_or(1)
}

async fn process(ctx: &Ctx, msg: &Message, lane_session: Option<OwnedSemaphorePermit>) {
    let delivery = delivered(msg);
    let m: OutboxMessage = match serde_json::from_slice(&msg.payload) {
        Ok(m) => m,
        Err(e) => return poison(ctx, msg, format!("undecodable message: {e}")).await,
    };
    test_crash(ctx, &m.email, CrashPoint::BeforeSend);
    let campaign = match ctx.campaigns.get(&m.campaign).await {
        Ok(Some(c)) => c,
        Ok(None) => return poison(ctx, msg, format!("unknown campaign {}", m.campaign)).await,
        // Waiting will not make the record readable: dead-letter rather than loop forever.
        Err(e @ StoreError::Corrupt { .. }) => {
            let reason = format!("cannot be sent: {e}");
            let mut attempts =
                previous_attempts(ctx, &topology::attempts_key(&m.campaign, m.seq), delivery).await;
            attempts.push(attempt(ctx, "-", None, reason.clone()));
            return dead_letter(ctx, msg, &m, Outcome::Dead, reason, attempts).await;
        }
        Err(e) => {
            tracing::warn!(campaign = %m.campaign, error = %e, "cannot read campaign; retrying later");
            return hand_back(ctx, msg, delivery, ctx.cfg.blocked_retry).await;
        }
    };
    match campaign.status() {
        CampaignStatus::Paused => return hand_back(ctx, msg, delivery, ctx.cfg.paused_retry).await,
        CampaignStatus::Cancelled => {
            event(ctx, &m, Outcome::Cancelled, None).await;
            return ack_settled(msg).await;
        }
        _ => {}
    }
    let Some(origin) = Origin::of(msg) else {
        return poison(ctx, msg, format!("not an outbox subject: {}", msg.subject)).await;
    };
    let key = topology::attempts_key(&m.campaign, m.seq);
    // The broker came back and this sender has not repaired what it may have lost yet (a pull
    // that outlived the reconnect can still bring messages): send nothing until it has.
    if ctx.recent.reconnect_pending().is_some() {
        return hand_back(ctx, msg, delivery, recent::RECONNECT_GRACE).await;
    }
    // Only a redelivered or moved message can have been sent already (a move whose original
    // was redelivered after a crash, a hand-back): skip the look-up otherwise. After a broker
    // restart a redelivery can come with a count of 1: `recent` says so.
    if delivery > 1 || origin.held.is_some() || ctx.recent.suspect() {
        if let Ok(true) = outcomes::already_sent(&ctx.topo.events, &m.campaign, m.seq).await {
            tracing::debug!(campaign = %m.campaign, seq = m.seq, "already sent; acking redelivery");
            return ack_settled(msg).await;
        }
    }
    // Held on purpose until the send ends: the session of a capped domain.
    let _session = match hold::admit(ctx, &origin, &campaign, lane_session).await {
        Admission::Send(session) => session,
        Admission::Hold(scope) => return hold_back(ctx, msg, &m, &origin, &scope, delivery).await,
        Admission::Expired => {
            let reason = format!(
                "expired: not delivered by the campaign's deadline ({})",
                campaign
                    .record
                    .schedule
                    .deadline_ms
                    .map(jetmail_common::schedule::format_ms)
                    .unwrap_or_default()
            );
            let mut attempts = previous_attempts(ctx, &key, delivery).await;
            attempts.push(attempt(ctx, "-", None, reason.clone()));
            return dead_letter(ctx, msg, &m, Outcome::Expired, reason, attempts).await;
        }
    };
    let deadline_ms = campaign.record.schedule.deadline_ms;
    // Checked as late as possible: an address suppressed since the submit is not mailed.
    if ctx.suppressions.contains(&m.email) {
        event(ctx, &m, Outcome::Suppressed, None).await;
        return ack_settled(msg).await;
    }
    let (from, to, body) = match message::prepare(&ctx.cfg.message, &campaign, &m).await {
        Ok(b) => (b.envelope_from, b.to, b.body),
        Err(e) => {
            let reason = e.to_string();
            let attempt = attempt(ctx, "-", None, reason.clone());
            return dead_letter(ctx, msg, &m, Outcome::Failed, reason, vec![attempt]).await;
        }
    };
    let Some(relay_index) = ctx.pick_relay() else {
        // Every circuit is open: hand the message back untried, soon, for a healthy sender.
        return hand_back(ctx, msg, delivery, ctx.cfg.blocked_retry).await;
    };
    let relay = &ctx.relays[relay_index];
    let started = Instant::now();
    let outcome = relay.send(&from, &to, &body, ctx.cfg.send_timeout).await;
    crate::metrics::smtp(started.elapsed(), &outcome);
    match outcome {
        SendOutcome::Accepted => {
            relay.circuit.lock().unwrap().on_success();
            ctx.stats.sent.fetch_add(1, Ordering::Relaxed);
            // The `sent` event is the ledger too: once the broker acknowledged it, a
            // redelivery is acked without sending, so the ack itself need not be confirmed.
            let recorded = event(ctx, &m, Outcome::Sent, None).await;
            // Remembered either way: the repair after a reconnect writes the event again.
            ctx.recent
                .record(&m.campaign, m.seq, m.replay, m.published_ms);
            if !recorded {
                // Acked without its event, the recipient would be counted nowhere and its
                // campaign never done: left to come back after the ack wait (by then the
                // repair has written the event, or it is mailed again: see ARCHITECTURE).
                tracing::error!(campaign = %m.campaign, seq = m.seq, "sent, but its event could not be stored: not acking");
                return;
            }
            test_crash(ctx, &m.email, CrashPoint::AfterLedger);
            if delivery > 1 {
                let _ = ctx.topo.attempts.purge(&key).await;
            }
            ack_settled(msg).await;
            tracing::trace!(
                seq = m.seq,
                ms = started.elapsed().as_millis() as u64,
                "sent"
            );
        }
        SendOutcome::Permanent { code, text } => {
            relay.circuit.lock().unwrap().on_success();
            ctx.stats.failed.fetch_add(1, Ordering::Relaxed);
            let a = attempt(ctx, relay.redacted(), code, text.clone());
            let mut attempts = previous_attempts(ctx, &key, delivery).await;
            attempts.push(a);
            suppressions::on_permanent_failure(ctx, &m, &text).await;
            dead_letter(ctx, msg, &m, Outcome::Failed, text, attempts).await;
        }
        SendOutcome::Transient { code, text } => {
            // "Too fast" under a limit is answered by halving the limit, not by the circuit:
            // the relay is well, it asks us to slow down.
            let throttled = hold::asks_to_slow_down(code, &text) && slow_down(ctx, &origin).await;
            let circuit = !throttled;
            failed_attempt(
                ctx,
                msg,
                &m,
                relay_index,
                delivery,
                deadline_ms,
                circuit,
                code,
                text,
            )
            .await;
        }
        SendOutcome::Unknown { text } => {
            let text = format!("outcome unknown (may have been delivered): {text}");
            failed_attempt(
                ctx,
                msg,
                &m,
                relay_index,
                delivery,
                deadline_ms,
                true,
                None,
                text,
            )
            .await;
        }
        SendOutcome::RelayFailed { code, text } => {
            // A 421 (which closes the session, so it is the relay's failure) is also how
            // providers say "too fast": it halves the limit like a 4.7.x does.
            let throttled = hold::asks_to_slow_down(code, &text) && slow_down(ctx, &origin).await;
            // The relay failed, not the recipient: the failure counts toward the relay's
            // circuit (unless it only asked us to slow down under a limit, which the limit's
            // back-off answers) and the message goes back untried, costing none of its
            // retries. The relay logs the reason itself, once per change.
            if !throttled && relay.circuit.lock().unwrap().on_failure(Instant::now()) {
                tracing::warn!(relay = %relay.redacted(), error = %text, "relay circuit opened");
            }
            hand_back(ctx, msg, delivery, ctx.cfg.blocked_retry).await;
        }
    }
}

/// A 421 or 4.7.x reply: the recipient's domain limit (or else the global one) is halved
/// fleet-wide for a cool-down. Without a limit there is no rate to halve: the retry schedule
/// and the relay's circuit alone space the attempts. True when a limit took it.
async fn slow_down(ctx: &Ctx, origin: &Origin) -> bool {
    let scope = ctx
        .throttle
        .domain_scope(&origin.domain_token)
        .or_else(|| ctx.throttle.has_global().then_some(Scope::Global));
    let Some(scope) = scope else {
        return false;
    };
    if let Err(e) = ctx.throttle.refused(&scope).await {
        tracing::warn!(%scope, error = %e, "cannot record the back-off");
    }
    true
}

/// Moves a recipient that must wait to its scope's held queue, then acks the original. If the
/// move fails, the message is handed back untried instead.
async fn hold_back(
    ctx: &Ctx,
    msg: &Message,
    m: &OutboxMessage,
    origin: &Origin,
    scope: &Scope,
    delivery: i64,
) {
    match hold::move_to(ctx, msg, m, origin, scope).await {
        Ok(()) => ack_msg(msg).await,
        Err(e) => {
            tracing::warn!(%scope, error = %e, "cannot hold a recipient back; handing it back");
            hand_back(ctx, msg, delivery, ctx.cfg.blocked_retry).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn failed_attempt(
    ctx: &Ctx,
    msg: &Message,
    m: &OutboxMessage,
    relay_index: usize,
    delivery: i64,
    deadline_ms: Option<u64>,
    count_toward_circuit: bool,
    code: Option<u16>,
    text: String,
) {
    let relay = &ctx.relays[relay_index];
    if count_toward_circuit && relay.circuit.lock().unwrap().on_failure(Instant::now()) {
        tracing::warn!(relay = %relay.redacted(), error = %text, "relay circuit opened");
    }
    let key = topology::attempts_key(&m.campaign, m.seq);
    let a = attempt(ctx, relay.redacted(), code, text.clone());
    if delivery >= ctx.max_deliver {
        let mut attempts = previous_attempts(ctx, &key, delivery).await;
        attempts.push(a);
        let reason = format!("retries exhausted after {delivery} attempts; last: {text}");
        return dead_letter(ctx, msg, m, Outcome::Dead, reason, attempts).await;
    }
    ctx.stats.deferred.fetch_add(1, Ordering::Relaxed);
    // Keep the attempt for the dead letter a later delivery may write on another sender.
    let mut attempts = previous_attempts(ctx, &key, delivery).await;
    attempts.push(a);
    if let Ok(v) = serde_json::to_vec(&attempts) {
        let _ = ctx.topo.attempts.put(&key, v.into()).await;
    }
    event(ctx, m, Outcome::Deferred, Some(delivery)).await;
    // Never wait past the deadline: the message comes back then and is expired at once.
    let delay = match deadline_ms {
        Some(d) => ctx
            .retry_delay(delivery)
            .min(Duration::from_millis(d.saturating_sub(now_ms()))),
        None => ctx.retry_delay(delivery),
    };
    tracing::debug!(campaign = %m.campaign, seq = m.seq, delivery, ?delay, error = %text, "deferred");
    settle(msg, AckKind::Nak(Some(delay))).await;
}

async fn previous_attempts(ctx: &Ctx, key: &str, delivery: i64) -> Vec<Attempt> {
    if delivery <= 1 {
        return Vec::new();
    }
    match ctx.topo.attempts.get(key).await {
        Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn attempt(ctx: &Ctx, relay: &str, code: Option<u16>, error: String) -> Attempt {
    Attempt {
        at_ms: now_ms(),
        sender: ctx.cfg.id.clone(),
        relay: relay.to_string(),
        code,
        error,
    }
}

/// Where the test-only crash hook (`JETMAIL_TEST_CRASH_ON`) aborts the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashPoint {
    /// `JETMAIL_TEST_CRASH_ON=<email>`: before anything is sent, at every delivery (a message
    /// that kills its sender every time, for the monitor's MaxDeliver handling).
    BeforeSend,
    /// `JETMAIL_TEST_CRASH_ON=sent:<email>`: after the relay accepted it and its `sent` event
    /// (the ledger) is stored, before the ack (the redelivery must be acked without sending again).
    AfterLedger,
}

/// Prefix of the hook's value that selects [`CrashPoint::AfterLedger`].
const CRASH_AFTER_LEDGER_PREFIX: &str = "sent:";

fn test_crash(ctx: &Ctx, email: &str, point: CrashPoint) {
    let Some(hook) = ctx.crash_on.as_deref() else {
        return;
    };
    let (at, target) = match hook.strip_prefix(CRASH_AFTER_LEDGER_PREFIX) {
        Some(target) => (CrashPoint::AfterLedger, target),
        None => (CrashPoint::BeforeSend, hook),
    };
    if at == point && target == email {
        tracing::error!(email, ?point, "test hook: crashing on purpose");
        std::process::abort();
    }
}

/// Publishes an outcome event. Its id makes a re-publish after a crash a no-op.
/// True once the broker stored it.
async fn event(ctx: &Ctx, m: &OutboxMessage, outcome: Outcome, delivery: Option<i64>) -> bool {
    crate::metrics::delivery(outcome);
    let ev = DeliveryEvent::new(m, outcome, &ctx.cfg.id);
    let id = topology::event_msg_id(&m.campaign, m.seq, m.replay, outcome, delivery);
    retry("publish an event", || {
        outcomes::publish_event(&ctx.topo.js, &ev, &id)
    })
    .await
}

/// Moves a message to MAIL_DEAD (waiting for the broker's ack), then terminates it.
async fn dead_letter(
    ctx: &Ctx,
    msg: &Message,
    m: &OutboxMessage,
    outcome: Outcome,
    reason: String,
    attempts: Vec<Attempt>,
) {
    let dl = DeadLetter {
        v: WIRE_VERSION,
        campaign: m.campaign.clone(),
        seq: Some(m.seq),
        outcome,
        reason: reason.clone(),
        original: String::from_utf8_lossy(&msg.payload).into_owned(),
        original_subject: msg.subject.to_string(),
        attempts,
        at_ms: now_ms(),
    };
    let id = topology::dead_msg_id(&m.campaign, m.seq, m.replay);
    if publish_dead(ctx, &id, &dl).await {
        if outcome == Outcome::Dead {
            ctx.stats.dead.fetch_add(1, Ordering::Relaxed);
        }
        event(ctx, m, outcome, None).await;
        let _ = ctx
            .topo
            .attempts
            .purge(topology::attempts_key(&m.campaign, m.seq))
            .await;
        // A campaign that expires moves its whole remainder at once: not one INFO line each.
        if outcome == Outcome::Expired {
            tracing::debug!(campaign = %m.campaign, seq = m.seq, "expired: moved to MAIL_DEAD");
        } else {
            tracing::info!(campaign = %m.campaign, seq = m.seq, reason = %reason, "moved to MAIL_DEAD");
        }
        settle(msg, AckKind::Term).await;
    } else {
        // Not in MAIL_DEAD: leave it to the ack wait, so it comes back rather than vanishes.
        tracing::error!(campaign = %m.campaign, seq = m.seq, "cannot write dead letter; message will be redelivered");
    }
}

/// A message that cannot be handled at all (undecodable, unknown campaign).
async fn poison(ctx: &Ctx, msg: &Message, reason: String) {
    // The subject's campaign names where the dead letter goes.
    let campaign = topology::OutboxSubject::parse(&msg.subject)
        .map(|s| s.campaign.to_string())
        .or_else(|| topology::HeldSubject::parse(&msg.subject).map(|s| s.campaign.to_string()))
        .unwrap_or_else(|| "unknown".into());
    let (stream, info) = msg
        .info()
        .map(|i| (i.stream.to_string(), i.stream_sequence))
        .unwrap_or_default();
    let dl = DeadLetter {
        v: WIRE_VERSION,
        campaign: campaign.clone(),
        seq: None,
        outcome: Outcome::Dead,
        reason: reason.clone(),
        original: String::from_utf8_lossy(&msg.payload).into_owned(),
        original_subject: msg.subject.to_string(),
        attempts: vec![attempt(ctx, "-", None, reason.clone())],
        at_ms: now_ms(),
    };
    let id = topology::poison_msg_id(&stream, info);
    if publish_dead(ctx, &id, &dl).await {
        crate::metrics::delivery(Outcome::Dead);
        ctx.stats.dead.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(subject = %msg.subject, reason = %reason, "poison message moved to MAIL_DEAD");
        settle(msg, AckKind::Term).await;
    }
}

async fn publish_dead(ctx: &Ctx, id: &str, dl: &DeadLetter) -> bool {
    retry("write a dead letter", || {
        outcomes::publish_dead(&ctx.topo.js, dl, id)
    })
    .await
}
