//! Which certificates a relay's TLS is checked against: the roots bundled with the sender
//! (webpki-roots), the operating system's trust store, and a private CA from `--smtp-ca` or
//! `?ca=`. Companies run relays with certificates from their own CA; the bundled roots alone
//! refused those with "UnknownIssuer".

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

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
