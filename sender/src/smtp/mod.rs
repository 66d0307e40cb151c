//! SMTP delivery over lettre's connection type, with a pool of our own. lettre's pooled
//! transport puts a connection back after a send its caller abandoned (our per-send timeout),
//! and its `send` cannot tell a failure before the final "." of DATA from one after it. Here a
//! connection whose send timed out or broke is closed, never reused, and every failure says
//! whether the relay may have accepted the message ([`SendOutcome::Unknown`]).

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::Address;

use crate::circuit::Circuit;

/// How a relay is reached: `smtp://host:port`, `smtp://user:pass@host:587?tls=starttls`,
/// `smtps://host:465`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    None,
    StartTls,
    Implicit,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FromStr for RelayUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("{s:?}: expected smtp://host:port or smtps://host:port"))?;
        let mut tls = match scheme {
            "smtp" => TlsMode::None,
            "smtps" => TlsMode::Implicit,
            other => return Err(format!("{s:?}: unknown scheme {other:?} (smtp or smtps)")),
        };
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("{s:?}: bad port {p:?}"))?,
            ),
            None => (
                hostport.to_string(),
                if tls == TlsMode::Implicit { 465 } else { 25 },
            ),
        };
        if host.is_empty() {
            return Err(format!("{s:?}: missing host"));
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("tls", "starttls")) => tls = TlsMode::StartTls,
                Some(("tls", "none")) if tls != TlsMode::Implicit => tls = TlsMode::None,
                Some(("tls", "implicit")) => tls = TlsMode::Implicit,
                _ => {
                    return Err(format!(
                        "{s:?}: unknown option {pair:?} (tls=starttls|implicit|none)"
                    ))
                }
            }
        }
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((u, p)) => (Some(percent_decode(u)), Some(percent_decode(p))),
                None => (Some(percent_decode(u)), None),
            },
            None => (None, None),
        };
        Ok(Self {
            host,
            port,
            tls,
            user,
            password,
        })
    }
}

impl RelayUrl {
    /// The URL without its password, for logs and the health map.
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
        let q = if self.tls == TlsMode::StartTls {
            "?tls=starttls"
        } else {
            ""
        };
        format!("{scheme}://{user}{}:{}{q}", self.host, self.port)
    }
}

/// What happened to one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The relay accepted the message (2xx after DATA).
    Accepted,
    /// Try again later: 4xx, connection refused or reset, TLS failure, timeout before the
    /// message was fully written.
    Transient { code: Option<u16>, text: String },
    /// The relay refused the message for good (5xx).
    Permanent { code: Option<u16>, text: String },
    /// The connection broke or timed out after the final "." of DATA: the relay may have
    /// accepted it. Retried like a transient failure; the one case that can mail twice.
    Unknown { text: String },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connect,
    Envelope,
    /// The message body was written; only the final reply was missing.
    Body,
}

fn code_of(e: &lettre::transport::smtp::Error) -> Option<u16> {
    e.status()
        .map(|c| u16::from_str(&c.to_string()).unwrap_or(0))
}

/// Why a send attempt failed: an SMTP-level error from lettre, or our own socket set-up.
enum Fail {
    Smtp(lettre::transport::smtp::Error),
    Io(std::io::Error),
}

impl From<lettre::transport::smtp::Error> for Fail {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        Fail::Smtp(e)
    }
}

fn classify(e: Fail, stage: Stage) -> SendOutcome {
    let e = match e {
        Fail::Smtp(e) => e,
        Fail::Io(e) => {
            return SendOutcome::Transient {
                code: None,
                text: format!("connection: {e}"),
            }
        }
    };
    let code = code_of(&e);
    let text = e.to_string();
    if e.is_permanent() {
        SendOutcome::Permanent { code, text }
    } else if e.is_transient() {
        SendOutcome::Transient { code, text }
    } else if stage == Stage::Body {
        SendOutcome::Unknown { text }
    } else {
        SendOutcome::Transient { code, text }
    }
}

/// Connections idle longer than this are checked with NOOP before use: the relay may have
/// closed them.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// One relay: its address, a pool of open connections and its circuit breaker.
pub struct Relay {
    pub url: RelayUrl,
    redacted: String,
    hello: ClientId,
    connect_timeout: Duration,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    max_idle: usize,
    pub circuit: Mutex<Circuit>,
}

impl Relay {
    pub fn new(url: RelayUrl, max_idle: usize, circuit: Circuit, hello: String) -> Self {
        Self {
            redacted: url.redacted(),
            url,
            hello: ClientId::Domain(hello),
            connect_timeout: Duration::from_secs(10),
            idle: Mutex::new(Vec::new()),
            max_idle,
            circuit: Mutex::new(circuit),
        }
    }

    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, Fail> {
        let tls = || TlsParameters::new(self.url.host.clone());
        let mut conn = if self.url.tls == TlsMode::Implicit {
            AsyncSmtpConnection::connect_tokio1(
                (self.url.host.as_str(), self.url.port),
                Some(self.connect_timeout),
                &self.hello,
                Some(tls()?),
                None,
            )
            .await?
        } else {
            // Our own socket, for TCP_NODELAY: lettre writes the message and its final "."
            // separately, and with Nagle's algorithm that second write waits for the relay's
            // delayed ACK (40 ms) on every message.
            let tcp = tokio::time::timeout(
                self.connect_timeout,
                tokio::net::TcpStream::connect((self.url.host.as_str(), self.url.port)),
            )
            .await
            .map_err(|_| {
                Fail::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })?
            .map_err(Fail::Io)?;
            tcp.set_nodelay(true).map_err(Fail::Io)?;
            AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?
        };
        if self.url.tls == TlsMode::StartTls {
            conn.starttls(tls()?, &self.hello).await?;
        }
        if let Some(user) = &self.url.user {
            let creds =
                Credentials::new(user.clone(), self.url.password.clone().unwrap_or_default());
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds)
                .await?;
        }
        Ok(conn)
    }

    async fn checkout(&self) -> Result<AsyncSmtpConnection, Fail> {
        loop {
            let parked = self.idle.lock().unwrap().pop();
            match parked {
                Some((mut conn, since)) => {
                    if since.elapsed() < IDLE_CHECK || conn.test_connected().await {
                        return Ok(conn);
                    }
                    conn.abort().await;
                }
                None => return self.connect().await,
            }
        }
    }

    fn checkin(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        }
    }

    /// Sends one message, the whole exchange bounded by `timeout` (lettre's own timeout covers
    /// connecting only).
    pub async fn send(
        &self,
        from: &Address,
        to: &Address,
        body: &[u8],
        timeout: Duration,
    ) -> SendOutcome {
        let mut stage = Stage::Connect;
        let stage_ref = &mut stage;
        let attempt = async move {
            let mut conn = self.checkout().await.map_err(|e| (e, None))?;
            *stage_ref = Stage::Envelope;
            let mut opts = Vec::new();
            let envelope_utf8 =
                !AsRef::<str>::as_ref(from).is_ascii() || !AsRef::<str>::as_ref(to).is_ascii();
            // Without SMTPUTF8 the relay decides: it answers 5xx, which is reported as such.
            if envelope_utf8 && conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                opts.push(MailParameter::SmtpUtfEight);
            }
            if !body.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
                opts.push(MailParameter::Body(MailBodyParameter::EightBitMime));
            }
            if let Err(e) = conn.command(Mail::new(Some(from.clone()), opts)).await {
                return Err((Fail::Smtp(e), Some(conn)));
            }
            if let Err(e) = conn.command(Rcpt::new(to.clone(), vec![])).await {
                return Err((Fail::Smtp(e), Some(conn)));
            }
            if let Err(e) = conn.command(Data).await {
                return Err((Fail::Smtp(e), Some(conn)));
            }
            *stage_ref = Stage::Body;
            match conn.message(body).await {
                Ok(_) => Ok(conn),
                Err(e) => Err((Fail::Smtp(e), Some(conn))),
            }
        };
        let result = tokio::time::timeout(timeout, attempt).await;
        match result {
            Ok(Ok(conn)) => {
                self.checkin(conn);
                SendOutcome::Accepted
            }
            Ok(Err((e, conn))) => {
                let outcome = classify(e, stage);
                // After a refused command the session is intact: reset it and keep it.
                if let (Some(mut conn), true) = (
                    conn,
                    matches!(
                        outcome,
                        SendOutcome::Permanent { .. }
                            | SendOutcome::Transient { code: Some(_), .. }
                    ),
                ) {
                    if stage != Stage::Body && conn.command(Rset).await.is_ok() {
                        self.checkin(conn);
                    } else {
                        conn.abort().await;
                    }
                }
                outcome
            }
            Err(_) => {
                let text = format!("no answer within {}", humantime_secs(timeout));
                if stage == Stage::Body {
                    SendOutcome::Unknown { text }
                } else {
                    SendOutcome::Transient { code: None, text }
                }
            }
        }
    }

    /// Closes every pooled connection politely.
    pub async fn close(&self) {
        let conns: Vec<_> = std::mem::take(&mut *self.idle.lock().unwrap());
        for (mut c, _) in conns {
            let _ = c.quit().await;
        }
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
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
    }
}
