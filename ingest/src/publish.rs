//! Publishing a campaign: store its spec once in `mail_campaigns`, then one message per
//! recipient to MAIL_OUTBOX with many publish acks in flight, recording how far publishing got
//! so that a retried submit resumes instead of mailing twice. A campaign with its own rate or
//! a send-at still ahead publishes to its held queue in MAIL_HELD instead, where the senders
//! would have moved each recipient anyway (see [`crate::schedule`]).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use async_nats::{HeaderMap, Subject};
use bytes::{BufMut, Bytes, BytesMut};
use jetmail_common::address::domain_token;
use jetmail_common::api::Field;
use jetmail_common::limits::Scope;
use jetmail_common::now_ms;
use jetmail_common::store::StoreError;
use jetmail_common::template::{CampaignTemplates, TemplateError};
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{
    CampaignRecord, CampaignSchedule, CampaignSpec, CampaignStatus, OutboxMessage, PublishProgress,
};
use sha2::{Digest, Sha256};

use crate::feed::Rows;
use crate::recipients::Row;
use crate::window::PublishWindow;

/// Un-acked publishes of a submit kept in flight ([`PublishWindow`]).
pub const PUBLISH_WINDOW: usize = 4096;
/// The JetStream context's own limit of un-acked publishes, for ingest's other publishes
/// (dead-letter replays, KV writes); a submit's window does not count against it.
pub const PUBLISH_MAX_ACK_INFLIGHT: usize = 8192;
/// Rejected rows kept in the campaign record and in answers (all are counted).
pub const REJECTED_SAMPLE: usize = crate::rejected::MAX_ROWS;
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Why a submit failed. The HTTP API answers each with its [`jetmail_common::api::ErrorCode`]; the CLI prints it.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The campaign itself is invalid (bad sender, broken template, no recipients); `field`
    /// is the part of the request at fault.
    #[error("invalid campaign: {field}: {detail}")]
    Invalid { field: Field, detail: String },
    /// The campaign id exists with a different spec or idempotency key.
    #[error("campaign {0} already exists with different content")]
    Conflict(String),
    /// MAIL_OUTBOX refused more messages (its limits, discard new).
    #[error("MAIL_OUTBOX is full: {published} recipients of campaign {campaign} were published; submit again with --campaign-id {campaign} to publish the rest ({source})")]
    OutboxFull {
        campaign: String,
        /// Every recipient up to this sequence is in MAIL_OUTBOX.
        published: u64,
        #[source]
        source: StoreError,
    },
    /// The broker failed (or the campaign's record could not be read or written).
    #[error("publishing campaign {campaign} failed after {published} recipients: {source}")]
    Store {
        campaign: String,
        published: u64,
        #[source]
        source: StoreError,
    },
}

impl SubmitError {
    pub fn invalid(field: Field, detail: impl std::fmt::Display) -> Self {
        SubmitError::Invalid {
            field,
            detail: detail.to_string(),
        }
    }

    /// A storage failure after `published` recipients: a full outbox is told apart, because
    /// its caller should come back later rather than at once.
    fn store(campaign: &str, published: u64, source: StoreError) -> Self {
        let campaign = campaign.to_string();
        match source {
            StoreError::Full { .. } => SubmitError::OutboxFull {
                campaign,
                published,
                source,
            },
            source => SubmitError::Store {
                campaign,
                published,
                source,
            },
        }
    }
}

pub use jetmail_common::api::SubmitReport;

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
    /// Checked by [`crate::schedule::resolve`]. A resumed submit keeps the schedule the
    /// first one stored (`+2h` resolved again would be another time).
    pub schedule: CampaignSchedule,
    /// Unsubscribe links and tokens, the suppression check, the test flag.
    pub compliance: crate::citizen::Compliance,
}

/// SHA-256 of request parts, hex. Each part is length-prefixed, so moving bytes from one part
/// to the next changes the hash. Stored in campaign records: it must stay stable across
/// releases (std's hashers are not).
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Checks what can be checked before reading any recipient.
pub fn validate_spec(spec: &CampaignSpec) -> Result<(), SubmitError> {
    lettre::message::Mailbox::from_str(spec.from.trim())
        .map_err(|e| SubmitError::invalid(Field::From, e))?;
    if spec.from.contains(['\r', '\n']) {
        return Err(SubmitError::invalid(Field::From, "contains a line break"));
    }
    if spec.subject.contains(['\r', '\n']) {
        return Err(SubmitError::invalid(
            Field::Subject,
            "contains a line break (header injection refused)",
        ));
    }
    if spec.text.trim().is_empty() && spec.html.as_deref().unwrap_or("").trim().is_empty() {
        return Err(SubmitError::invalid(Field::Text, "a body is required"));
    }
    CampaignTemplates::compile(spec).map_err(template_error)?;
    Ok(())
}

/// A template that does not compile or render is an invalid campaign, in the part it names.
pub fn template_error(e: TemplateError) -> SubmitError {
    let field = e.part.parse().unwrap_or(Field::Other);
    SubmitError::invalid(field, e.message)
}

/// A fresh campaign id: time-ordered so that listings sort by age, with 48 random bits so
/// that two ingests (or two requests in the same millisecond) never pick the same one.
pub fn new_campaign_id() -> String {
    let mut random = [0u8; 6];
    // Without an OS random source the process could not have set up TLS or NATS either.
    getrandom::getrandom(&mut random).expect("the OS random source works");
    format!("c{}-{}", now_ms(), hex(&random))
}

/// Campaign id for an HTTP Idempotency-Key: stable, so a replayed request finds its campaign.
/// 128 bits of the key's SHA-256 (ids are at most 64 characters).
pub fn campaign_id_for_key(key: &str) -> String {
    format!("k{}", &fingerprint(&[key.as_bytes()])[..32])
}

pub use jetmail_common::records::{load_record, update_record};

fn report_from_record(rec: &CampaignRecord, replayed: bool) -> SubmitReport {
    SubmitReport {
        id: rec.id.clone(),
        // Suppressed recipients took sequence numbers but were never published.
        published: rec
            .publish
            .published_through
            .saturating_sub(rec.publish.suppressed),
        suppressed: rec.publish.suppressed,
        rejected: rec.publish.rejected_sample.clone(),
        rejected_count: rec.publish.rejected,
        duplicates: rec.publish.duplicates,
        replayed,
    }
}

/// The record a submit publishes under.
enum Opened {
    /// Publish every recipient after this sequence (0: a new campaign), under the stored
    /// schedule.
    ResumeAfter(u64, CampaignSchedule),
    /// An earlier submit of the same request already published everything: its answer.
    Complete(SubmitReport),
}

/// Creates the campaign's record, or finds the one an earlier submit of the same campaign
/// left. Called at the first valid recipient, never before, so that a request without any
/// creates nothing and has nothing to clean up: in particular it can never remove the record
/// of a live campaign whose earlier submit is still incomplete.
/// Its templates are rendered for this first recipient first: nothing is stored if they fail.
async fn open_record(
    topo: &Topology,
    sub: &Submission,
    id: &str,
    first: &crate::recipients::Accepted,
) -> Result<Opened, SubmitError> {
    crate::bounded::render_once(&sub.spec, &first.email, &first.vars).await?;
    let fresh = CampaignRecord {
        v: jetmail_common::wire::WIRE_VERSION,
        id: id.to_string(),
        spec: sub.spec.clone(),
        status: CampaignStatus::Publishing,
        created_ms: now_ms(),
        publish: PublishProgress::default(),
        idempotency_key: sub.idempotency_key.clone(),
        request_fingerprint: sub.fingerprint.clone(),
        schedule: sub.schedule,
        unsubscribe: sub.compliance.links(),
        test: sub.compliance.test,
    };
    let bytes = Bytes::from(serde_json::to_vec(&fresh).expect("a record always serialises"));
    let key = topology::campaign_key(id);
    match topo.campaigns.create(&key, bytes).await {
        Ok(_) => Ok(Opened::ResumeAfter(0, sub.schedule)),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            let (rec, _) = load_record(topo, id)
                .await
                .map_err(|e| SubmitError::store(id, 0, e))?
                .ok_or_else(|| {
                    // Purged between our create and our read (a cancelled campaign cleaned up).
                    SubmitError::store(id, 0, StoreError::NotFound(format!("campaign {id}")))
                })?;
            if rec.spec != sub.spec
                || rec.idempotency_key != sub.idempotency_key
                || (sub.fingerprint.is_some() && rec.request_fingerprint != sub.fingerprint)
            {
                return Err(SubmitError::Conflict(id.to_string()));
            }
            if rec.publish.complete {
                return Ok(Opened::Complete(report_from_record(&rec, true)));
            }
            tracing::info!(
                campaign = %id,
                resume_after = rec.publish.published_through,
                "resuming an interrupted submit"
            );
            Ok(Opened::ResumeAfter(
                rec.publish.published_through,
                rec.schedule,
            ))
        }
        Err(e) => Err(SubmitError::store(id, 0, StoreError::broker(e))),
    }
}

/// Rows that were not published, as the report tells them.
#[derive(Default)]
struct Tally {
    rejected: crate::rejected::RejectedSample,
    rejected_count: u64,
    duplicates: u64,
    suppressed: u64,
}

/// Builds recipient messages: the payload serialised into a shared buffer (one allocation
/// per many messages), the subject of each domain made once.
struct MessageBuilder {
    buf: BytesMut,
    /// Subject by recipient domain (ASCII form). Bounded: cleared when it reaches
    /// [`SUBJECT_CACHE`] domains, so a list of all-different domains costs no memory.
    subjects: HashMap<String, Subject>,
}

/// Domains whose subject [`MessageBuilder`] keeps.
const SUBJECT_CACHE: usize = 4096;
/// Bytes [`MessageBuilder`] allocates at once for payloads.
const PAYLOAD_BLOCK: usize = 64 * 1024;

impl MessageBuilder {
    fn new() -> Self {
        Self {
            buf: BytesMut::new(),
            subjects: HashMap::new(),
        }
    }

    /// The subject of `domain`'s recipients (a `Subject` shares its bytes when cloned).
    fn subject(&mut self, held: Option<&Scope>, campaign: &str, domain: &str) -> Subject {
        if let Some(s) = self.subjects.get(domain) {
            return s.clone();
        }
        if self.subjects.len() >= SUBJECT_CACHE {
            self.subjects.clear();
        }
        let subject = Subject::from(crate::schedule::subject(
            held,
            campaign,
            &domain_token(domain),
        ));
        self.subjects.insert(domain.to_string(), subject.clone());
        subject
    }

    fn payload(&mut self, msg: &OutboxMessage) -> Bytes {
        if self.buf.capacity() < 1024 {
            self.buf.reserve(PAYLOAD_BLOCK);
        }
        serde_json::to_writer((&mut self.buf).writer(), msg)
            .expect("an outbox message always serialises");
        self.buf.split().freeze()
    }
}

/// Publishes a campaign from `rows`. Returns once every publish is acknowledged.
pub async fn submit(
    topo: &Topology,
    sub: Submission,
    mut rows: Rows,
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
    topology::validate_campaign_id(&id).map_err(|e| SubmitError::invalid(Field::CampaignId, e))?;
    if jetmail_common::compliance::is_test_campaign(&id) != sub.compliance.test {
        return Err(SubmitError::invalid(
            Field::CampaignId,
            "ids starting with `t-` are test sends' only",
        ));
    }

    // Opened with the record: where publishing resumes (0 for a new campaign), and the window
    // on the stream the recipients go to.
    let mut opened: Option<(u64, PublishWindow)> = None;
    // Set with the record: where this campaign's recipients wait, if they must.
    let mut held: Option<Scope> = None;
    let mut seq = 0u64;
    let mut tally = Tally::default();
    let mut last_checkpoint = Instant::now();
    let mut builder = MessageBuilder::new();
    let skip = sub
        .compliance
        .suppressed(topo)
        .await
        .map_err(|e| SubmitError::store(&id, 0, e))?;

    let mut failure: Option<StoreError> = None;
    while let Some(row) = rows.next().await {
        let acc = match row {
            Row::Accepted(a) => a,
            Row::Rejected(r) => {
                tally.rejected_count += 1;
                tally.rejected.push(r);
                continue;
            }
            Row::Duplicate { .. } => {
                tally.duplicates += 1;
                continue;
            }
        };
        let (after, win) = match &mut opened {
            Some((after, win)) => (*after, win),
            None => match open_record(topo, &sub, &id, &acc).await? {
                Opened::Complete(report) => return Ok(report),
                Opened::ResumeAfter(n, schedule) => {
                    held = crate::schedule::held_scope(&id, &schedule, now_ms());
                    let stream = match held {
                        Some(_) => topology::HELD_STREAM,
                        None => topology::OUTBOX_STREAM,
                    };
                    let w = PublishWindow::open(topo.js.client(), stream, PUBLISH_WINDOW, n)
                        .await
                        .map_err(|e| SubmitError::store(&id, n, e))?;
                    let (_, w) = opened.insert((n, w));
                    (n, w)
                }
            },
        };
        seq += 1;
        // A suppressed recipient keeps its sequence number, so that a resumed submit counts
        // as the first did; it is settled at once by a `suppressed` event.
        let suppressed = skip.contains(&acc.email);
        tally.suppressed += u64::from(suppressed);
        if seq <= after {
            continue;
        }
        let (subject, headers, payload) = if suppressed {
            let (subject, headers, payload) = crate::suppressions::skipped_event(&id, seq);
            (Subject::from(subject), headers, payload)
        } else {
            let subject = builder.subject(held.as_ref(), &id, &acc.domain);
            let unsubscribe_token = sub.compliance.token(&id, &acc.email);
            let msg = OutboxMessage {
                v: jetmail_common::wire::WIRE_VERSION,
                campaign: id.clone(),
                seq,
                email: acc.email,
                vars: acc.vars,
                replay: 0,
                published_ms: now_ms(),
                unsubscribe_token,
            };
            let payload = builder.payload(&msg);
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                crate::schedule::msg_id(held.as_ref(), &id, seq),
            );
            (subject, headers, payload)
        };
        if let Err(e) = win.publish(seq, subject, headers, payload).await {
            failure = Some(e);
            break;
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            last_checkpoint = Instant::now();
            progress.rows(win.through(), tally.rejected_count, tally.duplicates);
            let _ = checkpoint(topo, &id, win.through(), None).await;
        }
    }
    let through = match &mut opened {
        None => 0,
        Some((_, w)) => {
            if failure.is_none() {
                failure = w.finish().await.err();
            }
            if failure.is_some() {
                // Settle what is in flight so the recorded progress is as far as it truly got.
                w.settle_in_flight().await;
            }
            w.through()
        }
    };
    progress.rows(through, tally.rejected_count, tally.duplicates);
    if let Some(source) = failure {
        let _ = checkpoint(topo, &id, through, None).await;
        // Report how far publishing truly got, not where the failure was first seen.
        return Err(SubmitError::store(&id, through, source));
    }
    if opened.is_none() {
        // No valid recipient: no record was made, so there is nothing to undo.
        let mut detail = format!(
            "no valid recipients ({} rejected, {} duplicates)",
            tally.rejected_count, tally.duplicates
        );
        if let Some(r) = tally.rejected.first() {
            detail.push_str(&format!("; first: line {}: {}", r.line, r.reason));
        }
        return Err(SubmitError::invalid(Field::Recipients, detail));
    }
    let done = PublishProgress {
        published_through: through,
        complete: true,
        rejected: tally.rejected_count,
        duplicates: tally.duplicates,
        suppressed: tally.suppressed,
        rejected_sample: tally.rejected.into_rows(),
    };
    let rec = checkpoint(topo, &id, through, Some(done))
        .await
        .map_err(|e| SubmitError::store(&id, through, e))?;
    Ok(report_from_record(&rec, false))
}

/// Records publishing progress; with `done`, the final counts, and the status flips to
/// scheduled while the send-at is ahead, else running (unless the campaign was paused or
/// cancelled meanwhile). Progress on the way is advisory
/// (a resumed submit re-publishes a little more, which the duplicate window drops), so
/// callers may ignore its failure, which is logged; the final one they must check.
async fn checkpoint(
    topo: &Topology,
    id: &str,
    through: u64,
    done: Option<PublishProgress>,
) -> Result<CampaignRecord, StoreError> {
    let res = update_record(topo, id, |rec| match &done {
        Some(d) => {
            rec.publish = d.clone();
            if rec.status == CampaignStatus::Publishing {
                rec.status = crate::schedule::started_status(&rec.schedule, now_ms());
            }
        }
        None => rec.publish.published_through = rec.publish.published_through.max(through),
    })
    .await;
    if let Err(e) = &res {
        tracing::warn!(campaign = %id, error = %e, "cannot record publishing progress");
    }
    res
}
