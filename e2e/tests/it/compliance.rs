//! Ingest's good-citizen side end to end, with real processes: campaign 1 is delivered with
//! List-Unsubscribe headers; some recipients unsubscribe through the real public route of
//! `jetmail-ingest serve` with the tokens taken from their delivered mails, others bounce
//! (a DSN fed to `jetmail-ingest bounces import -`), one defers (a soft DSN, not
//! suppressed); a test send is delivered and counted nowhere; campaign 2 to the same list
//! skips exactly the unsubscribed and bounced addresses, by the sink's own count.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use jetmail_testkit::{bin_path, free_port, wait_for, Service, Stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIST: usize = 20;
const UNSUBSCRIBED: [usize; 3] = [0, 7, 13];
const BOUNCED: [usize; 2] = [3, 11];
const DEFERRED: usize = 5;

/// The `List-Unsubscribe` https (here http) URL of a delivered mail.
fn unsubscribe_url(data: &str) -> Option<String> {
    let head = data.split("\r\n\r\n").next()?;
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let line = unfolded
        .split("\r\n")
        .find(|l| l.to_ascii_lowercase().starts_with("list-unsubscribe:"))?;
    line.split(['<', '>'])
        .find(|p| p.starts_with("http"))
        .map(str::to_string)
}

/// One plain HTTP/1.1 request; the status code.
async fn http(method: &str, url: &str, body: &str) -> anyhow::Result<u16> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = tokio::net::TcpStream::connect(host).await?;
    let req = format!(
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await?;
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(code)
}

/// A Postfix-style DSN for `rcpt`, sent to the VERP address of campaign `campaign`.
fn dsn(campaign: &str, seq: usize, rcpt: &str, action: &str, status: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.example.com (Mail Delivery System)\r\n\
         To: bounces+{campaign}.{seq}@bounces.example.com\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\n\
         Reporting-MTA: dns; mx.example.com\r\n\r\n\
         Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n\
         Diagnostic-Code: smtp; 550 {status} <{rcpt}>: mailbox status\r\n\r\n--B--\r\n"
    )
}

fn ingest(stack: &Stack, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut child = Command::new(bin_path("jetmail-ingest")?)
        .args(["--nats-url", &stack.nats.url()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "jetmail-ingest {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_campaign_skips_exactly_the_unsubscribed_and_bounced() -> anyhow::Result<()> {
    let stack = Stack::start(2, &["--bounce-domain", "bounces.example.com"]).await?;
    let secret = stack.dir.path().join("unsubscribe.secret");
    std::fs::write(&secret, "an unsubscribe secret of forty-two bytes!!\n")?;
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let link_args = [
        "--public-url",
        public.as_str(),
        "--unsubscribe-secret-file",
        secret.to_str().unwrap(),
    ];
    let serve_args: Vec<String> = [
        "--nats-url",
        &stack.nats.url(),
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        // Not about the API's tokens (ingest's http_access tests are).
        "--insecure-no-auth",
    ]
    .iter()
    .chain(link_args.iter())
    .map(|s| s.to_string())
    .collect();
    let _serve = Service::spawn(
        "ingest",
        "jetmail-ingest",
        &serve_args,
        &[],
        stack.dir.path(),
    )?;
    let csv = stack.write_csv("list.csv", LIST)?;
    let addr = |i: usize| format!("user{i}@example.com");

    // Campaign 1: everyone, each mail with its own unsubscribe link.
    stack.submit(&csv, "camp1", &link_args)?;
    stack.wait_done("camp1", Duration::from_secs(60)).await?;
    assert_eq!(stack.sink.total(), LIST as u64);
    let mails = stack.sink.messages();

    // The unsubscribes, through the real route with the delivered tokens. A GET first: it
    // must change nothing.
    wait_for("ingest serve", Duration::from_secs(20), || async {
        http("GET", &format!("{public}/healthz"), "")
            .await
            .ok()
            .filter(|c| *c == 200)
    })
    .await?;
    for i in UNSUBSCRIBED {
        let mail = mails
            .iter()
            .find(|m| m.rcpts == [addr(i)])
            .expect("delivered");
        let url = unsubscribe_url(&mail.data).expect("a List-Unsubscribe URL");
        assert!(url.starts_with(&public), "{url}");
        assert_eq!(http("GET", &url, "").await?, 200);
        assert!(!ingest(&stack, &["suppress", "list"], None)?.contains(&addr(i)));
        assert_eq!(http("POST", &url, "List-Unsubscribe=One-Click").await?, 200);
        // Altered: refused, nothing changes.
        assert_eq!(http("POST", &format!("{url}x"), "").await?, 400);
    }

    // The bounces, piped in one message at a time as a relay would; a deferral too.
    for i in BOUNCED {
        let out = ingest(
            &stack,
            &["bounces", "import", "-"],
            Some(&dsn("camp1", i + 1, &addr(i), "failed", "5.1.1")),
        )?;
        assert!(out.contains("campaign camp1"), "{out}");
    }
    ingest(
        &stack,
        &["bounces", "import", "-"],
        Some(&dsn(
            "camp1",
            DEFERRED + 1,
            &addr(DEFERRED),
            "delayed",
            "4.4.1",
        )),
    )?;
    let listed = ingest(&stack, &["suppress", "list"], None)?;
    assert_eq!(
        listed.lines().count(),
        UNSUBSCRIBED.len() + BOUNCED.len(),
        "{listed}"
    );
    assert!(!listed.contains(&addr(DEFERRED)));

    // A test send: delivered at once, counted nowhere.
    let text = stack.dir.path().join("test.txt");
    std::fs::write(&text, "Test for {{ name }}\n")?;
    let out = ingest(
        &stack,
        &[
            "test-send",
            "--to",
            "tester@example.net",
            "--from",
            "News <news@example.com>",
            "--subject",
            "Test {{ name }}",
            "--text",
            text.to_str().unwrap(),
            "--recipients",
            csv.to_str().unwrap(),
        ],
        None,
    )?;
    let test_id = out
        .split_whitespace()
        .nth(1)
        .expect("test <id>: …")
        .trim_end_matches(':')
        .to_string();
    wait_for("test mail", Duration::from_secs(30), || async {
        (stack.sink.counts().get("tester@example.net") == Some(&1)).then_some(())
    })
    .await?;
    let test_mail = stack
        .sink
        .messages()
        .into_iter()
        .find(|m| m.rcpts == ["tester@example.net"])
        .unwrap();
    assert!(
        test_mail.data.contains("Test for Name 0"),
        "{}",
        test_mail.data
    );
    assert!(stack.record(&test_id).await.unwrap().test);

    // Campaign 2 to the same list.
    let out = stack.submit(&csv, "camp2", &link_args)?;
    let skipped = UNSUBSCRIBED.len() + BOUNCED.len();
    assert!(out.contains(&format!("suppressed {skipped}")), "{out}");
    let p2 = stack.wait_done("camp2", Duration::from_secs(60)).await?;
    assert_eq!(
        (p2.sent, p2.suppressed),
        ((LIST - skipped) as u64, skipped as u64)
    );
    let counts = stack.sink.counts();
    for i in 0..LIST {
        let expected = if UNSUBSCRIBED.contains(&i) || BOUNCED.contains(&i) {
            1
        } else {
            2
        };
        assert_eq!(counts.get(&addr(i)), Some(&expected), "{}", addr(i));
    }
    assert_eq!(stack.sink.total(), (2 * LIST - skipped + 1) as u64);
    // Neither campaign counted the test mail; the test send has no progress at all.
    assert_eq!(stack.progress("camp1").await.sent, LIST as u64);
    assert_eq!(stack.progress(&test_id).await.sent, 0);
    Ok(())
}
