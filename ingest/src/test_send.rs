//! Test sends: a campaign delivered at once to a few addresses (at most
//! [`TEST_SEND_MAX`]), rendered with the first valid recipient's variables, under its own
//! record marked `test` (id `t-…`, [`TEST_CAMPAIGN_PREFIX`]) so that no campaign list shows it and no campaign counts
//! it. Used by `jetmail-ingest test-send` and `POST /v1/campaigns/test`.

use std::sync::Arc;

use jetmail_common::address::parse_recipient;
use jetmail_common::api::{Field, TestSendReport, TEST_SEND_MAX};
use jetmail_common::topology::Topology;
use jetmail_common::wire::{CampaignSpec, Vars};

use crate::citizen::Compliance;
use crate::feed::Rows;
use crate::publish::{self, Submission, SubmitError};
use crate::recipients::{Accepted, Row};
use crate::unsubscribe::Unsubscribe;

use jetmail_common::compliance::TEST_CAMPAIGN_PREFIX;

/// One to [`TEST_SEND_MAX`] valid addresses, or an invalid `to`.
pub fn check_addresses(to: &[String]) -> Result<(), SubmitError> {
    if to.is_empty() || to.len() > TEST_SEND_MAX {
        return Err(SubmitError::invalid(
            Field::To,
            format!(
                "a test goes to 1 to {TEST_SEND_MAX} addresses, not {}",
                to.len()
            ),
        ));
    }
    for a in to {
        parse_recipient(a).map_err(|e| SubmitError::invalid(Field::To, format!("{a:?}: {e}")))?;
    }
    Ok(())
}

/// Publishes `spec` once to each of `to`, with the variables of the first valid row of
/// `rows` (none when there is none).
pub async fn send(
    topo: &Topology,
    spec: CampaignSpec,
    to: &[String],
    mut rows: Rows,
    unsubscribe: Option<Arc<Unsubscribe>>,
) -> Result<TestSendReport, SubmitError> {
    check_addresses(to)?;
    let mut first: Option<Accepted> = None;
    while let Some(row) = rows.next().await {
        if let Row::Accepted(a) = row {
            first = Some(a);
            break;
        }
    }
    // Dropping the channel stops its reader: the rest of the list is not needed.
    drop(rows);
    let vars: Vars = first.as_ref().map(|a| a.vars.clone()).unwrap_or_default();
    // A template that cannot render for these variables is refused now, not at the sender.
    crate::bounded::render_once(&spec, &to[0], &vars).await?;
    let mut out = Vec::with_capacity(to.len());
    for (i, a) in to.iter().enumerate() {
        let r = parse_recipient(a).map_err(|e| SubmitError::invalid(Field::To, e))?;
        let row = Row::Accepted(Accepted {
            line: i as u64 + 1,
            email: r.address,
            domain: r.ascii_domain,
            vars: vars.clone(),
        });
        out.push(row);
    }
    let report = publish::submit(
        topo,
        Submission {
            campaign_id: Some(format!(
                "{TEST_CAMPAIGN_PREFIX}{}",
                publish::new_campaign_id()
            )),
            spec,
            idempotency_key: None,
            fingerprint: None,
            schedule: Default::default(),
            compliance: Compliance {
                unsubscribe,
                // The operator typed these addresses: a test reaches them.
                check_suppressions: false,
                test: true,
            },
        },
        Rows::from(out),
        &mut (),
    )
    .await?;
    Ok(TestSendReport {
        id: report.id,
        published: report.published,
        variables_from: first.map(|a| a.email),
    })
}
