//! The limits page and the schedule fields of the new-campaign form, through `oneshot`
//! against a real ingest: limits set, listed with their effective rate, removed; ingest's
//! refusals beside the field they name; nothing changed without a CSRF token.

use axum::http::StatusCode;
use bytes::Bytes;
use jetmail_common::limits::{Backoff, Scope};
use jetmail_common::topology;
use jetmail_webui::Access;

use crate::helpers::{spawn_app, Client, TestApp, PASSWORD};

async fn limit_keys(app: &TestApp) -> Vec<String> {
    use futures::StreamExt;
    match app.topo.limits.keys().await {
        Ok(keys) => keys.filter_map(|k| async { k.ok() }).collect().await,
        Err(_) => Vec::new(),
    }
}

/// `error-<field>` comes right after the `<field>` input and before `next_label`'s label.
fn error_beside(page: &str, field: &str, next_label: &str) -> String {
    let input = page.find(&format!("id=\"{field}\"")).expect("the input");
    let error = page
        .find(&format!("id=\"error-{field}\""))
        .unwrap_or_else(|| panic!("no error for {field}: {page}"));
    let next = page
        .find(&format!("<label for=\"{next_label}\""))
        .expect("the next label");
    assert!(input < error && error < next, "{page}");
    page[error..next].to_string()
}

#[tokio::test]
async fn limits_are_set_listed_with_their_effective_rate_and_removed() {
    let app = spawn_app(Access::Password(PASSWORD.into())).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let page = c.get("/limits").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"no-limits\""), "{}", page.body);
    assert!(
        page.body.contains("href=\"/limits\" class=\"active\""),
        "nav"
    );

    // Without the CSRF token nothing is stored.
    let a = c
        .post_form("/limits", &[("domains", "gmail.com"), ("rate", "25/s")])
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(limit_keys(&app).await.is_empty());

    let a = c
        .post_form(
            "/limits",
            &[
                ("csrf", &csrf),
                ("domains", "Gmail.com, googlemail.com"),
                ("rate", "25/s"),
                ("concurrency", "3"),
                ("cooldown", ""),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.location(), "/limits");
    let gmail = Scope::for_domains("gmail.com");
    assert_eq!(limit_keys(&app).await, vec![topology::limit_key(&gmail)]);

    // A provider pushed back: the page shows the halved rate beside the configured one.
    let backoff = Backoff::default().after_refusal(jetmail_common::now_ms(), 60_000);
    app.topo
        .limits
        .put(
            topology::backoff_key(&gmail),
            Bytes::from(serde_json::to_vec(&backoff).unwrap()),
        )
        .await
        .unwrap();
    let page = c.get("/limits").await;
    // minijinja escapes `/` too.
    assert!(
        page.body.contains("Limit d-gmail_com set to 25&#x2f;s."),
        "{}",
        page.body
    );
    let row = &page.body[page
        .body
        .find("data-scope=\"d-gmail_com\"")
        .expect("the row")..];
    assert!(row.contains("gmail.com, googlemail.com"), "{row}");
    assert!(row.contains("data-field=\"rate\">25&#x2f;s<"), "{row}");
    assert!(row.contains("12.5&#x2f;s (backed off)"), "{row}");

    let a = c
        .post_form(
            "/limits/remove",
            &[("csrf", &csrf), ("scope", "d-gmail_com")],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let page = c.get("/limits").await;
    assert!(
        page.body.contains("Limit d-gmail_com removed."),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"no-limits\""), "{}", page.body);
    assert!(!limit_keys(&app)
        .await
        .contains(&topology::limit_key(&gmail)));
}

#[tokio::test]
async fn bad_limits_land_beside_their_field_escaped_and_change_nothing() {
    let app = spawn_app(Access::Password(PASSWORD.into())).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    for (domains, rate, concurrency, field, next_label, needle) in [
        ("", "10/fortnight", "", "rate", "concurrency", "fortnight"),
        ("", "0/s", "", "rate", "concurrency", "whole number"),
        (
            "<script>x</script>",
            "1/s",
            "",
            "domains",
            "rate",
            "&lt;script&gt;",
        ),
        ("", "1/s", "0", "concurrency", "cooldown", "at least 1"),
    ] {
        let a = c
            .post_form(
                "/limits",
                &[
                    ("csrf", &csrf),
                    ("domains", domains),
                    ("rate", rate),
                    ("concurrency", concurrency),
                ],
            )
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        let shown = error_beside(&a.body, field, next_label);
        assert!(shown.contains(needle), "{field}: {shown}");
        assert!(!a.body.contains("<script>x"), "unescaped: {}", a.body);
        // What was typed is kept in the form.
        let typed = rate.replace('/', "&#x2f;");
        assert!(a.body.contains(&format!("value=\"{typed}\"")), "{}", a.body);
    }
    assert!(limit_keys(&app).await.is_empty());
}

#[tokio::test]
async fn a_bad_rate_on_a_new_campaign_lands_beside_the_rate_field() {
    let app = spawn_app(Access::Password(PASSWORD.into())).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    for (field, value, next_label, needle) in [
        ("rate", "0/s", "recipients_file", "whole number"),
        ("send_at", "2001-01-01T00:00:00Z", "deadline", "in the past"),
    ] {
        let a = c
            .post_multipart(
                "/campaigns/new",
                &[
                    ("csrf", None, csrf.as_bytes()),
                    ("from", None, b"News <news@example.com>"),
                    ("subject", None, b"Hi"),
                    ("text", None, b"Hello"),
                    (field, None, value.as_bytes()),
                    ("recipients_text", None, b"a@example.com"),
                    ("action", None, b"send"),
                ],
            )
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        let shown = error_beside(&a.body, field, next_label);
        assert!(shown.contains(needle), "{field}: {shown}");
        assert!(!a.body.contains("id=\"error-general\""), "{}", a.body);
    }
    let mut keys = app.topo.campaigns.keys().await.unwrap();
    assert!(
        futures::StreamExt::next(&mut keys).await.is_none(),
        "a campaign was stored"
    );
}
