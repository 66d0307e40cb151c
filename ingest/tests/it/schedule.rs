//! Campaigns with a rate, a send-at and a deadline: checked before anything is stored,
//! published straight to their held queue, counted as pending there, `scheduled` until their
//! time, cancelled or rescheduled before they start.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use jetmail_common::api::{self, ControlAction, ErrorCode, Field};
use jetmail_common::limits::Scope;
use jetmail_common::topology::{self, HeldSubject, Topology};
use serde_json::{json, Value};

use crate::api::{call, campaign, error_body, outbox_len, post_json, setup};

async fn held_len(topo: &Topology) -> u64 {
    let mut s = topo.held.clone();
    s.info().await.unwrap().state.messages
}

async fn get(topo: &Topology, id: &str) -> Value {
    let (status, view, _) = call(
        topo,
        1 << 20,
        Request::get(api::path::campaign(id))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

fn reschedule(id: &str, body: &str) -> Request<Body> {
    Request::post(api::path::control(id, ControlAction::Reschedule))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn a_scheduled_campaign_waits_in_its_held_queue() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let mut body = campaign(json!(["a@example.com", "b@example.org", "c@example.com"]));
    body["campaign_id"] = json!("sched1");
    body["rate"] = json!("10/m");
    body["send_at"] = json!("+1h");
    body["deadline"] = json!("2h");
    let (status, resp, _) = call(&topo, 1 << 20, post_json(&body, None)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");

    let view = get(&topo, "sched1").await;
    assert_eq!(view["status"], "scheduled");
    let (send_at, deadline) = (
        view["schedule"]["send_at_ms"].as_u64().unwrap(),
        view["schedule"]["deadline_ms"].as_u64().unwrap(),
    );
    assert_eq!(deadline - send_at, 2 * 3_600_000);
    assert!(send_at > jetmail_common::now_ms() + 3_500_000);
    assert_eq!(view["schedule"]["rate"], json!({"count": 10, "per": "m"}));
    // Straight to the campaign's held queue, none through the outbox; pending counts them.
    assert_eq!((outbox_len(&topo).await, held_len(&topo).await), (0, 3));
    assert_eq!(view["pending"], 3);
    let msg = topo
        .held
        .get_last_raw_message_by_subject(&topology::held_subject(
            &Scope::Campaign("sched1".into()),
            "sched1",
            "example_com",
        ))
        .await?;
    let parsed = HeldSubject::parse(&msg.subject).expect("a held subject");
    assert_eq!(parsed.scope, Scope::Campaign("sched1".into()));

    // A retried submit publishes nothing twice (MAIL_HELD's duplicate window, stable ids).
    let (status, again, _) = call(&topo, 1 << 20, post_json(&body, None)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(held_len(&topo).await, 3);

    // Rescheduled while scheduled: a later time, kept before the deadline.
    let (status, rec, _) = call(
        &topo,
        1 << 20,
        reschedule("sched1", r#"{"send_at":"+90m"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(rec["status"], "scheduled");
    assert!(rec["schedule"]["send_at_ms"].as_u64().unwrap() > send_at);
    assert_eq!(rec["schedule"]["deadline_ms"].as_u64().unwrap(), deadline);
    for (req, status, code) in [
        (
            r#"{"send_at":"+5h"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidCampaign,
        ),
        (
            r#"{"send_at":"whenever"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidCampaign,
        ),
        (
            r#"{}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidCampaign,
        ),
    ] {
        let (got, resp, _) = call(&topo, 1 << 20, reschedule("sched1", req)).await;
        assert_eq!(got, status, "{req}: {resp}");
        let e = error_body(&resp);
        assert_eq!(
            (e.error, e.field),
            (code, Some(Field::SendAt)),
            "{req}: {resp}"
        );
    }

    // Rescheduled to now: it starts.
    let (status, rec, _) = call(&topo, 1 << 20, reschedule("sched1", r#"{"send_at":"+0s"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(rec["status"], "running");
    // Started: too late to reschedule.
    let (status, resp, _) =
        call(&topo, 1 << 20, reschedule("sched1", r#"{"send_at":"+1h"}"#)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{resp}");
    Ok(())
}

#[tokio::test]
async fn a_scheduled_campaign_can_be_cancelled_before_it_starts() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let mut body = campaign(json!(["a@example.com"]));
    body["campaign_id"] = json!("sched2");
    body["send_at"] = json!("+1h");
    let (status, resp, _) = call(&topo, 1 << 20, post_json(&body, None)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    assert_eq!(get(&topo, "sched2").await["status"], "scheduled");
    let (status, rec, _) = call(
        &topo,
        1 << 20,
        Request::post(api::path::control("sched2", ControlAction::Cancel)).body(Body::empty())?,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(rec["status"], "cancelled");
    let (status, resp, _) =
        call(&topo, 1 << 20, reschedule("sched2", r#"{"send_at":"+2h"}"#)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{resp}");

    // Without a rate or a send-at ahead, recipients go to the outbox as always.
    let mut now = campaign(json!(["a@example.com"]));
    now["send_at"] = json!(jetmail_common::schedule::format_ms(jetmail_common::now_ms()));
    let (status, resp, _) = call(&topo, 1 << 20, post_json(&now, None)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    assert_eq!(
        get(&topo, resp["id"].as_str().unwrap()).await["status"],
        "running"
    );
    assert_eq!(outbox_len(&topo).await, 1);
    Ok(())
}

#[tokio::test]
async fn bad_schedules_are_refused_with_their_field_before_anything_is_stored() -> anyhow::Result<()>
{
    let (_nats, topo) = setup().await?;
    let cases = [
        (json!({"rate": "0/s"}), Field::Rate),
        (json!({"rate": "-1/s"}), Field::Rate),
        (json!({"rate": "10/fortnight"}), Field::Rate),
        (json!({"send_at": "2020-01-01T00:00:00Z"}), Field::SendAt),
        (json!({"send_at": "tomorrow"}), Field::SendAt),
        (json!({"deadline": "whenever"}), Field::Deadline),
        (
            json!({"send_at": "+2h", "deadline": jetmail_common::schedule::format_ms(jetmail_common::now_ms() + 3_600_000)}),
            Field::Deadline,
        ),
    ];
    for (extra, field) in cases {
        let mut body = campaign(json!(["a@example.com"]));
        body["campaign_id"] = json!("bad1");
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, resp, _) = call(&topo, 1 << 20, post_json(&body, None)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{extra}: {resp}");
        let e = error_body(&resp);
        assert_eq!(
            (e.error, e.field),
            (ErrorCode::InvalidCampaign, Some(field)),
            "{extra}: {resp}"
        );
    }
    // The same through the multipart form the web UI sends.
    let boundary = "XyZ";
    let part = |name: &str, value: &str| {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
    };
    let form = [
        part("from", "a@example.com"),
        part("subject", "s"),
        part("text", "t"),
        part("rate", "5/fortnight"),
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"recipients\"; filename=\"r.csv\"\r\n\r\nb@example.com\r\n--{boundary}--\r\n"),
    ]
    .concat();
    let req = Request::post("/v1/campaigns")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(form))?;
    let (status, resp, _) = call(&topo, 1 << 20, req).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(error_body(&resp).field, Some(Field::Rate));

    assert_eq!((outbox_len(&topo).await, held_len(&topo).await), (0, 0));
    assert!(jetmail_common::records::list_campaign_ids(&topo)
        .await?
        .is_empty());
    Ok(())
}
