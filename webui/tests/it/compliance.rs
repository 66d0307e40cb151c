//! The suppressions page, "Send test" and the suppressed counter, through `oneshot` against
//! a real ingest: addresses listed, searched, added (escaped), removed and imported with bad
//! rows reported by line; refusals beside the field they name; a test send published once
//! per address and listed as no campaign.

use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use jetmail_common::api::SuppressionQuery;
use jetmail_common::topology;
use jetmail_common::wire::CampaignProgress;
use jetmail_webui::Access;

use crate::helpers::{eventually, spawn_app, Client, TestApp, PASSWORD};

/// The addresses on the list, as ingest answers them.
async fn suppressed(app: &TestApp) -> Vec<String> {
    let list = app
        .state
        .ingest
        .suppressions(&SuppressionQuery::default())
        .await
        .expect("ingest lists suppressions");
    list.suppressions.into_iter().map(|s| s.address).collect()
}

/// Messages waiting in MAIL_OUTBOX.
async fn outbox_messages(app: &TestApp) -> u64 {
    app.topo.outbox.get_info().await.unwrap().state.messages
}

/// `error-<field>` comes right after the `<field>` input and before `next`.
fn error_beside(page: &str, field: &str, next: &str) -> String {
    let input = page.find(&format!("id=\"{field}\"")).expect("the input");
    let error = page
        .find(&format!("id=\"error-{field}\""))
        .unwrap_or_else(|| panic!("no error for {field}: {page}"));
    let next = page[input..].find(next).expect("the next element") + input;
    assert!(input < error && error < next, "{page}");
    page[error..next].to_string()
}

/// The table of the suppressions page (the flash above it names addresses too).
fn table(page: &str) -> &str {
    let start = page.find("id=\"suppressions\"").expect("the table");
    let end = page[start..].find("</table>").unwrap() + start;
    &page[start..end]
}

#[tokio::test]
async fn suppressions_are_listed_searched_added_escaped_and_removed() {
    let app = spawn_app(Access::Password(PASSWORD.into())).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let page = c.get("/suppressions").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("id=\"no-suppressions\""),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("href=\"/suppressions\" class=\"active\""),
        "nav"
    );

    // Without the CSRF token nothing is stored.
    let a = c
        .post_form("/suppressions", &[("address", "ann@example.com")])
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(suppressed(&app).await.is_empty());

    let script = "\"<script>\"@example.com";
    for (address, reason) in [
        (script, "manual"),
        ("Bob@Example.COM", "hard_bounce"),
        ("carol@example.org", "complaint"),
    ] {
        let a = c
            .post_form(
                "/suppressions",
                &[("csrf", &csrf), ("address", address), ("reason", reason)],
            )
            .await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{address}: {}", a.body);
        assert_eq!(a.location(), "/suppressions");
    }
    let mut on_list = suppressed(&app).await;
    on_list.sort();
    assert_eq!(
        on_list,
        vec![script, "Bob@example.com", "carol@example.org"],
        "ingest normalises the domain"
    );

    let page = c.get("/suppressions").await;
    // The flash of the last add, then every address, as text.
    assert!(
        page.body
            .contains("carol@example.org is suppressed (complaint)."),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("data-field=\"address\">&quot;&lt;script&gt;&quot;@example.com<"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>"), "unescaped: {}", page.body);
    assert!(page.body.contains("3 matching addresses."), "{}", page.body);

    // Search and reason filter, answered by ingest.
    let page = c.get("/suppressions?search=bob&reason=").await;
    let t = table(&page.body);
    assert!(t.contains("Bob@example.com") && !t.contains("carol"), "{t}");
    let page = c.get("/suppressions?search=&reason=complaint").await;
    let t = table(&page.body);
    assert!(t.contains("carol@example.org") && !t.contains("Bob"), "{t}");
    assert!(
        page.body.contains("<option value=\"complaint\" selected>"),
        "the filter is kept: {}",
        page.body
    );
    let page = c.get("/suppressions?reason=bored").await;
    assert!(page.body.contains("id=\"error-filter\""), "{}", page.body);

    // Removing sends the address as listed; the quoted one round-trips through the path.
    for address in [script, "Bob@example.com"] {
        let a = c
            .post_form(
                "/suppressions/remove",
                &[("csrf", &csrf), ("address", address)],
            )
            .await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    }
    assert_eq!(suppressed(&app).await, vec!["carol@example.org"]);
    let page = c.get("/suppressions").await;
    assert!(
        page.body
            .contains("Bob@example.com is no longer suppressed."),
        "{}",
        page.body
    );
    // Ingest's refusal (not on the list) is shown, not hidden.
    c.post_form(
        "/suppressions/remove",
        &[("csrf", &csrf), ("address", "nobody@example.com")],
    )
    .await;
    let page = c.get("/suppressions").await;
    assert!(page.body.contains("flash-error"), "{}", page.body);
    assert!(page.body.contains("not suppressed"), "{}", page.body);
}

#[tokio::test]
async fn a_bad_address_lands_beside_the_address_field_escaped() {
    let app = spawn_app(Access::Password(PASSWORD.into())).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    for (typed, needle) in [
        ("<b>no-at-sign</b>", "&lt;b&gt;no-at-sign"),
        ("", "required"),
    ] {
        let a = c
            .post_form(
                "/suppressions",
                &[("csrf", &csrf), ("address", typed), ("reason", "manual")],
            )
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        let shown = error_beside(&a.body, "address", "<label for=\"reason\"");
        assert!(shown.contains(needle), "{typed}: {shown}");
        assert!(!a.body.contains("<b>no-at"), "unescaped: {}", a.body);
        assert!(!a.body.contains("id=\"error-general\""), "{}", a.body);
    }
    // What was typed is kept.
    let a = c
        .post_form(
            "/suppressions",
            &[("csrf", &csrf), ("address", "x@@y"), ("reason", "manual")],
        )
        .await;
    assert!(a.body.contains("value=\"x@@y\""), "{}", a.body);
    let a = c
        .post_form(
            "/suppressions",
            &[
                ("csrf", &csrf),
                ("address", "a@example.com"),
                ("reason", "bored"),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    error_beside(&a.body, "reason", "suppress-button");
    assert!(suppressed(&app).await.is_empty());
}

#[tokio::test]
async fn an_import_reports_bad_rows_by_line_and_adds_the_rest() {
    let app = spawn_app(Access::Password(PASSWORD.into())).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let csv = b"email,reason\nann@example.com,\nnot-an-address,\nbob@example.com,complaint\n";
    // Without the CSRF token nothing is imported.
    let a = c
        .post_multipart(
            "/suppressions/import",
            &[
                ("reason", None, b"unsubscribed"),
                ("file", Some("list.csv"), csv),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(suppressed(&app).await.is_empty());

    let a = c
        .post_multipart(
            "/suppressions/import",
            &[
                ("csrf", None, csrf.as_bytes()),
                ("reason", None, b"unsubscribed"),
                ("file", Some("list.csv"), csv),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let page = c.get("/suppressions").await;
    assert!(
        page.body
            .contains("Imported: 2 added, 0 already suppressed, 1 rows rejected."),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<li>line 3: not-an-address ("),
        "{}",
        page.body
    );
    let t = table(&page.body);
    let ann = &t[t.find("data-address=\"ann@example.com\"").expect("ann")..];
    assert!(ann.contains(">unsubscribed<"), "the form's reason: {ann}");
    let bob = &t[t.find("data-address=\"bob@example.com\"").expect("bob")..];
    assert!(bob.contains(">complaint<"), "the row's reason: {bob}");

    // No file: the error is beside the import form.
    let a = c
        .post_multipart(
            "/suppressions/import",
            &[
                ("csrf", None, csrf.as_bytes()),
                ("file", Some("x.csv"), b""),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    let input = a.body.find("id=\"import_file\"").unwrap();
    let error = a
        .body
        .find("id=\"error-import\"")
        .expect("the import error");
    let next = a.body.find("<label for=\"import_reason\"").unwrap();
    assert!(input < error && error < next, "{}", a.body);
    assert!(
        a.body[error..next].contains("choose a CSV file"),
        "{}",
        a.body
    );
}

/// The new-campaign form with "Send test" to `to`.
fn test_parts<'a>(
    csrf: &'a str,
    to: &'a str,
    recipients: &'a [u8],
) -> Vec<crate::helpers::Part<'a>> {
    vec![
        ("csrf", None, csrf.as_bytes()),
        ("from", None, b"News <news@example.com>"),
        ("subject", None, b"Hi {{ name }}"),
        ("text", None, b"Hello {{ name }}"),
        ("recipients_text", None, recipients),
        ("test_to", None, to.as_bytes()),
        ("action", None, b"test"),
    ]
}

#[tokio::test]
async fn send_test_publishes_once_per_address_keeps_the_form_and_lists_no_campaign() {
    let app = spawn_app(Access::Password(PASSWORD.into())).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let a = c
        .post_multipart(
            "/campaigns/new",
            &test_parts(
                &csrf,
                "me@example.com, you@example.com",
                b"email,name\nann@example.com,Ann\nbob@example.com,Bob\n",
            ),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let flash = &a.body[a.body.find("id=\"flash\"").expect("a flash")..];
    assert!(
        flash.contains("sent to me@example.com, you@example.com (2 messages, with the variables of ann@example.com)"),
        "{flash}"
    );
    let marker = "Test t-";
    let id_start = flash.find(marker).expect("the test id") + "Test ".len();
    let test_id = flash[id_start..].split(' ').next().unwrap().to_string();
    // The form keeps what was typed.
    assert!(a.body.contains("value=\"Hi {{ name }}\""), "{}", a.body);
    assert!(
        a.body.contains("value=\"me@example.com, you@example.com\""),
        "{}",
        a.body
    );
    assert!(a.body.contains("ann@example.com,Ann"), "{}", a.body);
    // One message per test address, none for the list.
    assert_eq!(outbox_messages(&app).await, 2);

    // No recipients: the test renders without variables.
    let a = c
        .post_multipart("/campaigns/new", &test_parts(&csrf, "me@example.com", b""))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("without recipient variables"), "{}", a.body);
    assert_eq!(outbox_messages(&app).await, 3);

    // A real campaign after the tests: once the list shows it, the hub has seen the tests'
    // records too (one ordered watch), and lists none of them.
    let a = c
        .post_multipart(
            "/campaigns/new",
            &[
                ("csrf", None, csrf.as_bytes()),
                ("from", None, b"News <news@example.com>"),
                ("subject", None, b"Real"),
                ("text", None, b"Hello"),
                ("recipients_text", None, b"real@example.com"),
                ("action", None, b"send"),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let real = a.location().trim_start_matches("/campaigns/").to_string();
    eventually("the real campaign listed", Duration::from_secs(10), || {
        let app = &app;
        let real = real.clone();
        async move { app.state.hub.campaigns().iter().any(|s| s.id == real) }
    })
    .await;
    let ids: Vec<String> = app
        .state
        .hub
        .campaigns()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, vec![real.clone()]);
    let list = c.get("/campaigns").await;
    assert!(list.body.contains(&real), "{}", list.body);
    assert!(!list.body.contains(&test_id), "{}", list.body);
}

#[tokio::test]
async fn bad_test_addresses_land_beside_the_test_field_and_send_nothing() {
    let app = spawn_app(Access::Password(PASSWORD.into())).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let eleven: Vec<String> = (0..11).map(|i| format!("u{i}@example.com")).collect();
    let eleven = eleven.join(" ");
    for (to, needle) in [
        ("", "required"),
        (eleven.as_str(), "at most 10"),
        // Ingest's own check, with its field.
        ("me@example.com <b>nope</b>", "&lt;b&gt;nope"),
    ] {
        let a = c
            .post_multipart("/campaigns/new", &test_parts(&csrf, to, b""))
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        let shown = error_beside(&a.body, "test_to", "test-send-button");
        assert!(shown.contains(needle), "{to}: {shown}");
        assert!(!a.body.contains("<b>nope"), "unescaped: {}", a.body);
    }
    assert_eq!(outbox_messages(&app).await, 0);
}

#[tokio::test]
async fn suppressed_recipients_are_counted_at_submit_and_on_the_campaign_page() {
    let app = spawn_app(Access::Password(PASSWORD.into())).await;
    let mut c = Client::new(&app);
    let csrf = c.login().await;
    let a = c
        .post_form(
            "/suppressions",
            &[("csrf", &csrf), ("address", "gone@example.com")],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let a = c
        .post_multipart(
            "/campaigns/new",
            &[
                ("csrf", None, csrf.as_bytes()),
                ("from", None, b"News <news@example.com>"),
                ("subject", None, b"Hi"),
                ("text", None, b"Hello"),
                (
                    "recipients_text",
                    None,
                    b"here@example.com\ngone@example.com\n",
                ),
                ("action", None, b"send"),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let id = a.location().trim_start_matches("/campaigns/").to_string();
    let page = c.get(a.location()).await;
    assert!(
        page.body
            .contains("1 recipients published, 0 rows rejected, 0 duplicates skipped, 1 suppressed addresses skipped."),
        "{}",
        page.body
    );
    assert_eq!(outbox_messages(&app).await, 1);

    // The monitor (not running here) counts the suppressed outcome; the page shows its count.
    let progress = CampaignProgress {
        suppressed: 1,
        ..Default::default()
    };
    app.topo
        .campaigns
        .put(
            topology::progress_key(&id),
            Bytes::from(serde_json::to_vec(&progress).unwrap()),
        )
        .await
        .unwrap();
    let path = format!("/campaigns/{id}");
    eventually("the suppressed counter", Duration::from_secs(10), || {
        let app = &app;
        let id = id.clone();
        async move {
            app.state
                .hub
                .campaign(&id)
                .is_some_and(|s| s.suppressed == 1)
        }
    })
    .await;
    let page = c.get(&path).await;
    assert!(
        page.body.contains("data-field=\"suppressed\">1<"),
        "{}",
        page.body
    );
}
