use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use jetmail_common::api::{self, ControlAction, ErrorBody, ErrorCode, Field};
use jetmail_common::topology::{self, Topology};
use jetmail_common::wire::CampaignStatus;
use jetmail_ingest::control;
use jetmail_ingest::http::{router, ApiState};
use jetmail_testkit::NatsServer;
use serde_json::{json, Value};
use tower::ServiceExt;

pub(crate) async fn setup() -> anyhow::Result<(NatsServer, Topology)> {
    let nats = NatsServer::start().await?;
    let js = jetmail_common::config::jetstream_context(nats.client().await?, 8192);
    let topo = topology::ensure(&js).await?;
    Ok((nats, topo))
}

pub(crate) async fn call(
    topo: &Topology,
    max_body: usize,
    req: Request<Body>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let resp = router(ApiState::new(topo.clone()), max_body)
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

pub(crate) fn post_json(body: &Value, key: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/v1/campaigns").header(header::CONTENT_TYPE, "application/json");
    if let Some(k) = key {
        b = b.header("Idempotency-Key", k);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

pub(crate) async fn outbox_len(topo: &Topology) -> u64 {
    let mut s = topo.outbox.clone();
    s.info().await.unwrap().state.messages
}

pub(crate) fn campaign(recipients: Value) -> Value {
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
    assert_eq!(first["replayed"], false);
    assert_eq!(replay["replayed"], true);
    let mut replay_as_first = replay.clone();
    replay_as_first["replayed"] = json!(false);
    assert_eq!(replay_as_first, first);
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

    // The list and the preview answer the contract's types.
    let (status, list, _) = call(
        &topo,
        1 << 20,
        Request::get(api::route::CAMPAIGNS).body(Body::empty())?,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let list: api::CampaignList = serde_json::from_value(list)?;
    assert_eq!(list.campaigns.len(), 1);
    assert_eq!(list.campaigns[0].record.id, id);
    let req = Request::post(api::route::PREVIEW)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            campaign(json!(["bad", {"email": "b@example.com", "name": "Bo"}])).to_string(),
        ))?;
    let (status, preview, _) = call(&topo, 1 << 20, req).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let preview: api::Preview = serde_json::from_value(preview)?;
    assert_eq!(preview.recipient, "b@example.com");
    assert_eq!(preview.subject, "Hi Bo");
    assert_eq!(preview.html.as_deref(), Some("<p>Hello Bo</p>"));
    assert_eq!(preview.rejected.len(), 1);
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

/// The error body as clients read it: the contract's type, not loose JSON.
pub(crate) fn error_body(body: &Value) -> ErrorBody {
    serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Posts `body` and expects a refusal with `code`, about `field`.
async fn expect_refusal(
    topo: &Topology,
    body: &Value,
    status: StatusCode,
    code: ErrorCode,
    field: Option<Field>,
) -> ErrorBody {
    let (got, resp, _) = call(topo, 1 << 20, post_json(body, None)).await;
    assert_eq!(got, status, "{resp}");
    let e = error_body(&resp);
    assert_eq!((e.error, e.field), (code, field), "{resp}");
    assert_eq!(got.as_u16(), code.http_status());
    e
}

#[tokio::test]
async fn errors_are_error_bodies_with_code_field_and_status() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    // 400: not JSON at all.
    let req = Request::post("/v1/campaigns")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))?;
    let (status, body, _) = call(&topo, 1 << 20, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_body(&body).error, ErrorCode::BadJson);

    // 413: over the body limit.
    let big = campaign(json!(vec!["a@example.com"; 200]));
    let (status, body, _) = call(&topo, 1024, post_json(&big, None)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_body(&body).error, ErrorCode::TooLarge);

    // 422: a subject template that does not compile, with the compiler's message.
    let mut broken = campaign(json!(["a@example.com"]));
    broken["subject"] = json!("Hi {{ name ");
    let e = expect_refusal(
        &topo,
        &broken,
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidCampaign,
        Some(Field::Subject),
    )
    .await;
    assert!(!e.detail.is_empty());
    let mut broken = campaign(json!(["a@example.com"]));
    broken["html"] = json!("<p>{% if %}</p>");
    expect_refusal(
        &topo,
        &broken,
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidCampaign,
        Some(Field::Html),
    )
    .await;

    // 422: header injection in the subject or sender.
    let mut inject = campaign(json!(["a@example.com"]));
    inject["subject"] = json!("Hi\r\nBcc: victim@example.com");
    let e = expect_refusal(
        &topo,
        &inject,
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidCampaign,
        Some(Field::Subject),
    )
    .await;
    assert!(e.detail.contains("header injection"), "{e:?}");
    let mut inject = campaign(json!(["a@example.com"]));
    inject["from"] = json!("news@example.com\r\nBcc: victim@example.com");
    expect_refusal(
        &topo,
        &inject,
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidCampaign,
        Some(Field::From),
    )
    .await;

    // 422: no body, a missing field, a bad campaign id, no valid recipient at all.
    let mut no_body = campaign(json!(["a@example.com"]));
    no_body["text"] = json!(" ");
    no_body["html"] = json!("");
    expect_refusal(
        &topo,
        &no_body,
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidCampaign,
        Some(Field::Text),
    )
    .await;
    expect_refusal(
        &topo,
        &json!({"from": "a@example.com"}),
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidCampaign,
        Some(Field::Subject),
    )
    .await;
    let mut bad_id = campaign(json!(["a@example.com"]));
    bad_id["campaign_id"] = json!("no spaces");
    expect_refusal(
        &topo,
        &bad_id,
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidCampaign,
        Some(Field::CampaignId),
    )
    .await;
    let e = expect_refusal(
        &topo,
        &campaign(json!(["nope"])),
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidCampaign,
        Some(Field::Recipients),
    )
    .await;
    assert!(e.detail.contains("no valid recipients"), "{e:?}");

    // 404 for routes, campaigns and actions that do not exist, as error bodies too.
    for (req, what) in [
        (Request::get("/v2/nothing").body(Body::empty())?, "route"),
        (
            Request::get("/v1/campaigns/nope").body(Body::empty())?,
            "campaign",
        ),
        (
            Request::post("/v1/campaigns/nope/pause").body(Body::empty())?,
            "campaign to pause",
        ),
    ] {
        let (status, body, _) = call(&topo, 1 << 20, req).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{what}: {body}");
        assert_eq!(error_body(&body).error, ErrorCode::NotFound, "{what}");
    }

    assert_eq!(
        outbox_len(&topo).await,
        0,
        "nothing may be published by a refused request"
    );
    let mut campaigns = topo.campaigns.keys().await?;
    assert!(
        futures::StreamExt::next(&mut campaigns).await.is_none(),
        "nor any campaign record left behind"
    );
    Ok(())
}

#[tokio::test]
async fn control_parses_its_action_once_and_refuses_unknown_ones() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let mut body = campaign(json!(["a@example.com"]));
    body["campaign_id"] = json!("ctl1");
    let (status, resp, _) = call(&topo, 1 << 20, post_json(&body, None)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");

    let (status, resp, _) = call(
        &topo,
        1 << 20,
        Request::post("/v1/campaigns/ctl1/stop").body(Body::empty())?,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{resp}");
    assert_eq!(error_body(&resp).error, ErrorCode::NotFound);

    let (status, rec, _) = call(
        &topo,
        1 << 20,
        Request::post(api::path::control("ctl1", ControlAction::Pause)).body(Body::empty())?,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(rec["status"], "paused");

    // Once cancelled, a campaign cannot be paused: a conflict, not a broker error.
    control::apply(&topo, "ctl1", ControlAction::Cancel, None).await?;
    let (status, resp, _) = call(
        &topo,
        1 << 20,
        Request::post(api::path::control("ctl1", ControlAction::Pause)).body(Body::empty())?,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{resp}");
    assert_eq!(error_body(&resp).error, ErrorCode::Conflict);
    Ok(())
}

/// A resubmit of a campaign whose first submit is still incomplete, with no valid recipient,
/// is refused and must leave the live campaign's record (and its messages) as they were.
#[tokio::test]
async fn an_empty_resubmit_never_removes_an_incomplete_campaign() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let mut body = campaign(json!(["a@example.com", "b@example.com"]));
    body["campaign_id"] = json!("live1");
    let (status, resp, _) = call(&topo, 1 << 20, post_json(&body, None)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    // As a submit interrupted after its first recipient leaves it.
    jetmail_common::records::update_record(&topo, "live1", |r| {
        r.publish.complete = false;
        r.publish.published_through = 1;
        r.status = CampaignStatus::Publishing;
    })
    .await?;

    body["recipients"] = json!(["not an address"]);
    let e = expect_refusal(
        &topo,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidCampaign,
        Some(Field::Recipients),
    )
    .await;
    assert!(e.detail.contains("no valid recipients"), "{e:?}");
    let (rec, _) = jetmail_common::records::load_record(&topo, "live1")
        .await?
        .expect("the live campaign's record is still there");
    assert_eq!(rec.publish.published_through, 1);
    assert_eq!(rec.status, CampaignStatus::Publishing);
    assert_eq!(outbox_len(&topo).await, 2);

    // The real resubmit still resumes and completes it, publishing nothing twice.
    body["recipients"] = json!(["a@example.com", "b@example.com"]);
    let (status, resp, _) = call(&topo, 1 << 20, post_json(&body, None)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    assert_eq!(resp["published"], 2);
    assert_eq!(outbox_len(&topo).await, 2);
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
    let e = error_body(&resp);
    assert_eq!((e.error, e.field), (ErrorCode::OutboxFull, None));
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert!(e.detail.contains("25 recipients"), "{resp}");
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
