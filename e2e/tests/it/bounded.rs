//! Bounded work at the sender: a campaign whose template would render for hours (a record
//! written straight to the broker, as an older or corrupted one would be, past ingest's
//! check) has its recipients dead-lettered with the reason within seconds, while the same
//! sender keeps beating and delivers another campaign.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jetmail_common::topology;
use jetmail_common::wire::{
    CampaignRecord, CampaignSchedule, CampaignSpec, CampaignStatus, Outcome, PublishProgress,
    WIRE_VERSION,
};
use jetmail_testkit::{wait_for, Stack};

/// The template: 10^10 iterations, each writing 100,000 bytes.
const NESTED: &str = "{% for a in range(100000) %}{% for b in range(100000) %}{{ \"x\" * 100000 }}{% endfor %}{% endfor %}";
const ENDLESS: &str = "endless";
const RECIPIENTS: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_would_never_finish_is_dead_lettered_and_the_sender_goes_on(
) -> anyhow::Result<()> {
    // The stack's senders beat every 500 ms.
    let interval = Duration::from_millis(500);
    let mut stack = Stack::start(1, &[]).await?;
    // Every heartbeat of s1, timed as it arrives.
    let beats: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut sub = stack
        .client
        .subscribe(topology::heartbeat_subject("s1"))
        .await?;
    let seen = beats.clone();
    tokio::spawn(async move {
        while sub.next().await.is_some() {
            seen.lock().unwrap().push(Instant::now());
        }
    });
    wait_for(
        "the sender's first heartbeat",
        Duration::from_secs(20),
        || async { (!beats.lock().unwrap().is_empty()).then_some(()) },
    )
    .await
    .map_err(|e| e.context(stack.sender("s1").log()))?;

    let record = CampaignRecord {
        v: WIRE_VERSION,
        id: ENDLESS.into(),
        spec: CampaignSpec {
            from: "news@example.com".into(),
            subject: "Hi".into(),
            text: NESTED.into(),
            html: None,
        },
        status: CampaignStatus::Running,
        created_ms: jetmail_common::now_ms(),
        publish: PublishProgress {
            published_through: RECIPIENTS,
            complete: true,
            ..Default::default()
        },
        idempotency_key: None,
        request_fingerprint: None,
        schedule: CampaignSchedule::default(),
        unsubscribe: None,
        test: false,
    };
    stack
        .topo
        .campaigns
        .put(
            topology::campaign_key(ENDLESS),
            serde_json::to_vec(&record)?.into(),
        )
        .await?;
    let started = Instant::now();
    // More recipients than the sender's runtime has threads: rendered there, they would
    // stop it entirely.
    for seq in 1..=RECIPIENTS {
        let m = serde_json::json!({
            "campaign": ENDLESS, "seq": seq, "email": format!("user{seq}@example.com"),
        });
        stack
            .topo
            .js
            .publish(
                topology::outbox_subject(ENDLESS, "example_com"),
                serde_json::to_vec(&m)?.into(),
            )
            .await?
            .await?;
    }
    let csv = stack.write_csv("fine.csv", 20)?;
    stack.submit(&csv, "fine", &[])?;

    let dead = wait_for(
        "the endless campaign dead-lettered",
        Duration::from_secs(30),
        || async {
            let d = stack.dead_letters().await.ok()?;
            (d.len() as u64 == RECIPIENTS).then_some(d)
        },
    )
    .await?;
    let took = started.elapsed();
    for d in &dead {
        assert_eq!((d.campaign.as_str(), d.outcome), (ENDLESS, Outcome::Failed));
        assert!(d.reason.contains("output too large"), "{}", d.reason);
    }
    let fine = stack.wait_done("fine", Duration::from_secs(30)).await?;
    assert_eq!(fine.sent, 20);
    assert_eq!(
        stack.sink.total(),
        20,
        "nothing of the endless campaign mailed"
    );

    // The sender never stopped beating: no gap of three intervals (what marks it down),
    // over the dead letters, the other campaign and a few seconds more.
    let beats = wait_for("six heartbeats", Duration::from_secs(20), || async {
        let b = beats.lock().unwrap().clone();
        (b.len() >= 6).then_some(b)
    })
    .await?;
    let longest = beats
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    println!(
        "BOUNDED {RECIPIENTS} endless recipients dead-lettered in {} ms; {} heartbeats, longest gap {} ms",
        took.as_millis(),
        beats.len(),
        longest.as_millis()
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(longest < interval * 3, "a heartbeat gap of {longest:?}");
    Ok(())
}
