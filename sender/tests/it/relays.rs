//! Relays as they are in the wild (issue 13): a private CA, STARTTLS and AUTH (aiosmtpd, a
//! relay no one here wrote), relay failures that are the relay's, connection limits, 421s,
//! PIPELINING against Postfix's smtp-sink, aiosmtpd and the project's own sink, and
//! `jetmail-sender --check`. The relays' own counts are the truth.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use jetmail_common::wire::CircuitState;
use jetmail_sender::circuit::Circuit;
use jetmail_sender::smtp::{self, Relay, RelayOptions, RelayUrl, SendOutcome};
use jetmail_testkit::{bin_path, free_port, wait_for, SmtpSink, Stack, TempDir};

use crate::servers::{private_ca, PostfixSink, PyRelay, CA_NAME, PASSWORD, USER};

/// Sender flags that make relay failures play out in seconds.
const QUICK: &[&str] = &[
    "--send-timeout",
    "5s",
    "--circuit-failures",
    "3",
    "--circuit-cooldown",
    "1s",
    "--drain-timeout",
    "5s",
];

/// JSON logs, so a test reads fields rather than coloured text.
const JSON_LOGS: &[(&str, &str)] = &[("JETMAIL_LOG_FORMAT", "json")];

// ---- the sender's relay, in process -------------------------------------------------------

fn options() -> RelayOptions {
    RelayOptions::new("sender.jetmail.test".into())
}

fn relay(url: &str, opts: &RelayOptions) -> anyhow::Result<Relay> {
    let url: RelayUrl = url.parse()?;
    Ok(smtp::build_relays(&[url], opts, 8, || Circuit::new(5, Duration::from_secs(1)))?.remove(0))
}

fn rcpt(i: usize) -> String {
    format!("user{i}@example.com")
}

const BODY: &[u8] =
    b"From: news@example.com\r\nSubject: hello\r\n\r\nA line.\r\n.A line with a dot.\r\n";

/// Sends to `user0..user<n>` one after the other; every outcome.
async fn send_all(relay: &Relay, n: usize) -> Vec<SendOutcome> {
    let from: lettre::Address = "news@example.com".parse().unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let to: lettre::Address = rcpt(i).parse().unwrap();
        out.push(relay.send(&from, &to, BODY, Duration::from_secs(10)).await);
    }
    out
}

fn assert_all_accepted(outcomes: &[SendOutcome]) {
    let bad: Vec<_> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| **o != SendOutcome::Accepted)
        .collect();
    assert!(bad.is_empty(), "not accepted: {bad:?}");
}

fn assert_each_once(counts: &HashMap<String, u64>, n: usize) {
    let wrong: Vec<_> = (0..n)
        .map(rcpt)
        .filter(|r| counts.get(r).copied() != Some(1))
        .map(|r| (counts.get(&r).copied().unwrap_or(0), r))
        .collect();
    assert!(
        wrong.is_empty(),
        "not delivered exactly once (count, rcpt): {wrong:?}"
    );
    assert_eq!(counts.len(), n, "unexpected recipients: {counts:?}");
}

// ---- TLS with a private CA, AUTH ----------------------------------------------------------

/// A sender's log so far.
fn log_of(stack: &Stack, id: &str) -> String {
    stack
        .senders
        .iter()
        .find(|s| s.name == id)
        .map(|s| s.log())
        .unwrap_or_default()
}

/// JSON log lines of a sender at WARN.
fn warnings(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "WARN")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_refused_with_a_clear_warning_and_trusted_with_smtp_ca(
) -> anyhow::Result<()> {
    const N: usize = 20;
    let mut stack = Stack::start(0, QUICK).await?;
    let certs = private_ca(stack.dir.path())?;
    let relay = PyRelay::tls_auth(stack.dir.path(), &certs, &[]).await?;
    let url = relay.url(USER, PASSWORD);
    stack.spawn_sender_with("untrusting", &url, &[], JSON_LOGS)?;
    let csv = stack.write_csv("r.csv", N)?;
    stack.submit(&csv, "privateca", &[])?;

    // Without the CA: a WARN naming the relay (no password) and the reason, the circuit open
    // with that reason in the health map, nothing delivered, nothing dead.
    let warn = wait_for(
        "a WARN about the relay",
        Duration::from_secs(30),
        || async {
            warnings(&log_of(&stack, "untrusting"))
                .into_iter()
                .find(|w| {
                    w["fields"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("relay failing")
                })
        },
    )
    .await?;
    let error = warn["fields"]["error"].as_str().unwrap_or("").to_string();
    assert!(error.contains("UnknownIssuer"), "{warn}");
    assert!(
        error.contains("--smtp-ca"),
        "the warning says what to do: {warn}"
    );
    let relay_field = warn["fields"]["relay"].as_str().unwrap_or("");
    assert_eq!(
        relay_field,
        format!("smtp://{USER}@localhost:{}?tls=starttls", relay.port)
    );
    let health = wait_for(
        "the circuit open in mail_senders",
        Duration::from_secs(20),
        || async {
            let h = stack.sender_health("untrusting").await?;
            let r = h.relays.first()?.clone();
            (r.circuit != CircuitState::Closed && r.last_error.is_some()).then_some(r)
        },
    )
    .await?;
    assert!(health.last_error.unwrap().contains("UnknownIssuer"));
    let log = stack.sender("untrusting").log();
    assert!(!log.contains(PASSWORD), "the password is in the log");
    let failing = warnings(&log)
        .iter()
        .filter(|w| {
            w["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("relay failing")
        })
        .count();
    assert_eq!(
        failing, 1,
        "one WARN per change of state, not one per message"
    );
    assert!(relay.delivered().is_empty());
    stack
        .sender("untrusting")
        .terminate(Duration::from_secs(15))?;
    assert!(
        stack.dead_letters().await?.is_empty(),
        "a relay failure made dead letters"
    );

    // With --smtp-ca: every recipient exactly once.
    let ca = certs.ca.to_string_lossy().into_owned();
    stack.spawn_sender_with("trusting", &url, &["--smtp-ca", &ca], JSON_LOGS)?;
    stack
        .wait_done("privateca", Duration::from_secs(60))
        .await?;
    assert_each_once(&relay.delivered(), N);
    assert!(stack.dead_letters().await?.is_empty());
    let out = relay.output();
    assert!(out.contains("EHLO "), "{out}");
    println!("RELAY private CA: refused without --smtp-ca ({error}); {N} delivered once with it");
    Ok(())
}

#[tokio::test]
async fn auth_plain_and_login_over_starttls_with_the_ca_in_the_url() -> anyhow::Result<()> {
    let dir = TempDir::new("auth");
    let certs = private_ca(dir.path())?;
    for mechanism in ["PLAIN", "LOGIN"] {
        let server =
            PyRelay::tls_auth(dir.path(), &certs, &["--only-mechanism", mechanism]).await?;
        let url = format!("{}?ca={}", server.url(USER, PASSWORD), certs.ca.display());
        let relay = relay(&url, &options())?;
        assert_all_accepted(&send_all(&relay, 3).await);
        assert_each_once(&server.delivered(), 3);
        assert!(
            server.output().contains(&format!("AUTH {mechanism} ok")),
            "{}",
            server.output()
        );
        relay.close().await;
    }
    Ok(())
}

#[tokio::test]
async fn implicit_tls_on_our_own_socket_with_a_private_ca() -> anyhow::Result<()> {
    let dir = TempDir::new("smtps");
    let certs = private_ca(dir.path())?;
    let server = PyRelay::tls_auth(dir.path(), &certs, &["--implicit", "--pipelining"]).await?;
    let url = format!("smtps://{USER}:{PASSWORD}@localhost:{}", server.port);
    let untrusting = relay(&url, &options())?;
    let out = send_all(&untrusting, 1).await;
    assert!(
        matches!(&out[0], SendOutcome::RelayFailed { text, .. }
            if text.contains("TLS handshake failed") && text.contains("UnknownIssuer") && text.contains("--smtp-ca")),
        "{out:?}"
    );
    let opts = RelayOptions {
        ca: Some(certs.ca.clone()),
        ..options()
    };
    let r = relay(&url, &opts)?;
    let t = Instant::now();
    assert_all_accepted(&send_all(&r, 10).await);
    assert_each_once(&server.delivered(), 10);
    assert!(server.output().contains("AUTH PLAIN ok"));
    println!("RELAY smtps: 10 messages in {:?}", t.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_opens_the_circuit_with_its_reason_and_dead_letters_nothing(
) -> anyhow::Result<()> {
    const N: usize = 5;
    let mut stack = Stack::start(0, QUICK).await?;
    let certs = private_ca(stack.dir.path())?;
    let relay = PyRelay::tls_auth(stack.dir.path(), &certs, &[]).await?;
    let ca = certs.ca.to_string_lossy().into_owned();
    let url = relay.url(USER, "not-the-password");
    stack.spawn_sender_with("s1", &url, &["--smtp-ca", &ca], JSON_LOGS)?;
    let csv = stack.write_csv("r.csv", N)?;
    stack.submit(&csv, "badpass", &[])?;
    // A handful of recipients is enough to open the circuit: relay failures count whatever
    // the campaign's size, and the messages come back untried for the next try.
    let health = wait_for(
        "the circuit open with the reason",
        Duration::from_secs(30),
        || async {
            let h = stack.sender_health("s1").await?;
            let r = h.relays.first()?.clone();
            (r.circuit != CircuitState::Closed).then_some(r)
        },
    )
    .await?;
    let reason = health.last_error.unwrap_or_default();
    assert!(
        reason.contains("AUTH") && reason.contains("535"),
        "{reason}"
    );
    // Long enough for several probes; still nothing may be dead or burnt.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        stack.dead_letters().await?.is_empty(),
        "a bad password made dead letters"
    );
    // Untried at its last delivery, a recipient moves to its campaign's held queue: it waits
    // there instead.
    assert_eq!(
        stack.waiting_len().await,
        N as u64,
        "every recipient waits in the broker"
    );
    assert!(relay.delivered().is_empty());
    let log = stack.sender("s1").log();
    assert!(
        !log.contains("not-the-password"),
        "the password is in the log"
    );
    assert!(warnings(&log)
        .iter()
        .any(|w| w["fields"]["error"].as_str().unwrap_or("").contains("535")));
    let p = stack.progress("badpass").await;
    assert_eq!(
        p.deferred, 0,
        "relay failures spent recipients' retries: {p:?}"
    );
    println!(
        "RELAY wrong password: circuit {:?}, reason {reason:?}, 0 dead",
        health.circuit
    );
    Ok(())
}

// ---- connection limits ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_drops_the_connection_every_10_messages_gets_each_once() -> anyhow::Result<()>
{
    const N: usize = 600;
    let mut stack = Stack::start(0, QUICK).await?;
    stack.sink.set_faults(|f| f.drop_every = Some(10));
    stack.spawn_sender("s1", &["--concurrency", "8"])?;
    let csv = stack.write_csv("r.csv", N)?;
    stack.submit(&csv, "drop10", &[])?;
    stack.wait_done("drop10", Duration::from_secs(120)).await?;
    assert_each_once(&stack.sink.counts(), N);
    assert!(stack.dead_letters().await?.is_empty());
    let p = stack.progress("drop10").await;
    assert_eq!(
        p.deferred, 0,
        "a closed connection is not a failed attempt: {p:?}"
    );
    assert!(stack.sink.connections() >= (N / 10) as u64);
    println!(
        "RELAY drops every 10 messages: {N} delivered once over {} connections, 0 deferred",
        stack.sink.connections()
    );
    Ok(())
}

#[tokio::test]
async fn a_421_on_a_reused_connection_is_retried_at_once_on_a_new_one() -> anyhow::Result<()> {
    let sink = SmtpSink::start().await?;
    sink.set_faults(|f| f.tempfail_421_after = Some(3));
    let relay = relay(&sink.url(), &options())?;
    assert_all_accepted(&send_all(&relay, 20).await);
    assert_each_once(&sink.counts(), 20);
    assert!(
        sink.connections() >= 7,
        "{} connections",
        sink.connections()
    );
    assert!(relay.last_error().is_none());
    Ok(())
}

#[tokio::test]
async fn max_messages_per_connection_from_the_flag_and_the_url() -> anyhow::Result<()> {
    let sink = SmtpSink::start().await?;
    let opts = RelayOptions {
        max_messages_per_connection: Some(5),
        ..options()
    };
    let r = relay(&sink.url(), &opts)?;
    assert_all_accepted(&send_all(&r, 20).await);
    assert_eq!(sink.connections(), 4);
    // The URL's own limit wins over the flag.
    let sink = SmtpSink::start().await?;
    let r = relay(&format!("{}?max_messages=2", sink.url()), &opts)?;
    assert_all_accepted(&send_all(&r, 20).await);
    assert_eq!(sink.connections(), 10);
    Ok(())
}

#[tokio::test]
async fn a_refused_mail_from_is_the_relays_failure_and_a_refused_rcpt_the_recipients(
) -> anyhow::Result<()> {
    let sink = SmtpSink::start().await?;
    sink.set_faults(|f| f.mail_from_reply = Some("554 5.7.1 relaying denied".into()));
    let r = relay(&sink.url(), &options())?;
    let out = send_all(&r, 2).await;
    assert!(
        matches!(&out[0], SendOutcome::RelayFailed { code: Some(554), text } if text.contains("relaying denied")),
        "{out:?}"
    );
    assert!(r.last_error().unwrap_or_default().contains("MAIL FROM"));
    sink.set_faults(|f| {
        f.mail_from_reply = None;
        f.reject.insert(rcpt(0));
    });
    let out = send_all(&r, 2).await;
    assert!(
        matches!(
            out[0],
            SendOutcome::Permanent {
                code: Some(550),
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(out[1], SendOutcome::Accepted);
    assert!(r.last_error().is_none(), "a working relay has no error");
    // A 421 greeting (a relay too busy to talk): the relay's failure, not the recipient's.
    sink.set_faults(|f| {
        f.reject.clear();
        f.greet_tempfail = true;
    });
    let busy = relay(&sink.url(), &options())?;
    let out = send_all(&busy, 1).await;
    assert!(matches!(out[0], SendOutcome::RelayFailed { .. }), "{out:?}");
    sink.set_faults(|f| f.greet_tempfail = false);
    // Down altogether: the relay's failure too.
    let dead = relay(&format!("smtp://127.0.0.1:{}", free_port()), &options())?;
    let out = send_all(&dead, 1).await;
    assert!(
        matches!(out[0], SendOutcome::RelayFailed { code: None, .. }),
        "{out:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_ipv6_literal_relay_url_reaches_the_relay() -> anyhow::Result<()> {
    let Ok(sink) = SmtpSink::start_on("[::1]:0".parse()?, true, None).await else {
        println!("RELAY no IPv6 loopback here: skipped the IPv6 connection");
        return Ok(());
    };
    let url = format!("smtp://[::1]:{}", sink.addr.port());
    let r = relay(&url, &options())?;
    assert_eq!(r.url.host, "::1");
    assert_all_accepted(&send_all(&r, 2).await);
    assert_each_once(&sink.counts(), 2);
    Ok(())
}

// ---- PIPELINING ---------------------------------------------------------------------------

#[tokio::test]
async fn pipelining_takes_two_round_trips_a_message_instead_of_four() -> anyhow::Result<()> {
    const N: usize = 10;
    const LATENCY: Duration = Duration::from_millis(50);
    let sink = SmtpSink::start().await?;
    sink.set_faults(|f| f.delay = LATENCY);
    let piped = relay(&sink.url(), &options())?;
    send_all(&piped, 1).await; // connect outside the measurement
    let t = Instant::now();
    assert_all_accepted(&send_all(&piped, N).await);
    let pipelined = t.elapsed() / N as u32;
    assert_eq!(sink.pipelined(), N as u64 + 1, "every envelope pipelined");

    let plain = relay(&format!("{}?pipelining=false", sink.url()), &options())?;
    send_all(&plain, 1).await;
    let t = Instant::now();
    assert_all_accepted(&send_all(&plain, N).await);
    let one_by_one = t.elapsed() / N as u32;
    assert_eq!(sink.pipelined(), N as u64 + 1, "pipelining=false pipelined");
    println!(
        "RELAY {}ms away: {:.0} ms a message pipelined, {:.0} ms one command at a time",
        LATENCY.as_millis(),
        pipelined.as_secs_f64() * 1e3,
        one_by_one.as_secs_f64() * 1e3
    );
    assert!(
        pipelined >= 2 * LATENCY && pipelined < 3 * LATENCY,
        "{pipelined:?}"
    );
    assert!(one_by_one >= 4 * LATENCY, "{one_by_one:?}");
    Ok(())
}

#[tokio::test]
async fn pipelining_against_postfix_smtp_sink() -> anyhow::Result<()> {
    const N: usize = 60;
    let dir = TempDir::new("smtp-sink");
    // -w 1: every DATA reply a second late, as a busy relay's; the sends share the pool.
    let sink = PostfixSink::start(dir.path(), &["-w", "1"]).await?;
    let r = relay(&format!("smtp://127.0.0.1:{}", sink.port), &options())?;
    let mut session = r.open().await?;
    assert!(
        session.pipelining,
        "smtp-sink offers PIPELINING: {:?}",
        session.extensions
    );
    let _ = session.conn.quit().await;
    let from: lettre::Address = "news@example.com".parse()?;
    let sends = (0..N).map(|i| {
        let r = &r;
        let from = from.clone();
        async move {
            let to: lettre::Address = rcpt(i).parse().unwrap();
            r.send(&from, &to, BODY, Duration::from_secs(10)).await
        }
    });
    let out = futures::future::join_all(sends).await;
    assert_all_accepted(&out);
    r.close().await;
    wait_for("smtp-sink's dump", Duration::from_secs(10), || async {
        (sink.delivered().values().sum::<u64>() >= N as u64).then_some(())
    })
    .await?;
    assert_each_once(&sink.delivered(), N);
    let dump = sink.dumped();
    assert!(
        dump.contains("X-Helo-Args: sender.jetmail.test"),
        "--helo-name not used"
    );
    assert!(dump.contains("A line with a dot."), "dot-stuffing");
    Ok(())
}

#[tokio::test]
async fn pipelining_against_aiosmtpd_over_starttls_with_auth() -> anyhow::Result<()> {
    const N: usize = 30;
    let dir = TempDir::new("aiosmtpd-pipe");
    let certs = private_ca(dir.path())?;
    let server = PyRelay::tls_auth(dir.path(), &certs, &["--pipelining"]).await?;
    let opts = RelayOptions {
        ca: Some(certs.ca.clone()),
        ..options()
    };
    let r = relay(&server.url(USER, PASSWORD), &opts)?;
    let mut session = r.open().await?;
    assert!(session.pipelining, "{:?}", session.extensions);
    let _ = session.conn.quit().await;
    assert_all_accepted(&send_all(&r, N).await);
    assert_each_once(&server.delivered(), N);
    Ok(())
}

// ---- --check ------------------------------------------------------------------------------

fn check(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = Command::new(bin_path("jetmail-sender")?)
        .arg("--check")
        .args(args)
        .env("NO_COLOR", "1")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[tokio::test]
async fn check_passes_a_good_relay_and_fails_bad_ones() -> anyhow::Result<()> {
    let dir = TempDir::new("check");
    let certs = private_ca(dir.path())?;
    let server = PyRelay::tls_auth(dir.path(), &certs, &["--pipelining"]).await?;
    let ca = certs.ca.to_string_lossy().into_owned();
    let good = server.url(USER, PASSWORD);

    let (ok, out) = check(&["--smtp-url", &good, "--smtp-ca", &ca])?;
    assert!(ok, "{out}");
    for expected in [
        "TLSv1_3",
        CA_NAME,
        "relay.test",
        "AUTH",
        "ok as mailer",
        "PIPELINING",
        "result       OK",
    ] {
        assert!(out.contains(expected), "{expected:?} missing in:\n{out}");
    }
    assert!(!out.contains(PASSWORD), "the password is printed:\n{out}");

    // Without the CA: refused, with the certificate's issuer shown and what to do.
    let (ok, out) = check(&["--smtp-url", &good])?;
    assert!(!ok, "{out}");
    for expected in ["UnknownIssuer", CA_NAME, "--smtp-ca", "FAILED"] {
        assert!(out.contains(expected), "{expected:?} missing in:\n{out}");
    }
    // tls_verify=false: accepted, with a warning at start and the certificate marked.
    let unchecked = format!("{good}?tls_verify=false");
    let (ok, out) = check(&["--smtp-url", &unchecked])?;
    assert!(ok, "{out}");
    assert!(
        out.contains("WARN") && out.contains("certificate is not checked"),
        "{out}"
    );
    assert!(out.contains("not verified"), "{out}");
    // A wrong password.
    let bad = server.url(USER, "wrong");
    let (ok, out) = check(&["--smtp-url", &bad, "--smtp-ca", &ca])?;
    assert!(!ok, "{out}");
    assert!(out.contains("535"), "{out}");
    // Nothing listening; a good relay beside it does not hide the failure.
    let nothing = format!("smtp://127.0.0.1:{}", free_port());
    let (ok, out) = check(&["--smtp-url", &format!("{nothing},{good}"), "--smtp-ca", &ca])?;
    assert!(!ok, "{out}");
    assert!(out.contains("1 of 2 relays failed"), "{out}");
    println!(
        "RELAY --check output for a good relay:\n{}",
        check(&["--smtp-url", &good, "--smtp-ca", &ca])?.1
    );
    Ok(())
}

#[tokio::test]
async fn start_up_refuses_unusable_relay_settings() -> anyhow::Result<()> {
    // A CA file that is not one: a start-up error, before any NATS connection.
    let dir = TempDir::new("badca");
    let not_a_ca = dir.path().join("ca.pem");
    std::fs::write(&not_a_ca, "hello")?;
    let (ok, out) = check(&[
        "--smtp-url",
        "smtp://u:p@localhost:587",
        "--smtp-ca",
        &not_a_ca.to_string_lossy(),
    ])?;
    assert!(!ok && out.contains("holds no PEM certificate"), "{out}");
    let (ok, out) = check(&["--smtp-url", "smtp://u:p@localhost:25?ca=/x.pem&tls=none"])?;
    assert!(!ok && out.contains("needs TLS"), "{out}");
    let (ok, out) = check(&[
        "--smtp-url",
        "smtp://127.0.0.1:25",
        "--helo-name",
        "not a name",
    ])?;
    assert!(!ok && out.contains("--helo-name"), "{out}");
    Ok(())
}
