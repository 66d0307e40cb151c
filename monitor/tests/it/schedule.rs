//! Scheduled campaigns started by the monitor: a campaign whose send-at passed while no
//! monitor ran starts at once; one whose time is ahead stays `scheduled` until then; a
//! rescheduled one follows its new time.

use std::time::Duration;

use bytes::Bytes;
use jetmail_common::records::{load_record, update_record};
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{CampaignRecord, CampaignStatus};
use jetmail_testkit::{wait_for, NatsServer};
use tokio_util::sync::CancellationToken;

async fn put_scheduled(topo: &Topology, id: &str, send_at_ms: u64) -> anyhow::Result<()> {
    // From JSON, so that fields added to the record later take their defaults.
    let rec: CampaignRecord = serde_json::from_value(serde_json::json!({
        "id": id,
        "spec": {"from": "a@example.com", "subject": "s", "text": "t"},
        "status": "scheduled",
        "created_ms": jetmail_common::now_ms(),
        "publish": {"published_through": 1, "complete": true, "rejected": 0, "duplicates": 0},
        "schedule": {"send_at_ms": send_at_ms},
    }))?;
    topo.campaigns
        .put(
            topology::campaign_key(id),
            Bytes::from(serde_json::to_vec(&rec)?),
        )
        .await?;
    Ok(())
}

async fn status(topo: &Topology, id: &str) -> CampaignStatus {
    load_record(topo, id).await.unwrap().unwrap().0.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_campaigns_start_when_their_time_passes() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetmail_common::config::jetstream_context(nats.client().await?, 1024);
    let topo = topology::ensure(&js).await?;
    let now = jetmail_common::now_ms();
    put_scheduled(&topo, "missed", now - 60_000).await?;
    put_scheduled(&topo, "soon", now + 2_500).await?;
    put_scheduled(&topo, "later", now + 3_600_000).await?;

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(jetmail_monitor::schedule::run(
        topo.clone(),
        shutdown.clone(),
    ));
    wait_for(
        "the missed campaign starts",
        Duration::from_secs(3),
        || async { (status(&topo, "missed").await == CampaignStatus::Running).then_some(()) },
    )
    .await?;
    assert_eq!(status(&topo, "soon").await, CampaignStatus::Scheduled);
    wait_for(
        "the campaign due soon starts",
        Duration::from_secs(6),
        || async { (status(&topo, "soon").await == CampaignStatus::Running).then_some(()) },
    )
    .await?;
    assert!(
        jetmail_common::now_ms() >= now + 2_500,
        "started before its time"
    );

    // Rescheduled to now: the watch sees the new time.
    update_record(&topo, "later", |rec| rec.schedule.send_at_ms = Some(now)).await?;
    wait_for(
        "the rescheduled campaign starts",
        Duration::from_secs(4),
        || async { (status(&topo, "later").await == CampaignStatus::Running).then_some(()) },
    )
    .await?;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task).await??;
    Ok(())
}
