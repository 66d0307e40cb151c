//! End to end in a real headless Chromium, against the real stack: nats-server, ingest,
//! two senders, the monitor, the web UI (all as processes) and an SMTP sink. It also takes
//! the screenshots in `docs/screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use jetmail_testkit::{free_port, wait_for, NatsServer, Service, SmtpSink, TempDir};

use crate::helpers::wait_http;

const PASSWORD: &str = "browser-test-password";
const HEARTBEAT_MS: u64 = 500;
/// The browser window; the page area (and so each screenshot) is about 1000x660.
const WINDOW: (u32, u32) = (1000, 800);
/// Each SMTP reply of the sink waits this long, and each sender sends this many at once, so
/// the 200-recipient campaign takes a few seconds: long enough to watch it move.
const SMTP_DELAY: Duration = Duration::from_millis(40);
const SENDER_CONCURRENCY: &str = "4";

/// chromedriver on a free port; killed on drop.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    async fn start(log_dir: &Path) -> ChromeDriver {
        let port = free_port();
        let log = std::fs::File::create(log_dir.join("chromedriver.log")).unwrap();
        let child =
            Command::new(std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()))
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("chromedriver not found: install Debian's chromium-driver");
        let driver = ChromeDriver { child, port };
        wait_for(
            "chromedriver to listen",
            Duration::from_secs(20),
            move || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await
        .unwrap();
        driver
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &ChromeDriver, profile: &Path) -> Client {
    let args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut options = serde_json::json!({ "args": args });
    if let Ok(bin) = std::env::var("CHROMIUM_BIN") {
        options["binary"] = bin.into();
    } else if Path::new("/usr/bin/chromium").exists() {
        options["binary"] = "/usr/bin/chromium".into();
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a chromium session")
}

/// Screenshots go to `docs/screenshots/` when `JETMAIL_UPDATE_SCREENSHOTS` is set (they
/// change on every run: times, ports), else next to the test's logs.
fn screenshots_dir(log_dir: &Path) -> PathBuf {
    let dir = if std::env::var_os("JETMAIL_UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
    } else {
        log_dir.join("screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    std::fs::write(dir.join(name), png).unwrap();
}

/// The text of the first element matching `css`, or "" when there is none yet.
async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the element matching `css` reads `want`.
async fn wait_text(c: &Client, css: &str, want: &str, timeout: Duration) {
    let r = wait_for(
        &format!("{css} to read {want:?}"),
        timeout,
        move || async move { (text_of(c, css).await.trim() == want).then_some(()) },
    )
    .await;
    if let Err(e) = r {
        panic!("{e}; it reads {:?}", text_of(c, css).await);
    }
}

async fn fill(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Marks the current document; it is still marked later only if the page was never reloaded.
async fn mark_page(c: &Client) {
    c.execute("window.__jetmail_marker = 42;", vec![])
        .await
        .unwrap();
}

async fn page_still_marked(c: &Client) -> bool {
    c.execute("return window.__jetmail_marker === 42;", vec![])
        .await
        .unwrap()
        .as_bool()
        .unwrap_or(false)
}

async fn path_of(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_from_the_browser_end_to_end() {
    let logs = TempDir::new("webui-e2e");
    let log_dir = logs.path();
    let shots = screenshots_dir(log_dir);
    let nats = NatsServer::start().await.unwrap();
    let sink = SmtpSink::start().await.unwrap();
    sink.set_faults(|f| f.delay = SMTP_DELAY);
    let nats_url = nats.url();
    // Quick retries: the fleet's schedule lives on the senders consumer, set before any
    // sender starts (a sender's own --retry-backoff only warns).
    let broker = nats.client().await.unwrap();
    let quick_retries = jetmail_common::topology::SendersPolicy {
        retry_backoff: jetmail_testkit::policy("200ms,200ms", "1s").retry_backoff,
        ..Default::default()
    };
    jetmail_testkit::apply_senders_policy(&broker, &quick_retries)
        .await
        .unwrap();

    let ingest_port = free_port();
    let mut ingest = Service::spawn(
        "ingest",
        "jetmail-ingest",
        &[
            "--nats-url".into(),
            nats_url.clone(),
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{ingest_port}"),
            // Not about the API's tokens (handlers.rs is).
            "--insecure-no-auth".into(),
        ],
        &[],
        log_dir,
    )
    .unwrap();
    let monitor_port = free_port();
    let mut monitor = Service::spawn(
        "monitor",
        "jetmail-monitor",
        &[
            "--nats-url".into(),
            nats_url.clone(),
            "--listen".into(),
            format!("127.0.0.1:{monitor_port}"),
        ],
        &[],
        log_dir,
    )
    .unwrap();
    let sender = |id: &str| {
        Service::spawn(
            id,
            "jetmail-sender",
            &[
                "--nats-url".into(),
                nats_url.clone(),
                "--smtp-url".into(),
                sink.url(),
                "--id".into(),
                id.into(),
                "--heartbeat-interval".into(),
                format!("{HEARTBEAT_MS}ms"),
                "--drain-timeout".into(),
                "5s".into(),
                "--concurrency".into(),
                SENDER_CONCURRENCY.into(),
            ],
            &[],
            log_dir,
        )
        .unwrap()
    };
    let _sender_a = sender("sender-a");
    let mut sender_b = sender("sender-b");
    let webui_port = free_port();
    let mut webui = Service::spawn(
        "webui",
        "jetmail-webui",
        &[
            "--nats-url".into(),
            nats_url.clone(),
            "--ingest-url".into(),
            format!("http://127.0.0.1:{ingest_port}"),
            "--listen".into(),
            format!("127.0.0.1:{webui_port}"),
        ],
        &[("JETMAIL_WEBUI_PASSWORD", PASSWORD)],
        log_dir,
    )
    .unwrap();
    wait_http("ingest", ingest_port, "/healthz", &mut ingest).await;
    wait_http("monitor", monitor_port, "/healthz", &mut monitor).await;
    wait_http("webui", webui_port, "/healthz", &mut webui).await;

    let driver = ChromeDriver::start(log_dir).await;
    let profile = TempDir::new("chromium-profile");
    let client = browser(&driver, profile.path()).await;
    // A shared reference is Copy: every polling closure below takes its own.
    let c = &client;
    let base = format!("http://127.0.0.1:{webui_port}");

    // Log in: the first page sends us to the login form and back.
    c.goto(&format!("{base}/campaigns")).await.unwrap();
    assert_eq!(path_of(c).await, "/login");
    screenshot(c, &shots, "login.png").await;
    fill(c, "#password", "wrong").await;
    click(c, "#login-form button[type=submit]").await;
    wait_text(
        c,
        "#error-password",
        "Wrong password.",
        Duration::from_secs(10),
    )
    .await;
    fill(c, "#password", PASSWORD).await;
    click(c, "#login-form button[type=submit]").await;
    wait_for(
        "the campaign list after login",
        Duration::from_secs(10),
        move || async move { (path_of(c).await == "/campaigns").then_some(()) },
    )
    .await
    .unwrap();

    // A 200-recipient CSV, previewed then sent.
    let csv_path = log_dir.join("recipients.csv");
    let mut csv = String::from("email,name\n");
    for i in 1..=200 {
        csv.push_str(&format!("user{i:03}@example.com,Reader {i}\n"));
    }
    std::fs::write(&csv_path, csv).unwrap();
    c.goto(&format!("{base}/campaigns/new")).await.unwrap();
    fill(c, "#from", "Jetmail News <news@example.com>").await;
    fill(c, "#subject", "Spring news for {{ name }}").await;
    fill(c, "#text", "Hello {{ name }},\nour spring news is out.").await;
    fill(
        c,
        "#html",
        "<h2 style=\"color:#2457d6\">Hello {{ name }}</h2><p>Our spring news is out.</p>",
    )
    .await;
    c.find(Locator::Css("#recipients_file"))
        .await
        .unwrap()
        .send_keys(csv_path.to_str().unwrap())
        .await
        .unwrap();
    click(c, "#preview-button").await;
    wait_text(
        c,
        "#preview-recipient",
        "user001@example.com",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        text_of(c, "#preview-subject").await,
        "Spring news for Reader 1"
    );
    screenshot(c, &shots, "new-campaign.png").await;
    click(c, "#send-button").await;
    let id = wait_for(
        "the campaign page",
        Duration::from_secs(30),
        move || async move {
            let p = path_of(c).await;
            p.strip_prefix("/campaigns/")
                .filter(|id| *id != "new")
                .map(str::to_string)
        },
    )
    .await
    .unwrap();
    mark_page(c).await;
    // The counters reach 200 sent on the page itself, pushed over SSE.
    wait_text(
        c,
        "#campaign .counters [data-field=sent]",
        "200",
        Duration::from_secs(60),
    )
    .await;
    wait_text(
        c,
        "#campaign [data-field=status]",
        "done",
        Duration::from_secs(30),
    )
    .await;
    assert!(page_still_marked(c).await, "the campaign page was reloaded");
    assert_eq!(
        sink.total(),
        200,
        "the SMTP server received every recipient once"
    );
    assert_eq!(sink.distinct(), 200);
    assert_eq!(sink.duplicates(), 0);
    wait_text(
        c,
        "#campaign .counters [data-field=pending]",
        "0",
        Duration::from_secs(10),
    )
    .await;
    // Let the chart draw a few points after the end before the screenshot.
    wait_for("the chart", Duration::from_secs(10), move || async move {
        c.find(Locator::Css("#chart polyline.chart-sent"))
            .await
            .ok()
    })
    .await
    .unwrap();
    screenshot(c, &shots, "campaign.png").await;

    c.goto(&format!("{base}/campaigns")).await.unwrap();
    let row = format!("#campaign-{id}");
    wait_text(
        c,
        &format!("{row} [data-field=sent]"),
        "200",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        text_of(c, &format!("{row} [data-field=status]")).await,
        "done"
    );

    // Senders: both up; one stops and turns down without a reload.
    c.goto(&format!("{base}/senders")).await.unwrap();
    wait_text(
        c,
        "#sender-sender-a [data-field=state]",
        "up",
        Duration::from_secs(10),
    )
    .await;
    wait_text(
        c,
        "#sender-sender-b [data-field=state]",
        "up",
        Duration::from_secs(10),
    )
    .await;
    mark_page(c).await;
    let status = sender_b.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "sender-b exits cleanly on SIGTERM");
    let stopped_at = Instant::now();
    wait_text(
        c,
        "#sender-sender-b [data-field=state]",
        "down",
        Duration::from_secs(10),
    )
    .await;
    let took = stopped_at.elapsed();
    // Three heartbeat intervals after its last heartbeat, plus the page's own polling.
    assert!(
        took <= Duration::from_millis(3 * HEARTBEAT_MS + 1000),
        "sender-b turned down after {took:?}"
    );
    assert!(page_still_marked(c).await, "the senders page was reloaded");
    assert_eq!(
        text_of(c, "#sender-sender-a [data-field=state]").await,
        "up"
    );
    screenshot(c, &shots, "senders.png").await;

    // Some recipients fail permanently; one is replayed from the dead-letter page. A policy
    // refusal (5.7.1), which the relay can lift: a vanished mailbox (5.1.1) would put the
    // address on the suppression list, and a replay to it would rightly be suppressed.
    const POLICY_REFUSAL: &str = "550 5.7.1 refused by policy";
    sink.set_faults(|f| {
        for a in ["bounce1@example.com", "bounce2@example.com"] {
            f.reject_with.insert(a.into(), POLICY_REFUSAL.into());
        }
    });
    c.goto(&format!("{base}/campaigns/new")).await.unwrap();
    fill(c, "#from", "news@example.com").await;
    fill(c, "#subject", "Second <b>issue</b>").await;
    fill(c, "#text", "Hello").await;
    fill(
        c,
        "#recipients_text",
        "ok1@example.com\nbounce1@example.com\nok2@example.com\nbounce2@example.com\n",
    )
    .await;
    click(c, "#send-button").await;
    let first = id.as_str();
    let id2 = wait_for(
        "the second campaign page",
        Duration::from_secs(30),
        move || async move {
            let p = path_of(c).await;
            p.strip_prefix("/campaigns/")
                .filter(|i| *i != "new" && *i != first)
                .map(str::to_string)
        },
    )
    .await
    .unwrap();
    wait_text(
        c,
        "#campaign .counters [data-field=failed]",
        "2",
        Duration::from_secs(30),
    )
    .await;
    wait_text(
        c,
        "#campaign .counters [data-field=sent]",
        "2",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        text_of(c, "#campaign h1 [data-field=subject]").await,
        "Second <b>issue</b>"
    );

    c.goto(&format!("{base}/dead?campaign={id2}"))
        .await
        .unwrap();
    let bounce1 = "#dead tr[data-email=\"bounce1@example.com\"]";
    let row1 = c.find(Locator::Css(bounce1)).await.unwrap();
    assert!(text_of(c, "#dead-total")
        .await
        .starts_with("2 dead letters"));
    // Each attempt with its SMTP reply.
    click(c, &format!("{bounce1} details summary")).await;
    let reply = text_of(c, &format!("{bounce1} .smtp-reply")).await;
    assert!(reply.contains("550"), "SMTP reply shown: {reply:?}");
    screenshot(c, &shots, "dead-letters.png").await;
    let seq = row1.attr("data-seq").await.unwrap().unwrap();
    sink.set_faults(|f| {
        f.reject_with.remove("bounce1@example.com");
    });
    click(c, &format!("{bounce1} button[data-replay=\"{seq}\"]")).await;
    wait_text(
        c,
        "#flash p",
        "Replayed 1 dead letter.",
        Duration::from_secs(20),
    )
    .await;
    let sk = &sink;
    wait_for(
        "the replayed recipient at the SMTP server",
        Duration::from_secs(30),
        move || async move { sk.counts().get("bounce1@example.com").copied() },
    )
    .await
    .unwrap();
    assert!(text_of(c, "#dead-total").await.starts_with("1 dead letter"));
    assert!(c.find(Locator::Css(bounce1)).await.is_err());
    assert_eq!(sink.counts().get("bounce2@example.com"), None);
    // The campaign page counts the replayed recipient as sent.
    c.goto(&format!("{base}/campaigns/{id2}")).await.unwrap();
    wait_text(
        c,
        "#campaign .counters [data-field=sent]",
        "3",
        Duration::from_secs(30),
    )
    .await;
    wait_text(
        c,
        "#campaign .counters [data-field=failed]",
        "1",
        Duration::from_secs(10),
    )
    .await;

    c.goto(&format!("{base}/campaigns")).await.unwrap();
    wait_text(
        c,
        &format!("#campaign-{id2} [data-field=sent]"),
        "3",
        Duration::from_secs(10),
    )
    .await;
    screenshot(c, &shots, "campaigns.png").await;

    // SIGTERM while the page holds its live stream: the stream ends at once, so the web UI
    // exits well before its shutdown deadline.
    let status = webui.terminate(Duration::from_secs(5)).unwrap();
    assert!(
        status.success(),
        "webui exits cleanly on SIGTERM:\n{}",
        webui.log()
    );
    assert!(!webui.log().contains("panicked"), "{}", webui.log());
    client.close().await.unwrap();
}

#[test]
fn refuses_to_start_without_a_password_unless_told_to() {
    let bin = jetmail_testkit::bin_path("jetmail-webui").unwrap();
    let run = |args: &[&str], password: Option<&str>| {
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .args([
                "--nats-url",
                "nats://127.0.0.1:1",
                "--listen",
                "127.0.0.1:0",
            ])
            .env_remove("JETMAIL_WEBUI_PASSWORD")
            .env_remove("JETMAIL_WEBUI_INSECURE_NO_AUTH")
            .env_remove("JETMAIL_WEBUI_PASSWORD_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(p) = password {
            cmd.env("JETMAIL_WEBUI_PASSWORD", p);
        }
        // Had it started, it would wait for NATS for ever: give it a deadline instead.
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("jetmail-webui {args:?} started instead of refusing");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    };
    let out = run(&[], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("JETMAIL_WEBUI_PASSWORD") && err.contains("--insecure-no-auth"),
        "{err}"
    );
    let out = run(&["--insecure-no-auth"], Some("secret"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("choose one"));
}
