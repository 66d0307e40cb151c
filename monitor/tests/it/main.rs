//! The monitor's parts in-process against a real nats-server, with the senders played by this
//! test (a pull that never acks is a sender that died), so every delivery count is exact.

mod retention;
mod schedule;

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, Consumer};
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::{DeadLetter, Outcome};
use jetmail_monitor::sweep::{sweep_once, Swept};
use jetmail_testkit::{policy, wait_for, NatsServer};

const CAMPAIGN: &str = "swept";

async fn publish_recipient(topo: &Topology, seq: u64) -> anyhow::Result<()> {
    let m = serde_json::json!({
        "campaign": CAMPAIGN, "seq": seq, "email": format!("user{seq}@example.com"),
    });
    topo.js
        .publish(
            topology::outbox_subject(CAMPAIGN, "example_com"),
            serde_json::to_vec(&m)?.into(),
        )
        .await?
        .await?;
    Ok(())
}

/// Pulls what the consumer delivers within `wait`, as a sender would.
async fn pull(consumer: &Consumer<pull::Config>, wait: Duration) -> anyhow::Result<Vec<Message>> {
    let mut batch = consumer
        .fetch()
        .max_messages(10)
        .expires(wait)
        .messages()
        .await?;
    let mut out = Vec::new();
    while let Some(m) = batch.next().await {
        out.push(m.map_err(|e| anyhow::anyhow!(e))?);
    }
    Ok(out)
}

fn recipient(m: &Message) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("json");
    v["seq"].as_u64().expect("seq")
}

async fn outbox_len(topo: &Topology) -> u64 {
    topo.outbox
        .get_info()
        .await
        .map(|i| i.state.messages)
        .unwrap_or(u64::MAX)
}

async fn dead_letters(topo: &Topology) -> anyhow::Result<Vec<DeadLetter>> {
    let last = topo.dead.get_info().await?.state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = topo.dead.get_raw_message(seq).await {
            out.push(serde_json::from_slice(&m.payload)?);
        }
    }
    Ok(out)
}

/// Recipient 1 kills its "sender" at both of its deliveries (MaxDeliver 2) while no monitor
/// listens for the advisory. The sweep must dead-letter it, but only once it can tell it from
/// a message still pending: while recipient 3 waits for a retry, recipient 1 looks the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_dead_letters_what_reached_max_deliver_while_no_monitor_listened(
) -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = nats.client().await?;
    let topo = jetmail_testkit::apply_senders_policy(&client, &policy("100ms", "1s")).await?;
    for seq in 1..=3 {
        publish_recipient(&topo, seq).await?;
    }
    let (consumer, _) = topology::senders_consumer(&topo.outbox).await?;

    // First deliveries: 2 is sent; 1 and 3 die with their sender.
    let first = pull(&consumer, Duration::from_millis(300)).await?;
    assert_eq!(first.iter().map(recipient).collect::<Vec<_>>(), [1, 2, 3]);
    first[1]
        .double_ack()
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    assert_eq!(
        sweep_once(&topo).await?,
        Swept::default(),
        "pending messages are not stuck"
    );

    // Second deliveries after the ack wait: 1 dies again (its last), 3 is deferred a minute.
    let second = wait_for("the redeliveries", Duration::from_secs(10), || async {
        let got = pull(&consumer, Duration::from_millis(300)).await.ok()?;
        (!got.is_empty()).then_some(got)
    })
    .await?;
    let mut second = second;
    if second.len() < 2 {
        second.extend(pull(&consumer, Duration::from_millis(500)).await?);
    }
    assert_eq!(second.iter().map(recipient).collect::<Vec<_>>(), [1, 3]);
    let retried = &second[1];
    retried
        .ack_with(AckKind::Nak(Some(Duration::from_secs(60))))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;

    // Once the ack wait of 1's last delivery is over and a sender pulls again, the broker
    // gives up on it (publishing the advisory nobody hears).
    let swept = wait_for("1 at MaxDeliver", Duration::from_secs(10), || async {
        let _ = pull(&consumer, Duration::from_millis(200)).await.ok()?;
        let s = sweep_once(&topo).await.ok()?;
        (s.stuck == 1).then_some(s)
    })
    .await?;
    assert_eq!(
        swept.settled, 0,
        "with 3 pending above the ack floor, 1 cannot be named yet"
    );
    assert_eq!(outbox_len(&topo).await, 2);
    assert!(dead_letters(&topo).await?.is_empty());

    // 3 is delivered after all: the consumer is idle, so 1 is named and dead-lettered.
    retried.double_ack().await.map_err(|e| anyhow::anyhow!(e))?;
    let swept = sweep_once(&topo).await?;
    assert_eq!(
        swept,
        Swept {
            stuck: 1,
            settled: 1
        }
    );
    assert_eq!(outbox_len(&topo).await, 0);
    let dead = dead_letters(&topo).await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].seq, dead[0].outcome), (Some(1), Outcome::Dead));
    assert!(
        dead[0].reason.contains("no outcome after 2 deliveries"),
        "{}",
        dead[0].reason
    );
    // Swept again (or the late advisory handled after all): nothing twice.
    assert_eq!(sweep_once(&topo).await?, Swept::default());
    const RECIPIENT_1_STREAM_SEQ: u64 = 1;
    jetmail_monitor::advisory::settle(&topo, RECIPIENT_1_STREAM_SEQ, 2).await?;
    assert_eq!(dead_letters(&topo).await?.len(), 1);
    Ok(())
}
