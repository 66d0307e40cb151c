//! Server-side sessions: who is logged in, the CSRF token of each session, and what a
//! session carries from one page to the next (a message, an uploaded recipients file, the
//! previewed HTML). They live in this process's memory: a restart logs everyone out, which is
//! acceptable for an operator's tool and keeps secrets out of the broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use subtle::ConstantTimeEq;

/// A session unused for this long is forgotten.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept; anonymous ones are dropped first when it is reached.
pub const MAX_SESSIONS: usize = 10_000;

/// `n` random bytes as lower-case hex.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf).expect("the operating system has no random source");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares secrets (tokens, the password) without leaking where the first difference is.
/// A difference in length is answered at once: tokens all have one length, and for the
/// password, timing can tell its length at most, one [`super::LOGIN_FAILURE_DELAY`] a try.
pub fn secrets_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
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
    pub(super) fn resolve(&self, id: Option<&str>, open: bool) -> (CurrentSession, bool) {
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
    pub(super) fn login(&self, old: &str) -> String {
        self.inner.lock().unwrap().remove(old);
        let (id, s) = Self::new_session(true);
        self.insert(id.clone(), s);
        id
    }

    pub(super) fn remove(&self, id: &str) {
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
            .filter(|u| secrets_eq(&u.token, token))
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
    fn secrets_compare_whole() {
        assert!(secrets_eq("abc", "abc"));
        assert!(!secrets_eq("abc", "abd"));
        assert!(!secrets_eq("abc", "ab"));
        assert!(!secrets_eq("", "a"));
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
