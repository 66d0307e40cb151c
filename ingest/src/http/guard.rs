//! What stands in front of every API route (not the public unsubscribe pair, not `/healthz`):
//! the bearer token and its scope, the route's body limit and time limit, and the audit line
//! naming the token with what it did. [`policy`] is the one table of what each route needs;
//! README's "Running it safely" shows it to operators.
//!
//! A refused request (401, 403, 413 by `Content-Length`) is answered before the handler runs,
//! so nothing changes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jetmail_common::api::{route, ErrorCode};

use super::{ApiError, ApiState};
use crate::api_tokens::{Scope, TokenStore};

/// Body limit of the routes that take a small JSON body (control, limits, dead-letter
/// filters, one suppression).
pub const SMALL_BODY: usize = 64 * 1024;
/// Time a quick route (every one but those that read a whole list or touch every dead letter)
/// may take, reading its body included.
pub const QUICK_ROUTE_TIMEOUT: Duration = Duration::from_secs(60);

/// Who may call the API.
#[derive(Debug, Clone)]
pub enum ApiAuth {
    /// `Authorization: Bearer TOKEN` with a token of the file and the route's scope.
    Tokens(Arc<TokenStore>),
    /// `--insecure-no-auth`: anyone who reaches the port (logged as a warning at start).
    Insecure,
}

/// How large a route's body may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySize {
    /// [`SMALL_BODY`].
    Small,
    /// `--max-body`: a campaign with its recipients, a list to import, a bounce message.
    Large,
}

/// What one route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePolicy {
    pub scope: Scope,
    pub body: BodySize,
    /// Bounded by [`QUICK_ROUTE_TIMEOUT`]; the others take as long as their list does.
    pub quick: bool,
}

/// The table: what `method route` needs. A route missing from it needs `admin` (a new route
/// is closed until someone decides otherwise); a path that is no route needs `read`.
pub fn policy(method: &Method, matched: Option<&str>) -> RoutePolicy {
    use BodySize::{Large, Small};
    let p = |scope, body, quick| RoutePolicy { scope, body, quick };
    let Some(path) = matched else {
        return p(Scope::Read, Small, true);
    };
    match (method.as_str(), path) {
        ("GET", route::CAMPAIGNS | route::CAMPAIGN | route::DEAD | route::LIMITS)
        | ("GET", route::SUPPRESSIONS) => p(Scope::Read, Small, true),
        ("POST", route::CAMPAIGNS | route::PREVIEW | route::TEST_SEND) => {
            p(Scope::Send, Large, false)
        }
        ("POST", route::CAMPAIGN_CONTROL) => p(Scope::Send, Small, true),
        ("PUT" | "DELETE", route::LIMIT) => p(Scope::Admin, Small, true),
        ("POST", route::DEAD_REPLAY) | ("DELETE", route::DEAD) => p(Scope::Admin, Small, false),
        ("POST", route::SUPPRESSIONS) | ("DELETE", route::SUPPRESSION) => {
            p(Scope::Admin, Small, true)
        }
        ("POST", route::SUPPRESSIONS_IMPORT | route::BOUNCES) => p(Scope::Admin, Large, false),
        _ => p(Scope::Admin, Small, true),
    }
}

/// The token in `Authorization: Bearer …`, if the header is one.
fn bearer(req: &Request) -> Option<&[u8]> {
    let v = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// The middleware: checks the token and scope, bounds the body and time, logs the outcome.
pub async fn guard(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map(|m| m.as_str()).unwrap_or("(no route)");
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let policy = policy(&method, matched.as_ref().map(|m| m.as_str()));
    let name = match &state.auth {
        ApiAuth::Insecure => "(insecure-no-auth)".to_string(),
        ApiAuth::Tokens(store) => {
            let tokens = store.current();
            let Some(token) = bearer(&req).and_then(|t| tokens.verify(t)) else {
                tracing::warn!(%method, route, peer, "API request without a valid token refused");
                return ApiError::new(
                    ErrorCode::Unauthorized,
                    "an API token is required: Authorization: Bearer <token>",
                )
                .into_response();
            };
            if token.scope < policy.scope {
                tracing::warn!(token = %token.name, %method, route, peer, need = %policy.scope,
                    has = %token.scope, "API request refused: the token lacks the scope");
                return ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "token {} has scope {}; {method} {route} needs {}",
                        token.name, token.scope, policy.scope
                    ),
                )
                .into_response();
            }
            token.name.clone()
        }
    };
    let limit = match policy.body {
        BodySize::Small => Some(SMALL_BODY),
        // `--max-body` is axum's DefaultBodyLimit, layered over the whole router.
        BodySize::Large => None,
    };
    let req = match limit {
        None => req,
        Some(limit) => {
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit as u64) {
                return too_large(limit).into_response();
            }
            req.map(|b| Body::new(http_body_util::Limited::new(b, limit)))
        }
    };
    let resp = if policy.quick {
        match tokio::time::timeout(QUICK_ROUTE_TIMEOUT, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::new(
                ErrorCode::Timeout,
                format!("{method} {route} did not finish within {QUICK_ROUTE_TIMEOUT:?}"),
            )
            .into_response(),
        }
    } else {
        next.run(req).await
    };
    // axum's own body rejection (a handler taking plain `Bytes`) is text: answer the
    // contract's error body instead.
    let resp = if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json(&resp) {
        match limit {
            Some(limit) => too_large(limit),
            None => ApiError::new(
                ErrorCode::TooLarge,
                "the body is larger than ingest accepts",
            ),
        }
        .into_response()
    } else {
        resp
    };
    let status = resp.status().as_u16();
    // Changes are worth a line each; reads (the web UI polls) only at debug.
    if method == Method::GET {
        tracing::debug!(token = %name, %method, route, status, "API request");
    } else {
        tracing::info!(token = %name, %method, route, status, "API request");
    }
    resp
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::TooLarge,
        format!("this route takes a body of at most {limit} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_scope() {
        let get = Method::GET;
        let post = Method::POST;
        let del = Method::DELETE;
        let put = Method::PUT;
        let scope = |m: &Method, r| policy(m, Some(r)).scope;
        for r in [
            route::CAMPAIGNS,
            route::CAMPAIGN,
            route::DEAD,
            route::LIMITS,
            route::SUPPRESSIONS,
        ] {
            assert_eq!(scope(&get, r), Scope::Read, "{r}");
        }
        for r in [
            route::CAMPAIGNS,
            route::PREVIEW,
            route::TEST_SEND,
            route::CAMPAIGN_CONTROL,
        ] {
            assert_eq!(scope(&post, r), Scope::Send, "{r}");
        }
        for (m, r) in [
            (&put, route::LIMIT),
            (&del, route::LIMIT),
            (&del, route::DEAD),
            (&post, route::DEAD_REPLAY),
            (&post, route::SUPPRESSIONS),
            (&del, route::SUPPRESSION),
            (&post, route::SUPPRESSIONS_IMPORT),
            (&post, route::BOUNCES),
            (&post, "/v1/some-future-route"),
        ] {
            assert_eq!(scope(m, r), Scope::Admin, "{m} {r}");
        }
        assert_eq!(policy(&post, None).scope, Scope::Read);
    }

    #[test]
    fn only_lists_take_large_bodies() {
        let large = |m: Method, r| policy(&m, Some(r)).body == BodySize::Large;
        assert!(large(Method::POST, route::CAMPAIGNS));
        assert!(large(Method::POST, route::SUPPRESSIONS_IMPORT));
        assert!(!large(Method::POST, route::CAMPAIGN_CONTROL));
        assert!(!large(Method::PUT, route::LIMIT));
        assert!(!large(Method::POST, route::DEAD_REPLAY));
    }

    #[test]
    fn reads_bearer_tokens_only() {
        let req = |v: &str| {
            Request::builder()
                .header(header::AUTHORIZATION, v)
                .body(Body::empty())
                .unwrap()
        };
        assert_eq!(bearer(&req("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&req("bearer  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&req("Basic abc")), None);
        assert_eq!(bearer(&req("Bearer")), None);
    }
}
