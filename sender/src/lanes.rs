//! Held lanes: one task per scope with recipients in MAIL_HELD, pulling from that scope's
//! consumer only as many messages as the scope's budget grants and the sender has free slots,
//! so a held recipient is only ever in a sender while it is being sent. Every sender runs a
//! lane for every such scope; the shared budget ([`jetmail_common::budget`]) keeps their sum
//! at the scope's rate.
//!
//! A campaign's lane also waits for its send-at time and pauses with the campaign; a lane
//! whose campaign was cancelled or whose deadline passed drains without a budget (those
//! recipients are settled, not sent).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, Consumer};
use futures::StreamExt;
use jetmail_common::limits::Scope;
use jetmail_common::now_ms;
use jetmail_common::topology::{self, HeldSubject};
use jetmail_common::wire::CampaignStatus;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{deliver, Ctx};

/// How often the lanes manager looks for scopes that need a lane.
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// Leftover held scopes (a limit removed with recipients still held) are found by listing
/// MAIL_HELD's subjects, which costs more: this often.
const SUBJECTS_SCAN_EVERY: Duration = Duration::from_secs(15);
/// A lane with nothing to pull for this long, and no reason to exist, ends.
const IDLE_END: Duration = Duration::from_secs(10);
/// Most messages one lane pull asks for.
const MAX_BATCH: usize = 64;
const PULL_EXPIRES: Duration = Duration::from_millis(500);
/// How often a lane whose held queue is empty looks again. It holds no send slot and takes no
/// budget meanwhile: an idle lane that did would starve the outbox pull of slots and waste
/// the budget it took on pulls that bring nothing.
const EMPTY_POLL: Duration = Duration::from_millis(100);

/// Starts and ends lanes until `shutdown`; lanes share the sender's send `slots`.
pub async fn run(
    ctx: Arc<Ctx>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let running: Arc<Mutex<HashSet<Scope>>> = Arc::default();
    let mut last_subjects_scan: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(SCAN_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            // A scope a recipient was just moved to: its lane starts now (a first send of a
            // rate-limited campaign waits no scan period).
            _ = ctx.throttle.noted() => {}
        }
        let mut wanted: HashSet<Scope> = ctx.throttle.limited_scopes().into_iter().collect();
        wanted.extend(ctx.campaigns.held_scopes(now_ms()));
        wanted.extend(ctx.throttle.take_noted());
        if last_subjects_scan.is_none_or(|t| t.elapsed() >= SUBJECTS_SCAN_EVERY) {
            last_subjects_scan = Some(tokio::time::Instant::now());
            wanted.extend(scopes_with_held_messages(&ctx).await);
        }
        for scope in wanted {
            if !running.lock().unwrap().insert(scope.clone()) {
                continue;
            }
            let (ctx, slots, tracker2, shutdown, running) = (
                ctx.clone(),
                slots.clone(),
                tracker.clone(),
                shutdown.clone(),
                running.clone(),
            );
            tracker.spawn(async move {
                lane(&ctx, &scope, slots, &tracker2, &shutdown).await;
                running.lock().unwrap().remove(&scope);
            });
        }
    }
}

async fn scopes_with_held_messages(ctx: &Ctx) -> HashSet<Scope> {
    use futures::TryStreamExt;
    let mut out = HashSet::new();
    let Ok(subjects) = ctx
        .topo
        .held
        .clone()
        .info_with_subjects(topology::held_filter())
        .await
    else {
        return out;
    };
    let Ok(counts) = subjects.try_collect::<Vec<(String, usize)>>().await else {
        return out;
    };
    for (subject, n) in counts {
        if n > 0 {
            if let Some(h) = HeldSubject::parse(&subject) {
                out.insert(h.scope);
            }
        }
    }
    out
}

/// What a lane must respect before it pulls.
enum Gate {
    /// Pull, at this rate (`None`: as fast as slots allow).
    Open(Option<f64>),
    /// Wait this long and look again.
    Wait(Duration),
    /// Nothing holds this scope any more: pull freely, end when empty.
    Free,
}

fn gate(ctx: &Ctx, scope: &Scope) -> Gate {
    match scope {
        Scope::Campaign(id) => {
            let Some(c) = ctx.campaigns.cached(id) else {
                return Gate::Free;
            };
            let now = now_ms();
            let schedule = c.record.schedule;
            match c.status() {
                // Settled without sending: no budget needed.
                CampaignStatus::Cancelled | CampaignStatus::Done => return Gate::Free,
                _ if schedule.expired(now) => return Gate::Free,
                CampaignStatus::Paused => return Gate::Wait(Duration::from_millis(500)),
                _ => {}
            }
            if let Some(at) = schedule.send_at_ms.filter(|at| now < *at) {
                return Gate::Wait(Duration::from_millis((at - now).min(1000)));
            }
            match schedule.rate {
                Some(r) => Gate::Open(Some(r.per_second())),
                None => Gate::Free,
            }
        }
        _ => match ctx.throttle.effective_rate(scope) {
            Some(r) => Gate::Open(Some(r)),
            None => Gate::Free,
        },
    }
}

async fn lane(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    slots: Arc<Semaphore>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let config = topology::held_consumer_config(scope, &ctx.policy);
    let mut consumer: Option<Consumer<pull::Config>> = None;
    let mut idle_since = tokio::time::Instant::now();
    // When this lane last pulled for a possible redelivery (see below).
    let mut probed_at = tokio::time::Instant::now();
    tracing::debug!(%scope, "lane started");
    while !shutdown.is_cancelled() {
        let mut c = match &consumer {
            Some(c) => c.clone(),
            None => match ctx
                .topo
                .held
                .get_or_create_consumer(&topology::held_consumer_name(scope), config.clone())
                .await
            {
                Ok(c) => {
                    consumer = Some(c.clone());
                    c
                }
                Err(e) => {
                    tracing::warn!(%scope, error = %e, "cannot use a held consumer; retrying");
                    if sleep_or_stop(Duration::from_secs(1), shutdown).await {
                        break;
                    }
                    continue;
                }
            },
        };
        let gate = gate(ctx, scope);
        let rate = match gate {
            Gate::Wait(d) => {
                if sleep_or_stop(d, shutdown).await {
                    break;
                }
                continue;
            }
            Gate::Open(r) => r,
            Gate::Free => None,
        };
        // Only what is waiting: neither a slot nor the budget is taken for an empty queue. A
        // message whose sender died is not counted as pending but as ack-pending, and comes
        // back only to a pull: once nothing has come for half an ack wait while some are
        // unacknowledged, pull one anyway (a grant may be wasted then, at most once per half
        // ack wait), or a rate-limited queue whose last sender crashed would strand it.
        let pending = match c.info().await {
            Ok(info) if info.num_pending == 0 && info.num_ack_pending > 0 => {
                let half = ctx.policy.ack_wait / 2;
                let probe = idle_since.elapsed() >= half && probed_at.elapsed() >= half;
                if probe {
                    probed_at = tokio::time::Instant::now();
                }
                usize::from(probe)
            }
            Ok(info) => info.num_pending as usize,
            Err(e) => {
                tracing::warn!(%scope, error = %e, "cannot read a held consumer; re-creating it");
                consumer = None;
                if sleep_or_stop(Duration::from_millis(250), shutdown).await {
                    break;
                }
                continue;
            }
        };
        if pending == 0 {
            if gate_kind_free(ctx, scope) && idle_since.elapsed() >= IDLE_END {
                break;
            }
            if sleep_or_stop(EMPTY_POLL, shutdown).await {
                break;
            }
            continue;
        }
        // In this order: a session of a capped domain (local, at once); one send slot, waited
        // for in the semaphore's queue; the budget's first send, holding that one slot only;
        // then as many more slots, sessions and sends as are free and waiting. Waiting for the
        // budget without a slot in hand does not work: the outbox pull takes every free slot
        // for its long poll, so a lane that is not queued for one when slots come free gets
        // none for up to that poll's length (measured: a 25/s domain held at 13-16/s).
        let mut sessions: Vec<Option<OwnedSemaphorePermit>> = Vec::new();
        if let Some(first_session) = ctx.throttle.session(scope) {
            let Ok(p) = first_session else {
                // This sender's share of the domain's sessions is in use.
                if sleep_or_stop(Duration::from_millis(20), shutdown).await {
                    break;
                }
                continue;
            };
            sessions.push(Some(p));
        }
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        if let Some(per_second) = rate {
            let rate_now = || match scope {
                Scope::Campaign(_) => Some(per_second),
                _ => ctx.throttle.effective_rate(scope),
            };
            if !ctx.throttle.take(scope, rate_now, None, shutdown).await {
                break;
            }
        }
        let mut permits = vec![first];
        while permits.len() < MAX_BATCH.min(pending) {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        if !sessions.is_empty() {
            while sessions.len() < permits.len() {
                match ctx.throttle.session(scope) {
                    Some(Ok(p)) => sessions.push(Some(p)),
                    _ => break,
                }
            }
            permits.truncate(sessions.len());
        }
        if let Some(per_second) = rate {
            // The rest in one take: one round trip for the batch, not one per message.
            let more = ctx
                .throttle
                .try_take_many(scope, per_second, permits.len() as u32 - 1)
                .await;
            let granted = 1 + more as usize;
            permits.truncate(granted);
            if !sessions.is_empty() {
                sessions.truncate(granted);
            }
        }
        let batch = c
            .batch()
            .max_messages(permits.len())
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%scope, error = %e, "held pull failed; re-creating the consumer");
                consumer = None;
                if sleep_or_stop(Duration::from_millis(250), shutdown).await {
                    break;
                }
                continue;
            }
        };
        let mut got = 0;
        while let Some(next) = batch.next().await {
            let Ok(msg) = next else { break };
            let Some(permit) = permits.pop() else {
                let _ = msg
                    .ack_with(async_nats::jetstream::AckKind::Nak(Some(
                        Duration::from_secs(1),
                    )))
                    .await;
                continue;
            };
            got += 1;
            let session = sessions.pop().flatten();
            tracker.spawn(deliver::handle_held(ctx.clone(), msg, permit, session));
        }
        if got > 0 {
            idle_since = tokio::time::Instant::now();
        } else if gate_kind_free(ctx, scope) && idle_since.elapsed() >= IDLE_END {
            break;
        }
    }
    tracing::debug!(%scope, "lane ended");
}

/// True when nothing keeps the scope's lane alive but held messages: no limit, or a
/// campaign that needs no waiting.
fn gate_kind_free(ctx: &Ctx, scope: &Scope) -> bool {
    match scope {
        Scope::Campaign(id) => ctx
            .campaigns
            .cached(id)
            .is_none_or(|c| c.record.schedule.rate.is_none() || c.status() == CampaignStatus::Done),
        _ => ctx.throttle.effective_rate(scope).is_none(),
    }
}

/// Sleeps `d`; true when `shutdown` came first.
async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
