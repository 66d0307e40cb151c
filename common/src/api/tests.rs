//! The contract's own checks: error bodies, actions and paths.

use super::*;

#[test]
fn error_bodies_round_trip_and_unknown_codes_are_tolerated() {
    let e = ErrorBody {
        error: ErrorCode::InvalidCampaign,
        field: Some(Field::Subject),
        detail: "syntax error".into(),
    };
    let json = serde_json::to_string(&e).unwrap();
    assert_eq!(
        json,
        r#"{"error":"invalid_campaign","field":"subject","detail":"syntax error"}"#
    );
    assert_eq!(serde_json::from_str::<ErrorBody>(&json).unwrap(), e);
    let newer: ErrorBody =
        serde_json::from_str(r#"{"error":"quota","field":"budget","detail":"x"}"#).unwrap();
    assert_eq!(
        (newer.error, newer.field),
        (ErrorCode::Unknown, Some(Field::Other))
    );
    for f in Field::KNOWN {
        assert_eq!(f.as_str().parse::<Field>().unwrap(), f);
    }
    assert!("other".parse::<Field>().is_err());
    for code in [
        ErrorCode::BadJson,
        ErrorCode::OutboxFull,
        ErrorCode::Broker,
        ErrorCode::Internal,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::Timeout,
    ] {
        let s = serde_json::to_string(&code).unwrap();
        assert_eq!(s.trim_matches('"'), code.as_str());
    }
}

#[test]
fn credential_codes_answer_401_and_403() {
    assert_eq!(ErrorCode::Unauthorized.http_status(), 401);
    assert_eq!(ErrorCode::Forbidden.http_status(), 403);
    assert_eq!(ErrorCode::Timeout.http_status(), 408);
}

#[test]
fn control_actions_parse_once() {
    for a in ControlAction::ALL {
        assert_eq!(a.as_str().parse::<ControlAction>().unwrap(), a);
    }
    assert!("stop".parse::<ControlAction>().is_err());
    assert_eq!(
        path::control("c 1/x", ControlAction::Pause),
        "/v1/campaigns/c%201%2Fx/pause"
    );
}

#[test]
fn dead_list_paths_encode_their_query() {
    let q = DeadQuery {
        campaign: Some("c1".into()),
        reason: Some("550 & more".into()),
        limit: 5,
    };
    assert_eq!(
        path::dead_list(&q),
        "/v1/dead?limit=5&campaign=c1&reason=550%20%26%20more"
    );
}
