//! Access: a shared password, server-side sessions behind an HttpOnly SameSite=Strict cookie,
//! and a CSRF token per session that every form carries. Sessions live in this process's
//! memory: a restart logs everyone out, which is acceptable for an operator's tool and keeps
//! secrets out of the broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use bytes::Bytes;
use minijinja::context;
use serde::Deserialize;

use crate::{Access, AppState};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "jetmail_session";
/// Name of the hidden CSRF field in every form.
pub const CSRF_FIELD: &str = "csrf";
/// A session unused for this long is forgotten.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept; anonymous ones are dropped first when it is reached.
pub const MAX_SESSIONS: usize = 10_000;
/// A wrong password costs this long, which slows guessing without locking anyone out.
pub const LOGIN_FAILURE_DELAY: Duration = Duration::from_millis(300);

/// `n` random bytes as lower-case hex.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf).expect("the operating system has no random source");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without leaking where the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A message shown once, on the next page rendered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Flash {
    /// `ok` or `error`.
    pub kind: &'static str,
    pub message: String,
    /// Extra lines (errors of a bulk action, rejected rows).
    pub lines: Vec<String>,
}

impl Flash {
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            kind: "ok",
            message: message.into(),
            lines: Vec::new(),
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            kind: "error",
            message: message.into(),
            lines: Vec::new(),
        }
    }
}

/// A recipients file uploaded with a preview, kept so that "Send" after "Preview" does not
/// make the person pick the file again (browsers never refill a file input).
#[derive(Debug, Clone)]
pub struct StashedUpload {
    pub token: String,
    pub filename: String,
    pub bytes: Bytes,
}

#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    authenticated: bool,
    last_seen: Instant,
    flash: Option<Flash>,
    upload: Option<StashedUpload>,
    preview_html: Option<String>,
}

/// The session of the current request, as handlers see it.
#[derive(Debug, Clone)]
pub struct CurrentSession {
    pub id: String,
    pub csrf: String,
    pub authenticated: bool,
}

/// Put in a response's extensions to make the middleware set a new session cookie (login).
#[derive(Debug, Clone)]
struct SetSessionCookie(String);
/// Put in a response's extensions to make the middleware clear the cookie (logout).
#[derive(Debug, Clone)]
struct ClearSessionCookie;

/// Every session of this process.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Session>>>,
}

impl Sessions {
    fn new_session(authenticated: bool) -> (String, Session) {
        (
            random_token(32),
            Session {
                csrf: random_token(32),
                authenticated,
                last_seen: Instant::now(),
                flash: None,
                upload: None,
                preview_html: None,
            },
        )
    }

    fn insert(&self, id: String, s: Session) {
        let mut map = self.inner.lock().unwrap();
        let now = Instant::now();
        map.retain(|_, s| now.duration_since(s.last_seen) < SESSION_IDLE);
        if map.len() >= MAX_SESSIONS {
            // Anonymous sessions are cheap to make, so they go first: a flood of them cannot
            // push out the people who logged in.
            let mut victims: Vec<(bool, Instant, String)> = map
                .iter()
                .map(|(k, s)| (s.authenticated, s.last_seen, k.clone()))
                .collect();
            victims.sort();
            for (_, _, k) in victims.into_iter().take(map.len() + 1 - MAX_SESSIONS) {
                map.remove(&k);
            }
        }
        map.insert(id, s);
    }

    /// Finds the session of `id`, or makes a new one (authenticated when access is open).
    fn resolve(&self, id: Option<&str>, open: bool) -> (CurrentSession, bool) {
        if let Some(id) = id {
            let mut map = self.inner.lock().unwrap();
            if let Some(s) = map.get_mut(id) {
                if s.last_seen.elapsed() < SESSION_IDLE {
                    s.last_seen = Instant::now();
                    return (
                        CurrentSession {
                            id: id.to_string(),
                            csrf: s.csrf.clone(),
                            authenticated: s.authenticated || open,
                        },
                        false,
                    );
                }
                map.remove(id);
            }
        }
        let (id, s) = Self::new_session(open);
        let current = CurrentSession {
            id: id.clone(),
            csrf: s.csrf.clone(),
            authenticated: s.authenticated,
        };
        self.insert(id, s);
        (current, true)
    }

    /// Replaces session `old` with a fresh authenticated one (a new id after login, so an id
    /// planted before login is worth nothing).
    fn login(&self, old: &str) -> String {
        self.inner.lock().unwrap().remove(old);
        let (id, s) = Self::new_session(true);
        self.insert(id.clone(), s);
        id
    }

    fn remove(&self, id: &str) {
        self.inner.lock().unwrap().remove(id);
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Session) -> T) -> Option<T> {
        self.inner.lock().unwrap().get_mut(id).map(f)
    }

    /// Leaves a message for the next page this session sees.
    pub fn set_flash(&self, id: &str, flash: Flash) {
        self.with(id, |s| s.flash = Some(flash));
    }

    /// Takes the pending message, if any.
    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.with(id, |s| s.flash.take()).flatten()
    }

    pub fn stash_upload(&self, id: &str, upload: StashedUpload) {
        self.with(id, |s| s.upload = Some(upload));
    }

    /// The stashed upload if its token matches.
    pub fn stashed_upload(&self, id: &str, token: &str) -> Option<StashedUpload> {
        self.with(id, |s| s.upload.clone())
            .flatten()
            .filter(|u| constant_time_eq(u.token.as_bytes(), token.as_bytes()))
    }

    pub fn clear_upload(&self, id: &str) {
        self.with(id, |s| s.upload = None);
    }

    pub fn set_preview_html(&self, id: &str, html: Option<String>) {
        self.with(id, |s| s.preview_html = html);
    }

    pub fn preview_html(&self, id: &str) -> Option<String> {
        self.with(id, |s| s.preview_html.clone()).flatten()
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn session_cookie(id: &str, secure: bool, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("a session cookie is ASCII")
}

/// Resolves (or starts) the session of every page request and sets its cookie.
pub async fn with_session(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let cookie = cookie_value(req.headers(), SESSION_COOKIE).map(str::to_string);
    let (current, fresh) = app.sessions.resolve(cookie.as_deref(), app.open_access());
    let id = current.id.clone();
    req.extensions_mut().insert(current);
    let mut resp = next.run(req).await;
    let secure = app.config.secure_cookie;
    let new_id = resp.extensions_mut().remove::<SetSessionCookie>();
    let clear = resp.extensions_mut().remove::<ClearSessionCookie>();
    let value = match (new_id, clear) {
        (_, Some(_)) => Some(session_cookie("", secure, Some(0))),
        (Some(SetSessionCookie(new)), None) => Some(session_cookie(&new, secure, None)),
        (None, None) if fresh => Some(session_cookie(&id, secure, None)),
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
        let to = format!("/login?next={}", crate::ingest::encode_component(target));
        return Redirect::to(&to).into_response();
    }
    (StatusCode::UNAUTHORIZED, "log in first").into_response()
}

/// Checks a form's CSRF token against the session's.
pub fn csrf_ok(session: &CurrentSession, token: Option<&str>) -> bool {
    token.is_some_and(|t| constant_time_eq(t.as_bytes(), session.csrf.as_bytes()))
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

/// Only same-site paths are followed after login (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") => {
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

/// `POST /login`: checks the CSRF token (no login CSRF), then the password.
pub async fn login_submit(
    State(app): State<AppState>,
    Extension(session): Extension<CurrentSession>,
    Form(form): Form<LoginForm>,
) -> Response {
    if !csrf_ok(&session, form.csrf.as_deref()) {
        return csrf_refusal(&app, &session);
    }
    let next = safe_next(form.next.as_deref());
    let ok = match &app.config.access {
        Access::Open => true,
        Access::Password(p) => constant_time_eq(p.as_bytes(), form.password.as_bytes()),
    };
    if !ok {
        tracing::warn!("failed login");
        tokio::time::sleep(LOGIN_FAILURE_DELAY).await;
        let page = login_form(&app, &session, &next, Some("Wrong password."));
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
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
    fn tokens_are_random_hex() {
        let a = random_token(16);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_token(16));
    }

    #[test]
    fn next_stays_on_site() {
        assert_eq!(safe_next(Some("/senders")), "/senders");
        assert_eq!(safe_next(Some("//evil.example")), "/campaigns");
        assert_eq!(safe_next(Some("https://evil.example")), "/campaigns");
        assert_eq!(safe_next(None), "/campaigns");
    }

    #[test]
    fn reads_the_session_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; jetmail_session=abc; b=2"),
        );
        assert_eq!(cookie_value(&h, SESSION_COOKIE), Some("abc"));
    }

    #[test]
    fn anonymous_sessions_are_evicted_first() {
        let s = Sessions::default();
        let (id, mut sess) = Sessions::new_session(true);
        sess.last_seen = Instant::now() - Duration::from_secs(60);
        s.insert(id.clone(), sess);
        for _ in 0..MAX_SESSIONS + 10 {
            let (i, a) = Sessions::new_session(false);
            s.insert(i, a);
        }
        assert!(s.inner.lock().unwrap().len() <= MAX_SESSIONS);
        assert!(s.inner.lock().unwrap().contains_key(&id));
    }
}
