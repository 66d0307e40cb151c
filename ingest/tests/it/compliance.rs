//! Sending like a good citizen, ingest's side, against a real nats-server: one-click
//! unsubscribe (POST suppresses, GET never does, a forged token changes nothing), the
//! suppression list over HTTP and the CLI (import/export round trip), suppressed recipients
//! skipped at submit, real-world bounce and complaint samples, and test sends.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use futures::StreamExt;
use http_body_util::BodyExt;
use jetmail_common::api::{ErrorCode, Field};
use jetmail_common::compliance::{SuppressionReason, UnsubscribeKey};
use jetmail_common::topology::Topology;
use jetmail_common::wire::{OutboxMessage, UnsubscribeLinks};
use jetmail_ingest::http::{router, ApiState};
use jetmail_ingest::suppressions;
use jetmail_ingest::unsubscribe::Unsubscribe;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::api::{campaign, outbox_len, post_json, setup};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

fn unsubscribe() -> Arc<Unsubscribe> {
    Arc::new(Unsubscribe {
        key: UnsubscribeKey::new(SECRET),
        links: Some(UnsubscribeLinks {
            base_url: "https://mail.example.com".into(),
            mailto: None,
        }),
    })
}

/// One request to a router with unsubscribe configured: status, body text.
async fn send(topo: &Topology, req: Request<Body>) -> (StatusCode, String, header::HeaderMap) {
    let mut state = ApiState::new(topo.clone());
    state.unsubscribe = Some(unsubscribe());
    let resp = router(state, 1 << 20).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into(), headers)
}

async fn send_json(topo: &Topology, req: Request<Body>) -> (StatusCode, Value) {
    let (s, body, _) = send(topo, req).await;
    (
        s,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

async fn listed(topo: &Topology) -> Vec<String> {
    suppressions::all(topo)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.address)
        .collect()
}

fn one_click(token: &str) -> Request<Body> {
    Request::post(format!("/unsubscribe/{token}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("List-Unsubscribe=One-Click"))
        .unwrap()
}

#[tokio::test]
async fn one_click_post_unsubscribes_get_does_not_and_forgeries_change_nothing(
) -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let token = unsubscribe().token("c1", "Ann@Example.COM");

    // A GET (a link scanner, a preview) shows a confirm form and changes nothing.
    let (status, page, headers) = send(
        &topo,
        Request::get(format!("/unsubscribe/{token}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Ann@Example.COM"), "{page}");
    assert!(page.contains(r#"name="List-Unsubscribe" value="One-Click""#));
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    assert!(listed(&topo).await.is_empty());

    // Forged and altered tokens: 4xx, nothing changes.
    let forged = UnsubscribeKey::new(b"another secret, also long enough!!").sign(
        &jetmail_common::compliance::UnsubscribeClaim {
            campaign: "c1".into(),
            address: "victim@example.com".into(),
        },
    );
    let (body, tag) = token.split_once('.').unwrap();
    let altered = format!("{}A.{tag}", &body[..body.len() - 1]);
    for bad in [forged.as_str(), altered.as_str(), "garbage", "a.b"] {
        let (status, _, _) = send(&topo, one_click(bad)).await;
        assert!(status.is_client_error(), "{bad}: {status}");
        let (status, _, _) = send(
            &topo,
            Request::get(format!("/unsubscribe/{bad}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert!(status.is_client_error(), "{bad}: {status}");
    }
    assert!(listed(&topo).await.is_empty());

    // The RFC 8058 POST: suppressed as unsubscribed, with its campaign; twice is fine.
    for _ in 0..2 {
        let (status, page, _) = send(&topo, one_click(&token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
    }
    let entry = suppressions::get(&topo, "Ann@example.com").await?.unwrap();
    assert_eq!(entry.reason, SuppressionReason::Unsubscribed);
    assert_eq!(entry.campaign.as_deref(), Some("c1"));
    assert_eq!(listed(&topo).await, vec!["Ann@example.com"]);
    Ok(())
}

#[tokio::test]
async fn suppressions_over_http_with_typed_errors() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let post = |v: Value| {
        Request::post("/v1/suppressions")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string()))
            .unwrap()
    };
    // One bad address refuses the whole request.
    let (status, err) = send_json(
        &topo,
        post(json!({"addresses": ["ok@example.com", "not an address"]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"], ErrorCode::InvalidAddress.as_str());
    assert_eq!(err["field"], Field::Address.as_str());
    assert!(listed(&topo).await.is_empty());

    let body = json!({"addresses": ["Bob@Bücher.example", "carol@example.com"]});
    let (status, r) = send_json(&topo, post(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        (r["added"].as_u64(), r["already"].as_u64()),
        (Some(2), Some(0))
    );
    // The same address in another form is the same entry.
    let again = json!({"addresses": ["Bob@xn--bcher-kva.EXAMPLE"], "reason": "complaint"});
    let (_, r) = send_json(&topo, post(again)).await;
    assert_eq!(
        (r["added"].as_u64(), r["already"].as_u64()),
        (Some(0), Some(1))
    );

    let (status, list) = send_json(
        &topo,
        Request::get("/v1/suppressions?search=XN--BCHER&limit=10")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 1);
    assert_eq!(list["suppressions"][0]["reason"], "manual");
    let (status, err) = send_json(
        &topo,
        Request::get("/v1/suppressions?reason=bounced")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "reason");

    let delete = |a: &str| {
        Request::delete(jetmail_common::api::suppression_path(a))
            .body(Body::empty())
            .unwrap()
    };
    let (status, _) = send_json(&topo, delete("carol@EXAMPLE.com")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send_json(&topo, delete("carol@example.com")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Import: reasons per row, bad rows reported with their line, good ones kept.
    let csv = "email,reason\nd@example.com,hard_bounce\nnot an address,manual\ne@example.com,\nf@example.com,bounced\n";
    let (status, r) = send_json(
        &topo,
        Request::post("/v1/suppressions/import")
            .header(header::CONTENT_TYPE, "text/csv")
            .body(Body::from(csv))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["added"], 2);
    assert_eq!(r["rejected_count"], 2);
    assert_eq!(r["rejected"][0]["line"], 3);
    assert_eq!(r["rejected"][1]["line"], 5);
    let d = suppressions::get(&topo, "d@example.com").await?.unwrap();
    assert_eq!(d.reason, SuppressionReason::HardBounce);
    let e = suppressions::get(&topo, "e@example.com").await?.unwrap();
    assert_eq!(e.reason, SuppressionReason::Manual);
    Ok(())
}

#[tokio::test]
async fn the_cli_exports_what_it_imports() -> anyhow::Result<()> {
    let (nats, topo) = setup().await?;
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("in.csv");
    std::fs::write(
        &input,
        "email,reason\nann@example.com,unsubscribed\no'brien+news@example.com,complaint\nzoë@bücher.example,\nbroken\n",
    )?;
    let bin = env!("CARGO_BIN_EXE_jetmail-ingest");
    let run = |args: &[&str], url: &str| {
        std::process::Command::new(bin)
            .args(args)
            .env("JETMAIL_NATS_URL", url)
            .output()
            .unwrap()
    };
    let out = run(
        &["suppress", "import", input.to_str().unwrap()],
        &nats.url(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rejected line 5"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("added 3"));
    let out = run(&["suppress", "export"], &nats.url());
    assert!(out.status.success());
    let exported = String::from_utf8(out.stdout)?;
    assert_eq!(exported.lines().count(), 4, "{exported}");

    // Into a second broker: the same list, reasons and all.
    let (other, other_topo) = setup().await?;
    let file = dir.path().join("export.csv");
    std::fs::write(&file, &exported)?;
    let out = run(
        &["suppress", "import", file.to_str().unwrap()],
        &other.url(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let strip = |v: Vec<jetmail_common::compliance::Suppression>| {
        v.into_iter()
            .map(|s| (s.address, s.reason))
            .collect::<Vec<_>>()
    };
    let a = strip(suppressions::all(&topo).await?);
    assert_eq!(a.len(), 3);
    assert_eq!(a, strip(suppressions::all(&other_topo).await?));
    Ok(())
}

#[tokio::test]
async fn suppressed_recipients_are_skipped_at_submit_and_settled() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    suppressions::add(
        &topo,
        &["gone@example.com".into(), "Left@Bücher.example".into()],
        SuppressionReason::Manual,
    )
    .await?;
    let body = campaign(json!([
        "a@example.com",
        "GONE@example.com",
        "gone@EXAMPLE.com",
        "Left@xn--bcher-kva.example",
        {"email": "b@example.com", "name": "Bo"},
    ]));
    let (status, r) = send_json(&topo, post_json(&body, None)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    // Local parts compare as written: GONE@ is another mailbox.
    assert_eq!(r["published"], 3, "{r}");
    assert_eq!(r["suppressed"], 2, "{r}");
    assert_eq!(outbox_len(&topo).await, 3);
    let id = r["id"].as_str().unwrap();

    // Each published message carries a token that names its own recipient.
    let key = UnsubscribeKey::new(SECRET);
    let stream = topo.outbox.clone();
    for seq in 1..=3 {
        let m = stream.get_raw_message(seq).await?;
        let msg: OutboxMessage = serde_json::from_slice(&m.payload)?;
        let claim = key.verify(msg.unsubscribe_token.as_deref().unwrap())?;
        assert_eq!((claim.campaign.as_str(), claim.address), (id, msg.email));
    }
    let (_, view) = send_json(
        &topo,
        Request::get(format!("/v1/campaigns/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(view["unsubscribe"]["base_url"], "https://mail.example.com");

    // The skipped ones are settled as `suppressed` events, so the campaign can finish.
    let events = topo
        .events
        .clone()
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await?
        .messages()
        .await?
        .take(2)
        .map(|m| {
            let m = m.unwrap();
            serde_json::from_slice::<jetmail_common::wire::DeliveryEvent>(&m.payload).unwrap()
        })
        .collect::<Vec<_>>()
        .await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![3, 4]);
    assert!(events
        .iter()
        .all(|e| e.outcome == jetmail_common::wire::Outcome::Suppressed));
    Ok(())
}

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/bounces/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap()
}

#[tokio::test]
async fn bounce_and_complaint_samples_suppress_exactly_what_they_prove() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let post = |name: &str| {
        Request::post("/v1/bounces")
            .header(header::CONTENT_TYPE, "message/rfc822")
            .body(Body::from(sample(name)))
            .unwrap()
    };
    // Malformed and non-acting reports first: a clear error or nothing suppressed.
    for bad in [
        "malformed-auto-reply.eml",
        "malformed-truncated.eml",
        "malformed-no-final-recipient.eml",
        "malformed-binary.eml",
    ] {
        let (status, err) = send_json(&topo, post(bad)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {err}");
        assert_eq!(err["error"], ErrorCode::InvalidReport.as_str(), "{bad}");
    }
    for quiet in [
        "gmail-delayed.eml",
        "gmail-policy-block.eml",
        "arf-not-spam.eml",
    ] {
        let (status, r) = send_json(&topo, post(quiet)).await;
        assert_eq!(status, StatusCode::OK, "{quiet}: {r}");
        assert_eq!(r["suppressed"], json!([]), "{quiet}");
    }
    assert!(listed(&topo).await.is_empty());

    let (_, r) = send_json(&topo, post("postfix-mixed.eml")).await;
    assert_eq!(r["soft_bounces"], 1);
    assert_eq!(r["suppressed"].as_array().unwrap().len(), 2);
    for name in [
        "postfix-user-unknown.eml",
        "exchange-recipient-not-found.eml",
        "yahoo-arf-abuse.eml",
        "aol-arf-redacted-rcpt.eml",
    ] {
        let (status, r) = send_json(&topo, post(name)).await;
        assert_eq!(status, StatusCode::OK, "{name}: {r}");
        assert_eq!(r["campaign"], "c1719000000000-a1b2c3", "{name}");
    }
    let all: Vec<(String, SuppressionReason)> = suppressions::all(&topo)
        .await?
        .into_iter()
        .map(|s| (s.address, s.reason))
        .collect();
    use SuppressionReason::{Complaint, HardBounce};
    assert_eq!(
        all,
        vec![
            ("Jane.Doe@contoso.com".into(), HardBounce),
            ("Pat.Complains@aol.com".into(), Complaint),
            ("complainer@yahoo.com".into(), Complaint),
            ("gone@example.net".into(), HardBounce),
            ("nobody.here@example.org".into(), HardBounce),
            ("nodomain@no-such-domain.example".into(), HardBounce),
        ]
    );
    let e = suppressions::get(&topo, "nobody.here@example.org")
        .await?
        .unwrap();
    assert_eq!(e.campaign.as_deref(), Some("c1719000000000-a1b2c3"));
    assert_eq!(e.detail.as_deref(), Some("5.1.1"));
    Ok(())
}

#[tokio::test]
async fn a_test_send_is_published_once_per_address_and_listed_nowhere() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let body = campaign(json!(["not valid", {"email": "first@example.com", "name": "Zed"}]));
    let req = |to: &str| {
        Request::post(format!("/v1/campaigns/test?to={to}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let eleven: Vec<String> = (0..11).map(|i| format!("t{i}@example.com")).collect();
    for bad in ["", "nope", eleven.join(",").as_str()] {
        let (status, err) = send_json(&topo, req(bad)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {err}");
        assert_eq!(err["field"], "to");
    }
    assert_eq!(outbox_len(&topo).await, 0);

    let (status, r) = send_json(&topo, req("me@example.com,boss@example.com")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["published"], 2);
    assert_eq!(r["variables_from"], "first@example.com");
    let id = r["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("t-"), "{id}");
    assert_eq!(outbox_len(&topo).await, 2);
    let stream = topo.outbox.clone();
    let m: OutboxMessage = serde_json::from_slice(&stream.get_raw_message(1).await?.payload)?;
    assert_eq!(m.email, "me@example.com");
    assert_eq!(m.vars.get("name").map(String::as_str), Some("Zed"));

    let (_, list) = send_json(
        &topo,
        Request::get("/v1/campaigns").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(list["campaigns"], json!([]), "{list}");
    let (_, view) = send_json(
        &topo,
        Request::get(format!("/v1/campaigns/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(view["test"], true);

    // A user's campaign cannot take a test id.
    let mut c = campaign(json!(["a@example.com"]));
    c["campaign_id"] = json!("t-mine");
    let (status, err) = send_json(&topo, post_json(&c, None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "campaign_id");
    Ok(())
}
