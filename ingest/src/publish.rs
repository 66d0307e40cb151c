//! Publishing a campaign: store its spec once in `mail_campaigns`, then one message per
//! recipient to MAIL_OUTBOX with many publish acks in flight, recording how far publishing got
//! so that a retried submit resumes instead of mailing twice.

use std::collections::VecDeque;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::kv;
use async_nats::HeaderMap;
use bytes::Bytes;
use jetmail_common::address::domain_token;
use jetmail_common::now_ms;
use jetmail_common::template::CampaignTemplates;
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{
    CampaignRecord, CampaignSpec, CampaignStatus, OutboxMessage, PublishProgress, RejectedRow,
};
use tokio::sync::mpsc;

use crate::recipients::Row;

/// Un-acked publishes kept in flight. Below the JetStream context's `max_ack_inflight`
/// (see [`PUBLISH_MAX_ACK_INFLIGHT`]), which would otherwise block the publisher.
pub const PUBLISH_WINDOW: usize = 4096;
/// Passed to the context; must stay above [`PUBLISH_WINDOW`].
pub const PUBLISH_MAX_ACK_INFLIGHT: usize = 8192;
/// Rejected rows kept in the campaign record and in answers (all are counted).
pub const REJECTED_SAMPLE: usize = 1000;
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Why a submit failed. The HTTP API maps each to a status; the CLI prints it.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The campaign itself is invalid (bad sender, broken template, no recipients).
    #[error("invalid campaign: {0}")]
    Invalid(String),
    /// The campaign id exists with a different spec or idempotency key.
    #[error("campaign {0} already exists with different content")]
    Conflict(String),
    /// MAIL_OUTBOX refused more messages (its limits, discard new).
    #[error("MAIL_OUTBOX is full ({limit}): {published} recipients of campaign {campaign} were published (through #{published_through}); submit again with --campaign-id {campaign} to publish the rest")]
    OutboxFull {
        campaign: String,
        limit: String,
        published: u64,
        published_through: u64,
    },
    #[error("publishing campaign {campaign} failed after {published} recipients: {detail}")]
    Broker {
        campaign: String,
        published: u64,
        detail: String,
    },
}

/// What a submit did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubmitReport {
    pub id: String,
    /// Recipients in MAIL_OUTBOX for this campaign (across resumed submits).
    pub published: u64,
    pub rejected: Vec<RejectedRow>,
    pub rejected_count: u64,
    pub duplicates: u64,
    /// True when the campaign had already been fully published: nothing new was sent.
    #[serde(default)]
    pub replayed: bool,
}

/// Progress callbacks for a progress bar.
pub trait Progress: Send {
    fn rows(&mut self, _published: u64, _rejected: u64, _duplicates: u64) {}
}
impl Progress for () {}

/// A new campaign to publish.
pub struct Submission {
    pub campaign_id: Option<String>,
    pub spec: CampaignSpec,
    pub idempotency_key: Option<String>,
    /// Hash of the whole request, for requests that carry an idempotency key.
    pub fingerprint: Option<String>,
}

/// A stable hash of request bytes (FNV-1a 64; std's hashers are not stable across releases).
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(&[0xff]) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Checks what can be checked before reading any recipient.
pub fn validate_spec(spec: &CampaignSpec) -> Result<(), SubmitError> {
    lettre::message::Mailbox::from_str(spec.from.trim())
        .map_err(|e| SubmitError::Invalid(format!("from: {e}")))?;
    if spec.from.contains(['\r', '\n']) {
        return Err(SubmitError::Invalid("from: contains a line break".into()));
    }
    if spec.subject.contains(['\r', '\n']) {
        return Err(SubmitError::Invalid(
            "subject: contains a line break (header injection refused)".into(),
        ));
    }
    if spec.text.trim().is_empty() && spec.html.as_deref().unwrap_or("").trim().is_empty() {
        return Err(SubmitError::Invalid("text: a body is required".into()));
    }
    CampaignTemplates::compile(spec).map_err(|e| SubmitError::Invalid(e.to_string()))?;
    Ok(())
}

/// A fresh campaign id: time-ordered so that listings sort newest last.
pub fn new_campaign_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("c{}-{:06x}", now_ms(), h.finish() & 0xff_ffff)
}

/// Campaign id for an HTTP Idempotency-Key: stable, so a replayed request finds its campaign.
pub fn campaign_id_for_key(key: &str) -> String {
    format!("k{}", fingerprint(&[key.as_bytes()]))
}

pub use jetmail_common::records::{load_record, update_record};

fn report_from_record(rec: &CampaignRecord, replayed: bool) -> SubmitReport {
    SubmitReport {
        id: rec.id.clone(),
        published: rec.publish.published_through,
        rejected: rec.publish.rejected_sample.clone(),
        rejected_count: rec.publish.rejected,
        duplicates: rec.publish.duplicates,
        replayed,
    }
}

struct Window {
    pending: VecDeque<(u64, PublishAckFuture)>,
    /// Highest seq such that every seq at or below it has its ack.
    through: u64,
    acked: u64,
}

/// Publishes a campaign from `rows`. Returns once every publish is acknowledged.
pub async fn submit(
    topo: &Topology,
    sub: Submission,
    mut rows: mpsc::Receiver<Row>,
    progress: &mut dyn Progress,
) -> Result<SubmitReport, SubmitError> {
    validate_spec(&sub.spec)?;
    let id = match &sub.campaign_id {
        Some(id) => id.clone(),
        None => match &sub.idempotency_key {
            Some(k) => campaign_id_for_key(k),
            None => new_campaign_id(),
        },
    };
    topology::validate_campaign_id(&id).map_err(|e| SubmitError::Invalid(e.to_string()))?;
    let broker = |published: u64, detail: String| SubmitError::Broker {
        campaign: id.clone(),
        published,
        detail,
    };

    // Create the record, or find the one a previous submit left.
    let fresh = CampaignRecord {
        v: jetmail_common::wire::WIRE_VERSION,
        id: id.clone(),
        spec: sub.spec.clone(),
        status: CampaignStatus::Publishing,
        created_ms: now_ms(),
        publish: PublishProgress::default(),
        idempotency_key: sub.idempotency_key.clone(),
        request_fingerprint: sub.fingerprint.clone(),
    };
    let bytes = Bytes::from(serde_json::to_vec(&fresh).map_err(|e| broker(0, e.to_string()))?);
    let resume_after = match topo.campaigns.create(&id, bytes).await {
        Ok(_) => 0,
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            let (rec, _) = load_record(topo, &id)
                .await
                .map_err(|e| broker(0, e.to_string()))?
                .ok_or_else(|| broker(0, "campaign record vanished".into()))?;
            if rec.spec != sub.spec
                || rec.idempotency_key != sub.idempotency_key
                || (sub.fingerprint.is_some() && rec.request_fingerprint != sub.fingerprint)
            {
                return Err(SubmitError::Conflict(id));
            }
            if rec.publish.complete {
                return Ok(report_from_record(&rec, true));
            }
            rec.publish.published_through
        }
        Err(e) => return Err(broker(0, e.to_string())),
    };
    if resume_after > 0 {
        tracing::info!(campaign = %id, resume_after, "resuming an interrupted submit");
    }

    let mut window = Window {
        pending: VecDeque::with_capacity(PUBLISH_WINDOW),
        through: resume_after,
        acked: 0,
    };
    let mut seq = 0u64;
    let mut rejected: Vec<RejectedRow> = Vec::new();
    let mut rejected_count = 0u64;
    let mut duplicates = 0u64;
    let mut last_checkpoint = Instant::now();
    let mut buf = Vec::with_capacity(512);

    let mut failure: Option<SubmitError> = None;
    while let Some(row) = rows.recv().await {
        let acc = match row {
            Row::Accepted(a) => a,
            Row::Rejected(r) => {
                rejected_count += 1;
                if rejected.len() < REJECTED_SAMPLE {
                    rejected.push(r);
                }
                continue;
            }
            Row::Duplicate { .. } => {
                duplicates += 1;
                continue;
            }
        };
        seq += 1;
        if seq <= resume_after {
            continue;
        }
        let msg = OutboxMessage {
            v: jetmail_common::wire::WIRE_VERSION,
            campaign: id.clone(),
            seq,
            email: acc.email,
            vars: acc.vars,
            replay: 0,
            published_ms: now_ms(),
        };
        buf.clear();
        serde_json::to_writer(&mut buf, &msg).map_err(|e| broker(window.through, e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            topology::outbox_msg_id(&id, seq, 0).as_str(),
        );
        let subject = topology::outbox_subject(&id, &domain_token(&acc.domain));
        match topo
            .js
            .publish_with_headers(subject, headers, Bytes::copy_from_slice(&buf))
            .await
        {
            Ok(ack) => window.pending.push_back((seq, ack)),
            Err(e) => {
                failure = Some(broker(window.through, e.to_string()));
                break;
            }
        }
        if window.pending.len() >= PUBLISH_WINDOW {
            if let Err(e) = drain(&mut window, PUBLISH_WINDOW / 2, &id).await {
                failure = Some(e);
                break;
            }
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            last_checkpoint = Instant::now();
            progress.rows(window.through, rejected_count, duplicates);
            checkpoint(topo, &id, window.through, false, None).await;
        }
    }
    if failure.is_none() {
        if let Err(e) = drain(&mut window, 0, &id).await {
            failure = Some(e);
        }
    } else {
        // Settle what is in flight so the recorded progress is as far as it truly got.
        let _ = drain(&mut window, 0, &id).await;
    }
    progress.rows(window.through, rejected_count, duplicates);
    if let Some(err) = failure {
        checkpoint(topo, &id, window.through, false, None).await;
        return Err(match err {
            SubmitError::OutboxFull { limit, .. } => SubmitError::OutboxFull {
                campaign: id.clone(),
                limit,
                published: window.through,
                published_through: window.through,
            },
            other => other,
        });
    }
    if seq == 0 {
        // Nothing to send: leave no half-made campaign behind.
        let _ = topo.campaigns.purge(&id).await;
        let mut detail =
            format!("no valid recipients ({rejected_count} rejected, {duplicates} duplicates)");
        if let Some(r) = rejected.first() {
            detail.push_str(&format!("; first: line {}: {}", r.line, r.reason));
        }
        return Err(SubmitError::Invalid(detail));
    }
    let done = PublishProgress {
        published_through: window.through,
        complete: true,
        rejected: rejected_count,
        duplicates,
        rejected_sample: rejected,
    };
    let rec = checkpoint(topo, &id, window.through, true, Some(done))
        .await
        .ok_or_else(|| broker(window.through, "cannot record the finished campaign".into()))?;
    Ok(report_from_record(&rec, false))
}

/// Awaits acks, oldest first, until at most `keep` are pending.
async fn drain(window: &mut Window, keep: usize, campaign: &str) -> Result<(), SubmitError> {
    while window.pending.len() > keep {
        let Some((seq, ack)) = window.pending.pop_front() else {
            break;
        };
        match ack.await {
            Ok(_) => {
                window.acked += 1;
                // Acks resolve in publish order, so the contiguous prefix is `seq`.
                window.through = seq;
            }
            Err(e) => {
                let text = e.to_string();
                window.pending.clear();
                if text.contains("maximum messages")
                    || text.contains("maximum bytes")
                    || text.contains("resource limits")
                {
                    return Err(SubmitError::OutboxFull {
                        campaign: campaign.to_string(),
                        limit: text,
                        published: window.through,
                        published_through: window.through,
                    });
                }
                return Err(SubmitError::Broker {
                    campaign: campaign.to_string(),
                    published: window.through,
                    detail: text,
                });
            }
        }
    }
    Ok(())
}

/// Records publishing progress; on completion also flips the status to running (unless the
/// campaign was paused or cancelled meanwhile). Failures are logged: progress is advisory
/// until the final checkpoint, which the caller checks.
async fn checkpoint(
    topo: &Topology,
    id: &str,
    through: u64,
    complete: bool,
    done: Option<PublishProgress>,
) -> Option<CampaignRecord> {
    let res = update_record(topo, id, |rec| {
        if let Some(d) = &done {
            rec.publish = d.clone();
        } else {
            rec.publish.published_through = rec.publish.published_through.max(through);
        }
        if complete && rec.status == CampaignStatus::Publishing {
            rec.status = CampaignStatus::Running;
        }
    })
    .await;
    match res {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(campaign = %id, error = %e, "cannot record publishing progress");
            None
        }
    }
}
