//! Every page and form through `oneshot`: login and its refusals, CSRF refusals, validation
//! errors beside their field, escaping of what people typed, campaign control, dead letters,
//! the sender map and the live event streams.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use jetmail_common::now_ms;
use jetmail_common::wire::{
    CampaignStatus, CircuitState, RelayHealth, SenderHealth, SenderState, WIRE_VERSION,
};
use jetmail_webui::Access;
use tower::ServiceExt;

use crate::helpers::{csrf_of, eventually, spawn_app, Client, PASSWORD};

fn password() -> Access {
    Access::Password(PASSWORD.into())
}

/// A campaign form; `recipients` is a CSV file.
fn campaign_parts<'a>(
    csrf: &'a str,
    action: &'a str,
    subject: &'a str,
    recipients: &'a [u8],
) -> Vec<crate::helpers::Part<'a>> {
    vec![
        ("csrf", None, csrf.as_bytes()),
        ("from", None, b"News <news@example.com>"),
        ("subject", None, subject.as_bytes()),
        ("text", None, b"Hello {{ name }}"),
        ("html", None, b"<p>Hello {{ name }}</p>"),
        ("recipients_text", None, b""),
        ("recipients_file", Some("list.csv"), recipients),
        ("action", None, action.as_bytes()),
    ]
}

async fn campaign_count(app: &crate::helpers::TestApp) -> usize {
    use futures::StreamExt;
    match app.topo.campaigns.keys().await {
        Ok(keys) => {
            keys.filter(|k| futures::future::ready(k.is_ok()))
                .count()
                .await
        }
        Err(_) => 0,
    }
}

#[tokio::test]
async fn pages_need_a_login() {
    let app = spawn_app(password()).await;
    let mut c = Client::new(&app);
    for path in [
        "/campaigns",
        "/campaigns/new",
        "/senders",
        "/dead",
        "/suppressions",
        "/campaigns/x1",
    ] {
        let a = c.get(path).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            a.location().starts_with("/login?next=%2F"),
            "{path}: {}",
            a.location()
        );
    }
    assert_eq!(
        c.get("/events/campaigns").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.get("/events/senders").await.status,
        StatusCode::UNAUTHORIZED
    );
    // A form posted without a session is refused before its CSRF token is even looked at.
    let a = c
        .post_form("/campaigns/x1/cancel", &[("csrf", "whatever")])
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // Static files and the health check need nothing.
    assert_eq!(c.get("/static/style.css").await.status, StatusCode::OK);
    assert_eq!(c.get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn login_refuses_a_wrong_password_and_a_missing_csrf_token() {
    let app = spawn_app(password()).await;
    let mut c = Client::new(&app);
    let page = c.get("/login?next=%2Fsenders").await;
    assert_eq!(page.status, StatusCode::OK);
    let set_cookie = page
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let csrf = csrf_of(&page.body);

    let wrong = c
        .post_form(
            "/login",
            &[("password", "guess"), ("csrf", &csrf), ("next", "/senders")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.body.contains("id=\"error-password\""),
        "{}",
        wrong.body
    );
    assert_eq!(c.get("/senders").await.status, StatusCode::SEE_OTHER);

    let forged = c
        .post_form("/login", &[("password", PASSWORD), ("csrf", "forged")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let missing = c.post_form("/login", &[("password", PASSWORD)]).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert_eq!(c.get("/senders").await.status, StatusCode::SEE_OTHER);

    let before = c.cookie.clone();
    let ok = c
        .post_form(
            "/login",
            &[
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("next", "/senders"),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location(), "/senders");
    // A new session id after login: one planted before is worth nothing.
    assert_ne!(c.cookie, before);
    assert_eq!(c.get("/senders").await.status, StatusCode::OK);

    // Logging out needs the token too, and ends the session.
    let page = c.get("/campaigns").await;
    let csrf = csrf_of(&page.body);
    assert_eq!(
        c.post_form("/logout", &[("csrf", "nope")]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.post_form("/logout", &[("csrf", &csrf)]).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(c.get("/campaigns").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn every_page_renders_and_every_form_carries_a_csrf_token() {
    let app = spawn_app(password()).await;
    let mut c = Client::new(&app);
    let login = c.get("/login").await;
    assert!(!login.body.contains("Authentication is disabled"));
    c.login().await;
    for path in [
        "/campaigns",
        "/campaigns/new",
        "/senders",
        "/dead",
        "/limits",
        "/suppressions",
    ] {
        let a = c.get(path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        let csp = a.headers.get(header::CONTENT_SECURITY_POLICY).unwrap();
        assert!(csp.to_str().unwrap().contains("script-src 'self'"));
        let posts = a.body.matches("method=\"post\"").count();
        let tokens = a.body.matches("name=\"csrf\"").count();
        assert!(posts > 0, "{path} has a form");
        assert_eq!(posts, tokens, "{path}: every form has its token");
        assert!(!a.body.contains("Authentication is disabled"), "{path}");
    }
    assert_eq!(c.get("/").await.location(), "/campaigns");
}

#[tokio::test]
async fn insecure_mode_needs_no_login_and_says_so_on_every_page() {
    let app = spawn_app(Access::Open).await;
    let mut c = Client::new(&app);
    for path in [
        "/campaigns",
        "/campaigns/new",
        "/senders",
        "/dead",
        "/limits",
        "/suppressions",
    ] {
        let a = c.get(path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert!(a.body.contains("Authentication is disabled"), "{path}");
    }
    // Forms still need their token.
    let a = c
        .post_multipart(
            "/campaigns/new",
            &campaign_parts("", "send", "Hi", b"email\na@example.com\n"),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(campaign_count(&app).await, 0);
}

#[tokio::test]
async fn forms_without_a_valid_csrf_token_change_nothing() {
    let app = spawn_app(password()).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let a = c
        .post_multipart(
            "/campaigns/new",
            &campaign_parts("forged", "send", "Hi", b"email\na@example.com\n"),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("security token"));
    assert_eq!(campaign_count(&app).await, 0);

    // A real campaign, then forged controls and dead-letter actions against it.
    let a = c
        .post_multipart(
            "/campaigns/new",
            &campaign_parts(&csrf, "send", "Hi", b"email\na@example.com\n"),
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let id = a.location().trim_start_matches("/campaigns/").to_string();
    for action in ["pause", "cancel"] {
        let a = c
            .post_form(&format!("/campaigns/{id}/{action}"), &[("csrf", "bad")])
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{action}");
    }
    let (rec, _) = jetmail_common::records::load_record(&app.topo, &id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(rec.status, CampaignStatus::Paused);
    assert_ne!(rec.status, CampaignStatus::Cancelled);
    let a = c
        .post_form("/dead", &[("op", "discard_all"), ("csrf", "bad")])
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn missing_fields_are_reported_beside_each_field() {
    let app = spawn_app(password()).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let a = c
        .post_multipart(
            "/campaigns/new",
            &[
                ("csrf", None, csrf.as_bytes()),
                ("from", None, b""),
                ("subject", None, b" "),
                ("text", None, b""),
                ("html", None, b""),
                ("recipients_text", None, b""),
                ("action", None, b"preview"),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["from", "subject", "text", "recipients"] {
        assert!(
            a.body.contains(&format!("id=\"error-{field}\"")),
            "{field}: {}",
            a.body
        );
    }
}

#[tokio::test]
async fn ingest_errors_land_on_their_field() {
    let app = spawn_app(password()).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let list = b"email,name\na@example.com,Ann\n";

    // A subject template that does not compile.
    let a = c
        .post_multipart(
            "/campaigns/new",
            &campaign_parts(&csrf, "preview", "Hi {{ name ", list),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert!(a.body.contains("id=\"error-subject\""), "{}", a.body);
    // What was typed is kept.
    assert!(a.body.contains("value=\"Hi {{ name \""), "{}", a.body);

    // An HTML template that does not compile, on send.
    let mut parts = campaign_parts(&csrf, "send", "Hi", list);
    parts[4] = ("html", None, b"<p>{% if %}</p>");
    let a = c.post_multipart("/campaigns/new", &parts).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert!(a.body.contains("id=\"error-html\""), "{}", a.body);

    // A sender that is not an address.
    let mut parts = campaign_parts(&csrf, "preview", "Hi", list);
    parts[1] = ("from", None, b"not an address");
    let a = c.post_multipart("/campaigns/new", &parts).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert!(a.body.contains("id=\"error-from\""), "{}", a.body);

    // No valid recipient at all.
    let a = c
        .post_multipart(
            "/campaigns/new",
            &campaign_parts(&csrf, "send", "Hi", b"email\nnot-an-address\nalso bad\n"),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert!(a.body.contains("id=\"error-recipients\""), "{}", a.body);
    assert_eq!(campaign_count(&app).await, 0);
}

#[tokio::test]
async fn a_broken_subject_template_is_shown_beside_the_subject_field() {
    let app = spawn_app(password()).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    for action in ["preview", "send"] {
        let a = c
            .post_multipart(
                "/campaigns/new",
                &campaign_parts(
                    &csrf,
                    action,
                    "Hi {{ name ",
                    b"email,name\na@example.com,Ann\n",
                ),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        // Ingest's answer names the field; the page puts its detail right under the subject
        // input, before the next field's label, and nowhere else.
        let input = a.body.find("id=\"subject\"").expect("subject input");
        let error = a.body.find("id=\"error-subject\"").expect("subject error");
        let next_label = a.body.find("<label for=\"text\"").expect("text label");
        assert!(input < error && error < next_label, "{}", a.body);
        let shown = &a.body[error..next_label];
        assert!(shown.contains("syntax error"), "{action}: {shown}");
        assert!(
            a.body[input..next_label].contains("<div class=\"field-error\" id=\"error-subject\">"),
            "{action}: {}",
            &a.body[input..next_label]
        );
        assert!(
            a.body[input..error].contains("aria-invalid=\"true\""),
            "{action}: {}",
            &a.body[input..error]
        );
        for other in ["general", "from", "text", "html", "recipients"] {
            assert!(
                !a.body.contains(&format!("id=\"error-{other}\"")),
                "{action}: {other}: {}",
                a.body
            );
        }
    }
    assert_eq!(campaign_count(&app).await, 0);
}

#[tokio::test]
async fn preview_lists_bad_rows_with_their_line_numbers() {
    let app = spawn_app(password()).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let list =
        b"email,name\nann@example.com,Ann\nbroken-address,Bob\nzoe@example.com,Zoe\n@nowhere,X\n";
    let a = c
        .post_multipart(
            "/campaigns/new",
            &campaign_parts(&csrf, "preview", "Hi {{ name }}", list),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(
        a.body.contains("id=\"preview-recipient\">ann@example.com<"),
        "{}",
        a.body
    );
    assert!(
        a.body.contains("id=\"preview-subject\">Hi Ann<"),
        "{}",
        a.body
    );
    let rejected = &a.body[a.body.find("id=\"rejected-rows\"").expect("rejected rows")..];
    assert!(rejected.contains("2 rows will be skipped"), "{rejected}");
    assert!(
        rejected.contains("<td class=\"num\">3</td><td>broken-address</td>"),
        "{rejected}"
    );
    assert!(
        rejected.contains("<td class=\"num\">5</td><td>@nowhere</td>"),
        "{rejected}"
    );
    // The uploaded file is kept for the send that follows, without choosing it again.
    assert!(a.body.contains("id=\"upload-kept\""));
    let marker = "name=\"upload_token\" value=\"";
    let start = a.body.find(marker).unwrap() + marker.len();
    let token = a.body[start..].split('"').next().unwrap().to_string();
    assert!(!token.is_empty());
    let mut parts = campaign_parts(&csrf, "send", "Hi {{ name }}", b"");
    parts.retain(|p| p.0 != "recipients_file");
    parts.push(("upload_token", None, token.as_bytes()));
    let a = c.post_multipart("/campaigns/new", &parts).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let detail = c.get(a.location()).await;
    assert_eq!(detail.status, StatusCode::OK);
    // The rejected rows are repeated after the send, with their line numbers.
    assert!(
        detail
            .body
            .contains("2 recipients published, 2 rows rejected"),
        "{}",
        detail.body
    );
    assert!(
        detail.body.contains("line 3: broken-address"),
        "{}",
        detail.body
    );
}

#[tokio::test]
async fn pasted_addresses_work_and_a_file_plus_paste_is_refused() {
    let app = spawn_app(password()).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let mut parts = campaign_parts(&csrf, "preview", "Hi", b"");
    parts.retain(|p| p.0 != "recipients_file" && p.0 != "recipients_text");
    parts.push((
        "recipients_text",
        None,
        b"one@example.com\ntwo@example.com\n",
    ));
    let a = c.post_multipart("/campaigns/new", &parts).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("id=\"preview-recipient\">one@example.com<"));

    let mut parts = campaign_parts(&csrf, "preview", "Hi", b"email\nx@example.com\n");
    parts.retain(|p| p.0 != "recipients_text");
    parts.push(("recipients_text", None, b"one@example.com\n"));
    let a = c.post_multipart("/campaigns/new", &parts).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(a.body.contains("id=\"error-recipients\""));
}

#[tokio::test]
async fn script_in_a_subject_or_a_recipient_variable_is_shown_as_text() {
    let app = spawn_app(password()).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let subject = "<script>alert(1)</script> for {{ name }}";
    let list = b"email,name\nann@example.com,<script>alert(2)</script>\n";
    let a = c
        .post_multipart(
            "/campaigns/new",
            &campaign_parts(&csrf, "preview", subject, list),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(!a.body.contains("<script>alert"), "{}", a.body);
    assert!(
        a.body
            .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt; for &lt;script&gt;alert(2)"),
        "{}",
        a.body
    );
    // The HTML body is served on its own, sandboxed, with the variable escaped by the
    // campaign template itself.
    let html = c.get("/campaigns/new/preview").await;
    assert_eq!(html.status, StatusCode::OK);
    assert!(
        html.body.contains("<p>Hello &lt;script&gt;alert(2)"),
        "{}",
        html.body
    );
    let csp = html
        .headers
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("sandbox") && csp.contains("default-src 'none'"),
        "{csp}"
    );

    let a = c
        .post_multipart(
            "/campaigns/new",
            &campaign_parts(&csrf, "send", subject, list),
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let id = a.location().trim_start_matches("/campaigns/").to_string();
    let detail = c.get(&format!("/campaigns/{id}")).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(!detail.body.contains("<script>alert"), "{}", detail.body);
    assert!(detail.body.contains("&lt;script&gt;alert(1)"));
    let app_state = app.state.clone();
    eventually(
        "the list to hold the campaign",
        Duration::from_secs(10),
        || {
            let hub = app_state.hub.clone();
            let id = id.clone();
            async move { hub.campaign(&id).is_some() }
        },
    )
    .await;
    let list = c.get("/campaigns").await;
    assert!(list.body.contains(&format!("id=\"campaign-{id}\"")));
    assert!(!list.body.contains("<script>alert"), "{}", list.body);
    assert!(list.body.contains("&lt;script&gt;alert(1)"));
}

#[tokio::test]
async fn pause_resume_and_cancel_go_through_ingest() {
    let app = spawn_app(password()).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let a = c
        .post_multipart(
            "/campaigns/new",
            &campaign_parts(
                &csrf,
                "send",
                "Hi",
                b"email\na@example.com\nb@example.com\n",
            ),
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let id = a.location().trim_start_matches("/campaigns/").to_string();
    let status = |app: &crate::helpers::TestApp, id: String| {
        let topo = app.topo.clone();
        async move {
            jetmail_common::records::load_record(&topo, &id)
                .await
                .unwrap()
                .unwrap()
                .0
                .status
        }
    };
    let a = c
        .post_form(&format!("/campaigns/{id}/pause"), &[("csrf", &csrf)])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location(), format!("/campaigns/{id}"));
    assert_eq!(status(&app, id.clone()).await, CampaignStatus::Paused);
    let page = c.get(a.location()).await;
    assert!(page.body.contains("Campaign paused"), "{}", page.body);

    c.post_form(&format!("/campaigns/{id}/resume"), &[("csrf", &csrf)])
        .await;
    assert_eq!(status(&app, id.clone()).await, CampaignStatus::Running);
    c.post_form(&format!("/campaigns/{id}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(status(&app, id.clone()).await, CampaignStatus::Cancelled);
    // Ingest's refusal is shown, not hidden.
    c.post_form(&format!("/campaigns/{id}/resume"), &[("csrf", &csrf)])
        .await;
    let page = c.get(&format!("/campaigns/{id}")).await;
    assert!(page.body.contains("flash-error"), "{}", page.body);
    assert!(page.body.contains("cannot resume"), "{}", page.body);

    assert_eq!(
        c.get("/campaigns/no-such").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get("/campaigns/bad%20id").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn dead_letter_page_lists_filters_and_reports() {
    let app = spawn_app(password()).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let a = c.get("/dead").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains("id=\"no-dead\""));
    // A campaign filter ingest refuses is reported on the page.
    let a = c.get("/dead?campaign=bad%20id").await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(a.body.contains("id=\"error-filter\""), "{}", a.body);
    // Nothing selected: nothing done, and the page says why.
    let a = c
        .post_form("/dead", &[("csrf", &csrf), ("op", "replay_selected")])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let a = c.get(a.location()).await;
    assert!(a.body.contains("Select at least one"), "{}", a.body);
    let a = c
        .post_form("/dead", &[("csrf", &csrf), ("op", "discard_all")])
        .await;
    let a = c.get(a.location()).await;
    assert!(a.body.contains("Discarded 0 dead letters"), "{}", a.body);
}

#[tokio::test]
async fn sender_map_shows_states_escapes_hosts_and_marks_silent_senders_down() {
    let app = spawn_app(password()).await;
    let mut c = Client::new(&app);
    c.login().await;
    let now = now_ms();
    let health = |id: &str, state: SenderState, last_seen_ms: u64| SenderHealth {
        v: WIRE_VERSION,
        id: id.into(),
        host: "<b>host</b>".into(),
        state,
        relays: vec![RelayHealth {
            url: "smtp://relay.example:25".into(),
            circuit: CircuitState::Open,
            consecutive_failures: 5,
            last_error: Some("connect: <i>refused</i>".into()),
        }],
        in_flight: 3,
        sent: 42,
        failed: 1,
        deferred: 0,
        rate: 12.5,
        // Long enough that "alive" is surely up when the page is first read.
        concurrency: 32,
        interval_ms: 2_000,
        last_seen_ms,
    };
    // Clocks need not agree: "alive" was last seen by a monitor whose clock is a minute
    // behind, and is up all the same while its entry keeps arriving.
    for h in [
        health("alive", SenderState::Up, now - 60_000),
        health("draining", SenderState::Draining, now + 60_000),
        health("marked", SenderState::Down, now - 10_000),
    ] {
        app.topo
            .senders
            .put(&h.id, Bytes::from(serde_json::to_vec(&h).unwrap()))
            .await
            .unwrap();
    }
    let hub = app.state.hub.clone();
    eventually(
        "the hub to see three senders",
        Duration::from_secs(10),
        || {
            let hub = hub.clone();
            async move { hub.senders().len() == 3 }
        },
    )
    .await;
    let page = c.get("/senders").await;
    assert_eq!(page.status, StatusCode::OK);
    let row = |id: &str| {
        let start = page.body.find(&format!("id=\"sender-{id}\"")).unwrap();
        let end = page.body[start..].find("</tr>").unwrap();
        page.body[start..start + end].to_string()
    };
    assert!(
        row("alive").contains("data-field=\"state\">up<"),
        "{}",
        row("alive")
    );
    assert!(row("draining").contains("data-field=\"state\">draining<"));
    assert!(row("marked").contains("data-field=\"state\">down<"));
    assert!(row("alive").contains("circuit-open"));
    assert!(row("alive").contains("relay.example:25"));
    // The relay's own failure beside its circuit, as text.
    let relay = row("alive");
    let circuit = relay.find("circuit-open").unwrap();
    let error = relay
        .find("class=\"relay-error\"")
        .expect("relay error shown");
    assert!(circuit < error, "{relay}");
    assert!(
        relay.contains("connect: &lt;i&gt;refused&lt;&#x2f;i&gt;"),
        "{relay}"
    );
    assert!(!page.body.contains("<i>refused</i>"));
    assert!(!page.body.contains("<b>host</b>"));
    assert!(page.body.contains("&lt;b&gt;host&lt;&#x2f;b&gt;"));

    // No new entry for three heartbeat intervals: shown down without the monitor's word.
    let started = std::time::Instant::now();
    let router = app.router.clone();
    let cookie = format!("jetmail_session={}", c.cookie.clone().unwrap());
    eventually(
        "a silent sender shown down",
        Duration::from_secs(10),
        || {
            let router = router.clone();
            let cookie = cookie.clone();
            async move {
                let req = Request::get("/senders")
                    .header(header::COOKIE, cookie)
                    .body(Body::empty())
                    .unwrap();
                let resp = router.oneshot(req).await.unwrap();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                let body = String::from_utf8_lossy(&body).into_owned();
                let start = body.find("id=\"sender-alive\"").unwrap();
                body[start..]
                    .split("</tr>")
                    .next()
                    .unwrap()
                    .contains(">down<")
            }
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "not before it went silent"
    );
}

/// Reads SSE frames until one contains `needle` or `timeout` passes.
async fn read_events_until(body: Body, needle: &str, timeout: Duration) -> String {
    let mut body = body;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !seen.contains(needle) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no event with {needle:?} in time; got: {seen}"))
            .expect("stream ended")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    seen
}

#[tokio::test]
async fn live_streams_carry_campaigns_and_senders() {
    let app = spawn_app(password()).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let cookie = format!("jetmail_session={}", c.cookie.clone().unwrap());
    let open = |path: &str| {
        Request::get(path)
            .header(header::COOKIE, cookie.clone())
            .body(Body::empty())
            .unwrap()
    };
    // Subscribe first: the campaign appears as a change.
    let resp = app
        .router
        .clone()
        .oneshot(open("/events/campaigns"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get(header::CONTENT_TYPE).unwrap(),
        "text/event-stream"
    );
    let a = c
        .post_multipart(
            "/campaigns/new",
            &campaign_parts(&csrf, "send", "Live <one>", b"email\na@example.com\n"),
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let id = a.location().trim_start_matches("/campaigns/").to_string();
    let seen = read_events_until(resp.into_body(), &id, Duration::from_secs(10)).await;
    assert!(seen.contains("event: campaign\n"), "{seen}");
    assert!(seen.contains("\"subject\":\"Live <one>\""), "{seen}");

    // A stream for one campaign starts with its current state.
    let resp = app
        .router
        .clone()
        .oneshot(open(&format!("/events/campaigns?id={id}")))
        .await
        .unwrap();
    let seen =
        read_events_until(resp.into_body(), "\"published\":1", Duration::from_secs(10)).await;
    assert!(seen.contains(&format!("\"id\":\"{id}\"")), "{seen}");

    // Senders: a put to mail_senders arrives as an event.
    let resp = app
        .router
        .clone()
        .oneshot(open("/events/senders"))
        .await
        .unwrap();
    let h = SenderHealth {
        v: WIRE_VERSION,
        id: "s-live".into(),
        host: "h".into(),
        state: SenderState::Up,
        relays: vec![RelayHealth {
            url: "smtp://relay.example:25".into(),
            circuit: CircuitState::Open,
            consecutive_failures: 3,
            last_error: Some("EHLO: 421 busy".into()),
        }],
        in_flight: 0,
        sent: 0,
        failed: 0,
        deferred: 0,
        rate: 0.0,
        concurrency: 32,
        interval_ms: 500,
        last_seen_ms: now_ms(),
    };
    app.topo
        .senders
        .put("s-live", Bytes::from(serde_json::to_vec(&h).unwrap()))
        .await
        .unwrap();
    let seen = read_events_until(
        resp.into_body(),
        "\"state\":\"down\"",
        Duration::from_secs(10),
    )
    .await;
    // First up, then down once three intervals pass without a heartbeat.
    assert!(seen.contains("\"id\":\"s-live\""), "{seen}");
    assert!(seen.contains("\"state\":\"up\""), "{seen}");
    // The relay's failure travels with it, for the page's script to show.
    assert!(seen.contains("\"last_error\":\"EHLO: 421 busy\""), "{seen}");
}

#[tokio::test]
async fn shutdown_ends_live_streams_at_once_and_returns() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app(Access::Open).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = tokio_util::sync::CancellationToken::new();
    let config = jetmail_webui::Config {
        ingest_url: app.state.config.ingest_url.clone(),
        access: Access::Open,
        secure_cookie: false,
        ingest_token: app.state.config.ingest_token.clone(),
        login_limits: Default::default(),
    };
    let server = tokio::spawn(jetmail_webui::run(
        config,
        app.topo.clone(),
        listener,
        stop.clone(),
    ));
    // A page holding its live stream open, as every open browser tab does.
    let mut sse = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    sse.write_all(b"GET /events/senders HTTP/1.1\r\nHost: webui\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 256];
    let n = sse.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);

    let started = std::time::Instant::now();
    stop.cancel();
    let stopped = tokio::time::timeout(jetmail_webui::SHUTDOWN_DEADLINE / 2, server)
        .await
        .expect("the server waited for a live stream instead of ending it")
        .unwrap();
    assert!(stopped.is_ok(), "{stopped:?}");
    assert!(started.elapsed() < jetmail_webui::SHUTDOWN_DEADLINE);
}
