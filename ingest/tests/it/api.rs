use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use jetmail_common::topology::{self, Topology};
use jetmail_ingest::http::{router, ApiState};
use jetmail_testkit::NatsServer;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn setup() -> anyhow::Result<(NatsServer, Topology)> {
    let nats = NatsServer::start().await?;
    let js = jetmail_common::config::jetstream_context(nats.client().await?, 8192);
    let topo = topology::ensure(&js).await?;
    Ok((nats, topo))
}

async fn call(
    topo: &Topology,
    max_body: usize,
    req: Request<Body>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let resp = router(ApiState { topo: topo.clone() }, max_body)
        .oneshot(req)
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body, headers)
}

fn post_json(body: &Value, key: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/v1/campaigns").header(header::CONTENT_TYPE, "application/json");
    if let Some(k) = key {
        b = b.header("Idempotency-Key", k);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

async fn outbox_len(topo: &Topology) -> u64 {
    let mut s = topo.outbox.clone();
    s.info().await.unwrap().state.messages
}

fn campaign(recipients: Value) -> Value {
    json!({
        "from": "News <news@example.com>",
        "subject": "Hi {{ name }}",
        "text": "Hello {{ name }}",
        "html": "<p>Hello {{ name }}</p>",
        "recipients": recipients,
    })
}

#[tokio::test]
async fn json_submit_idempotency_and_status() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let body = campaign(json!([
        "a@example.com",
        {"email": "b@example.com", "name": "Bo"},
        "not an address",
        "a@example.com"
    ]));
    let (status, first, _) = call(&topo, 1 << 20, post_json(&body, Some("key-1"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["published"], 2);
    assert_eq!(first["duplicates"], 1);
    assert_eq!(first["rejected"][0]["line"], 3);
    assert_eq!(first["rejected"][0]["email"], "not an address");
    assert_eq!(outbox_len(&topo).await, 2);

    // The same key again: the first answer, nothing new published.
    let (status, replay, headers) = call(&topo, 1 << 20, post_json(&body, Some("key-1"))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(replay, first);
    assert_eq!(
        headers
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(outbox_len(&topo).await, 2);

    // The same key with another body is a conflict, not a silent replay.
    let other = campaign(json!(["c@example.com"]));
    let (status, err, _) = call(&topo, 1 << 20, post_json(&other, Some("key-1"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");

    let id = first["id"].as_str().unwrap();
    let (status, view, _) = call(
        &topo,
        1 << 20,
        Request::get(format!("/v1/campaigns/{id}")).body(Body::empty())?,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["status"], "running");
    assert_eq!(view["publish"]["published_through"], 2);
    assert_eq!(view["pending"], 2);
    let (status, _, _) = call(
        &topo,
        1 << 20,
        Request::get("/v1/campaigns/nope").body(Body::empty())?,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn multipart_submit_with_csv_file() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let boundary = "XjetmailX";
    let mut body = String::new();
    for (name, value) in [
        ("from", "news@example.com"),
        ("subject", "Hi {{ name }}"),
        ("text", "Hello {{ name }}"),
        ("campaign_id", "mp1"),
    ] {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"recipients\"; filename=\"r.csv\"\r\nContent-Type: text/csv\r\n\r\nemail,name\r\nx@example.com,X\r\nbad,Y\r\ny@example.com,\"Y, Jr\"\r\n\r\n--{boundary}--\r\n"
    ));
    let req = Request::post("/v1/campaigns")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))?;
    let (status, resp, _) = call(&topo, 1 << 20, req).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    assert_eq!(resp["id"], "mp1");
    assert_eq!(resp["published"], 2);
    assert_eq!(resp["rejected"][0]["line"], 3);
    assert_eq!(outbox_len(&topo).await, 2);
    Ok(())
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    // 400: not JSON at all.
    let req = Request::post("/v1/campaigns")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))?;
    let (status, body, _) = call(&topo, 1 << 20, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "bad_json");

    // 413: over the body limit.
    let big = campaign(json!(vec!["a@example.com"; 200]));
    let (status, body, _) = call(&topo, 1024, post_json(&big, None)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"], "too_large");

    // 422: a template that does not compile, with the compiler's message.
    let mut broken = campaign(json!(["a@example.com"]));
    broken["subject"] = json!("Hi {{ name ");
    let (status, body, _) = call(&topo, 1 << 20, post_json(&broken, None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["detail"].as_str().unwrap().contains("subject"),
        "{body}"
    );

    // 422: header injection in the subject or sender.
    let mut inject = campaign(json!(["a@example.com"]));
    inject["subject"] = json!("Hi\r\nBcc: victim@example.com");
    let (status, body, _) = call(&topo, 1 << 20, post_json(&inject, None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("header injection"),
        "{body}"
    );
    let mut inject = campaign(json!(["a@example.com"]));
    inject["from"] = json!("news@example.com\r\nBcc: victim@example.com");
    let (status, _, _) = call(&topo, 1 << 20, post_json(&inject, None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // 422: a missing field, and no valid recipient at all.
    let (status, _, _) = call(
        &topo,
        1 << 20,
        post_json(&json!({"from": "a@example.com"}), None),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body, _) = call(&topo, 1 << 20, post_json(&campaign(json!(["nope"])), None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("no valid recipients"),
        "{body}"
    );

    assert_eq!(
        outbox_len(&topo).await,
        0,
        "nothing may be published by a refused request"
    );
    Ok(())
}

#[tokio::test]
async fn a_full_outbox_is_reported_with_the_exact_published_count() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    // Shrink the outbox as an operator would with `nats stream edit`.
    let mut cfg = topology::outbox_config();
    cfg.max_messages = 25;
    topo.js.update_stream(cfg).await?;
    let list: Vec<String> = (0..100).map(|i| format!("u{i}@example.com")).collect();
    let mut body = campaign(json!(list));
    body["campaign_id"] = json!("full1");
    let (status, resp, headers) = call(&topo, 1 << 20, post_json(&body, None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{resp}");
    assert_eq!(resp["error"], "outbox_full");
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert!(
        resp["detail"].as_str().unwrap().contains("25 recipients"),
        "{resp}"
    );
    assert_eq!(outbox_len(&topo).await, 25);
    let rec = jetmail_common::records::load_record(&topo, "full1")
        .await
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(rec.publish.published_through, 25);
    assert!(!rec.publish.complete);
    Ok(())
}
