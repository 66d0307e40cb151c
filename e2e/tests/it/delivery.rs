//! Promises about what a recipient receives: never twice because of a redelivery the ledger
//! knows about, text and HTML as one `multipart/alternative` mail with variables escaped in
//! the HTML, and a campaign whose record cannot be read dead-lettered rather than retried
//! forever.

use std::time::Duration;

use jetmail_common::topology;
use jetmail_common::wire::Outcome;
use jetmail_testkit::{policy, wait_for, Stack};

/// The sender dies after the relay accepted `victim` and the sent-ledger recorded it, before
/// the ack: the broker redelivers it, and only the ledger stands between the recipient and a
/// second copy. Remove the ledger check and this test sees two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_of_an_accepted_send_is_not_mailed_again() -> anyhow::Result<()> {
    let victim = "victim@example.com";
    let mut stack = Stack::start_with_policy(
        0,
        &policy("100ms,100ms", "2s"),
        &["--send-timeout", "1s", "--concurrency", "1"],
    )
    .await?;
    let hook = format!("sent:{victim}");
    stack.spawn_sender_with(
        "s1",
        &stack.sink.url(),
        &[],
        &[("JETMAIL_TEST_CRASH_ON", &hook)],
    )?;
    let csv = stack.dir.path().join("v.csv");
    std::fs::write(
        &csv,
        format!("email,name\na@example.com,A\n{victim},V\nb@example.com,B\n"),
    )?;
    stack.submit(&csv, "ledger", &[])?;
    // It dies after the send.
    stack
        .wait_sender_exited("s1", Duration::from_secs(30))
        .await?;
    assert_eq!(
        stack.sink.counts().get(victim),
        Some(&1),
        "accepted once before the crash"
    );
    // Same hook again: had the redelivery been sent, it would crash (and count) once more.
    stack.sender("s1").start()?;
    let p = stack.wait_done("ledger", Duration::from_secs(30)).await?;
    let counts = stack.sink.counts();
    println!(
        "LEDGER redelivery after an accepted send: {victim} received {} time(s)",
        counts.get(victim).copied().unwrap_or(0)
    );
    assert_eq!(counts.get(victim), Some(&1), "mailed again on redelivery");
    assert_eq!(stack.sink.total(), 3);
    assert_eq!(p.sent, 3, "{p:?}");
    assert!(
        stack.sender("s1").exited().is_none(),
        "the redelivery reached the hook"
    );
    Ok(())
}

/// A campaign with an HTML template is delivered as `multipart/alternative`: the text part
/// carries the variables as they are, the HTML part escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_html_arrive_as_one_multipart_alternative_mail() -> anyhow::Result<()> {
    let stack = Stack::start(1, &[]).await?;
    let html = stack.dir.path().join("body.html");
    std::fs::write(&html, "<p>Hello {{ name }}</p>\n")?;
    let csv = stack.dir.path().join("h.csv");
    std::fs::write(&csv, "email,name\nann@example.com,<b>Tom & Jerry</b>\n")?;
    stack.submit(&csv, "html", &["--html", html.to_str().unwrap()])?;
    stack.wait_done("html", Duration::from_secs(30)).await?;
    let messages = stack.sink.messages();
    assert_eq!(messages.len(), 1);
    let data = &messages[0].data;
    let boundary = data
        .split("Content-Type: multipart/alternative;")
        .nth(1)
        .and_then(|rest| rest.split("boundary=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("not multipart/alternative: {data}"));
    let parts: Vec<&str> = data
        .split(&format!("--{boundary}"))
        .skip(1)
        .filter(|p| !p.starts_with("--"))
        .collect();
    assert_eq!(parts.len(), 2, "{data}");
    // Text first, HTML last: clients show the last part they understand.
    assert!(
        parts[0].contains("Content-Type: text/plain"),
        "{}",
        parts[0]
    );
    assert!(
        parts[0].contains("Hello <b>Tom & Jerry</b>, this mail is for ann@example.com."),
        "{}",
        parts[0]
    );
    assert!(parts[1].contains("Content-Type: text/html"), "{}", parts[1]);
    assert!(
        parts[1].contains("<p>Hello &lt;b&gt;Tom &amp; Jerry&lt;&#x2f;b&gt;</p>"),
        "{}",
        parts[1]
    );
    assert!(
        !parts[1].contains("<b>"),
        "a variable became markup: {}",
        parts[1]
    );
    Ok(())
}

/// A record that exists but cannot be decoded will not become readable by waiting: its
/// messages go to MAIL_DEAD with the reason, and the sender goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_record_that_cannot_be_read_dead_letters_its_messages() -> anyhow::Result<()> {
    let stack = Stack::start(1, &[]).await?;
    stack
        .topo
        .campaigns
        .put(topology::campaign_key("garbled"), "{not a record".into())
        .await?;
    for seq in 1..=2u64 {
        let m = serde_json::json!({
            "campaign": "garbled", "seq": seq, "email": format!("user{seq}@example.com"),
        });
        stack
            .topo
            .js
            .publish(
                topology::outbox_subject("garbled", "example_com"),
                serde_json::to_vec(&m)?.into(),
            )
            .await?
            .await?;
    }
    let dead = wait_for("both in MAIL_DEAD", Duration::from_secs(20), || async {
        let d = stack.dead_letters().await.ok()?;
        (d.len() == 2).then_some(d)
    })
    .await?;
    for d in &dead {
        assert_eq!((d.campaign.as_str(), d.outcome), ("garbled", Outcome::Dead));
        assert!(
            d.reason.contains("campaign record garbled is unreadable"),
            "{}",
            d.reason
        );
    }
    assert_eq!(stack.outbox_len().await, 0);
    assert_eq!(stack.sink.total(), 0);
    // The sender is still there for the next campaign.
    let csv = stack.write_csv("r.csv", 10)?;
    stack.submit(&csv, "fine", &[])?;
    assert_eq!(
        stack.wait_done("fine", Duration::from_secs(30)).await?.sent,
        10
    );
    Ok(())
}

/// A campaign paused for longer than its recipients' deliveries last: with one retry in the
/// policy every recipient reaches its last delivery while paused. Each is moved to the
/// campaign's held queue (never re-published to the outbox, never dead-lettered), waits there
/// while the campaign is paused, and is delivered once after the resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pause_never_turns_recipients_into_dead_letters() -> anyhow::Result<()> {
    const N: usize = 300;
    let mut stack =
        Stack::start_with_policy(0, &policy("200ms", "4s"), &["--send-timeout", "1s"]).await?;
    let csv = stack.write_csv("p.csv", N)?;
    stack.submit(&csv, "longpause", &[])?;
    stack.control("pause", "longpause")?;
    stack.spawn_sender("s1", &[])?;
    stack.spawn_sender("s2", &[])?;
    wait_for(
        "every recipient moved out of the outbox while paused",
        Duration::from_secs(60),
        || async { (stack.outbox_len().await == 0).then_some(()) },
    )
    .await?;
    let held = stack.topo.held.clone().info().await?.state.messages;
    assert_eq!(held, N as u64, "all waiting in MAIL_HELD");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.sink.total(), 0, "nothing sent while paused");
    stack.control("resume", "longpause")?;
    let p = stack
        .wait_done("longpause", Duration::from_secs(90))
        .await?;
    println!(
        "PAUSE {N} recipients past their last delivery while paused: sent {}, dead {}",
        p.sent, p.dead
    );
    assert_eq!(p.sent, N as u64);
    assert_eq!(p.dead + p.failed, 0);
    assert!(stack.dead_letters().await?.is_empty());
    assert_eq!(stack.sink.distinct(), N);
    assert_eq!(stack.sink.duplicates(), 0);
    Ok(())
}
