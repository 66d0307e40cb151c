use std::collections::HashMap;
use std::time::Duration;

use jetmail_common::wire::SenderState;
use jetmail_testkit::{wait_for, Stack};

/// Every recipient `user<i>@example.com` for i < n was received exactly once.
fn assert_exactly_once(counts: &HashMap<String, u64>, n: usize) {
    let missing: Vec<usize> = (0..n)
        .filter(|i| !counts.contains_key(&format!("user{i}@example.com")))
        .collect();
    let twice: Vec<(&String, &u64)> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        missing.is_empty(),
        "{} recipients never received, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        twice.is_empty(),
        "{} recipients received more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(counts.len(), n, "unexpected recipients at the SMTP server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_recipients_three_senders_each_exactly_once() -> anyhow::Result<()> {
    const N: usize = 10_000;
    let stack = Stack::start(3, &[]).await?;
    let csv = stack.write_csv("r.csv", N)?;
    let out = stack.submit(&csv, "big", &[])?;
    assert!(out.contains("published 10000"), "{out}");

    let progress = stack.wait_done("big", Duration::from_secs(180)).await?;
    assert_eq!(progress.sent, N as u64);
    assert_eq!(stack.outbox_len().await, 0, "MAIL_OUTBOX must be empty");
    assert_exactly_once(&stack.sink.counts(), N);

    // Each recipient got its own name in subject and body.
    let messages = stack.sink.messages();
    for m in messages.iter().step_by(97) {
        let rcpt = &m.rcpts[0];
        let i: usize = rcpt
            .trim_start_matches("user")
            .trim_end_matches("@example.com")
            .parse()?;
        assert!(
            m.data.contains(&format!("Subject: Hi Name {i}\r\n")),
            "subject of {rcpt}: {}",
            m.data
        );
        assert!(
            m.data
                .contains(&format!("Hello Name {i}, this mail is for {rcpt}.")),
            "body of {rcpt}: {}",
            m.data
        );
        // The CSV's i-th row is the campaign's recipient i + 1.
        let message_id = format!("Message-ID: <big.{}.r0@example.com>\r\n", i + 1);
        assert!(m.data.contains(&message_id), "{message_id} in {}", m.data);
    }

    // The broker balanced the load: every sender delivered at least 20%.
    let per_sender = wait_for(
        "heartbeats to report every send",
        Duration::from_secs(10),
        || async {
            let hs = stack.all_sender_health().await;
            (hs.iter().map(|h| h.sent).sum::<u64>() == N as u64).then_some(hs)
        },
    )
    .await?;
    for h in &per_sender {
        assert!(
            h.sent * 5 >= N as u64,
            "sender {} delivered only {} of {N}",
            h.id,
            h.sent
        );
    }

    // The same file with the same campaign id: nothing new is published or sent.
    let again = stack.submit(&csv, "big", &[])?;
    assert!(again.contains("already published"), "{again}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stack.sink.total(),
        N as u64,
        "a resubmit must not mail anyone again"
    );
    assert_eq!(stack.outbox_len().await, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_without_loss_and_the_sender_turns_down() -> anyhow::Result<()> {
    const N: usize = 6_000;
    let mut stack = Stack::start(3, &[]).await?;
    wait_for(
        "3 senders up in mail_senders",
        Duration::from_secs(20),
        || async {
            let hs = stack.all_sender_health().await;
            (hs.len() == 3 && hs.iter().all(|h| h.state == SenderState::Up)).then_some(())
        },
    )
    .await?;
    // Slow the relay a little so the campaign is still running when the signal comes.
    stack
        .sink
        .set_faults(|f| f.delay = Duration::from_millis(2));
    let csv = stack.write_csv("r.csv", N)?;
    stack.submit(&csv, "term", &[])?;
    wait_for("sending to start", Duration::from_secs(60), || async {
        (stack.sink.total() > 500).then_some(())
    })
    .await?;
    let status = stack.sender("s1").terminate(Duration::from_secs(40))?;
    assert!(
        status.success(),
        "SIGTERM must end the sender with exit 0, got {status}"
    );
    let killed_at = std::time::Instant::now();
    wait_for("s1 marked down", Duration::from_secs(10), || async {
        let h = stack.sender_health("s1").await?;
        (h.state == SenderState::Down).then_some(())
    })
    .await?;
    // Three 500 ms intervals after the last (`stopped`) heartbeat, plus the monitor's 250 ms
    // sweep, a KV round trip and this test's polling, on a machine busy with other tests.
    assert!(
        killed_at.elapsed() < Duration::from_millis(3000),
        "marked down after {:?}",
        killed_at.elapsed()
    );

    stack.sink.set_faults(|f| f.delay = Duration::ZERO);
    stack.wait_done("term", Duration::from_secs(120)).await?;
    assert_exactly_once(&stack.sink.counts(), N);
    assert_eq!(stack.sink.duplicates(), 0);
    assert_eq!(stack.outbox_len().await, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_reports_bad_rows_with_their_lines_and_skips_duplicates() -> anyhow::Result<()> {
    let stack = Stack::start(0, &[]).await?;
    let csv = stack.dir.path().join("mixed.csv");
    std::fs::write(
        &csv,
        "email,name\nann@example.com,Ann\nbo@example.com,Bo\nnot-an-address,X\nann@EXAMPLE.com,Ann again\n",
    )?;
    let out = stack.submit_raw(&csv, "mixed", &[])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("published 2, rejected 1, duplicates 1"),
        "{stdout}"
    );
    assert!(
        stderr.contains("rejected line 4: \"not-an-address\""),
        "{stderr}"
    );
    assert_eq!(stack.outbox_len().await, 2);
    Ok(())
}
