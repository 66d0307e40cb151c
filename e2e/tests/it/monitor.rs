//! The monitor among real processes: counters stay exact when it restarts, the health map is served.

use std::time::Duration;

use jetmail_testkit::{policy, wait_for, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_stay_exact_across_monitor_restarts() -> anyhow::Result<()> {
    const N: usize = 5_000;
    let mut stack = Stack::start(2, &[]).await?;
    // Slow enough that both restarts happen mid-campaign (pipelined senders are fast).
    stack
        .sink
        .set_faults(|f| f.delay = Duration::from_millis(20));
    let csv = stack.write_csv("r.csv", N)?;
    stack.submit(&csv, "mon", &[])?;
    for target in [N as u64 / 5, 2 * N as u64 / 5] {
        wait_for("progress", Duration::from_secs(60), || async {
            (stack.sink.total() > target).then_some(())
        })
        .await?;
        stack.monitor.as_mut().unwrap().kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        stack.monitor.as_mut().unwrap().start()?;
    }
    assert!(
        stack.sink.total() < N as u64,
        "the campaign ended before the monitor's last restart: slow the sink down"
    );
    stack.sink.set_faults(|f| f.delay = Duration::ZERO);
    let p = stack.wait_done("mon", Duration::from_secs(120)).await?;
    assert_eq!(p.sent, N as u64, "{p:?}");
    assert_eq!(p.settled(), N as u64);
    // Nothing more arrives later either.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stack.progress("mon").await.sent, N as u64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_endpoint_lists_the_health_map() -> anyhow::Result<()> {
    let stack = Stack::start(2, &[]).await?;
    wait_for("2 senders up", Duration::from_secs(20), || async {
        (stack.all_sender_health().await.len() == 2).then_some(())
    })
    .await?;
    let port = stack.monitor_port;
    let body = wait_for("GET /v1/senders", Duration::from_secs(10), || async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"GET /v1/senders HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        out.contains("\"s1\"").then_some(out)
    })
    .await?;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("\"s2\""));
    Ok(())
}

/// A recipient that kills its sender at every delivery reaches MaxDeliver while the monitor is
/// down, so nobody hears the broker's advisory: the monitor's start-up sweep must still move it
/// to MAIL_DEAD and let its campaign finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_at_max_deliver_while_the_monitor_was_down_is_dead_lettered_when_it_returns(
) -> anyhow::Result<()> {
    // MaxDeliver 3; one message at a time, so the crash takes no bystander with it.
    let mut stack = Stack::start_with_policy(
        0,
        &policy("100ms,100ms", "2s"),
        &["--send-timeout", "1s", "--concurrency", "1"],
    )
    .await?;
    stack.monitor.as_mut().unwrap().kill();
    let crash = "crash@example.com";
    stack.spawn_sender_with(
        "s1",
        &stack.sink.url(),
        &[],
        &[("JETMAIL_TEST_CRASH_ON", crash)],
    )?;
    let csv = stack.dir.path().join("c.csv");
    std::fs::write(
        &csv,
        format!("email,name\n{crash},Boom\nok@example.com,Fine\n"),
    )?;
    stack.submit(&csv, "crashy", &[])?;
    let mut crashes = 0;
    wait_for(
        "the crashing message at MaxDeliver, alone in the outbox",
        Duration::from_secs(60),
        || {
            if stack.sender("s1").exited().is_some() {
                crashes += 1;
                stack.sender("s1").start().expect("restart s1");
            }
            let topo = stack.topo.clone();
            async move {
                let stream = topo.outbox.get_info().await.ok()?.state;
                let (c, _) = jetmail_common::topology::senders_consumer(&topo.outbox)
                    .await
                    .ok()?;
                let c = c.get_info().await.ok()?;
                // In the outbox, yet neither waiting nor pending: the broker gave up on it.
                (stream.messages == 1 && c.num_pending == 0 && c.num_ack_pending == 0).then_some(())
            }
        },
    )
    .await?;
    assert!(crashes >= 2, "the hook crashed the sender {crashes} times");
    assert!(stack.dead_letters().await?.is_empty());

    stack.monitor.as_mut().unwrap().start()?;
    let letter = wait_for("the dead letter", Duration::from_secs(20), || async {
        let dead = stack.dead_letters().await.ok()?;
        dead.into_iter().find(|l| l.original.contains(crash))
    })
    .await?;
    assert!(
        letter.reason.contains("no outcome after 3 deliveries"),
        "{}",
        letter.reason
    );
    let p = stack.wait_done("crashy", Duration::from_secs(30)).await?;
    assert_eq!((p.sent, p.dead), (1, 1), "{p:?}");
    assert_eq!(stack.outbox_len().await, 0);
    assert_eq!(stack.sink.counts().get("ok@example.com"), Some(&1));
    println!("MONITOR missed advisory: dead-lettered at start-up after {crashes} crashes");
    Ok(())
}
