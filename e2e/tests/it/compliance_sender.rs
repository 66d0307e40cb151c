//! The sender as a good citizen, against real processes: DKIM signatures checked by an
//! independent verifier (dkimpy, `dkim_verify.py`) with the public keys given directly, the
//! one-click unsubscribe headers, the VERP envelope sender, hard bounces put on the
//! suppression list (and policy refusals not), and the suppression list obeyed just before
//! each send, including an entry added while a campaign runs. Campaigns are written to the
//! broker directly (record and outbox messages, as ingest writes them), so these tests
//! exercise the sender alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jetmail_common::address::{domain_token, parse_recipient};
use jetmail_common::compliance::{
    normalize_address, suppression_key, Suppression, SuppressionReason, UnsubscribeClaim,
    UnsubscribeKey,
};
use jetmail_common::topology;
use jetmail_common::wire::{
    CampaignRecord, CampaignSchedule, CampaignSpec, CampaignStatus, OutboxMessage, PublishProgress,
    UnsubscribeLinks,
};
use jetmail_testkit::{bin_path, wait_for, Stack, TempDir};

const BASE_URL: &str = "https://news.example.com";
const MAILTO: &str = "leave@example.com";
const BOUNCE_DOMAIN: &str = "bounces.example.net";

fn unsubscribe_key() -> UnsubscribeKey {
    UnsubscribeKey::new(b"compliance test secret, not a real one")
}

/// Writes campaign `id`'s record and publishes one outbox message per recipient, each with
/// its signed unsubscribe token, as ingest does.
async fn publish(stack: &Stack, id: &str, html: bool, recipients: &[&str]) -> anyhow::Result<()> {
    let record = CampaignRecord {
        v: 1,
        id: id.into(),
        spec: CampaignSpec {
            from: "News <news@example.com>".into(),
            subject: "Hello {{ email }}".into(),
            text: "Hi {{ email }}.\nLeave: {{ unsubscribe_url }}\n".into(),
            html: html.then(|| {
                "<p>Hi {{ email }}</p>\n<p><a href=\"{{ unsubscribe_url }}\">leave</a></p>\n".into()
            }),
        },
        status: CampaignStatus::Running,
        created_ms: jetmail_common::now_ms(),
        publish: PublishProgress {
            published_through: recipients.len() as u64,
            complete: true,
            ..Default::default()
        },
        idempotency_key: None,
        request_fingerprint: None,
        schedule: CampaignSchedule::default(),
        unsubscribe: Some(UnsubscribeLinks {
            base_url: BASE_URL.into(),
            mailto: Some(MAILTO.into()),
        }),
        test: false,
    };
    stack
        .topo
        .campaigns
        .put(
            topology::campaign_key(id),
            serde_json::to_vec(&record)?.into(),
        )
        .await?;
    for (i, email) in recipients.iter().enumerate() {
        let seq = i as u64 + 1;
        let m = OutboxMessage {
            v: 1,
            campaign: id.into(),
            seq,
            email: email.to_string(),
            vars: Default::default(),
            replay: 0,
            published_ms: jetmail_common::now_ms(),
            unsubscribe_token: Some(unsubscribe_key().sign(&UnsubscribeClaim {
                campaign: id.into(),
                address: email.to_string(),
            })),
        };
        let domain = domain_token(&parse_recipient(email)?.ascii_domain);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            topology::outbox_msg_id(id, seq, 0).as_str(),
        );
        stack
            .topo
            .js
            .publish_with_headers(
                topology::outbox_subject(id, &domain),
                headers,
                serde_json::to_vec(&m)?.into(),
            )
            .await?
            .await?;
    }
    Ok(())
}

fn sh(script: &str) -> anyhow::Result<String> {
    let out = Command::new("bash").args(["-c", script]).output()?;
    anyhow::ensure!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Test keys made by openssl, and their DNS records.
struct Keys {
    rsa_pkcs8: PathBuf,
    rsa_pkcs1: PathBuf,
    ed25519: PathBuf,
    rsa_pkcs8_txt: String,
    rsa_pkcs1_txt: String,
    ed25519_txt: String,
}

fn make_keys(dir: &Path) -> anyhow::Result<Keys> {
    let p = |n: &str| dir.join(n);
    let (rsa8, rsa1, ed) = (p("rsa8.pem"), p("rsa1.pem"), p("ed.pem"));
    sh(&format!(
        "openssl genrsa -out {} 2048 2>/dev/null",
        rsa8.display()
    ))?;
    sh(&format!(
        "openssl genrsa -traditional -out {} 2048 2>/dev/null",
        rsa1.display()
    ))?;
    sh(&format!(
        "openssl genpkey -algorithm ed25519 -out {}",
        ed.display()
    ))?;
    anyhow::ensure!(std::fs::read_to_string(&rsa1)?.contains("BEGIN RSA PRIVATE KEY"));
    anyhow::ensure!(std::fs::read_to_string(&rsa8)?.contains("BEGIN PRIVATE KEY"));
    // The same one-liners as README's "Publishing the DKIM record".
    let rsa_txt = |k: &Path| {
        sh(&format!(
            "openssl pkey -in {} -pubout -outform DER | openssl base64 -A",
            k.display()
        ))
        .map(|p| format!("v=DKIM1; k=rsa; p={p}"))
    };
    let ed_txt = sh(&format!(
        "openssl pkey -in {} -pubout -outform DER | tail -c 32 | openssl base64 -A",
        ed.display()
    ))?;
    Ok(Keys {
        rsa_pkcs8_txt: rsa_txt(&rsa8)?,
        rsa_pkcs1_txt: rsa_txt(&rsa1)?,
        ed25519_txt: format!("v=DKIM1; k=ed25519; p={ed_txt}"),
        rsa_pkcs8: rsa8,
        rsa_pkcs1: rsa1,
        ed25519: ed,
    })
}

/// Runs the independent verifier on one raw mail; returns its lines (`idx a d s result h`).
fn verify(dir: &Path, data: &str, records: &[(&str, &str)]) -> anyhow::Result<Vec<String>> {
    let file = dir.join("mail.eml");
    std::fs::write(&file, data)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/dkim_verify.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&file)
        .args(records.iter().map(|(n, t)| format!("{n}={t}")))
        .output()?;
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    anyhow::ensure!(
        out.status.success(),
        "DKIM verification failed: {lines:?} {}\n{data}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(lines)
}

fn header<'a>(data: &'a str, name: &str) -> Option<&'a str> {
    let head = data.split("\r\n\r\n").next()?;
    let start = head
        .match_indices("\r\n")
        .map(|(i, _)| i + 2)
        .chain([0])
        .find(|&i| {
            head[i..]
                .to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })?;
    let rest = &head[start + name.len() + 1..];
    // Up to the next line that is not a continuation.
    let end = rest
        .match_indices("\r\n")
        .map(|(i, _)| i)
        .find(|&i| !rest[i + 2..].starts_with([' ', '\t']))
        .unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// RSA (PKCS#8), Ed25519 (from a key directory) and both at once (RSA PKCS#1 + Ed25519),
/// each on a text-only and a text+HTML campaign, to an ASCII and an international address:
/// every signature verifies with dkimpy, covers the list headers, and every mail carries
/// its unsubscribe links and its VERP envelope sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_mail_verifies_independently_with_list_headers_and_verp() -> anyhow::Result<()> {
    let mut stack = Stack::start(0, &[]).await?;
    let keys = make_keys(stack.dir.path())?;
    let keydir = stack.dir.path().join("keys");
    std::fs::create_dir_all(keydir.join("example.com"))?;
    std::fs::copy(&keys.ed25519, keydir.join("example.com/ed1.pem"))?;
    let rsa8 = keys.rsa_pkcs8.to_str().unwrap().to_string();
    let rsa1 = keys.rsa_pkcs1.to_str().unwrap().to_string();
    let ed = keys.ed25519.to_str().unwrap().to_string();
    let kd = keydir.to_str().unwrap().to_string();
    let configs: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "rsa",
            vec!["--dkim-selector", "rsa1", "--dkim-key", &rsa8],
            vec!["rsa-sha256"],
        ),
        ("ed", vec!["--dkim-keys", &kd], vec!["ed25519-sha256"]),
        (
            "both",
            vec![
                "--dkim-selector",
                "rsa2",
                "--dkim-key",
                &rsa1,
                "--dkim-selector",
                "ed1",
                "--dkim-key",
                &ed,
            ],
            vec!["rsa-sha256", "ed25519-sha256"],
        ),
    ];
    let records = [
        ("rsa1._domainkey.example.com", keys.rsa_pkcs8_txt.as_str()),
        ("rsa2._domainkey.example.com", keys.rsa_pkcs1_txt.as_str()),
        ("ed1._domainkey.example.com", keys.ed25519_txt.as_str()),
    ];
    let recipients = ["ann@example.com", "josé@bücher.example"];
    let mut expected_total = 0;
    for (name, args, algorithms) in &configs {
        let mut args = args.clone();
        args.extend(["--bounce-domain", BOUNCE_DOMAIN]);
        stack.spawn_sender(name, &args)?;
        for html in [false, true] {
            let id = format!("{name}-{}", if html { "html" } else { "text" });
            publish(&stack, &id, html, &recipients).await?;
            expected_total += recipients.len() as u64;
        }
        wait_for(
            "every mail of this key set",
            Duration::from_secs(30),
            || {
                let n = stack.sink.total();
                async move { (n >= expected_total).then_some(()) }
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", stack.sender(name).log()))?;
        stack.sender(name).terminate(Duration::from_secs(10))?;
        for html in [false, true] {
            let id = format!("{name}-{}", if html { "html" } else { "text" });
            let mails: Vec<_> = stack
                .sink
                .messages()
                .into_iter()
                .filter(|m| m.data.contains(&format!("<{id}.")))
                .collect();
            assert_eq!(mails.len(), recipients.len(), "{id}");
            for mail in mails {
                let lines = verify(stack.dir.path(), &mail.data, &records)?;
                let algs: Vec<&str> = lines.iter().filter_map(|l| l.split(' ').nth(1)).collect();
                assert_eq!(&algs, algorithms, "{id}: {lines:?}");
                for l in &lines {
                    let h = l.split(' ').nth(5).unwrap_or("").to_ascii_lowercase();
                    for needed in [
                        "from",
                        "to",
                        "subject",
                        "date",
                        "message-id",
                        "mime-version",
                        "content-type",
                        "list-unsubscribe",
                        "list-unsubscribe-post",
                    ] {
                        assert!(
                            h.split(':').any(|x| x == needed),
                            "{needed} not signed: {l}"
                        );
                    }
                    assert!(l.contains(" example.com "), "d= is the From domain: {l}");
                }
                // One-click unsubscribe (RFC 8058) with the mailto form.
                let rcpt = &mail.rcpts[0];
                let token = unsubscribe_key().sign(&UnsubscribeClaim {
                    campaign: id.clone(),
                    address: rcpt.clone(),
                });
                assert_eq!(
                    header(&mail.data, "List-Unsubscribe"),
                    Some(
                        format!(
                            "<{BASE_URL}/unsubscribe/{token}>,\r\n <mailto:{MAILTO}?subject=unsubscribe-{token}>"
                        )
                        .as_str()
                    ),
                    "{id}"
                );
                assert_eq!(
                    header(&mail.data, "List-Unsubscribe-Post"),
                    Some("List-Unsubscribe=One-Click")
                );
                assert!(mail.data.contains(&format!("/unsubscribe/{token}")));
                assert_eq!(
                    mail.data.matches("Leave: https://").count(),
                    1,
                    "{{{{ unsubscribe_url }}}} rendered in the text body"
                );
                // VERP: the envelope names the recipient, the From header stays.
                let seq = recipients.iter().position(|r| r == rcpt).unwrap() + 1;
                assert_eq!(mail.from, format!("bounces+{id}.{seq}@{BOUNCE_DOMAIN}"));
                assert_eq!(header(&mail.data, "From"), Some("News <news@example.com>"));
            }
        }
        // An altered body must fail the same verifier (it is not a rubber stamp).
        let mail = stack.sink.messages().pop().unwrap();
        let tampered = mail.data.replacen("Hi ", "Hi! ", 1);
        assert!(verify(stack.dir.path(), &tampered, &records).is_err());
    }
    assert_eq!(
        stack.sink.total(),
        expected_total,
        "each mail delivered once"
    );
    Ok(())
}

/// Key problems stop the real binary at start, with the file named and the reason said:
/// missing, not PEM, RSA under 2048 bits, an ECDSA key, an RSA label over an Ed25519 key.
#[test]
fn a_bad_dkim_key_stops_the_sender_at_start() -> anyhow::Result<()> {
    let dir = TempDir::new("dkim-bad");
    let p = |n: &str| dir.path().join(n);
    sh(&format!(
        "openssl genrsa -out {} 1024 2>/dev/null",
        p("short.pem").display()
    ))?;
    sh(&format!(
        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {}",
        p("ec.pem").display()
    ))?;
    std::fs::write(p("garbage.pem"), "not a key\n")?;
    sh(&format!(
        "openssl genpkey -algorithm ed25519 -out {}",
        p("ed.pem").display()
    ))?;
    // An Ed25519 key's bytes under an RSA label.
    let ed = std::fs::read_to_string(p("ed.pem"))?;
    std::fs::write(
        p("mislabelled.pem"),
        ed.replace("PRIVATE KEY", "RSA PRIVATE KEY"),
    )?;
    let cases = [
        ("missing.pem", "cannot read it"),
        ("garbage.pem", "not a PEM private key"),
        ("short.pem", "1024 bits is too short"),
        ("ec.pem", "ECDSA keys cannot sign DKIM"),
        ("mislabelled.pem", "is not a valid rsa-sha256 private key"),
    ];
    for (file, expected) in cases {
        let out = Command::new(bin_path("jetmail-sender")?)
            // No NATS is listening there: the key check comes first.
            .args([
                "--nats-url",
                "nats://127.0.0.1:1",
                "--smtp-url",
                "smtp://127.0.0.1:1",
            ])
            .args(["--dkim-selector", "s1", "--dkim-key"])
            .arg(p(file))
            .env("RUST_LOG", "warn")
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: started anyway");
        assert!(
            stderr.contains(expected) && stderr.contains(file),
            "{file}: expected {expected:?} in {stderr}"
        );
    }
    // And a good one passes the check: the sender goes on to wait for the missing broker
    // (services wait for a broker that is not up yet) instead of exiting on the key.
    let log = p("good.log");
    let mut child = Command::new(bin_path("jetmail-sender")?)
        .args([
            "--nats-url",
            "nats://127.0.0.1:1",
            "--smtp-url",
            "smtp://127.0.0.1:1",
        ])
        .args(["--dkim-selector", "s1", "--dkim-key"])
        .arg(p("ed.pem"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let exited = child.try_wait()?;
    // Waiting for the broker, it still stops on SIGTERM (its handler replaced the default).
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let stopped = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log)?;
    assert!(exited.is_none(), "a good key stopped the sender: {stderr}");
    assert!(!stderr.contains("DKIM key"), "{stderr}");
    assert!(
        stopped.is_some_and(|s| s.success()),
        "SIGTERM while waiting for the broker: {stopped:?}"
    );
    Ok(())
}

/// A relay answering `550 5.1.1` for two recipients and `550 5.7.1` for one: the first two
/// are suppressed as hard bounces (their dead letters keep the code), the third is not. A
/// second campaign to the same list, with the relay now accepting everyone, skips exactly
/// the two: outcome `suppressed`, nothing delivered to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_bounces_are_suppressed_and_policy_refusals_are_not() -> anyhow::Result<()> {
    let stack = Stack::start(1, &[]).await?;
    let list = [
        "a@example.com",
        "gone1@example.com",
        "b@example.com",
        "Gone2@Example.org",
        "spam@example.com",
        "c@example.com",
    ];
    stack.sink.set_faults(|f| {
        f.reject = [
            "gone1@example.com".to_string(),
            "Gone2@Example.org".to_string(),
        ]
        .into();
        f.reject_with.insert(
            "spam@example.com".into(),
            "550 5.7.1 message refused as spam".into(),
        );
    });
    publish(&stack, "first", false, &list).await?;
    let p = wait_for(
        "the first campaign settled",
        Duration::from_secs(30),
        || async {
            let p = stack.progress("first").await;
            (p.sent + p.failed >= 6).then_some(p)
        },
    )
    .await?;
    assert_eq!((p.sent, p.failed), (3, 3), "{p:?}");
    let suppressed = |email: &str| {
        let key = suppression_key(&normalize_address(email).unwrap());
        let store = stack.topo.suppressions.clone();
        async move { store.get(key).await.unwrap() }
    };
    for gone in ["gone1@example.com", "Gone2@Example.org"] {
        let v = suppressed(gone).await.expect("hard bounce suppressed");
        let s: Suppression = serde_json::from_slice(&v)?;
        assert_eq!(s.reason, SuppressionReason::HardBounce);
        assert_eq!(s.campaign.as_deref(), Some("first"));
        assert!(s.detail.as_deref().unwrap_or("").contains("5.1.1"), "{s:?}");
    }
    assert!(
        suppressed("spam@example.com").await.is_none(),
        "5.7.1 is not a bounce"
    );
    assert!(suppressed("a@example.com").await.is_none());
    let dead = stack.dead_letters().await?;
    let gone = dead
        .iter()
        .find(|d| d.original.contains("gone1@example.com"))
        .expect("dead letter");
    assert!(
        gone.attempts.iter().any(|a| a.error.contains("5.1.1")),
        "the dead letter keeps the code: {gone:?}"
    );

    stack.sink.set_faults(|f| {
        f.reject.clear();
        f.reject_with.clear();
    });
    publish(&stack, "second", false, &list).await?;
    let p = wait_for(
        "the second campaign settled",
        Duration::from_secs(30),
        || async {
            let p = stack.progress("second").await;
            (p.sent + p.suppressed >= 6).then_some(p)
        },
    )
    .await?;
    assert_eq!((p.sent, p.suppressed, p.failed), (4, 2, 0), "{p:?}");
    let counts = stack.sink.counts();
    assert_eq!(counts.get("gone1@example.com"), None);
    assert_eq!(counts.get("Gone2@Example.org"), None);
    assert_eq!(counts.get("spam@example.com"), Some(&1));
    assert_eq!(counts.get("a@example.com"), Some(&2));
    Ok(())
}

/// An address put on the list while its campaign runs is not mailed: the sender's watch
/// sees the entry before that recipient's turn (one send at a time, 50 ms each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppression_added_during_a_campaign_stops_later_sends() -> anyhow::Result<()> {
    let stack = Stack::start(1, &["--concurrency", "1"]).await?;
    stack
        .sink
        .set_faults(|f| f.delay = Duration::from_millis(50));
    let list: Vec<String> = (0..40).map(|i| format!("u{i}@example.com")).collect();
    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
    publish(&stack, "running", false, &refs).await?;
    wait_for("the campaign under way", Duration::from_secs(30), || {
        let n = stack.sink.total();
        async move { (n >= 3).then_some(()) }
    })
    .await?;
    // Typed as an operator might: the domain's case differs, the entry is the same.
    let entry = Suppression {
        v: 1,
        address: normalize_address("u39@EXAMPLE.com")?,
        reason: SuppressionReason::Manual,
        at_ms: jetmail_common::now_ms(),
        campaign: None,
        detail: None,
    };
    stack
        .topo
        .suppressions
        .put(
            suppression_key(&entry.address),
            serde_json::to_vec(&entry)?.into(),
        )
        .await?;
    let sent_before = stack.sink.total();
    assert!(
        sent_before < 39,
        "the campaign finished before the test could act"
    );
    let p = wait_for("the campaign settled", Duration::from_secs(60), || async {
        let p = stack.progress("running").await;
        (p.sent + p.suppressed >= 40).then_some(p)
    })
    .await?;
    assert_eq!((p.sent, p.suppressed), (39, 1), "{p:?}");
    assert_eq!(stack.sink.counts().get("u39@example.com"), None);
    Ok(())
}
