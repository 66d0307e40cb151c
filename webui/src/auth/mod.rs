//! Access: a shared password, server-side sessions ([`sessions`]) behind an HttpOnly
//! SameSite=Strict cookie, and a CSRF token per session that every form carries. This module
//! is the HTTP side: the session cookie, the middleware that resolves it, login and logout.

mod sessions;
mod throttle;

pub use sessions::{
    random_token, secrets_eq, CurrentSession, Flash, Sessions, StashedUpload, MAX_SESSIONS,
    SESSION_IDLE,
};
pub use throttle::{Attempt, LoginLimits, LoginThrottle};

use std::net::SocketAddr;
use std::time::Instant;

use std::time::Duration;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use cookie::{Cookie, SameSite};
use jetmail_common::api;
use minijinja::context;
use serde::Deserialize;

use crate::{Access, AppState};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "jetmail_session";
/// Name of the hidden CSRF field in every form.
pub const CSRF_FIELD: &str = "csrf";
/// A wrong password costs this long, which slows guessing without locking anyone out.
pub const LOGIN_FAILURE_DELAY: Duration = Duration::from_millis(300);

/// Put in a response's extensions to make the middleware set a new session cookie (login).
#[derive(Debug, Clone)]
struct SetSessionCookie(String);
/// Put in a response's extensions to make the middleware clear the cookie (logout).
#[derive(Debug, Clone)]
struct ClearSessionCookie;

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// `Set-Cookie` for the session `id`: script cannot read it, other sites' requests do not
/// carry it, and with `secure` (served behind TLS) it never travels in clear. An empty `id`
/// clears the cookie.
fn session_cookie(id: &str, secure: bool) -> HeaderValue {
    let mut c = Cookie::build((SESSION_COOKIE, id.to_string()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure);
    if id.is_empty() {
        c = c.max_age(cookie::time::Duration::ZERO);
    }
    HeaderValue::from_str(&c.build().to_string())
        .expect("a session id is hex, so the cookie is ASCII")
}

/// Resolves (or starts) the session of every page request and sets its cookie.
pub async fn with_session(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let cookie = cookie_value(req.headers(), SESSION_COOKIE);
    let (current, fresh) = app.sessions.resolve(cookie.as_deref(), app.open_access());
    let id = current.id.clone();
    req.extensions_mut().insert(current);
    let mut resp = next.run(req).await;
    let secure = app.config.secure_cookie;
    let new_id = resp.extensions_mut().remove::<SetSessionCookie>();
    let clear = resp.extensions_mut().remove::<ClearSessionCookie>();
    let value = match (new_id, clear) {
        (_, Some(_)) => Some(session_cookie("", secure)),
        (Some(SetSessionCookie(new)), None) => Some(session_cookie(&new, secure)),
        (None, None) if fresh => Some(session_cookie(&id, secure)),
        _ => None,
    };
    if let Some(v) = value {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// Sends anyone not logged in to the login form (pages) or answers 401 (everything else).
pub async fn require_login(
    Extension(session): Extension<CurrentSession>,
    req: Request,
    next: Next,
) -> Response {
    if session.authenticated {
        return next.run(req).await;
    }
    let path = req.uri().path();
    if req.method() == Method::GET && !path.starts_with("/events/") {
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let to = format!("/login?next={}", api::path::encode(target));
        return Redirect::to(&to).into_response();
    }
    (StatusCode::UNAUTHORIZED, "log in first").into_response()
}

/// Checks a form's CSRF token against the session's.
pub fn csrf_ok(session: &CurrentSession, token: Option<&str>) -> bool {
    token.is_some_and(|t| secrets_eq(t, &session.csrf))
}

/// The answer to a form whose CSRF token is missing or wrong.
pub fn csrf_refusal(app: &AppState, session: &CurrentSession) -> Response {
    crate::pages::error_page(
        app,
        session,
        StatusCode::FORBIDDEN,
        "Form refused",
        "This form's security token is missing or out of date (it may come from another site, or from before a restart). Reload the page and try again.",
    )
}

/// Only same-site paths are followed after login (no open redirect). Browsers drop tabs and
/// line breaks from a URL and read `\` as `/`, so `/<tab>/evil.example` is `//evil.example`:
/// a target with any of those, or starting `//`, is replaced by the campaigns page.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || c == '\\') =>
        {
            n.to_string()
        }
        _ => "/campaigns".to_string(),
    }
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn login_form(
    app: &AppState,
    session: &CurrentSession,
    next: &str,
    error: Option<&str>,
) -> axum::response::Html<String> {
    app.templates.page(
        app,
        session,
        None,
        "login.html",
        "login",
        context! { next => next, error => error },
    )
}

/// `GET /login`.
pub async fn login_page(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if session.authenticated {
        return Redirect::to(&next).into_response();
    }
    login_form(&app, &session, &next, None).into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login`: checks the CSRF token (no login CSRF), the throttle, then the password.
pub async fn login_submit(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<LoginForm>,
) -> Response {
    if !csrf_ok(&session, form.csrf.as_deref()) {
        return csrf_refusal(&app, &session);
    }
    let next = safe_next(form.next.as_deref());
    let client = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    if let Attempt::Refused { retry_after } = app.login_throttle.check(client, Instant::now()) {
        tracing::warn!(client = ?client, "login attempt refused: too many failures");
        let secs = retry_after.as_secs().max(1);
        let msg = format!("Too many failed logins. Try again in {secs} s.");
        let page = login_form(&app, &session, &next, Some(&msg));
        let mut resp = (StatusCode::TOO_MANY_REQUESTS, page).into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
    let ok = match &app.config.access {
        Access::Open => true,
        Access::Password(p) => secrets_eq(p, &form.password),
    };
    if !ok {
        app.login_throttle.failed(client, Instant::now());
        tracing::warn!(client = ?client, "failed login");
        tokio::time::sleep(LOGIN_FAILURE_DELAY).await;
        let page = login_form(&app, &session, &next, Some("Wrong password."));
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    app.login_throttle.succeeded(client);
    let new_id = app.sessions.login(&session.id);
    let mut resp = Redirect::to(&next).into_response();
    resp.extensions_mut().insert(SetSessionCookie(new_id));
    resp
}

/// A form whose only field is the CSRF token (buttons that act).
#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: Option<String>,
}

impl CsrfOnly {
    pub fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// `POST /logout`.
pub async fn logout(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if !csrf_ok(&session, form.csrf.as_deref()) {
        return csrf_refusal(&app, &session);
    }
    app.sessions.remove(&session.id);
    let mut resp = Redirect::to("/login").into_response();
    resp.extensions_mut().insert(ClearSessionCookie);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_site() {
        assert_eq!(safe_next(Some("/senders")), "/senders");
        assert_eq!(safe_next(Some("//evil.example")), "/campaigns");
        for evil in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "/\\evil.example",
            "/\\/evil.example",
            "\t//evil.example",
            "/ /evil.example",
        ] {
            assert_eq!(safe_next(Some(evil)), "/campaigns", "{evil:?}");
        }
        assert_eq!(safe_next(Some("/campaigns/c1?x=1")), "/campaigns/c1?x=1");
        assert_eq!(safe_next(Some("https://evil.example")), "/campaigns");
        assert_eq!(safe_next(None), "/campaigns");
    }

    #[test]
    fn reads_the_session_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=\"2\""));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("c=3;jetmail_session=abc ; d=4"),
        );
        assert_eq!(cookie_value(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie_value(&h, "missing"), None);
    }

    #[test]
    fn session_cookies_are_strict_http_only_and_secure_behind_tls() {
        let plain = session_cookie("abc", false);
        let c = Cookie::parse(plain.to_str().unwrap()).unwrap();
        assert_eq!((c.name(), c.value()), (SESSION_COOKIE, "abc"));
        assert_eq!(c.http_only(), Some(true));
        assert_eq!(c.same_site(), Some(SameSite::Strict));
        assert_eq!(c.path(), Some("/"));
        assert_ne!(c.secure(), Some(true));
        assert_eq!(c.max_age(), None);
        let tls = Cookie::parse(session_cookie("abc", true).to_str().unwrap().to_string()).unwrap();
        assert_eq!(tls.secure(), Some(true));
        let cleared =
            Cookie::parse(session_cookie("", true).to_str().unwrap().to_string()).unwrap();
        assert_eq!(cleared.value(), "");
        assert_eq!(cleared.max_age(), Some(cookie::time::Duration::ZERO));
    }
}
