//! A campaign's schedule as ingest takes it: `--rate`, `--send-at`, `--deadline` (and the same
//! fields of the API) checked together into a [`CampaignSchedule`] before anything is stored,
//! each refusal naming the field at fault; where its recipients are published; and the status
//! it has once publishing is complete.

use jetmail_common::api::Field;
use jetmail_common::limits::{Rate, RateError, Scope};
use jetmail_common::schedule::{self, ScheduleError};
use jetmail_common::topology;
use jetmail_common::wire::{CampaignSchedule, CampaignStatus};

/// The rate, send-at and deadline as typed (empty means absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScheduleInput<'a> {
    pub rate: Option<&'a str>,
    pub send_at: Option<&'a str>,
    pub deadline: Option<&'a str>,
}

/// Why a schedule was refused; [`InvalidSchedule::field`] says which part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSchedule {
    #[error(transparent)]
    Rate(#[from] RateError),
    #[error("send-at: {0}")]
    SendAt(#[source] ScheduleError),
    #[error("deadline: {0}")]
    Deadline(#[source] ScheduleError),
}

impl InvalidSchedule {
    pub fn field(&self) -> Field {
        match self {
            InvalidSchedule::Rate(_) => Field::Rate,
            InvalidSchedule::SendAt(_) => Field::SendAt,
            InvalidSchedule::Deadline(_) => Field::Deadline,
        }
    }
}

impl From<InvalidSchedule> for crate::publish::SubmitError {
    fn from(e: InvalidSchedule) -> Self {
        crate::publish::SubmitError::invalid(e.field(), e)
    }
}

fn given(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// Checks a campaign's rate, send-at and deadline at `now_ms`.
pub fn resolve(input: ScheduleInput<'_>, now_ms: u64) -> Result<CampaignSchedule, InvalidSchedule> {
    let rate = given(input.rate).map(str::parse::<Rate>).transpose()?;
    let send_at = given(input.send_at);
    // The send-at alone first, so that a refusal of the pair is the deadline's fault.
    schedule::resolve(send_at, None, now_ms).map_err(InvalidSchedule::SendAt)?;
    let (send_at_ms, deadline_ms) = schedule::resolve(send_at, given(input.deadline), now_ms)
        .map_err(InvalidSchedule::Deadline)?;
    Ok(CampaignSchedule {
        send_at_ms,
        deadline_ms,
        rate,
    })
}

/// A new send-at for a campaign with `current` schedule, checked against its deadline.
pub fn reschedule(
    current: &CampaignSchedule,
    send_at: &str,
    now_ms: u64,
) -> Result<CampaignSchedule, InvalidSchedule> {
    let (send_at_ms, _) =
        schedule::resolve(Some(send_at), None, now_ms).map_err(InvalidSchedule::SendAt)?;
    let start = send_at_ms.unwrap_or(now_ms).max(now_ms);
    if let Some(deadline) = current.deadline_ms.filter(|d| *d <= start) {
        return Err(InvalidSchedule::SendAt(
            ScheduleError::DeadlineBeforeStart {
                deadline: schedule::format_ms(deadline),
                start: schedule::format_ms(start),
            },
        ));
    }
    Ok(CampaignSchedule {
        send_at_ms,
        ..*current
    })
}

/// The held queue a campaign's recipients are published to, when they would only wait in
/// the outbox for a sender to move them there: a campaign with its own rate or a send-at
/// still ahead waits under its own scope.
pub fn held_scope(campaign: &str, schedule: &CampaignSchedule, now_ms: u64) -> Option<Scope> {
    (schedule.rate.is_some() || schedule.waiting(now_ms))
        .then(|| Scope::Campaign(campaign.to_string()))
}

/// The subject of `campaign`'s recipients in domain token `token`: its held queue when
/// `held`, else the outbox.
pub fn subject(held: Option<&Scope>, campaign: &str, token: &str) -> String {
    match held {
        Some(scope) => topology::held_subject(scope, campaign, token),
        None => topology::outbox_subject(campaign, token),
    }
}

/// The `Nats-Msg-Id` of recipient `seq`, in the stream [`subject`] names. MAIL_HELD has its
/// own duplicate window, so the id is as stable as the outbox one: a retried submit
/// publishes nothing twice.
pub fn msg_id(held: Option<&Scope>, campaign: &str, seq: u64) -> String {
    match held {
        Some(scope) => topology::held_msg_id(scope, campaign, seq, 0),
        None => topology::outbox_msg_id(campaign, seq, 0),
    }
}

/// The status of a campaign whose publishing is complete at `now_ms`.
pub fn started_status(schedule: &CampaignSchedule, now_ms: u64) -> CampaignStatus {
    if schedule.waiting(now_ms) {
        CampaignStatus::Scheduled
    } else {
        CampaignStatus::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000;

    fn input<'a>(rate: &'a str, send_at: &'a str, deadline: &'a str) -> ScheduleInput<'a> {
        ScheduleInput {
            rate: Some(rate),
            send_at: Some(send_at),
            deadline: Some(deadline),
        }
    }

    #[test]
    fn each_refusal_names_its_field() {
        let field = |i| resolve(i, NOW).unwrap_err().field();
        assert_eq!(field(input("0/s", "", "")), Field::Rate);
        assert_eq!(field(input("10/fortnight", "", "")), Field::Rate);
        assert_eq!(field(input("", "yesterday", "")), Field::SendAt);
        assert_eq!(field(input("", "2020-01-01T00:00:00Z", "")), Field::SendAt);
        assert_eq!(field(input("", "", "soon")), Field::Deadline);
        // A deadline before the send-at is the deadline's fault.
        let before = schedule::format_ms(NOW + 60_000);
        assert_eq!(field(input("", "+2h", &before)), Field::Deadline);
    }

    #[test]
    fn empty_fields_are_absent_and_good_ones_resolve() {
        assert!(resolve(input(" ", "", ""), NOW).unwrap().is_empty());
        let s = resolve(input("10/m", "+1h", "30m"), NOW).unwrap();
        assert_eq!(s.rate.map(|r| r.to_string()).as_deref(), Some("10/m"));
        assert_eq!(s.send_at_ms, Some(NOW + 3_600_000));
        assert_eq!(s.deadline_ms, Some(NOW + 5_400_000));
        assert_eq!(started_status(&s, NOW), CampaignStatus::Scheduled);
        assert_eq!(started_status(&s, NOW + 3_600_000), CampaignStatus::Running);
        assert!(
            held_scope("c1", &s, NOW + 4_000_000).is_some(),
            "its rate holds"
        );
        assert!(held_scope("c1", &CampaignSchedule::default(), NOW).is_none());
    }

    #[test]
    fn a_reschedule_keeps_the_deadline_and_may_not_pass_it() {
        let s = resolve(input("", "+1h", "2h"), NOW).unwrap();
        let later = reschedule(&s, "+2h", NOW).unwrap();
        assert_eq!(later.send_at_ms, Some(NOW + 7_200_000));
        assert_eq!(later.deadline_ms, s.deadline_ms);
        assert_eq!(
            reschedule(&s, "+4h", NOW).unwrap_err().field(),
            Field::SendAt
        );
        assert!(reschedule(&s, "nonsense", NOW).is_err());
    }
}
