//! The relay URL: `smtp://host:port`, `smtp://user:pass@host:587`, `smtps://host:465`,
//! `smtp://[::1]:2525`, with per-relay options in the query (`tls`, `ca`, `tls_verify`,
//! `max_messages`, `pipelining`). Parsed once at start, so a mistake is a start-up error.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::percent_decode_str;

/// How a relay is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    /// Host name or IP address, without brackets (`::1`, not `[::1]`).
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub user: Option<String>,
    pub password: Option<String>,
    /// `?ca=FILE`: PEM certificate(s) trusted for this relay, beside the system's roots.
    pub ca: Option<PathBuf>,
    /// `?tls_verify=false`: accept any certificate (logged as a warning at start).
    pub tls_verify: bool,
    /// `?max_messages=N`: close a connection after N messages.
    pub max_messages: Option<u32>,
    /// `?pipelining=false`: never pipeline, even where the relay offers it.
    pub pipelining: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    None,
    StartTls,
    Implicit,
}

impl TlsMode {
    fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::StartTls => "starttls",
            TlsMode::Implicit => "implicit",
        }
    }
}

/// Why a relay URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum RelayUrlError {
    #[error("{url}: {source}")]
    Syntax {
        url: String,
        source: url::ParseError,
    },
    #[error("{url}: unknown scheme {scheme:?} (smtp or smtps)")]
    Scheme { url: String, scheme: String },
    #[error("{url}: missing host")]
    NoHost { url: String },
    #[error("{url}: unexpected path, fragment or empty option {part:?}")]
    Extra { url: String, part: String },
    #[error("{url}: unknown option {key:?} (tls, ca, tls_verify, max_messages, pipelining)")]
    UnknownOption { url: String, key: String },
    #[error("{url}: bad value {value:?} for {key} ({expected})")]
    BadValue {
        url: String,
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{url}: {what} needs TLS, but the URL says tls=none")]
    NeedsTls { url: String, what: &'static str },
}

impl FromStr for RelayUrl {
    type Err = RelayUrlError;

    fn from_str(s: &str) -> Result<Self, RelayUrlError> {
        // Errors quote the URL without its password.
        let shown = redact_raw(s);
        let parsed = url::Url::parse(s).map_err(|source| RelayUrlError::Syntax {
            url: shown.clone(),
            source,
        })?;
        let implicit = match parsed.scheme() {
            "smtp" => false,
            "smtps" => true,
            other => {
                return Err(RelayUrlError::Scheme {
                    url: shown,
                    scheme: other.into(),
                })
            }
        };
        // `url` keeps IPv6 literals bracketed in `host_str`; the address itself is wanted.
        let host = match parsed.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Domain(d)) if !d.is_empty() => decode(d),
            _ => return Err(RelayUrlError::NoHost { url: shown }),
        };
        if !matches!(parsed.path(), "" | "/") || parsed.fragment().is_some() {
            return Err(RelayUrlError::Extra {
                url: shown,
                part: parsed.path().to_string(),
            });
        }
        let user = Some(decode(parsed.username())).filter(|u| !u.is_empty());
        let password = parsed.password().map(decode);
        let mut tls = None;
        let mut u = RelayUrl {
            host,
            port: parsed.port().unwrap_or(if implicit { 465 } else { 25 }),
            tls: TlsMode::None,
            user,
            password,
            ca: None,
            tls_verify: true,
            max_messages: None,
            pipelining: true,
        };
        for (key, value) in parsed.query_pairs() {
            let bad = |key, expected| RelayUrlError::BadValue {
                url: shown.clone(),
                key,
                value: value.to_string(),
                expected,
            };
            match key.as_ref() {
                "tls" => {
                    tls = Some(match value.as_ref() {
                        "starttls" if !implicit => TlsMode::StartTls,
                        "none" if !implicit => TlsMode::None,
                        "implicit" => TlsMode::Implicit,
                        _ if implicit => return Err(bad("tls", "smtps:// is always implicit")),
                        _ => return Err(bad("tls", "starttls, implicit or none")),
                    })
                }
                "ca" if !value.is_empty() => u.ca = Some(PathBuf::from(value.as_ref())),
                "tls_verify" => {
                    u.tls_verify = parse_bool(&value).ok_or(bad("tls_verify", "true or false"))?
                }
                "pipelining" => {
                    u.pipelining = parse_bool(&value).ok_or(bad("pipelining", "true or false"))?
                }
                "max_messages" => {
                    u.max_messages = Some(
                        value
                            .parse::<u32>()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or(bad("max_messages", "a number above 0"))?,
                    )
                }
                "" => {
                    return Err(RelayUrlError::Extra {
                        url: shown,
                        part: "&".into(),
                    })
                }
                other => {
                    return Err(RelayUrlError::UnknownOption {
                        url: shown,
                        key: other.into(),
                    })
                }
            }
        }
        // With credentials and no word about TLS, STARTTLS: a password is never sent in clear
        // unless the URL asks for that with `tls=none`.
        u.tls = match (tls, implicit) {
            (Some(t), _) => t,
            (None, true) => TlsMode::Implicit,
            (None, false) if u.user.is_some() => TlsMode::StartTls,
            (None, false) => TlsMode::None,
        };
        if u.tls == TlsMode::None {
            let what = if u.ca.is_some() {
                Some("ca=")
            } else if !u.tls_verify {
                Some("tls_verify=false")
            } else {
                None
            };
            if let Some(what) = what {
                return Err(RelayUrlError::NeedsTls { url: shown, what });
            }
        }
        Ok(u)
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The raw text with anything between `://` and the last `@` of the authority replaced by the
/// user name alone, for error messages about a URL that did not parse.
fn redact_raw(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}{tail}")
        }
        None => s.to_string(),
    }
}

impl RelayUrl {
    /// Whether a password would cross the network in clear (the URL asked for it).
    pub fn plain_auth(&self) -> bool {
        self.user.is_some() && self.tls == TlsMode::None
    }

    /// The URL without its password, for logs and the health map: the same relay always
    /// gives the same text.
    pub fn redacted(&self) -> String {
        let scheme = if self.tls == TlsMode::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut q = Vec::new();
        if self.tls == TlsMode::StartTls || (self.user.is_some() && self.tls == TlsMode::None) {
            q.push(format!("tls={}", self.tls.as_str()));
        }
        if let Some(ca) = &self.ca {
            q.push(format!("ca={}", ca.display()));
        }
        if !self.tls_verify {
            q.push("tls_verify=false".into());
        }
        if let Some(n) = self.max_messages {
            q.push(format!("max_messages={n}"));
        }
        if !self.pipelining {
            q.push("pipelining=false".into());
        }
        let mut out = format!("{scheme}://{user}{host}:{}", self.port);
        if !q.is_empty() {
            let _ = write!(out, "?{}", q.join("&"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_relay_urls() {
        let u: RelayUrl = "smtp://127.0.0.1:2525".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("127.0.0.1", 2525, TlsMode::None)
        );
        let u: RelayUrl = "smtp://me:p%40ss@mail.example.com:587?tls=starttls"
            .parse()
            .unwrap();
        assert_eq!(u.tls, TlsMode::StartTls);
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.redacted(), "smtp://me@mail.example.com:587?tls=starttls");
        let u: RelayUrl = "smtps://mail.example.com".parse().unwrap();
        assert_eq!((u.port, u.tls), (465, TlsMode::Implicit));
        assert!("http://x".parse::<RelayUrl>().is_err());
        assert!("smtp://host:notaport".parse::<RelayUrl>().is_err());
        assert!("smtp://host:25?tls=maybe".parse::<RelayUrl>().is_err());
        assert!("smtp://host:25?color=blue".parse::<RelayUrl>().is_err());
    }

    #[test]
    fn ipv6_literals_yield_the_bare_address() {
        let u: RelayUrl = "smtp://[::1]:2525".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 2525));
        assert_eq!(u.redacted(), "smtp://[::1]:2525");
        let u: RelayUrl = "smtps://[2001:db8::25]".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("2001:db8::25", 465));
    }

    #[test]
    fn credentials_mean_starttls_unless_the_url_says_otherwise() {
        let u: RelayUrl = "smtp://u:p@relay.example.com:587".parse().unwrap();
        assert_eq!(u.tls, TlsMode::StartTls);
        assert!(!u.plain_auth());
        let u: RelayUrl = "smtp://u:p@relay.example.com:25?tls=none".parse().unwrap();
        assert_eq!(u.tls, TlsMode::None);
        assert!(u.plain_auth());
        assert_eq!(u.redacted(), "smtp://u@relay.example.com:25?tls=none");
    }

    #[test]
    fn options_are_parsed_and_checked() {
        let u: RelayUrl =
            "smtp://u:p@relay:587?ca=/etc/jetmail/ca.pem&max_messages=100&pipelining=false"
                .parse()
                .unwrap();
        assert_eq!(
            u.ca.as_deref(),
            Some(std::path::Path::new("/etc/jetmail/ca.pem"))
        );
        assert_eq!(u.max_messages, Some(100));
        assert!(!u.pipelining);
        let u: RelayUrl = "smtps://relay?tls_verify=false".parse().unwrap();
        assert!(!u.tls_verify);
        assert!("smtp://relay?max_messages=0".parse::<RelayUrl>().is_err());
        assert!(
            "smtp://relay?ca=/x.pem".parse::<RelayUrl>().is_err(),
            "ca without TLS"
        );
        assert!("smtps://relay?tls=none".parse::<RelayUrl>().is_err());
    }

    #[test]
    fn errors_never_show_the_password() {
        let e = "smtp://me:secret@host:99999"
            .parse::<RelayUrl>()
            .unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = "smtp://me:secret@host?x=1".parse::<RelayUrl>().unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
