//! How every service reaches NATS: server URLs, credentials (a user with a password file, or a
//! `.creds` file) and TLS. A credential never leaves this module in printable form: URLs are
//! stripped of their `user:password@` before the client (which logs server URLs at debug
//! level) sees them, errors name files and URLs without secrets, and [`NatsArgs`]'s `Debug` is
//! written by hand.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions, ServerAddr};

/// How often a service pings its server. A server cut off by a partition sends no reset: the
/// client only notices when pings go unanswered (two missed, then it reconnects to another
/// node), which async-nats' default of 60 s made about three minutes in the compose partition
/// test; at 10 s it is well under a minute, for one small message per connection every 10 s.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);

/// How to reach NATS. Flattened into every binary's arguments.
#[derive(Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated for a cluster; `tls://host:4222` for TLS. A
    /// `user:password@` in a URL is taken out and used as the credentials, but a password in
    /// a URL can be seen in the process list: prefer --nats-user with --nats-password-file
    #[arg(
        long,
        global = true,
        env = "JETMAIL_NATS_URL",
        hide_env_values = true,
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// NATS user name (nats.conf has one per service: ingest, sender, monitor, webui)
    #[arg(
        long,
        global = true,
        env = "JETMAIL_NATS_USER",
        requires = "nats_password_file",
        conflicts_with = "nats_creds"
    )]
    pub nats_user: Option<String>,
    /// File holding the --nats-user's password (its first line)
    #[arg(
        long,
        global = true,
        env = "JETMAIL_NATS_PASSWORD_FILE",
        requires = "nats_user"
    )]
    pub nats_password_file: Option<PathBuf>,
    /// NATS credentials file (user JWT and NKey seed), for servers run in operator mode
    #[arg(long, global = true, env = "JETMAIL_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// PEM file of the CA that signed the NATS server's certificate. Given, TLS is required
    /// even with a `nats://` URL
    #[arg(long, global = true, env = "JETMAIL_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    #[command(flatten)]
    pub topology: super::TopologyArgs,
}

/// Never prints a password: URLs are shown without their credentials, files by path only.
impl fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsArgs")
            .field("nats_url", &redact_urls(&self.nats_url))
            .field("nats_user", &self.nats_user)
            .field("nats_password_file", &self.nats_password_file)
            .field("nats_creds", &self.nats_creds)
            .field("nats_tls_ca", &self.nats_tls_ca)
            .field("topology", &self.topology)
            .finish()
    }
}

/// A password or token: `Debug` shows `***`, and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The credentials a connection presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Anonymous: only for a server without users (the test harness, a laptop).
    None,
    UserPassword {
        user: String,
        password: Secret,
    },
    /// A URL with a user name and no password: NATS reads it as a token.
    Token(Secret),
    /// A `.creds` file (JWT and NKey seed), read when connecting.
    CredsFile(PathBuf),
}

/// Where and how to connect, resolved from [`NatsArgs`]: the URLs carry no credentials.
#[derive(Debug, Clone)]
pub struct NatsTarget {
    pub servers: Vec<ServerAddr>,
    pub credentials: Credentials,
    pub tls_ca: Option<PathBuf>,
}

/// Why the NATS options cannot be used. No variant carries a password.
#[derive(Debug, thiserror::Error)]
pub enum NatsConfigError {
    #[error("NATS URL {url} is invalid: {source}")]
    BadUrl {
        /// The URL with anything between `://` and `@` replaced by `***`.
        url: String,
        source: std::io::Error,
    },
    #[error("no NATS URL given")]
    NoUrl,
    #[error(
        "NATS URLs {first} and {other} carry different credentials: give them once, with \
         --nats-user and --nats-password-file"
    )]
    UrlCredentialsDiffer { first: String, other: String },
    #[error(
        "NATS URL {url} carries credentials and --{flag} is given too: keep one (prefer \
         --nats-user with --nats-password-file)"
    )]
    TwoCredentials { url: String, flag: &'static str },
    #[error("reading the NATS password file {}: {source}", path.display())]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the NATS password file {} is empty", path.display())]
    EmptyPasswordFile { path: PathBuf },
    #[error("reading the NATS credentials file {}: {source}", path.display())]
    CredsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the NATS TLS CA file {}: {source}", path.display())]
    TlsCa {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why a service could not connect. Only the errors that waiting cannot fix end up here: an
/// unreachable server is waited for.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Config(#[from] NatsConfigError),
    #[error(
        "NATS at {urls} refused the credentials{}: {source}",
        user.as_deref().map(|u| format!(" of user {u}")).unwrap_or_default()
    )]
    Refused {
        urls: String,
        user: Option<String>,
        source: async_nats::ConnectError,
    },
    #[error("TLS with NATS at {urls} failed (is --nats-tls-ca the server's CA?): {source}")]
    Tls {
        urls: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot connect to NATS at {urls}: {source}")]
    Connect {
        urls: String,
        source: async_nats::ConnectError,
    },
}

impl NatsArgs {
    /// Resolves URLs and credentials: reads the password file, takes credentials out of the
    /// URLs, checks the CA file can be read.
    pub fn target(&self) -> Result<NatsTarget, NatsConfigError> {
        let mut servers = Vec::new();
        let mut from_url: Option<(String, Credentials)> = None;
        for raw in self
            .nats_url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (addr, creds) = split_credentials(raw)?;
            if creds != Credentials::None {
                match &from_url {
                    None => from_url = Some((addr.as_url_str().to_string(), creds)),
                    Some((first, c)) if *c != creds => {
                        return Err(NatsConfigError::UrlCredentialsDiffer {
                            first: first.clone(),
                            other: addr.as_url_str().to_string(),
                        })
                    }
                    Some(_) => {}
                }
            }
            servers.push(addr);
        }
        if servers.is_empty() {
            return Err(NatsConfigError::NoUrl);
        }
        let from_flags = match (&self.nats_user, &self.nats_password_file, &self.nats_creds) {
            (Some(user), Some(file), _) => Some((
                "nats-user",
                Credentials::UserPassword {
                    user: user.clone(),
                    password: read_password_file(file)?,
                },
            )),
            (_, _, Some(creds)) => {
                std::fs::metadata(creds).map_err(|source| NatsConfigError::CredsFile {
                    path: creds.clone(),
                    source,
                })?;
                Some(("nats-creds", Credentials::CredsFile(creds.clone())))
            }
            // clap requires the pair; a caller building NatsArgs by hand gets anonymous.
            _ => None,
        };
        let credentials = match (from_url, from_flags) {
            (Some((url, _)), Some((flag, _))) => {
                return Err(NatsConfigError::TwoCredentials { url, flag })
            }
            (Some((url, c)), None) => {
                tracing::warn!(
                    url,
                    "NATS credentials taken from the URL: anyone who can list processes may \
                     read them; use --nats-user and --nats-password-file"
                );
                c
            }
            (None, Some((_, c))) => c,
            (None, None) => Credentials::None,
        };
        if let Some(ca) = &self.nats_tls_ca {
            std::fs::File::open(ca).map_err(|source| NatsConfigError::TlsCa {
                path: ca.clone(),
                source,
            })?;
        }
        Ok(NatsTarget {
            servers,
            credentials,
            tls_ca: self.nats_tls_ca.clone(),
        })
    }

    /// Connects with unlimited reconnects: a broker restart is waited out, never fatal, and so
    /// is a broker not up yet at start-up. Refused credentials or a failed TLS handshake end
    /// it at once: waiting cannot fix them. `name` shows up in the server's connection list.
    pub async fn connect(&self, name: &str) -> Result<Client, ConnectError> {
        let target = self.target()?;
        target.connect(name).await
    }
}

impl NatsTarget {
    /// The servers, as printed in logs and errors (no credentials in them).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(ServerAddr::as_url_str)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn user(&self) -> Option<String> {
        match &self.credentials {
            Credentials::UserPassword { user, .. } => Some(user.clone()),
            _ => None,
        }
    }

    /// Connect options for this target (credentials, TLS), without name, callbacks or retry
    /// policy: what a test client needs too.
    pub async fn options(&self) -> Result<ConnectOptions, NatsConfigError> {
        let mut opts = ConnectOptions::new();
        opts = match &self.credentials {
            Credentials::None => opts,
            Credentials::UserPassword { user, password } => {
                opts.user_and_password(user.clone(), password.expose().to_string())
            }
            Credentials::Token(token) => opts.token(token.expose().to_string()),
            Credentials::CredsFile(path) => {
                opts.credentials_file(path)
                    .await
                    .map_err(|source| NatsConfigError::CredsFile {
                        path: path.clone(),
                        source,
                    })?
            }
        };
        if let Some(ca) = &self.tls_ca {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        Ok(opts)
    }

    /// See [`NatsArgs::connect`].
    pub async fn connect(&self, name: &str) -> Result<Client, ConnectError> {
        let urls = self.urls();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let opts = self
                .options()
                .await?
                .name(name)
                .max_reconnects(None)
                .connection_timeout(Duration::from_secs(5))
                .ping_interval(PING_INTERVAL)
                .event_callback(|event| async move {
                    match event {
                        async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                        async_nats::Event::Connected => tracing::info!("NATS connected"),
                        // A permission violation arrives here, as the server's text: the
                        // request or publish it refused fails on its own (a timeout).
                        async_nats::Event::ServerError(e) => {
                            tracing::error!(error = %e, "NATS server error")
                        }
                        // A reconnect refused (a password rotated on the server first) shows
                        // up here, once per attempt.
                        async_nats::Event::ClientError(e) => {
                            tracing::warn!(error = %e, "NATS client error")
                        }
                        other => tracing::debug!(event = %other, "NATS event"),
                    }
                });
            match opts.connect(self.servers.clone()).await {
                Ok(client) => return Ok(client),
                Err(source) => match source.kind() {
                    ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                        return Err(ConnectError::Refused {
                            urls,
                            user: self.user(),
                            source,
                        })
                    }
                    ConnectErrorKind::Tls => return Err(ConnectError::Tls { urls, source }),
                    ConnectErrorKind::Io | ConnectErrorKind::TimedOut | ConnectErrorKind::Dns => {
                        let delay = Duration::from_millis(250 * u64::from(attempt.min(20)));
                        tracing::warn!(
                            urls,
                            attempt,
                            error = %source,
                            retry_in = ?delay,
                            "NATS not reachable yet"
                        );
                        tokio::time::sleep(delay).await;
                    }
                    _ => return Err(ConnectError::Connect { urls, source }),
                },
            }
        }
    }
}

/// Takes `user:password@` (or a `token@`) out of one URL.
fn split_credentials(raw: &str) -> Result<(ServerAddr, Credentials), NatsConfigError> {
    let bad = |source| NatsConfigError::BadUrl {
        url: redact_urls(raw),
        source,
    };
    let addr: ServerAddr = raw.parse().map_err(bad)?;
    let user = addr.username().map(decode);
    let password = addr.password().map(decode);
    let creds = match (user, password) {
        (None, None) => return Ok((addr, Credentials::None)),
        (Some(user), Some(password)) => Credentials::UserPassword {
            user,
            password: Secret(password),
        },
        (Some(token), None) => Credentials::Token(Secret(token)),
        // `nats://:password@host`: a password without a user is a token too.
        (None, Some(token)) => Credentials::Token(Secret(token)),
    };
    let mut url = addr.into_inner();
    // Both can only fail for URLs that cannot have credentials, which these just had.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let addr = ServerAddr::from_url(url).map_err(bad)?;
    Ok((addr, creds))
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The URL list with anything between `://` and the last `@` of each URL replaced by `***`:
/// for messages about URLs that may not even parse.
pub fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(|u| {
            let (scheme, rest) = match u.find("://") {
                Some(i) => u.split_at(i + 3),
                None => ("", u),
            };
            // The authority ends at the first `/`, `?` or `#`; an `@` after it is a path's.
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}***{}", &rest[at..]),
                None => u.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads a password file's first line (a trailing newline is not part of the password).
fn read_password_file(path: &Path) -> Result<Secret, NatsConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| NatsConfigError::PasswordFile {
        path: path.to_path_buf(),
        source,
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(NatsConfigError::EmptyPasswordFile {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret(line.to_string()))
}

#[cfg(test)]
mod tests;
