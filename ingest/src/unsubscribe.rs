//! One-click unsubscribe (RFC 8058) on ingest's side: the options that turn it on
//! (`--public-url`, `--unsubscribe-secret-file`, `--unsubscribe-mailto`), the signing key read
//! from its file, the links a campaign record carries, the token every recipient message
//! carries, and what a valid token does: suppress its address as `unsubscribed`.
//!
//! The secret is read from a file and never printed, logged or put in a URL: every ingest
//! instance reads the same file, so any of them verifies any link.

use std::path::PathBuf;
use std::sync::Arc;

use jetmail_common::compliance::{
    Suppression, SuppressionReason, TokenError, UnsubscribeClaim, UnsubscribeKey,
};
use jetmail_common::store::StoreError;
use jetmail_common::topology::Topology;
use jetmail_common::wire::UnsubscribeLinks;

use crate::suppressions::{self, SuppressError};

/// Shortest secret accepted: 256 bits, the HMAC-SHA256 key size.
pub const MIN_SECRET_BYTES: usize = 32;

/// The options of every command that publishes (`submit`, `serve`, `test-send`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UnsubscribeArgs {
    /// Base URL at which ingest's public routes (`/unsubscribe/…`) are reachable by
    /// recipients' mail providers, e.g. `https://mail.example.com`. With it, every mail gets
    /// List-Unsubscribe and List-Unsubscribe-Post headers (needs --unsubscribe-secret-file).
    #[arg(long, env = "JETMAIL_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// File holding the secret that signs unsubscribe links (at least 32 bytes; e.g.
    /// `head -c 32 /dev/urandom | base64 > secret`); every ingest instance needs the same one.
    #[arg(long, env = "JETMAIL_UNSUBSCRIBE_SECRET_FILE")]
    pub unsubscribe_secret_file: Option<PathBuf>,
    /// A mailbox for the `mailto:` form of List-Unsubscribe, e.g. `unsubscribe@example.com`.
    #[arg(long, env = "JETMAIL_UNSUBSCRIBE_MAILTO")]
    pub unsubscribe_mailto: Option<String>,
}

/// The options cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read the unsubscribe secret file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the unsubscribe secret in {path} is {len} bytes: at least {MIN_SECRET_BYTES} are required"
    )]
    TooShort { path: PathBuf, len: usize },
    #[error("--public-url needs --unsubscribe-secret-file (the links must be signed)")]
    NoSecret,
    #[error("--unsubscribe-mailto needs --public-url (RFC 8058 one-click needs the https link)")]
    MailtoWithoutUrl,
    #[error("--public-url {0:?}: expected an absolute http(s) URL without query or fragment")]
    BadUrl(String),
    #[error("--unsubscribe-mailto {0:?} is not an address")]
    BadMailto(String),
}

/// A working one-click unsubscribe: the key, and the links a campaign record carries (none
/// when only the secret is given: `serve` then verifies links without making new ones).
#[derive(Debug, Clone)]
pub struct Unsubscribe {
    pub key: UnsubscribeKey,
    pub links: Option<UnsubscribeLinks>,
}

impl UnsubscribeArgs {
    /// The configured unsubscribe, or `None` when none of the options is given.
    pub fn load(&self) -> Result<Option<Arc<Unsubscribe>>, SetupError> {
        let Some(path) = &self.unsubscribe_secret_file else {
            if self.public_url.is_some() {
                return Err(SetupError::NoSecret);
            }
            if self.unsubscribe_mailto.is_some() {
                return Err(SetupError::MailtoWithoutUrl);
            }
            return Ok(None);
        };
        let raw = std::fs::read(path).map_err(|source| SetupError::Unreadable {
            path: path.clone(),
            source,
        })?;
        // A file written by `echo` or an editor ends with a line break that is not the secret.
        let secret = raw.trim_ascii_end();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SetupError::TooShort {
                path: path.clone(),
                len: secret.len(),
            });
        }
        let links = match &self.public_url {
            Some(u) => Some(UnsubscribeLinks {
                base_url: base_url(u)?,
                mailto: self
                    .unsubscribe_mailto
                    .as_deref()
                    .map(|m| {
                        jetmail_common::address::parse_recipient(m)
                            .map(|r| r.address)
                            .map_err(|_| SetupError::BadMailto(m.to_string()))
                    })
                    .transpose()?,
            }),
            None if self.unsubscribe_mailto.is_some() => return Err(SetupError::MailtoWithoutUrl),
            None => None,
        };
        Ok(Some(Arc::new(Unsubscribe {
            key: UnsubscribeKey::new(secret),
            links,
        })))
    }
}

/// `--public-url` checked and without its trailing slash.
fn base_url(raw: &str) -> Result<String, SetupError> {
    let bad = || SetupError::BadUrl(raw.to_string());
    let u = url::Url::parse(raw.trim()).map_err(|_| bad())?;
    if !matches!(u.scheme(), "http" | "https")
        || u.host_str().is_none()
        || u.query().is_some()
        || u.fragment().is_some()
    {
        return Err(bad());
    }
    Ok(u.as_str().trim_end_matches('/').to_string())
}

impl Unsubscribe {
    /// The token of one recipient of `campaign`.
    pub fn token(&self, campaign: &str, address: &str) -> String {
        self.key.sign(&UnsubscribeClaim {
            campaign: campaign.to_string(),
            address: address.to_string(),
        })
    }
}

/// Why an unsubscribe did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UnsubscribeError {
    /// Forged, altered or truncated: nothing changes.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// This ingest has no secret, so it cannot tell a real link from a forged one.
    #[error("unsubscribe links are not configured on this ingest (--unsubscribe-secret-file)")]
    NotConfigured,
    #[error(transparent)]
    Suppress(#[from] SuppressError),
}

impl From<StoreError> for UnsubscribeError {
    fn from(e: StoreError) -> Self {
        UnsubscribeError::Suppress(e.into())
    }
}

/// Checks `token` and suppresses its address as `unsubscribed` with its campaign. An address
/// already suppressed keeps its entry, and the answer is the same (the click worked).
pub async fn apply(
    topo: &Topology,
    unsubscribe: Option<&Unsubscribe>,
    token: &str,
) -> Result<Suppression, UnsubscribeError> {
    let claim = verify(unsubscribe, token)?;
    let entry = suppressions::entry(
        &claim.address,
        SuppressionReason::Unsubscribed,
        Some(claim.campaign),
        Some("one-click unsubscribe".into()),
    )?;
    suppressions::insert(topo, &entry).await?;
    Ok(entry)
}

/// The claim of a valid token.
pub fn verify(
    unsubscribe: Option<&Unsubscribe>,
    token: &str,
) -> Result<UnsubscribeClaim, UnsubscribeError> {
    let u = unsubscribe.ok_or(UnsubscribeError::NotConfigured)?;
    Ok(u.key.verify(token)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(secret: Option<&[u8]>, url: Option<&str>) -> (UnsubscribeArgs, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        if let Some(s) = secret {
            std::fs::write(&path, s).unwrap();
        }
        let a = UnsubscribeArgs {
            public_url: url.map(str::to_string),
            unsubscribe_secret_file: secret.map(|_| path),
            unsubscribe_mailto: None,
        };
        (a, dir)
    }

    #[test]
    fn options_are_checked() {
        let long = [b'k'; 32];
        assert!(args(None, None).0.load().unwrap().is_none());
        assert!(matches!(
            args(None, Some("https://x.example")).0.load(),
            Err(SetupError::NoSecret)
        ));
        assert!(matches!(
            args(Some(b"short\n"), Some("https://x.example")).0.load(),
            Err(SetupError::TooShort { len: 5, .. })
        ));
        for bad in ["x.example", "ftp://x.example", "https://x.example/?a=1"] {
            assert!(matches!(
                args(Some(&long), Some(bad)).0.load(),
                Err(SetupError::BadUrl(_))
            ));
        }
        let (a, _dir) = args(Some(&long), Some("https://mail.example.com/jm/"));
        let u = a.load().unwrap().unwrap();
        assert_eq!(
            u.links.as_ref().unwrap().base_url,
            "https://mail.example.com/jm"
        );
        let t = u.token("c1", "ann@example.com");
        assert_eq!(verify(Some(&u), &t).unwrap().address, "ann@example.com");
        // The secret appears in no Debug output.
        assert!(!format!("{u:?}").contains("kkkk"));
    }
}
