//! `topology apply` changes the fleet's delivery policy on the senders consumer, as the
//! broker then reports it; `topology show` reads every object.

use std::time::Duration;

use jetmail_common::topology::{all_stores, senders_consumer, SendersPolicy};
use jetmail_ingest::cli::topology::{apply, show, ApplyArgs};

use crate::api::setup;

#[tokio::test]
async fn apply_changes_only_what_its_flags_say_and_the_broker_keeps_it() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let (_, initial) = senders_consumer(&topo.outbox).await?;
    assert_eq!(initial, SendersPolicy::default());

    let delays = vec![Duration::from_secs(5), Duration::from_secs(60)];
    let applied = apply(
        &topo,
        &ApplyArgs {
            retry_backoff: Some(delays.clone()),
            ..Default::default()
        },
    )
    .await?;
    assert!(applied.changed());
    let (consumer, now) = senders_consumer(&topo.outbox).await?;
    assert_eq!(now, applied.senders_after);
    assert_eq!(now.retry_backoff, delays);
    assert_eq!(now.ack_wait, initial.ack_wait, "not given, not changed");
    assert_eq!(consumer.cached_info().config.max_deliver, 3);

    let applied = apply(
        &topo,
        &ApplyArgs {
            ack_wait: Some(Duration::from_secs(300)),
            ..Default::default()
        },
    )
    .await?;
    let (_, now) = senders_consumer(&topo.outbox).await?;
    assert_eq!(now.ack_wait, Duration::from_secs(300));
    assert_eq!(now.retry_backoff, delays, "kept from the first apply");
    assert_eq!(applied.senders_after, now);

    // Applying the same again changes nothing.
    let again = apply(
        &topo,
        &ApplyArgs {
            ack_wait: Some(Duration::from_secs(300)),
            ..Default::default()
        },
    )
    .await?;
    assert!(!again.changed());

    let report = show(&topo).await?;
    assert_eq!(report.senders.policy, now);
    assert_eq!(report.stores.len(), all_stores().len(), "{report}");
    assert!(
        report.stores.iter().all(|s| s.replication.replicas == 1),
        "{report}"
    );
    assert!(applied.replicas.is_empty(), "no --replicas, no change");
    assert!(report.to_string().contains("5s,1m"), "{report}");
    Ok(())
}
