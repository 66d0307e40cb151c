//! Which certificates a relay's TLS is checked against: the roots bundled with the sender
//! (webpki-roots), the operating system's trust store, and a private CA from `--smtp-ca` or
//! `?ca=`. Companies run relays with certificates from their own CA; the bundled roots alone
//! refused those with "UnknownIssuer".

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::url::RelayUrl;

/// Why the TLS settings of a relay cannot be used: a start-up error.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read the CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a usable CA certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("TLS settings for {relay}: {source}")]
    Lettre {
        relay: String,
        source: lettre::transport::smtp::Error,
    },
    #[error("TLS settings for {relay}: {source}")]
    Rustls {
        relay: String,
        source: rustls::Error,
    },
    #[error("{relay}: {host:?} cannot be checked against a certificate")]
    ServerName { relay: String, host: String },
}

/// The operating system's trusted roots, loaded once at start.
#[derive(Clone, Default)]
pub struct SystemRoots(Arc<Vec<CertificateDer<'static>>>);

impl SystemRoots {
    /// Reads the OS trust store (on Linux `/etc/ssl/certs`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`);
    /// certificates rustls cannot use are skipped, as browsers do.
    pub fn load() -> Self {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "skipping part of the system trust store");
        }
        let usable: Vec<_> = found
            .certs
            .into_iter()
            .filter(|c| rustls::RootCertStore::empty().add(c.clone()).is_ok())
            .collect();
        tracing::debug!(roots = usable.len(), "system trust store loaded");
        Self(Arc::new(usable))
    }

    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.0
    }
}

/// Reads the PEM certificates of a private CA, refusing a file with none or one that rustls
/// cannot use as a root (so the mistake shows at start, not as a failed handshake).
pub fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem = std::fs::read(path).map_err(|source| TlsConfigError::CaFile {
        path: path.into(),
        source,
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsConfigError::BadCertificate {
            path: path.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate { path: path.into() });
    }
    for c in &certs {
        rustls::RootCertStore::empty().add(c.clone()).map_err(|e| {
            TlsConfigError::BadCertificate {
                path: path.into(),
                reason: e.to_string(),
            }
        })?;
    }
    Ok(certs)
}

/// Every root a relay's certificate may chain to, besides the bundled ones.
pub fn extra_roots(
    url: &RelayUrl,
    default_ca: Option<&Path>,
    system: &SystemRoots,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let mut roots = system.certs().to_vec();
    // The URL's own CA replaces --smtp-ca for that relay.
    if let Some(ca) = url.ca.as_deref().or(default_ca) {
        roots.extend(read_ca(ca)?);
    }
    Ok(roots)
}

/// lettre's TLS settings for one relay: bundled roots plus `extra`, the relay's host name,
/// and no verification at all with `tls_verify=false`.
pub fn tls_parameters(
    url: &RelayUrl,
    extra: &[CertificateDer<'static>],
) -> Result<TlsParameters, TlsConfigError> {
    let lettre_err = |source| TlsConfigError::Lettre {
        relay: url.redacted(),
        source,
    };
    let mut b = TlsParameters::builder(url.host.clone())
        .certificate_store(CertificateStore::WebpkiRoots)
        .dangerous_accept_invalid_certs(!url.tls_verify);
    for c in extra {
        b = b.add_root_certificate(Certificate::from_der(c.to_vec()).map_err(lettre_err)?);
    }
    b.build_rustls().map_err(lettre_err)
}

/// rustls settings with the same trust as [`tls_parameters`], for the TLS lettre does not do
/// here (implicit TLS, whose socket is ours for TCP_NODELAY; `--check`'s probe). The verifier
/// keeps the certificate the relay presented, even one it refused.
pub fn rustls_config(
    url: &RelayUrl,
    extra: &[CertificateDer<'static>],
) -> Result<(Arc<rustls::ClientConfig>, Arc<Verifier>), TlsConfigError> {
    let err = |source| TlsConfigError::Rustls {
        relay: url.redacted(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots.add_parsable_certificates(extra.iter().cloned());
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| err(rustls::Error::General(e.to_string())))?;
    let verifier = Arc::new(Verifier {
        inner,
        accept_any: !url.tls_verify,
        seen: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    Ok((Arc::new(config), verifier))
}

/// The name a relay's certificate must carry: its host name or IP address.
pub fn server_name(url: &RelayUrl) -> Result<ServerName<'static>, TlsConfigError> {
    ServerName::try_from(url.host.clone()).map_err(|_| TlsConfigError::ServerName {
        relay: url.redacted(),
        host: url.host.clone(),
    })
}

/// Verifies as lettre's settings do (or not at all with `tls_verify=false`), keeping the
/// certificate the relay presented.
#[derive(Debug)]
pub struct Verifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    accept_any: bool,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl Verifier {
    /// The certificate the relay presented last, if any.
    pub fn take_seen(&self) -> Option<CertificateDer<'static>> {
        self.seen.lock().unwrap().take()
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.clone().into_owned());
        if self.accept_any {
            return Ok(ServerCertVerified::assertion());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A TLS stream lettre can speak SMTP over as if it were a plain socket.
#[derive(Debug)]
pub struct TlsSocket(pub tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl lettre::transport::smtp::client::AsyncTokioStream for TlsSocket {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for TlsSocket {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
