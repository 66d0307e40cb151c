//! The API's bearer tokens, read from `--api-tokens-file`: one `name token [scopes]` a line,
//! `#` comments and blank lines allowed. A token is kept only as its SHA-256 digest and
//! checked against every known one in constant time (`subtle`), so neither the answer's
//! timing nor a `Debug` print tells anything about it. Errors name the line, never its words:
//! a token typed in the wrong place must not end up in a log.
//!
//! Scopes nest: `read` < `send` < `admin`, and a token has the highest one its line lists.
//! A line without scopes gets `read` only: a token that may send mail says so.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted: 16 characters of anything is the least a guess should face.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a token may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every `GET`: campaigns, dead letters, limits, suppressions.
    Read,
    /// Campaigns: submit, preview, test sends, pause/resume/cancel/reschedule.
    Send,
    /// What touches the whole fleet or loses data: sending limits, dead-letter replay and
    /// purge, the suppression list (add, remove, import, bounces).
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Send, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Send => "send",
            Scope::Admin => "admin",
        }
    }

    fn parse(word: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == word)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is wrong with one line of the token file. No variant holds the line's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("expected `name token [scopes]`")]
    Shape,
    #[error("the token is shorter than {MIN_TOKEN_LEN} characters")]
    TooShort,
    #[error("the scopes are not a comma-separated list of read, send, admin")]
    Scopes,
    #[error("the name is already used on line {0}")]
    DuplicateName(usize),
    #[error("the token is already used on line {0}")]
    DuplicateToken(usize),
}

/// The token file could not be used; `serve` does not start (or a reload keeps the old set).
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the API token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("API token file {path}, line {line}: {error}")]
    Line {
        path: PathBuf,
        line: usize,
        error: LineError,
    },
    #[error("API token file {0} has no token")]
    Empty(PathBuf),
}

/// One known token: its name (what logs show), its scope, and the digest it is checked by.
#[derive(Clone)]
pub struct ApiToken {
    pub name: String,
    pub scope: Scope,
    digest: [u8; 32],
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Every token of one version of the file.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    tokens: Vec<ApiToken>,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl TokenSet {
    /// Parses the file's text; errors carry the line number (1-based).
    pub fn parse(text: &str) -> Result<TokenSet, (usize, LineError)> {
        let mut tokens: Vec<(usize, ApiToken)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let (name, secret, scopes) = match words.as_slice() {
                [name, secret] => (*name, *secret, None),
                [name, secret, scopes] => (*name, *secret, Some(*scopes)),
                _ => return Err((n, LineError::Shape)),
            };
            if secret.len() < MIN_TOKEN_LEN {
                return Err((n, LineError::TooShort));
            }
            let scope = match scopes {
                None => Scope::Read,
                Some(list) => list
                    .split(',')
                    .map(|w| Scope::parse(w.trim()))
                    .collect::<Option<Vec<_>>>()
                    .and_then(|v| v.into_iter().max())
                    .ok_or((n, LineError::Scopes))?,
            };
            let token = ApiToken {
                name: name.to_string(),
                scope,
                digest: digest(secret.as_bytes()),
            };
            for (other_line, other) in &tokens {
                if other.name == token.name {
                    return Err((n, LineError::DuplicateName(*other_line)));
                }
                if other.digest == token.digest {
                    return Err((n, LineError::DuplicateToken(*other_line)));
                }
            }
            tokens.push((n, token));
        }
        Ok(TokenSet {
            tokens: tokens.into_iter().map(|(_, t)| t).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token `presented` is, if any. Every known token is compared, in constant time,
    /// whatever matched first.
    pub fn verify(&self, presented: &[u8]) -> Option<&ApiToken> {
        let d = digest(presented);
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.digest.ct_eq(&d)) {
                found = Some(t);
            }
        }
        found
    }
}

/// The token file and its current contents; [`TokenStore::reload`] swaps in a new version
/// (SIGHUP) or keeps the old one if the new one is broken.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    current: RwLock<Arc<TokenSet>>,
}

impl TokenStore {
    /// A store holding `set`, as if read from `path` (tests; a closed default).
    pub fn new(path: PathBuf, set: TokenSet) -> TokenStore {
        TokenStore {
            path,
            current: RwLock::new(Arc::new(set)),
        }
    }

    /// Reads and checks the file: a broken line or an empty file is an error.
    pub fn load(path: &Path) -> Result<TokenStore, TokenFileError> {
        let set = read_file(path)?;
        Ok(TokenStore {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(set)),
        })
    }

    /// The tokens in force.
    pub fn current(&self) -> Arc<TokenSet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the file again; on an error the tokens in force stay.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let set = read_file(&self.path)?;
        let n = set.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(n)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reloads `store` on every SIGHUP until `shutdown`: how a token is rotated without a restart.
/// A file that does not parse leaves the tokens in force and is logged as an error.
pub async fn reload_on_sighup(
    store: Arc<TokenStore>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            got = hup.recv() => if got.is_none() { return Ok(()) },
            _ = shutdown.cancelled() => return Ok(()),
        }
        match store.reload() {
            Ok(n) => {
                tracing::info!(tokens = n, file = %store.path().display(), "API tokens reloaded")
            }
            Err(e) => {
                tracing::error!(error = %e, "API tokens not reloaded; the previous ones stay in force")
            }
        }
    }
}

fn read_file(path: &Path) -> Result<TokenSet, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let set = TokenSet::parse(&text).map_err(|(line, error)| TokenFileError::Line {
        path: path.to_path_buf(),
        line,
        error,
    })?;
    if set.is_empty() {
        return Err(TokenFileError::Empty(path.to_path_buf()));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn reads_names_tokens_and_scopes() {
        let text = format!("# ops\n\nwebui {A} read,send,admin\n  ci {B}  \n");
        let set = TokenSet::parse(&text).unwrap();
        assert_eq!(set.len(), 2);
        let w = set.verify(A.as_bytes()).unwrap();
        assert_eq!((w.name.as_str(), w.scope), ("webui", Scope::Admin));
        let c = set.verify(B.as_bytes()).unwrap();
        assert_eq!(
            (c.name.as_str(), c.scope),
            ("ci", Scope::Read),
            "read by default"
        );
        assert!(set.verify(b"cccccccccccccccccccccccc").is_none());
        assert!(set.verify(&A.as_bytes()[1..]).is_none());
        assert!(set.verify(b"").is_none());
    }

    #[test]
    fn errors_name_the_line_and_never_the_token() {
        let cases = [
            (format!("ok {A}\n{B}\n"), 2, LineError::Shape),
            (format!("a {A} send extra\n"), 1, LineError::Shape),
            ("a shorttoken\n".to_string(), 1, LineError::TooShort),
            (format!("a {A} send,wrte\n"), 1, LineError::Scopes),
            (format!("a {A}\na {B}\n"), 2, LineError::DuplicateName(1)),
            (format!("a {A}\nb {A}\n"), 2, LineError::DuplicateToken(1)),
        ];
        for (text, line, error) in cases {
            let got = TokenSet::parse(&text).unwrap_err();
            assert_eq!(got, (line, error.clone()), "{text:?}");
            let shown = TokenFileError::Line {
                path: "tokens".into(),
                line,
                error,
            }
            .to_string();
            assert!(!shown.contains(A) && !shown.contains(B), "{shown}");
            assert!(shown.contains(&format!("line {line}")), "{shown}");
        }
    }

    #[test]
    fn debug_never_shows_the_digest() {
        let set = TokenSet::parse(&format!("webui {A} send")).unwrap();
        let shown = format!("{set:?}");
        assert!(
            shown.contains("webui") && !shown.contains("digest"),
            "{shown}"
        );
    }

    #[test]
    fn a_broken_reload_keeps_the_tokens_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, format!("a {A} admin\n")).unwrap();
        let store = TokenStore::load(&path).unwrap();
        std::fs::write(&path, "broken\n").unwrap();
        assert!(matches!(
            store.reload(),
            Err(TokenFileError::Line { line: 1, .. })
        ));
        assert!(store.current().verify(A.as_bytes()).is_some());
        std::fs::write(&path, format!("b {B}\n")).unwrap();
        assert_eq!(store.reload().unwrap(), 1);
        assert!(store.current().verify(A.as_bytes()).is_none());
        assert!(store.current().verify(B.as_bytes()).is_some());
        std::fs::write(&path, "# nobody\n").unwrap();
        assert!(matches!(store.reload(), Err(TokenFileError::Empty(_))));
    }
}
