//! The web UI's side of access: its own token for ingest (a refusal shown clearly, the token
//! never), login throttling, and the redirect after login staying on the site.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use jetmail_common::api::DeadFilter;
use jetmail_webui::auth::LoginLimits;
use jetmail_webui::ingest::{IngestError, IngestToken};
use jetmail_webui::Access;

use crate::helpers::{
    csrf_of, spawn_app, spawn_app_configured, Answer, Client, INGEST_TOKEN, PASSWORD,
    READ_ONLY_TOKEN,
};

fn password() -> Access {
    Access::Password(PASSWORD.to_string())
}

/// `POST /login` from `peer`, with the CSRF token of a fresh login page.
async fn login_from(client: &mut Client, peer: [u8; 4], password: &str, next: &str) -> Answer {
    let page = client.get("/login").await;
    let csrf = csrf_of(&page.body);
    let body = format!(
        "password={}&csrf={}&next={}",
        jetmail_common::api::path::encode(password),
        jetmail_common::api::path::encode(&csrf),
        jetmail_common::api::path::encode(next)
    );
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((peer, 40000))));
    client.send(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_past_the_limit_are_refused_at_once_until_the_window_passes() {
    let window = Duration::from_secs(2);
    let app = spawn_app_configured(password(), |c| {
        c.login_limits = LoginLimits {
            per_client: 3,
            global: 100,
            window,
        }
    })
    .await;
    let guesser = [10, 0, 0, 1];
    let mut c = Client::new(&app);
    let first = Instant::now();
    for i in 0..3 {
        let a = login_from(&mut c, guesser, "wrong", "/").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // The fourth, even with the right password: refused, without the wrong-password delay.
    let started = Instant::now();
    let a = login_from(&mut c, guesser, PASSWORD, "/").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert!(a.body.contains("Too many failed logins"), "{}", a.body);
    assert!(a.headers.contains_key(header::RETRY_AFTER));
    // Another address is not held back by this one.
    let mut other = Client::new(&app);
    let a = login_from(&mut other, [10, 0, 0, 2], PASSWORD, "/senders").await;
    assert_eq!(
        (a.status, a.location()),
        (StatusCode::SEE_OTHER, "/senders")
    );
    // After the window the right password works again.
    tokio::time::sleep(window.saturating_sub(first.elapsed()) + Duration::from_millis(100)).await;
    let a = login_from(&mut c, guesser, PASSWORD, "/senders").await;
    assert_eq!(
        (a.status, a.location()),
        (StatusCode::SEE_OTHER, "/senders"),
        "{}",
        a.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_after_login_stays_on_the_site() {
    let app = spawn_app(password()).await;
    for next in [
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\n/evil.example",
        "//evil.example",
        "/\\evil.example",
        "/\\/evil.example",
        "\t//evil.example",
        "https://evil.example/",
    ] {
        let mut c = Client::new(&app);
        let a = login_from(&mut c, [10, 0, 0, 9], PASSWORD, next).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{next:?}: {}", a.body);
        assert_eq!(a.location(), "/campaigns", "{next:?}");
        // Logged in, the login page redirects too: on-site as well.
        let q = jetmail_common::api::path::encode(next);
        let a = c.get(&format!("/login?next={q}")).await;
        assert_eq!(a.location(), "/campaigns", "{next:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_ingest_refuses_is_explained_and_never_shown() {
    let wrong = "wrong-webui-token-0123456789abcdef";
    let app = spawn_app_configured(Access::Open, |c| {
        c.ingest_token = Some(IngestToken::new(wrong));
    })
    .await;
    let mut c = Client::new(&app);
    let a = c.get("/dead").await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.body);
    assert!(a.body.contains("--ingest-token-file"), "{}", a.body);
    assert!(!a.body.contains(wrong), "the token on a page");

    // A token with too little scope: 403, told as such.
    let app = spawn_app_configured(Access::Open, |c| {
        c.ingest_token = Some(IngestToken::new(READ_ONLY_TOKEN));
    })
    .await;
    let e = app
        .state
        .ingest
        .dead_discard(&DeadFilter::default())
        .await
        .expect_err("read-only");
    assert!(
        matches!(e, IngestError::Credentials(StatusCode::FORBIDDEN)),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("scope") && !text.contains(READ_ONLY_TOKEN),
        "{text}"
    );
    assert!(!format!("{:?}", app.state.config).contains(READ_ONLY_TOKEN));
    // The right token reads and acts.
    let app = spawn_app(Access::Open).await;
    let mut c = Client::new(&app);
    let a = c.get("/dead").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(!a.body.contains(INGEST_TOKEN));
}
