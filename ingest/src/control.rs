//! Campaign control: pause, resume, cancel, reschedule. A change is one compare-and-set write
//! of the campaign record; senders watch the records and act on it within a second.

use jetmail_common::api::ControlAction;
use jetmail_common::now_ms;
use jetmail_common::records::update_record;
use jetmail_common::store::StoreError;
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{CampaignRecord, CampaignStatus};

use crate::schedule::{self, InvalidSchedule};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("campaign {0} not found")]
    NotFound(String),
    /// The action makes no sense in the campaign's state (resuming a finished campaign,
    /// rescheduling one that started).
    #[error("campaign {id} is {}: cannot {action}", status.as_str())]
    Refused {
        id: String,
        status: CampaignStatus,
        action: ControlAction,
    },
    /// `reschedule` without a send-at.
    #[error("reschedule needs a send-at (RFC 3339 or +2h)")]
    MissingSendAt,
    /// The new send-at is not a time, lies in the past, or is past the campaign's deadline.
    #[error(transparent)]
    Invalid(InvalidSchedule),
    #[error(transparent)]
    Store(StoreError),
}

/// The status `action` moves `rec` to at `now`, or `None` when it does not apply. Repeating
/// an action is allowed (pausing a paused campaign), so a retried request succeeds.
/// Rescheduling keeps the status until the new time is reached (or is now).
fn next_status(action: ControlAction, rec: &CampaignRecord, now: u64) -> Option<CampaignStatus> {
    use CampaignStatus::*;
    let started = || {
        if rec.publish.complete {
            schedule::started_status(&rec.schedule, now)
        } else {
            Publishing
        }
    };
    match (action, rec.status) {
        (ControlAction::Pause, Running | Publishing | Scheduled | Paused) => Some(Paused),
        (ControlAction::Resume, Paused | Running | Publishing | Scheduled) => Some(started()),
        (ControlAction::Cancel, Running | Publishing | Scheduled | Paused | Cancelled) => {
            Some(Cancelled)
        }
        (ControlAction::Reschedule, Publishing | Scheduled) => Some(started()),
        _ => None,
    }
}

/// Applies `action` to campaign `id` and returns the updated record. `send_at` is the new
/// send-at of `reschedule` (RFC 3339 or `+2h`) and is not used by the other actions.
pub async fn apply(
    topo: &Topology,
    id: &str,
    action: ControlAction,
    send_at: Option<&str>,
) -> Result<CampaignRecord, ControlError> {
    topology::validate_campaign_id(id).map_err(|_| ControlError::NotFound(id.to_string()))?;
    let send_at = match action {
        ControlAction::Reschedule => Some(
            send_at
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or(ControlError::MissingSendAt)?,
        ),
        _ => None,
    };
    // Set by the last attempt of the compare-and-set loop, which is the one that counts.
    let mut refused: Option<CampaignStatus> = None;
    let mut invalid: Option<InvalidSchedule> = None;
    let res = update_record(topo, id, |rec| {
        let now = now_ms();
        refused = None;
        invalid = None;
        if let Some(at) = send_at {
            if matches!(
                rec.status,
                CampaignStatus::Publishing | CampaignStatus::Scheduled
            ) {
                match schedule::reschedule(&rec.schedule, at, now) {
                    Ok(s) => rec.schedule = s,
                    Err(e) => {
                        invalid = Some(e);
                        return;
                    }
                }
            }
        }
        match next_status(action, rec, now) {
            Some(s) => rec.status = s,
            None => refused = Some(rec.status),
        }
    })
    .await;
    if let Some(e) = invalid {
        return Err(ControlError::Invalid(e));
    }
    if let Some(status) = refused {
        return Err(ControlError::Refused {
            id: id.to_string(),
            status,
            action,
        });
    }
    res.map_err(|e| match e {
        StoreError::NotFound(_) => ControlError::NotFound(id.to_string()),
        other => ControlError::Store(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000;

    /// Built from JSON, so that fields added to the record later take their defaults.
    fn record(status: CampaignStatus, complete: bool, send_at_ms: Option<u64>) -> CampaignRecord {
        serde_json::from_value(serde_json::json!({
            "id": "c1",
            "spec": {"from": "a@example.com", "subject": "s", "text": "t"},
            "status": status,
            "created_ms": NOW,
            "publish": {"published_through": 1, "complete": complete, "rejected": 0, "duplicates": 0},
            "schedule": {"send_at_ms": send_at_ms},
        }))
        .expect("a record")
    }

    #[test]
    fn finished_campaigns_cannot_be_resumed_and_repeats_are_allowed() {
        use CampaignStatus::*;
        let next = |a, s, complete| next_status(a, &record(s, complete, None), NOW);
        assert_eq!(next(ControlAction::Resume, Done, true), None);
        assert_eq!(next(ControlAction::Pause, Cancelled, true), None);
        assert_eq!(next(ControlAction::Pause, Paused, true), Some(Paused));
        assert_eq!(next(ControlAction::Resume, Paused, false), Some(Publishing));
        assert_eq!(
            next(ControlAction::Cancel, Cancelled, true),
            Some(Cancelled)
        );
    }

    #[test]
    fn scheduled_campaigns_can_be_cancelled_and_rescheduled_until_they_start() {
        use CampaignStatus::*;
        let ahead = Some(NOW + 60_000);
        let next = |a, s, at| next_status(a, &record(s, true, at), NOW);
        assert_eq!(
            next(ControlAction::Cancel, Scheduled, ahead),
            Some(Cancelled)
        );
        assert_eq!(
            next(ControlAction::Reschedule, Scheduled, ahead),
            Some(Scheduled)
        );
        // Rescheduled to now: it starts.
        assert_eq!(
            next(ControlAction::Reschedule, Scheduled, Some(NOW)),
            Some(Running)
        );
        assert_eq!(next(ControlAction::Reschedule, Running, None), None);
        assert_eq!(next(ControlAction::Reschedule, Paused, ahead), None);
        // A paused campaign resumed before its time waits for it again.
        assert_eq!(next(ControlAction::Resume, Paused, ahead), Some(Scheduled));
    }
}
