//! Test support: an in-process web UI wired to a real nats-server and a real ingest process,
//! and a tiny cookie-keeping client that drives the router without a socket.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use jetmail_common::config::jetstream_context;
use jetmail_common::topology::{self, Topology};
use jetmail_testkit::{free_port, wait_for, NatsServer, Service, TempDir};
use jetmail_webui::ingest::IngestToken;
use jetmail_webui::{router, Access, AppState, Config};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const PASSWORD: &str = "correct horse battery staple";
/// The web UI's API token, listed in the ingest under test's token file with scope `admin`.
pub const INGEST_TOKEN: &str = "webui-test-token-0123456789abcdef";
/// A read-only token of the same file.
pub const READ_ONLY_TOKEN: &str = "reader-test-token-0123456789abcdef";

/// The web UI under test with everything it talks to.
pub struct TestApp {
    pub router: Router,
    pub topo: Topology,
    pub state: AppState,
    shutdown: CancellationToken,
    _ingest: Service,
    _logs: TempDir,
    // Dropped last: the broker outlives the services using it.
    _nats: NatsServer,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts nats-server, `jetmail-ingest serve` (the real binary, on a loopback port) and the
/// web UI's state.
pub async fn spawn_app(access: Access) -> TestApp {
    spawn_app_configured(access, |_| {}).await
}

/// [`spawn_app`] with the web UI's [`Config`] changed by `configure` (another token, other
/// login limits).
pub async fn spawn_app_configured(access: Access, configure: impl FnOnce(&mut Config)) -> TestApp {
    let nats = NatsServer::start().await.expect("nats-server");
    let logs = TempDir::new("webui-handlers");
    let tokens = logs.path().join("api-tokens");
    std::fs::write(
        &tokens,
        format!(
            "webui {INGEST_TOKEN} admin
reader {READ_ONLY_TOKEN} read
"
        ),
    )
    .expect("token file");
    let ingest_port = free_port();
    let mut ingest = Service::spawn(
        "ingest",
        "jetmail-ingest",
        &[
            "--nats-url".into(),
            nats.url(),
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{ingest_port}"),
            "--api-tokens-file".into(),
            tokens.display().to_string(),
        ],
        &[],
        logs.path(),
    )
    .expect("jetmail-ingest");
    wait_http("ingest", ingest_port, "/healthz", &mut ingest).await;

    let client = async_nats::connect(nats.url()).await.expect("connect");
    let shutdown = CancellationToken::new();
    let js = jetstream_context(client, 4096);
    let topo = topology::ensure(&js).await.expect("topology");
    let mut config = Config {
        ingest_url: format!("http://127.0.0.1:{ingest_port}"),
        access,
        secure_cookie: false,
        ingest_token: Some(IngestToken::new(INGEST_TOKEN)),
        login_limits: Default::default(),
    };
    configure(&mut config);
    let state = AppState::new(config, topo.clone(), shutdown.clone()).expect("state");
    TestApp {
        router: router(state.clone()),
        topo,
        state,
        shutdown,
        _ingest: ingest,
        _logs: logs,
        _nats: nats,
    }
}

/// A plain HTTP/1.0 GET on loopback that answers 200: enough to know a service is up.
pub async fn http_ok(port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200")
}

/// Waits for `path` on `port` to answer 200, showing the service's log if it never does.
pub async fn wait_http(name: &str, port: u16, path: &str, svc: &mut Service) {
    let started = wait_for(name, Duration::from_secs(30), move || async move {
        http_ok(port, path).await.then_some(())
    })
    .await;
    if let Err(e) = started {
        panic!("{e}\n{}", svc.log());
    }
}

/// One answer, body read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A browser-like client: keeps the session cookie, reads CSRF tokens from pages.
pub struct Client {
    router: Router,
    pub cookie: Option<String>,
}

/// The value of the first `name="csrf" value="…"` in a page.
pub fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("page has a CSRF field") + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}

fn form_urlencode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                jetmail_common::api::path::encode(k),
                jetmail_common::api::path::encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A part of a multipart form: `(name, Some(filename), bytes)` for a file.
pub type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);

impl Client {
    pub fn new(app: &TestApp) -> Self {
        Self {
            router: app.router.clone(),
            cookie: None,
        }
    }

    pub async fn send(&mut self, req: Request<Body>) -> Answer {
        let mut req = req;
        if let Some(c) = &self.cookie {
            req.headers_mut().insert(
                header::COOKIE,
                format!("jetmail_session={c}").parse().unwrap(),
            );
        }
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        for v in headers.get_all(header::SET_COOKIE) {
            let c = cookie::Cookie::parse(v.to_str().unwrap()).unwrap();
            if c.name() == jetmail_webui::auth::SESSION_COOKIE {
                self.cookie = Some(c.value().to_string()).filter(|v| !v.is_empty());
            }
        }
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form_urlencode(fields)))
            .unwrap();
        self.send(req).await
    }

    pub async fn post_multipart(&mut self, path: &str, parts: &[Part<'_>]) -> Answer {
        let boundary = "XtestBoundary7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        for (name, file, data) in parts {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match file {
                Some(f) => body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: text/csv\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    /// Logs in with the password and returns the CSRF token of the new session.
    pub async fn login(&mut self) -> String {
        let page = self.get("/login").await;
        assert_eq!(page.status, StatusCode::OK);
        let csrf = csrf_of(&page.body);
        let a = self
            .post_form("/login", &[("password", PASSWORD), ("csrf", &csrf)])
            .await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        let page = self.get("/campaigns/new").await;
        assert_eq!(page.status, StatusCode::OK);
        csrf_of(&page.body)
    }
}

/// Polls `check` every 50 ms for up to `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut check = check;
    jetmail_testkit::wait_for(what, timeout, || {
        let f = check();
        async move { f.await.then_some(()) }
    })
    .await
    .unwrap();
}
