//! Campaign control: pause, resume, cancel. A status change is one compare-and-set write of
//! the campaign record; senders watch the records and act on it within a second.

use jetmail_common::api::ControlAction;
use jetmail_common::records::update_record;
use jetmail_common::store::StoreError;
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{CampaignRecord, CampaignStatus};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("campaign {0} not found")]
    NotFound(String),
    /// The action makes no sense in the campaign's state (resuming a finished campaign).
    #[error("campaign {id} is {}: cannot {action}", status.as_str())]
    Refused {
        id: String,
        status: CampaignStatus,
        action: ControlAction,
    },
    #[error(transparent)]
    Store(StoreError),
}

/// The status `action` moves a campaign in `status` to, or `None` when it does not apply.
/// Repeating an action is allowed (pausing a paused campaign), so a retried request succeeds.
fn next_status(
    action: ControlAction,
    status: CampaignStatus,
    publish_complete: bool,
) -> Option<CampaignStatus> {
    use CampaignStatus::*;
    match (action, status) {
        (ControlAction::Pause, Running | Publishing | Paused) => Some(Paused),
        (ControlAction::Resume, Paused | Running | Publishing) => Some(if publish_complete {
            Running
        } else {
            Publishing
        }),
        (ControlAction::Cancel, Running | Publishing | Paused | Cancelled) => Some(Cancelled),
        _ => None,
    }
}

/// Applies `action` to campaign `id` and returns the updated record.
pub async fn apply(
    topo: &Topology,
    id: &str,
    action: ControlAction,
) -> Result<CampaignRecord, ControlError> {
    topology::validate_campaign_id(id).map_err(|_| ControlError::NotFound(id.to_string()))?;
    // Set by the last attempt of the compare-and-set loop, which is the one that counts.
    let mut refused: Option<CampaignStatus> = None;
    let res = update_record(topo, id, |rec| {
        match next_status(action, rec.status, rec.publish.complete) {
            Some(s) => {
                rec.status = s;
                refused = None;
            }
            None => refused = Some(rec.status),
        }
    })
    .await;
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

    #[test]
    fn finished_campaigns_cannot_be_resumed_and_repeats_are_allowed() {
        use CampaignStatus::*;
        assert_eq!(next_status(ControlAction::Resume, Done, true), None);
        assert_eq!(next_status(ControlAction::Pause, Cancelled, true), None);
        assert_eq!(
            next_status(ControlAction::Pause, Paused, true),
            Some(Paused)
        );
        assert_eq!(
            next_status(ControlAction::Resume, Paused, false),
            Some(Publishing)
        );
        assert_eq!(
            next_status(ControlAction::Cancel, Cancelled, true),
            Some(Cancelled)
        );
    }
}
