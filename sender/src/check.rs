//! `jetmail-sender --check`: connects to each configured relay the way sends do (EHLO,
//! STARTTLS, AUTH) and says what it found: extensions, TLS version, the certificate and who
//! issued it, the AUTH result. An operator runs it before a campaign; it exits non-zero when
//! a relay would fail.
//!
//! lettre does not tell the negotiated TLS version, nor show a certificate it refused, so a
//! first connection goes as far as the TLS handshake with rustls directly, recording the
//! certificate the relay presents even when it is not trusted; the second is the senders' own
//! [`Relay::open`], the one that decides.

use std::fmt::Write as _;
use std::time::Duration;

use lettre::transport::smtp::authentication::Mechanism;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::circuit::Circuit;
use crate::smtp::{self, Relay, RelayConfigError, RelayOptions, RelayUrl, SystemRoots, TlsMode};

/// What `--check` found about one relay.
pub struct RelayCheck {
    pub relay: String,
    /// The report, one `name  value` line each.
    pub lines: Vec<(String, String)>,
    /// `None` when the relay would work; else why not.
    pub failure: Option<String>,
}

impl RelayCheck {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }

    /// The report as an operator reads it.
    pub fn render(&self) -> String {
        let mut out = format!("relay {}\n", self.relay);
        for (k, v) in &self.lines {
            let _ = writeln!(out, "  {k:<12} {v}");
        }
        let result = match &self.failure {
            None => "OK".to_string(),
            Some(f) => format!("FAILED: {f}"),
        };
        let _ = writeln!(out, "  {:<12} {result}", "result");
        out
    }
}

/// Checks every relay in turn, each bounded by `timeout`.
pub async fn check_relays(
    urls: &[RelayUrl],
    opts: &RelayOptions,
    timeout: Duration,
) -> Result<Vec<RelayCheck>, RelayConfigError> {
    let relays = smtp::build_relays(urls, opts, 1, || Circuit::new(1, Duration::ZERO))?;
    let system = SystemRoots::load();
    let mut out = Vec::new();
    for relay in &relays {
        let mut c = RelayCheck {
            relay: relay.redacted().to_string(),
            lines: Vec::new(),
            failure: None,
        };
        let run = check_one(relay, opts, &system, &mut c);
        if tokio::time::timeout(timeout, run).await.is_err() {
            c.failure = Some(format!("no answer within {timeout:?}"));
        }
        out.push(c);
    }
    Ok(out)
}

async fn check_one(relay: &Relay, opts: &RelayOptions, system: &SystemRoots, c: &mut RelayCheck) {
    let url = &relay.url;
    if url.tls != TlsMode::None {
        match probe_tls(url, opts, system).await {
            Ok(t) => {
                c.lines.push(("TLS".into(), t.version));
                c.lines.push(("certificate".into(), t.certificate));
            }
            Err(p) => {
                if let Some(cert) = p.certificate {
                    c.lines.push(("certificate".into(), cert));
                }
                c.lines.push(("TLS".into(), format!("failed: {}", p.error)));
            }
        }
    } else {
        c.lines.push(("TLS".into(), "none (tls=none)".into()));
    }
    match relay.open().await {
        Ok(mut s) => {
            c.lines
                .push(("extensions".into(), s.extensions.lines.join(", ")));
            c.lines.push((
                "pipelining".into(),
                if s.pipelining { "yes" } else { "no" }.into(),
            ));
            let auth = match &url.user {
                None => "not configured (no user in the URL)".to_string(),
                Some(user) => {
                    let mech = s
                        .conn
                        .server_info()
                        .get_auth_mechanism(&[Mechanism::Plain, Mechanism::Login])
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default();
                    format!("ok as {user}{mech}")
                }
            };
            c.lines.push(("AUTH".into(), auth));
            let _ = s.conn.quit().await;
        }
        Err(e) => {
            if e.stage() == smtp::Stage::Auth {
                c.lines.push(("AUTH".into(), format!("failed: {e}")));
            }
            c.failure = Some(e.explained());
        }
    }
}

struct TlsSeen {
    version: String,
    certificate: String,
}

struct ProbeError {
    error: String,
    certificate: Option<String>,
}

impl ProbeError {
    fn new(error: impl ToString) -> Self {
        Self {
            error: error.to_string(),
            certificate: None,
        }
    }
}

/// Up to the TLS handshake, with the trust the senders use, recording the relay's certificate.
async fn probe_tls(
    url: &RelayUrl,
    opts: &RelayOptions,
    system: &SystemRoots,
) -> Result<TlsSeen, ProbeError> {
    let extra = smtp::tls::extra_roots(url, opts.ca.as_deref(), system).map_err(ProbeError::new)?;
    let (config, verifier) = smtp::tls::rustls_config(url, &extra).map_err(ProbeError::new)?;
    let name = smtp::tls::server_name(url).map_err(ProbeError::new)?;
    let mut tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| ProbeError::new(format!("connect: {e}")))?;
    if url.tls == TlsMode::StartTls {
        starttls(&mut tcp, &opts.helo_name)
            .await
            .map_err(ProbeError::new)?;
    }
    let handshake = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await;
    let certificate = verifier
        .take_seen()
        .map(|der| describe(&der, url.tls_verify));
    match handshake {
        Ok(tls) => {
            let (_, conn) = tls.get_ref();
            let version = conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_else(|| "unknown".into());
            let suite = conn
                .negotiated_cipher_suite()
                .map(|s| format!(", {:?}", s.suite()))
                .unwrap_or_default();
            let how = if url.tls == TlsMode::StartTls {
                "STARTTLS"
            } else {
                "implicit"
            };
            Ok(TlsSeen {
                version: format!("{version}{suite} ({how})"),
                certificate: certificate.unwrap_or_else(|| "none presented".into()),
            })
        }
        Err(e) => Err(ProbeError {
            error: e.to_string(),
            certificate,
        }),
    }
}

/// Why the plain-text part of a STARTTLS probe failed.
#[derive(Debug, thiserror::Error)]
enum PlainStepError {
    #[error("{0}: connection closed")]
    Closed(&'static str),
    #[error("{what}: {reply}")]
    Refused { what: &'static str, reply: String },
    #[error("the relay sent data after its STARTTLS reply")]
    DataAfterStartTls,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Greeting, EHLO and STARTTLS on a plain connection, ready for the handshake.
async fn starttls(tcp: &mut TcpStream, helo: &str) -> Result<(), PlainStepError> {
    let (r, mut w) = tcp.split();
    let mut r = BufReader::new(r);
    read_reply(&mut r, 220, "greeting").await?;
    w.write_all(format!("EHLO {helo}\r\n").as_bytes()).await?;
    read_reply(&mut r, 250, "EHLO").await?;
    w.write_all(b"STARTTLS\r\n").await?;
    read_reply(&mut r, 220, "STARTTLS").await?;
    // Nothing may be buffered past the 220: the TLS handshake starts right after it.
    if !r.buffer().is_empty() {
        return Err(PlainStepError::DataAfterStartTls);
    }
    Ok(())
}

async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    want: u16,
    what: &'static str,
) -> Result<(), PlainStepError> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(PlainStepError::Closed(what));
        }
        text.push_str(line.trim_end());
        // "250-..." continues a reply, "250 ..." ends it.
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
        text.push_str(" / ");
    }
    match text.get(..3).and_then(|c| c.parse::<u16>().ok()) {
        Some(code) if code == want => Ok(()),
        _ => Err(PlainStepError::Refused { what, reply: text }),
    }
}

/// Subject, issuer and expiry of a certificate, for the report.
fn describe(der: &CertificateDer<'_>, verified: bool) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => format!(
            "subject \"{}\", issuer \"{}\", valid until {}{}",
            cert.subject(),
            cert.issuer(),
            cert.validity().not_after,
            if verified {
                ""
            } else {
                " (not verified: tls_verify=false)"
            }
        ),
        Err(e) => format!("unreadable certificate: {e}"),
    }
}
