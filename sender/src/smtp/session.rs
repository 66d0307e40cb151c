//! One SMTP session with a relay: connect, STARTTLS, EHLO, AUTH, and the envelope of each
//! message, pipelined where the relay offers it.
//!
//! PIPELINING (RFC 2920) is done here by hand on top of lettre's connection: lettre sends
//! each command and waits for its reply, so against a relay 50 ms away MAIL FROM, RCPT TO and
//! DATA cost three round trips before the body. lettre's `command` writes whatever its
//! argument displays and reads one reply, and `read_response` reads the next: writing the
//! three commands as one, then reading three replies, keeps lettre's TLS, AUTH, reply parsing
//! and dot-stuffing and saves two round trips per message. Nothing of the message is written
//! before the DATA reply, so a session that breaks in the envelope has sent nothing.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use rustls::pki_types::ServerName;

use super::tls::TlsSocket;
use super::url::{RelayUrl, TlsMode};

pub type SmtpError = lettre::transport::smtp::Error;

/// Where in a session something went wrong; the stage decides whose failure it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// TCP connect or the implicit-TLS handshake.
    Connect,
    /// The greeting and the first EHLO.
    Greeting,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    /// The DATA command (before any of the message was written).
    Data,
    /// The message was written; only the final reply was missing.
    Body,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting/EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Body => "end of DATA",
        })
    }
}

/// A failed step of a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{stage}: {source}")]
    Smtp {
        stage: Stage,
        #[source]
        source: SmtpError,
    },
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The implicit-TLS handshake (smtps://).
    #[error("TLS: {0}")]
    Handshake(#[source] std::io::Error),
    #[error("STARTTLS: the relay does not offer it (the URL asks for tls=starttls)")]
    NoStartTls,
    /// Defence in depth: [`RelayUrl`] already turns credentials into STARTTLS.
    #[error("AUTH: refusing to send the password over an unencrypted connection (add ?tls=none to the URL to allow it)")]
    PlainAuth,
}

impl SessionError {
    pub fn stage(&self) -> Stage {
        match self {
            SessionError::Smtp { stage, .. } => *stage,
            SessionError::Connect(_) | SessionError::Handshake(_) => Stage::Connect,
            SessionError::NoStartTls => Stage::StartTls,
            SessionError::PlainAuth => Stage::Auth,
        }
    }

    /// The relay's reply code, when the failure was a reply.
    pub fn code(&self) -> Option<u16> {
        match self {
            SessionError::Smtp { source, .. } => source
                .status()
                .and_then(|c| c.to_string().parse::<u16>().ok()),
            _ => None,
        }
    }

    /// The TLS error underneath, when the failure was the handshake or the certificate.
    pub fn tls_cause(&self) -> Option<&rustls::Error> {
        // lettre wraps tokio-rustls's io::Error, which wraps the rustls::Error.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = match self {
            SessionError::Smtp { source, .. } => Some(source),
            SessionError::Handshake(io) => Some(io),
            _ => None,
        };
        while let Some(e) = cause {
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            if let Some(tls) = e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return Some(tls);
            }
            cause = e.source();
        }
        None
    }

    /// What an operator can do about a TLS failure, when there is something to say.
    pub fn tls_hint(&self) -> Option<&'static str> {
        use rustls::CertificateError as C;
        match self.tls_cause()? {
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => Some(
                "a relay with a certificate from a private CA needs --smtp-ca FILE or ?ca=FILE",
            ),
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => Some("the certificate is not for this host name: put the name it was issued for in the URL"),
            rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                Some("the relay's certificate has expired")
            }
            _ => None,
        }
    }

    /// The error with the hint, for logs, dead letters and `--check`.
    pub fn explained(&self) -> String {
        // lettre's own text repeats its wrappers ("Connection error: Connection error: …").
        let text = match self.tls_cause() {
            Some(tls) => format!("{}: TLS handshake failed: {tls}", self.stage()),
            None => self.to_string(),
        };
        match self.tls_hint() {
            Some(hint) => format!("{text} ({hint})"),
            None => text,
        }
    }
}

fn at(stage: Stage) -> impl FnOnce(SmtpError) -> SessionError {
    move |source| SessionError::Smtp { stage, source }
}

/// What the relay said about itself in its EHLO reply, after STARTTLS.
#[derive(Debug, Clone, Default)]
pub struct Extensions {
    /// The EHLO keywords with their parameters, one per line (`SIZE 52428800`, `AUTH PLAIN`).
    pub lines: Vec<String>,
    pub keywords: BTreeSet<String>,
}

impl Extensions {
    fn from_ehlo(r: &Response) -> Self {
        // The first line is the relay's name, the others its extensions.
        let lines: Vec<String> = r.message().skip(1).map(|l| l.trim().to_string()).collect();
        let keywords = lines
            .iter()
            .filter_map(|l| l.split_whitespace().next())
            .map(|k| k.to_ascii_uppercase())
            .collect();
        Self { lines, keywords }
    }

    pub fn has(&self, keyword: &str) -> bool {
        self.keywords.contains(keyword)
    }
}

/// The EHLO name: an address literal for an IP, else the name as given.
pub fn client_id(helo: &str) -> ClientId {
    match helo.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => ClientId::Ipv4(a),
        Ok(IpAddr::V6(a)) => ClientId::Ipv6(a),
        Err(_) => ClientId::Domain(helo.to_string()),
    }
}

/// An open, authenticated connection and what the pool needs to know about it.
pub struct Session {
    pub conn: AsyncSmtpConnection,
    pub extensions: Extensions,
    /// Whether the envelope is pipelined (the relay offers it and the URL allows it).
    pub pipelining: bool,
    /// Messages accepted on this connection.
    pub messages: u32,
    /// When it was last used.
    pub idle_since: Instant,
}

/// Everything needed to open a session with one relay.
///
/// A session that failed is dropped, which closes its socket, and never `abort`ed: lettre's
/// `abort` writes QUIT and waits for the reply, which hangs on a relay in DATA mode and panics
/// after a failed TLS upgrade (lettre leaves no stream behind then).
pub struct Connector {
    pub url: RelayUrl,
    pub hello: ClientId,
    pub tls: ConnectorTls,
    pub connect_timeout: Duration,
}

/// How a connection is encrypted.
pub enum ConnectorTls {
    None,
    /// lettre upgrades the connection after STARTTLS.
    StartTls(TlsParameters),
    /// TLS from the first byte, done here on our own socket (for TCP_NODELAY, see
    /// [`Connector::open`]); lettre then speaks SMTP over it.
    Implicit(tokio_rustls::TlsConnector, ServerName<'static>),
}

impl Connector {
    /// Connects, greets, upgrades to TLS and authenticates, as the URL says.
    pub async fn open(&self) -> Result<Session, SessionError> {
        let url = &self.url;
        // Our own socket, for TCP_NODELAY: lettre writes the message and its final "." separately,
        // and with Nagle's algorithm that second write waits for the relay's delayed ACK
        // (40 ms) on every message.
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((url.host.as_str(), url.port)),
        )
        .await
        .map_err(|_| {
            SessionError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))
        })?
        .map_err(SessionError::Connect)?;
        tcp.set_nodelay(true).map_err(SessionError::Connect)?;
        let implicit = matches!(self.tls, ConnectorTls::Implicit(..));
        let stream: Box<dyn AsyncTokioStream> = match &self.tls {
            ConnectorTls::Implicit(connector, name) => {
                let tls = tokio::time::timeout(
                    self.connect_timeout,
                    connector.connect(name.clone(), tcp),
                )
                .await
                .map_err(|_| {
                    SessionError::Handshake(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    ))
                })?
                .map_err(SessionError::Handshake)?;
                Box::new(TlsSocket(tls))
            }
            _ => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(at(Stage::Greeting))?;
        if url.tls == TlsMode::StartTls {
            let ConnectorTls::StartTls(tls) = &self.tls else {
                return Err(SessionError::NoStartTls);
            };
            if !conn.can_starttls() {
                return Err(SessionError::NoStartTls);
            }
            if let Err(e) = conn.starttls(tls.clone(), &self.hello).await {
                return Err(at(Stage::StartTls)(e));
            }
        }
        // lettre keeps only the extensions it uses and drops PIPELINING: ask again for the
        // whole list (one round trip per connection, not per message).
        let extensions = match conn.command(Ehlo::new(self.hello.clone())).await {
            Ok(r) => Extensions::from_ehlo(&r),
            Err(e) => {
                return Err(at(Stage::Greeting)(e));
            }
        };
        if let Some(user) = &url.user {
            // lettre does not know about TLS it did not set up itself.
            let encrypted = implicit || conn.is_encrypted();
            if !encrypted && !url.plain_auth() {
                return Err(SessionError::PlainAuth);
            }
            let creds = Credentials::new(user.clone(), url.password.clone().unwrap_or_default());
            if let Err(e) = conn
                .auth(&[Mechanism::Plain, Mechanism::Login], &creds)
                .await
            {
                return Err(at(Stage::Auth)(e));
            }
        }
        Ok(Session {
            conn,
            pipelining: url.pipelining && extensions.has("PIPELINING"),
            extensions,
            messages: 0,
            idle_since: Instant::now(),
        })
    }
}

/// MAIL FROM, RCPT TO and DATA written as one (RFC 2920); lettre's `command` writes what this
/// displays in a single write and flush.
struct Pipelined<'a>(&'a Mail, &'a Rcpt);

impl fmt::Display for Pipelined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.0, self.1, Data)
    }
}

/// How an envelope ended when it did not reach the body.
pub struct EnvelopeError {
    pub error: SessionError,
    /// Whether the session is still in step with the relay (every reply read, no DATA mode)
    /// and may be reset and reused.
    pub in_step: bool,
}

impl Session {
    /// Sends MAIL FROM, RCPT TO and DATA; `Ok` means the relay waits for the message.
    /// `stage` follows the exchange, so a caller that times out knows where it stood.
    pub async fn envelope(
        &mut self,
        mail: Mail,
        rcpt: Rcpt,
        stage: &mut Stage,
    ) -> Result<(), EnvelopeError> {
        let fail = |stage, source: SmtpError| EnvelopeError {
            in_step: source.status().is_some(),
            error: SessionError::Smtp { stage, source },
        };
        *stage = Stage::Mail;
        if !self.pipelining {
            self.conn
                .command(&mail)
                .await
                .map_err(|e| fail(Stage::Mail, e))?;
            *stage = Stage::Rcpt;
            self.conn
                .command(&rcpt)
                .await
                .map_err(|e| fail(Stage::Rcpt, e))?;
            *stage = Stage::Data;
            self.conn
                .command(Data)
                .await
                .map_err(|e| fail(Stage::Data, e))?;
            return Ok(());
        }
        // Three replies always come back, in order, whatever each says: read them all before
        // judging, so the session stays in step.
        // A reply that never came (the connection broke) ends the exchange at once.
        let mail_reply = match self.conn.command(Pipelined(&mail, &rcpt)).await {
            Err(e) if e.status().is_none() => return Err(fail(Stage::Mail, e)),
            r => r,
        };
        *stage = Stage::Rcpt;
        let rcpt_reply = match self.conn.read_response().await {
            // After a refused MAIL FROM (a 421 closes the connection) that refusal is the news.
            Err(e) if e.status().is_none() => {
                return Err(match mail_reply {
                    Err(refused) => EnvelopeError {
                        error: SessionError::Smtp {
                            stage: Stage::Mail,
                            source: refused,
                        },
                        in_step: false,
                    },
                    Ok(_) => fail(Stage::Rcpt, e),
                })
            }
            r => r,
        };
        *stage = Stage::Data;
        let data_reply = self.conn.read_response().await;
        let (failed_stage, e) = match (mail_reply, rcpt_reply, data_reply) {
            (Ok(_), Ok(_), Ok(_)) => return Ok(()),
            (Err(e), _, data) => (Stage::Mail, (e, data)),
            (Ok(_), Err(e), data) => (Stage::Rcpt, (e, data)),
            (Ok(_), Ok(_), Err(e)) => return Err(fail(Stage::Data, e)),
        };
        let (source, data) = e;
        // A relay that answers 354 after refusing the sender or the recipient waits for a
        // message we will not send: that session cannot be brought back in step.
        let in_step =
            source.status().is_some() && matches!(data, Err(ref d) if d.status().is_some());
        Err(EnvelopeError {
            error: SessionError::Smtp {
                stage: failed_stage,
                source,
            },
            in_step,
        })
    }

    /// Writes the message and reads the final reply.
    pub async fn body(&mut self, body: &[u8]) -> Result<(), SessionError> {
        self.conn
            .message(body)
            .await
            .map(|_| ())
            .map_err(at(Stage::Body))
    }

    /// Back to a clean state after a refused envelope; false if the session is unusable.
    pub async fn reset(&mut self) -> bool {
        self.conn.command(Rset).await.is_ok()
    }
}
