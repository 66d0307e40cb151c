//! The web UI's own API token for ingest (`--ingest-token-file`): read once at start, sent as
//! `Authorization: Bearer …` on every call, and never shown: not by `Debug`, not in an error,
//! not on a page.

use std::fmt;
use std::path::Path;

use axum::http::StatusCode;

/// A bearer token; its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct IngestToken(String);

impl fmt::Debug for IngestToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IngestToken(<hidden>)")
    }
}

/// The token file could not be used. No variant holds the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the ingest token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the ingest token file {0} holds no token on its first line")]
    Empty(String),
    #[error("the ingest token file {0} holds more than one word on its first line (only the token goes there)")]
    Shape(String),
}

impl IngestToken {
    /// The first line of `path`, trimmed.
    pub fn read(path: &Path) -> Result<IngestToken, TokenFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: shown.clone(),
            source,
        })?;
        let line = text.lines().next().unwrap_or_default().trim();
        if line.is_empty() {
            return Err(TokenFileError::Empty(shown));
        }
        if line.split_whitespace().count() != 1 {
            return Err(TokenFileError::Shape(shown));
        }
        Ok(IngestToken(line.to_string()))
    }

    /// A token from its text (tests, and callers that hold it already).
    pub fn new(token: impl Into<String>) -> IngestToken {
        IngestToken(token.into())
    }

    /// The header value: `Bearer <token>`.
    pub(crate) fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

/// What a person is told when ingest refuses the web UI's token: what to fix, never the token.
pub(crate) fn refusal_text(status: StatusCode) -> &'static str {
    if status == StatusCode::FORBIDDEN {
        "ingest refused this action: the web UI's API token lacks the scope it needs (403). \
         An operator should give the web UI's token `admin` in ingest's --api-tokens-file."
    } else {
        "ingest refused the web UI's credentials (401): the token in --ingest-token-file is \
         missing or not in ingest's --api-tokens-file. An operator must fix the configuration."
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_line_and_never_shows_it() {
        let dir = tempfile_dir();
        let path = dir.join("token");
        std::fs::write(&path, "  s3cret-token-0123456789 \nignored\n").unwrap();
        let t = IngestToken::read(&path).unwrap();
        assert_eq!(t.header_value(), "Bearer s3cret-token-0123456789");
        assert!(!format!("{t:?}").contains("s3cret"));
        std::fs::write(&path, "two words-0123456789\n").unwrap();
        let e = IngestToken::read(&path).unwrap_err().to_string();
        assert!(!e.contains("words-0123456789"), "{e}");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            IngestToken::read(&path),
            Err(TokenFileError::Empty(_))
        ));
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("webui-token-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
