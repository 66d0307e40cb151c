//! Retention of finished campaigns: with a short retention, done and cancelled campaigns (and
//! test sends) lose their record and progress once their last write is old enough; running
//! ones, recent ones and unreadable ones are kept.

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::CampaignRecord;
use jetmail_monitor::retention::{remove_finished, run, Removed};
use jetmail_testkit::{wait_for, NatsServer};
use tokio_util::sync::CancellationToken;

async fn put(topo: &Topology, id: &str, status: &str, test: bool) -> anyhow::Result<()> {
    // From JSON, so that fields added to the record later take their defaults.
    let rec: CampaignRecord = serde_json::from_value(serde_json::json!({
        "id": id,
        "spec": {"from": "a@example.com", "subject": "s", "text": "t"},
        "status": status,
        "created_ms": jetmail_common::now_ms(),
        "publish": {"published_through": 1, "complete": true, "rejected": 0, "duplicates": 0},
        "test": test,
    }))?;
    topo.campaigns
        .put(
            topology::campaign_key(id),
            Bytes::from(serde_json::to_vec(&rec)?),
        )
        .await?;
    let progress = serde_json::json!({
        "sent": 1, "failed": 0, "dead": 0, "deferred": 0, "cancelled": 0, "suppressed": 0,
        "last_event_seq": 1, "updated_ms": jetmail_common::now_ms(),
    });
    topo.campaigns
        .put(
            topology::progress_key(id),
            Bytes::from(serde_json::to_vec(&progress)?),
        )
        .await?;
    Ok(())
}

async fn keys(topo: &Topology) -> Vec<String> {
    let mut k: Vec<String> = topo
        .campaigns
        .keys()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_campaigns_are_removed_after_the_retention() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetmail_common::config::jetstream_context(nats.client().await?, 1024);
    let topo = topology::ensure(&js).await?;
    let retain = Duration::from_secs(1);
    put(&topo, "old-done", "done", false).await?;
    put(&topo, "old-cancelled", "cancelled", false).await?;
    put(&topo, "t-old-test", "running", true).await?;
    put(&topo, "old-running", "running", false).await?;
    put(&topo, "old-paused", "paused", false).await?;
    put(&topo, "late-events", "done", false).await?;
    topo.campaigns
        .put(topology::campaign_key("garbled"), "{not a record".into())
        .await?;
    tokio::time::sleep(retain + Duration::from_millis(200)).await;
    put(&topo, "new-done", "done", false).await?;
    // Finished long ago, but an event was folded into its progress just now: kept for now.
    let progress = topo
        .campaigns
        .get(topology::progress_key("late-events"))
        .await?
        .unwrap();
    topo.campaigns
        .put(topology::progress_key("late-events"), progress)
        .await?;

    let removed = remove_finished(&topo, retain, jetmail_common::now_ms()).await?;
    assert_eq!(removed, Removed { campaigns: 3 });
    let expected: Vec<String> = [
        "garbled",
        "late-events",
        "late-events.progress",
        "new-done",
        "new-done.progress",
        "old-paused",
        "old-paused.progress",
        "old-running",
        "old-running.progress",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(keys(&topo).await, expected);

    // A second pass finds nothing more to do now; the monitor's own loop removes the rest
    // once they are old enough.
    let again = remove_finished(&topo, retain, jetmail_common::now_ms()).await?;
    assert_eq!(again, Removed { campaigns: 0 });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(topo.clone(), retain, shutdown.clone()));
    wait_for(
        "the recent done campaigns removed",
        Duration::from_secs(10),
        || async {
            let k = keys(&topo).await;
            (!k.iter().any(|k| k.contains("done") || k.contains("late"))).then_some(())
        },
    )
    .await?;
    assert_eq!(
        keys(&topo).await.len(),
        5,
        "running, paused and garbled stay"
    );
    shutdown.cancel();
    task.await?;
    Ok(())
}
