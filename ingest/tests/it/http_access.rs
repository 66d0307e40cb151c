//! The API's access and hardening, against the real `jetmail-ingest serve` process (tokens,
//! scopes, the audit log, SIGHUP, the public listener, refusing to start) and in-process
//! (a slowloris client, body limits).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use jetmail_common::api::{ErrorBody, ErrorCode, Field};
use jetmail_common::http_server::ServerLimits;
use jetmail_ingest::http::ApiAuth;
use jetmail_ingest::ServeConfig;
use jetmail_testkit::{free_port, wait_for, NatsServer, Service, TempDir};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::api::{call, setup};

const READER: &str = "reader-token-0123456789abcdef";
const SENDER: &str = "sender-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";
const ROTATED: &str = "rotated-sender-token-0123456789";

/// One HTTP/1.1 exchange on a fresh connection: status and body.
async fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{auth}\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut out))
        .await
        .expect("an answer in time")
        .expect("read");
    let status = out
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {out:?}"));
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

fn error_of(body: &str) -> ErrorBody {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn campaign(from: &str, id: &str) -> String {
    json!({
        "from": from, "subject": "Hi", "text": "Hello {{ email }}",
        "recipients": ["a@example.com", "b@example.com"], "campaign_id": id,
    })
    .to_string()
}

struct Ingest {
    svc: Service,
    port: u16,
    public_port: u16,
    tokens: std::path::PathBuf,
    _dir: TempDir,
    _nats: NatsServer,
}

async fn start_ingest() -> Ingest {
    let nats = NatsServer::start().await.expect("nats-server");
    let dir = TempDir::new("ingest-access");
    let tokens = dir.path().join("api-tokens");
    std::fs::write(
        &tokens,
        format!("# name token scopes\nreader {READER}\n\nsender {SENDER} send\nops {ADMIN} read,admin\n"),
    )
    .unwrap();
    let secret = dir.path().join("unsubscribe.secret");
    std::fs::write(&secret, "an unsubscribe secret of forty-two bytes!!\n").unwrap();
    let (port, public_port) = (free_port(), free_port());
    let args: Vec<String> = [
        "--nats-url",
        &nats.url(),
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--public-listen",
        &format!("127.0.0.1:{public_port}"),
        "--api-tokens-file",
        tokens.to_str().unwrap(),
        "--allowed-from-domains",
        "example.com,example.org",
        "--public-url",
        &format!("http://127.0.0.1:{public_port}"),
        "--unsubscribe-secret-file",
        secret.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut svc =
        Service::spawn("ingest", "jetmail-ingest", &args, &[], dir.path()).expect("spawn");
    let up = wait_for("ingest serve", Duration::from_secs(30), || async move {
        let ok = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok();
        ok.then_some(())
    })
    .await;
    if let Err(e) = up {
        panic!("{e}\n{}", svc.log());
    }
    let _ = svc.exited();
    Ingest {
        svc,
        port,
        public_port,
        tokens,
        _dir: dir,
        _nats: nats,
    }
}

async fn campaign_count(port: u16) -> usize {
    let (status, body) = http(port, "GET", "/v1/campaigns", Some(READER), "").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["campaigns"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scopes_and_the_audit_log() {
    let mut ingest = start_ingest().await;
    let port = ingest.port;

    // No token, a wrong one, another scheme: 401 and nothing submitted.
    for token in [
        None,
        Some("not-a-known-token-at-all-xx"),
        Some(&READER[1..]),
    ] {
        let (status, body) = http(
            port,
            "POST",
            "/v1/campaigns",
            token,
            &campaign("x@example.com", "c1"),
        )
        .await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(error_of(&body).error, ErrorCode::Unauthorized);
    }
    let (status, _) = http(port, "GET", "/v1/campaigns", None, "").await;
    assert_eq!(status, 401, "reads need a token too");
    let (status, _) = http(port, "GET", "/v1/no-such-route", None, "").await;
    assert_eq!(status, 401, "an unknown path tells nothing without a token");
    // A read-only token on a send route, a send token on an admin route: 403, nothing done.
    let (status, body) = http(
        port,
        "POST",
        "/v1/campaigns",
        Some(READER),
        &campaign("x@example.com", "c1"),
    )
    .await;
    assert_eq!(
        (status, error_of(&body).error),
        (403, ErrorCode::Forbidden),
        "{body}"
    );
    let (status, body) = http(port, "DELETE", "/v1/dead", Some(SENDER), "{}").await;
    assert_eq!(
        (status, error_of(&body).error),
        (403, ErrorCode::Forbidden),
        "{body}"
    );
    assert_eq!(campaign_count(port).await, 0, "nothing changed");

    // --allowed-from-domains: a From elsewhere is refused with its field.
    let (status, body) = http(
        port,
        "POST",
        "/v1/campaigns",
        Some(SENDER),
        &campaign("x@evil.example", "c2"),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_of(&body).field, Some(Field::From));
    assert_eq!(campaign_count(port).await, 0);

    // The right token and scope: accepted; admin includes read.
    let (status, body) = http(
        port,
        "POST",
        "/v1/campaigns",
        Some(SENDER),
        &campaign("News <n@example.org>", "c3"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = http(port, "DELETE", "/v1/dead", Some(ADMIN), "{}").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(campaign_count(port).await, 1);

    // The unsubscribe routes stay open, on both listeners; the public one serves nothing else.
    for p in [port, ingest.public_port] {
        let (status, body) = http(p, "GET", "/unsubscribe/forged-token", None, "").await;
        assert_eq!(status, 400, "open but refusing a forged token: {body}");
    }
    let (status, _) = http(ingest.public_port, "GET", "/v1/campaigns", Some(ADMIN), "").await;
    assert_eq!(status, 404, "the API is not on the public listener");

    // The log names the token with what it did, and holds no token.
    let log = ingest.svc.log();
    assert!(
        log.lines()
            .any(|l| l.contains("sender") && l.contains("/v1/campaigns") && l.contains("202")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("ops") && l.contains("/v1/dead")),
        "{log}"
    );
    assert!(log.contains("without a valid token"), "{log}");
    for secret in [
        READER,
        SENDER,
        ADMIN,
        "not-a-known-token-at-all-xx",
        &READER[1..],
    ] {
        assert!(!log.contains(secret), "a token in the log:\n{log}");
    }

    // Rotation: the file edited, SIGHUP, the old token refused and the new one accepted.
    std::fs::write(
        &ingest.tokens,
        format!("reader {READER}\nsender {ROTATED} send\nops {ADMIN} admin\n"),
    )
    .unwrap();
    let pid = ingest.svc.pid().expect("running");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for(
        "the rotated token",
        Duration::from_secs(10),
        || async move {
            let (status, _) = http(port, "GET", "/v1/campaigns", Some(ROTATED), "").await;
            (status == 200).then_some(())
        },
    )
    .await
    .unwrap();
    let (status, _) = http(port, "GET", "/v1/campaigns", Some(SENDER), "").await;
    assert_eq!(status, 401, "the old token is gone");
    assert!(
        ingest.svc.exited().is_none(),
        "SIGHUP does not stop the service"
    );
    assert!(!ingest.svc.log().contains(ROTATED));
}

/// `serve` with `args` after `serve --listen …`: its exit status and output.
fn serve_once(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(jetmail_testkit::bin_path("jetmail-ingest").unwrap())
        .args([
            "--nats-url",
            "nats://127.0.0.1:1",
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .env_remove("JETMAIL_API_TOKENS_FILE")
        .env_remove("JETMAIL_INGEST_INSECURE_NO_AUTH")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn serve_refuses_to_start_without_tokens_or_with_a_broken_file() {
    let dir = TempDir::new("ingest-tokens");
    // The broker is unreachable: a refusal for the tokens must come before connecting.
    let (ok, out) = serve_once(&[]);
    assert!(!ok);
    assert!(
        out.contains("--api-tokens-file") && out.contains("--insecure-no-auth"),
        "{out}"
    );

    let broken = dir.path().join("tokens");
    std::fs::write(&broken, format!("webui {ADMIN} admin\n{SENDER} send\n")).unwrap();
    let (ok, out) = serve_once(&["--api-tokens-file", broken.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("line 2"), "{out}");
    assert!(
        !out.contains(SENDER) && !out.contains(ADMIN),
        "a token printed: {out}"
    );
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_while_others_are_served() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let shutdown = CancellationToken::new();
    let config = ServeConfig {
        auth: ApiAuth::Insecure,
        limits: ServerLimits {
            header_read_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        ..Default::default()
    };
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { jetmail_ingest::serve(topo, listener, &config, shutdown).await }
    });
    let slow = tokio::spawn(async move {
        let started = Instant::now();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        for b in head {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            // The server closing the connection shows as a read of 0 (or an error).
            let mut buf = [0u8; 64];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await
            {
                if n == 0 || buf.starts_with(b"HTTP/1.1 408") {
                    break;
                }
            }
        }
        anyhow::Ok(started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = http(port, "GET", "/healthz", None, "").await;
    assert_eq!(status, 200, "a normal client is served meanwhile");
    let took = tokio::time::timeout(Duration::from_secs(15), slow).await???;
    assert!(
        took < Duration::from_secs(5),
        "cut off after {took:?}, the whole header would take 17 s"
    );
    shutdown.cancel();
    server.await??;
    Ok(())
}

#[tokio::test]
async fn small_routes_refuse_large_bodies_and_json_campaigns_are_bounded() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let big = format!("{{\"send_at\": \"{}\"}}", "x".repeat(100 * 1024));
    // Declared by Content-Length, and streamed without one.
    for declared in [true, false] {
        let mut b = Request::post("/v1/campaigns/c1/reschedule")
            .header(header::CONTENT_TYPE, "application/json");
        if declared {
            b = b.header(header::CONTENT_LENGTH, big.len());
        }
        let (status, body, _) = call(&topo, 32 << 20, b.body(Body::from(big.clone()))?).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["error"], "too_large", "{body}");
    }
    // A JSON campaign over its cap, under --max-body: 413 about the recipients.
    let many: Vec<String> = (0..400_000)
        .map(|i| format!("user{i}@example.com"))
        .collect();
    let req = json!({"from": "a@example.com", "subject": "s", "text": "t", "recipients": many});
    let (status, body, _) = call(
        &topo,
        32 << 20,
        Request::post("/v1/campaigns")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(req.to_string()))?,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["field"], "recipients", "{body}");
    Ok(())
}
