//! The monitor against real processes: counters stay exact when the monitor restarts.

use std::time::Duration;

use jetmail_testkit::{wait_for, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_stay_exact_across_monitor_restarts() -> anyhow::Result<()> {
    const N: usize = 5_000;
    let mut stack = Stack::start(2, &[]).await?;
    stack
        .sink
        .set_faults(|f| f.delay = Duration::from_millis(1));
    let csv = stack.write_csv("r.csv", N)?;
    stack.submit(&csv, "mon", &[])?;
    for _ in 0..2 {
        let before = stack.sink.total();
        wait_for("progress", Duration::from_secs(60), || async {
            (stack.sink.total() > before + 800).then_some(())
        })
        .await?;
        stack.monitor.as_mut().unwrap().kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        stack.monitor.as_mut().unwrap().start()?;
    }
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
