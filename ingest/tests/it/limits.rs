//! Sending limits over the HTTP API and through the library the CLI uses: stored under the
//! scope's key where the senders watch, listed with the effective rate after a back-off,
//! removed; bad input refused with its field and nothing stored.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use bytes::Bytes;
use jetmail_common::api::{self, ErrorCode, Field, LimitList, LimitView};
use jetmail_common::limits::{Backoff, LimitSpec, Scope};
use jetmail_common::topology::{self, Topology};
use jetmail_ingest::limits::{self, LimitsError};
use serde_json::{json, Value};

use crate::api::{call, error_body, setup};

fn put(scope: &str, body: &Value) -> Request<Body> {
    Request::put(format!("/v1/limits/{scope}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn stored(topo: &Topology, scope: &Scope) -> Option<LimitSpec> {
    topo.limits
        .get(topology::limit_key(scope))
        .await
        .unwrap()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

async fn list(topo: &Topology) -> LimitList {
    let (status, body, _) = call(
        topo,
        1 << 20,
        Request::get("/v1/limits").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value(body).unwrap()
}

#[tokio::test]
async fn limits_are_set_listed_with_effective_rates_and_removed() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let gmail = Scope::for_domains("gmail.com");
    let (status, body, _) = call(
        &topo,
        1 << 20,
        put(
            "d-gmail_com",
            &json!({"domains": ["gmail.com", "GoogleMail.com"], "rate": "25/s", "concurrency": 4, "cooldown": "2m"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let spec = stored(&topo, &gmail)
        .await
        .expect("stored under limit.d-gmail_com");
    assert_eq!(spec.domains, vec!["gmail.com", "googlemail.com"]);
    assert_eq!((spec.concurrency, spec.cooldown_ms), (Some(4), 120_000));
    let (status, body, _) = call(&topo, 1 << 20, put("global", &json!({"rate": "9000/m"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A provider pushed back: the list shows the halved rate beside the configured one.
    let backoff = Backoff::default().after_refusal(jetmail_common::now_ms(), 120_000);
    topo.limits
        .put(
            topology::backoff_key(&gmail),
            Bytes::from(serde_json::to_vec(&backoff)?),
        )
        .await?;
    let l = list(&topo).await.limits;
    assert_eq!(l.len(), 2, "{l:?}");
    assert_eq!(
        (l[0].scope.clone(), l[0].rate.as_str()),
        (Scope::Global, "9000/m")
    );
    assert_eq!(l[0].effective_per_second, 150.0);
    let g: &LimitView = &l[1];
    assert_eq!((g.rate.as_str(), g.per_second), ("25/s", 25.0));
    assert_eq!((g.effective_per_second, g.backoff_level), (12.5, 1));

    // The CLI's path: remove by a domain the limit lists.
    assert_eq!(
        limits::scope_of_domain(&topo, "googlemail.com").await?,
        gmail
    );
    assert!(matches!(
        limits::scope_of_domain(&topo, "yahoo.com").await,
        Err(LimitsError::NotFound(_))
    ));
    let (status, _, _) = call(
        &topo,
        1 << 20,
        Request::delete(api::path::limit(&gmail)).body(Body::empty())?,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(stored(&topo, &gmail).await.is_none());
    let (status, body, _) = call(
        &topo,
        1 << 20,
        Request::delete(api::path::limit(&gmail)).body(Body::empty())?,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    limits::remove(&topo, &Scope::Global).await?;
    assert!(list(&topo).await.limits.is_empty());
    Ok(())
}

#[tokio::test]
async fn bad_limits_are_refused_with_their_field_and_nothing_is_stored() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let cases = [
        ("global", json!({"rate": "0/s"}), Field::Rate),
        ("global", json!({"rate": "-1/s"}), Field::Rate),
        ("global", json!({"rate": "10/fortnight"}), Field::Rate),
        ("global", json!({}), Field::Rate),
        (
            "d-not",
            json!({"domains": ["not a domain"], "rate": "1/s"}),
            Field::Domains,
        ),
        (
            "d-a_com",
            json!({"domains": "a.com", "rate": "1/s"}),
            Field::Domains,
        ),
        (
            "global",
            json!({"rate": "1/s", "concurrency": 0}),
            Field::Concurrency,
        ),
        (
            "global",
            json!({"rate": "1/s", "concurrency": -1}),
            Field::Concurrency,
        ),
        (
            "global",
            json!({"rate": "1/s", "cooldown": "later"}),
            Field::Cooldown,
        ),
        // The path must name the scope the body gives.
        (
            "global",
            json!({"domains": ["a.com"], "rate": "1/s"}),
            Field::Scope,
        ),
        (
            "d-b_com",
            json!({"domains": ["a.com", "b.com"], "rate": "1/s"}),
            Field::Scope,
        ),
        ("d-a_com", json!({"rate": "1/s"}), Field::Scope),
        ("c-camp1", json!({"rate": "1/s"}), Field::Scope),
    ];
    for (scope, body, field) in cases {
        let (status, resp, _) = call(&topo, 1 << 20, put(scope, &body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {resp}");
        let e = error_body(&resp);
        assert_eq!(
            (e.error, e.field),
            (ErrorCode::InvalidLimit, Some(field)),
            "{body}: {resp}"
        );
    }
    let mut keys = topo.limits.keys().await?;
    assert!(
        futures::StreamExt::next(&mut keys).await.is_none(),
        "something was stored"
    );

    // A domain belongs to one limit only.
    let (status, _, _) = call(
        &topo,
        1 << 20,
        put(
            "d-a_com",
            &json!({"domains": ["a.com", "b.com"], "rate": "1/s"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, resp, _) = call(
        &topo,
        1 << 20,
        put("d-b_com", &json!({"domains": ["b.com"], "rate": "5/s"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{resp}");
    assert_eq!(error_body(&resp).field, Some(Field::Domains));
    assert!(stored(&topo, &Scope::for_domains("b.com")).await.is_none());
    Ok(())
}
