//! SMTP delivery over lettre's connection type, with a pool of our own. lettre's pooled
//! transport puts a connection back after a send its caller abandoned (our per-send timeout),
//! and its `send` cannot tell a failure before the final "." of DATA from one after it. Here a
//! connection whose send timed out or broke is closed, never reused, and every failure says
//! whose it is: the relay's ([`SendOutcome::RelayFailed`]: connect, TLS, EHLO, AUTH, MAIL
//! FROM), the recipient's (RCPT, the reply after DATA), or nobody knows
//! ([`SendOutcome::Unknown`]: the relay may have accepted the message).

mod session;
pub mod tls;
mod url;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::transport::smtp::commands::{Mail, Rcpt};
use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
use lettre::Address;

use crate::circuit::Circuit;
pub use session::{client_id, Connector, ConnectorTls, Extensions, Session, SessionError, Stage};
pub use tls::{SystemRoots, TlsConfigError};
pub use url::{RelayUrl, RelayUrlError, TlsMode};

/// What happened to one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The relay accepted the message (2xx after DATA).
    Accepted,
    /// The relay itself failed (connect, TLS, EHLO, AUTH, MAIL FROM, a broken session before
    /// RCPT was answered): the message was not tried and is handed back; the failure counts
    /// toward the relay's circuit, never toward the recipient's retries.
    RelayFailed { code: Option<u16>, text: String },
    /// Try this recipient again later: 4xx to RCPT or after DATA, a timeout before the message
    /// was fully written.
    Transient { code: Option<u16>, text: String },
    /// The relay refused this recipient or message for good (5xx to RCPT or after DATA).
    Permanent { code: Option<u16>, text: String },
    /// The connection broke or timed out after the final "." of DATA: the relay may have
    /// accepted it. Retried like a transient failure; the one case that can mail twice.
    Unknown { text: String },
}

/// Settings every relay shares, from the command line.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// EHLO name (`--helo-name`); receivers check it against the sending address.
    pub helo_name: String,
    /// `--smtp-ca`: a private CA trusted for every relay without its own `?ca=`.
    pub ca: Option<std::path::PathBuf>,
    /// `--max-messages-per-connection`, for relays without `?max_messages=`.
    pub max_messages_per_connection: Option<u32>,
    pub connect_timeout: Duration,
}

impl RelayOptions {
    pub fn new(helo_name: String) -> Self {
        Self {
            helo_name,
            ca: None,
            max_messages_per_connection: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a relay cannot be set up: a start-up error.
#[derive(Debug, thiserror::Error)]
pub enum RelayConfigError {
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    #[error(
        "--helo-name {0:?}: expected a host name (letters, digits, '-', '.') or an IP address"
    )]
    HeloName(String),
}

/// Checks a `--helo-name`: a host name or an IP address (sent as an address literal).
pub fn check_helo_name(name: &str) -> Result<(), RelayConfigError> {
    if valid_helo(name) {
        Ok(())
    } else {
        Err(RelayConfigError::HeloName(name.to_string()))
    }
}

fn valid_helo(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
        || (!name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}

/// Connections idle longer than this are checked with NOOP before use: the relay may have
/// closed them.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// The relay's own health as the last sends saw it, for logs and heartbeats: its last
/// failure while it is failing, `None` once a send got through to a recipient.
#[derive(Default)]
struct Health {
    last_error: Option<String>,
}

/// One relay: its address, a pool of open connections and its circuit breaker.
pub struct Relay {
    pub url: RelayUrl,
    redacted: String,
    connector: Connector,
    max_messages: Option<u32>,
    idle: Mutex<Vec<Session>>,
    max_idle: usize,
    health: Mutex<Health>,
    pub circuit: Mutex<Circuit>,
}

/// How one try on one session ended.
enum Try {
    Done(SendOutcome),
    /// A reused session turned out closed, or the relay said 421 before taking the message:
    /// nothing was delivered, so try again at once on a new connection.
    Reconnect(String),
}

impl Relay {
    /// Sets up a relay: reads its CA, builds its TLS settings, and warns about settings that
    /// weaken security. `system` is the OS trust store, loaded once for all relays.
    pub fn new(
        url: RelayUrl,
        opts: &RelayOptions,
        system: &SystemRoots,
        max_idle: usize,
        circuit: Circuit,
    ) -> Result<Self, RelayConfigError> {
        let redacted = url.redacted();
        let tls = match url.tls {
            TlsMode::None => ConnectorTls::None,
            TlsMode::StartTls => {
                let roots = tls::extra_roots(&url, opts.ca.as_deref(), system)?;
                ConnectorTls::StartTls(tls::tls_parameters(&url, &roots)?)
            }
            TlsMode::Implicit => {
                let roots = tls::extra_roots(&url, opts.ca.as_deref(), system)?;
                let (config, _) = tls::rustls_config(&url, &roots)?;
                ConnectorTls::Implicit(
                    tokio_rustls::TlsConnector::from(config),
                    tls::server_name(&url)?,
                )
            }
        };
        if !url.tls_verify {
            tracing::warn!(relay = %redacted, "tls_verify=false: the relay's certificate is not checked; anyone on the path can read the mail and the password");
        }
        if url.plain_auth() {
            tracing::warn!(relay = %redacted, "tls=none with credentials: the password crosses the network in clear");
        }
        Ok(Self {
            max_messages: url.max_messages.or(opts.max_messages_per_connection),
            connector: Connector {
                hello: client_id(&opts.helo_name),
                tls,
                connect_timeout: opts.connect_timeout,
                url: url.clone(),
            },
            redacted,
            url,
            idle: Mutex::new(Vec::new()),
            max_idle,
            health: Mutex::new(Health::default()),
            circuit: Mutex::new(circuit),
        })
    }

    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The relay's last failure while it is failing, for the health map.
    pub fn last_error(&self) -> Option<String> {
        self.health.lock().unwrap().last_error.clone()
    }

    /// Opens a session the way sends do, for `--check`.
    pub async fn open(&self) -> Result<Session, SessionError> {
        self.connector.open().await
    }

    /// A pooled session, or a new one; the flag says whether it was reused.
    async fn checkout(&self) -> Result<(Session, bool), SessionError> {
        loop {
            let parked = self.idle.lock().unwrap().pop();
            match parked {
                Some(mut s) => {
                    if s.idle_since.elapsed() < IDLE_CHECK || s.conn.test_connected().await {
                        return Ok((s, true));
                    }
                    // Closed by the relay while idle: dropped (see [`Connector`] on abort).
                    drop(s);
                }
                None => return self.connector.open().await.map(|s| (s, false)),
            }
        }
    }

    fn checkin(&self, mut s: Session) {
        if s.conn.has_broken() {
            return;
        }
        if self.max_messages.is_some_and(|n| s.messages >= n) {
            // The relay's limit: say goodbye now rather than meet a 421 on the next message.
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), s.conn.quit()).await;
            });
            return;
        }
        s.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < self.max_idle {
            idle.push(s);
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
        let deadline = tokio::time::Instant::now() + timeout;
        let mut outcome = self.try_once(from, to, body, deadline, timeout, true).await;
        if let Try::Reconnect(why) = &outcome {
            tracing::debug!(relay = %self.redacted, reason = %why, "reconnecting and retrying now");
            outcome = self
                .try_once(from, to, body, deadline, timeout, false)
                .await;
        }
        let outcome = match outcome {
            Try::Done(o) => o,
            // Only a reused session asks for this, and the second try is on a new one.
            Try::Reconnect(text) => SendOutcome::RelayFailed { code: None, text },
        };
        self.note(&outcome);
        outcome
    }

    async fn try_once(
        &self,
        from: &Address,
        to: &Address,
        body: &[u8],
        deadline: tokio::time::Instant,
        timeout: Duration,
        may_reuse: bool,
    ) -> Try {
        let mut stage = Stage::Connect;
        let mut reused = false;
        let mut parked: Option<Session> = None;
        let attempt = self.exchange(
            from,
            to,
            body,
            may_reuse,
            &mut stage,
            &mut reused,
            &mut parked,
        );
        let result = tokio::time::timeout_at(deadline, attempt).await;
        match result {
            Ok(Ok(mut s)) => {
                s.messages += 1;
                self.checkin(s);
                Try::Done(SendOutcome::Accepted)
            }
            Ok(Err(e)) => {
                let code = e.code();
                let stage = e.stage();
                // 421: the relay is closing this session (a limit reached, shutting down).
                if reused && (code == Some(421) || (code.is_none() && stage < Stage::Body)) {
                    drop(parked);
                    return Try::Reconnect(e.to_string());
                }
                // After a refused command the session is intact: reset it and keep it.
                if let Some(mut s) = parked {
                    let usable = code.is_some_and(|c| c != 421) && stage < Stage::Body;
                    if usable
                        && tokio::time::timeout_at(deadline, s.reset())
                            .await
                            .unwrap_or(false)
                    {
                        self.checkin(s);
                    }
                }
                Try::Done(classify(&e))
            }
            Err(_) => {
                // The session, if any, was dropped with the future: never reused.
                let text = format!("no answer within {:.1}s ({stage})", timeout.as_secs_f64());
                // Before the message was written the relay is just slow: its failure.
                Try::Done(match stage {
                    Stage::Body => SendOutcome::Unknown { text },
                    _ => SendOutcome::RelayFailed { code: None, text },
                })
            }
        }
    }

    /// The exchange itself. On failure, a session that may still be usable is left in
    /// `parked`; `stage` and `reused` tell the caller where a timeout struck.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        from: &Address,
        to: &Address,
        body: &[u8],
        may_reuse: bool,
        stage: &mut Stage,
        reused: &mut bool,
        parked: &mut Option<Session>,
    ) -> Result<Session, SessionError> {
        let mut s = if may_reuse {
            let (s, was_pooled) = self.checkout().await?;
            *reused = was_pooled;
            s
        } else {
            self.connector.open().await?
        };
        let mut opts = Vec::new();
        let envelope_utf8 =
            !AsRef::<str>::as_ref(from).is_ascii() || !AsRef::<str>::as_ref(to).is_ascii();
        // Without SMTPUTF8 the relay decides: it answers 5xx, which is reported as such.
        if envelope_utf8
            && s.conn
                .server_info()
                .supports_feature(Extension::SmtpUtfEight)
        {
            opts.push(MailParameter::SmtpUtfEight);
        }
        if !body.is_ascii()
            && s.conn
                .server_info()
                .supports_feature(Extension::EightBitMime)
        {
            opts.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mail = Mail::new(Some(from.clone()), opts);
        let rcpt = Rcpt::new(to.clone(), vec![]);
        if let Err(e) = s.envelope(mail, rcpt, stage).await {
            // Out of step (a reply missing, or DATA mode after a refusal): dropped here.
            if e.in_step {
                *parked = Some(s);
            }
            return Err(e.error);
        }
        *stage = Stage::Body;
        match s.body(body).await {
            Ok(()) => Ok(s),
            Err(e) => {
                *parked = Some(s);
                Err(e)
            }
        }
    }

    /// Logs the relay's failures at WARN once per change of state, and its recovery.
    fn note(&self, outcome: &SendOutcome) {
        let mut h = self.health.lock().unwrap();
        match outcome {
            SendOutcome::RelayFailed { text, .. } => {
                // A different failure is a change of state too (refused, then bad password).
                if h.last_error.as_ref() != Some(text) {
                    tracing::warn!(relay = %self.redacted, error = %text, "relay failing; its messages are handed back untried");
                    h.last_error = Some(text.clone());
                }
            }
            SendOutcome::Unknown { .. } => {}
            _ => {
                if h.last_error.take().is_some() {
                    tracing::info!(relay = %self.redacted, "relay working again");
                }
            }
        }
    }

    /// Closes every pooled connection politely.
    pub async fn close(&self) {
        let sessions: Vec<_> = std::mem::take(&mut *self.idle.lock().unwrap());
        for mut s in sessions {
            let _ = s.conn.quit().await;
        }
    }
}

/// Whose failure it was, from where it happened and what the relay said.
fn classify(e: &SessionError) -> SendOutcome {
    let code = e.code();
    let text = e.explained();
    let permanent = code.is_some_and(|c| c >= 500);
    match e.stage() {
        Stage::Connect | Stage::Greeting | Stage::StartTls | Stage::Auth | Stage::Mail => {
            SendOutcome::RelayFailed { code, text }
        }
        // 421 closes the session whatever command it answers: the relay's state, not the
        // recipient's.
        _ if code == Some(421) => SendOutcome::RelayFailed { code, text },
        // A session that broke before the message was written: the relay's too.
        Stage::Rcpt | Stage::Data if code.is_none() => SendOutcome::RelayFailed { code, text },
        Stage::Body if code.is_none() => SendOutcome::Unknown { text },
        _ if permanent => SendOutcome::Permanent { code, text },
        _ => SendOutcome::Transient { code, text },
    }
}

/// Sets up every relay of a sender, loading the OS trust store once if any relay uses TLS.
pub fn build_relays(
    urls: &[RelayUrl],
    opts: &RelayOptions,
    max_idle: usize,
    circuit: impl Fn() -> Circuit,
) -> Result<Vec<Relay>, RelayConfigError> {
    let system = if urls.iter().any(|u| u.tls != TlsMode::None) {
        SystemRoots::load()
    } else {
        SystemRoots::default()
    };
    urls.iter()
        .map(|u| Relay::new(u.clone(), opts, &system, max_idle, circuit()))
        .collect()
}
