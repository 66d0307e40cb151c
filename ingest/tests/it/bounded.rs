//! Bounded work at submit: a template that would render for hours is refused at once (422
//! naming its part) by the submit and the preview, and a list of very long bad rows keeps the
//! campaign record small enough to store.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use jetmail_common::api::{self, ErrorBody, ErrorCode, Field};
use serde_json::json;

use crate::api::{call, campaign, outbox_len, post_json, setup};

/// The template: 10^10 iterations, each writing 100,000 bytes.
const NESTED: &str = "{% for a in range(100000) %}{% for b in range(100000) %}{{ \"x\" * 100000 }}{% endfor %}{% endfor %}";

fn error(body: serde_json::Value) -> ErrorBody {
    serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn submit_and_preview_refuse_a_template_that_would_never_finish() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let mut body = campaign(json!(["a@example.com", "b@example.com"]));
    body["text"] = json!(NESTED);

    let started = Instant::now();
    let (status, err, _) = call(&topo, 1 << 20, post_json(&body, None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    let err = error(err);
    assert_eq!(err.error, ErrorCode::InvalidCampaign);
    assert_eq!(err.field, Some(Field::Text));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Refused before anything was stored.
    assert_eq!(outbox_len(&topo).await, 0);
    let mut keys = topo.campaigns.keys().await?;
    assert!(futures::StreamExt::next(&mut keys).await.is_none());

    // The same work in the HTML part, through the preview.
    let mut body = campaign(json!(["a@example.com"]));
    body["html"] = json!("{% for a in range(100000) %}{% for b in range(100000) %}{% set c = a * b %}{% endfor %}{% endfor %}");
    let started = Instant::now();
    let req = Request::post(api::route::PREVIEW)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))?;
    let (status, err, _) = call(&topo, 1 << 20, req).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(error(err).field, Some(Field::Html));
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[tokio::test]
async fn very_long_bad_rows_keep_the_record_storable() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    // 20 rows of 100 kB each: kept whole, the sample alone would pass the 1 MiB max payload.
    let long = "x".repeat(100_000);
    let mut rows: Vec<serde_json::Value> = (0..20).map(|i| json!(format!("{i}{long}"))).collect();
    rows.push(json!("a@example.com"));
    let body = campaign(json!(rows));
    let (status, report, _) = call(&topo, 8 << 20, post_json(&body, None)).await;
    let shown: String = report.to_string().chars().take(300).collect();
    assert_eq!(status, StatusCode::ACCEPTED, "{shown}");
    let report: api::SubmitReport = serde_json::from_value(report)?;
    assert_eq!(report.published, 1);
    assert_eq!(report.rejected_count, 20);
    assert_eq!(report.rejected.len(), 20);
    assert!(report.rejected[0].email.len() <= jetmail_ingest::rejected::MAX_FIELD_BYTES);
    assert_eq!(report.rejected[0].line, 1);
    // The record was written whole: the campaign left `publishing`.
    let (status, view, _) = call(
        &topo,
        1 << 20,
        Request::get(format!("/v1/campaigns/{}", report.id)).body(Body::empty())?,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["status"], "running", "{view}");
    Ok(())
}
