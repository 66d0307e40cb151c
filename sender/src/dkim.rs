//! DKIM signing (RFC 6376, relaxed/relaxed): RSA-SHA256 and Ed25519-SHA256 (RFC 8463), one
//! signature per key the message's signing domain has, so a domain with both keys carries
//! both signatures (receivers that know Ed25519 use it, the others the RSA one).
//!
//! Keys come from `--dkim-selector S --dkim-key FILE [--dkim-domain D]` (repeatable, paired
//! in order) and from `--dkim-keys DIR`, laid out as `DIR/<domain>/<selector>.pem`. The
//! algorithm is read from the key itself: PKCS#1 PEM (`RSA PRIVATE KEY`) or PKCS#8 PEM
//! (`PRIVATE KEY`) holding an RSA or an Ed25519 key. Every key is checked when the sender
//! starts ([`DkimKeys::load`]): unreadable, not PEM, RSA under 2048 bits, or a content that
//! is not the algorithm its PEM says stops the sender with the file's name.
//!
//! The crate: Stalwart's `mail-auth` (the DKIM of a production mail server, fuzzed and
//! tested against other implementations), pinned to 0.13 because it is the last line with a
//! `ring` backend: ring is already our TLS and token crypto, its RSA is constant-time and about
//! twice as fast as the pure-Rust `rsa` crate the newer lines fall back to (which also carries
//! RUSTSEC-2023-0071), and it needs no C toolchain as aws-lc does. Its DNS resolver comes along
//! unused (the `ring` feature requires it).
//!
//! Signing is CPU work (RSA-2048 about a millisecond): [`crate::message`] runs it on the
//! blocking pool, never on the runtime thread that heartbeats and acks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;

/// The headers every signature covers. A header the message lacks is still listed, so it
/// cannot be added after signing (RFC 6376 §8.15, "over-signing").
pub const SIGNED_HEADERS: [&str; 9] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Smallest RSA key accepted (RFC 8301 requires 1024 and recommends 2048; the big mailbox
/// providers treat less than 2048 as weak).
pub const MIN_RSA_BITS: usize = 2048;

/// A key's algorithm, read from the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Algorithm::Rsa => "rsa-sha256",
            Algorithm::Ed25519 => "ed25519-sha256",
        })
    }
}

/// Why the DKIM configuration cannot be used; each names the file or flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("DKIM key {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("DKIM key {path}: not a PEM private key (expected PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`)")]
    NotPem { path: PathBuf },
    #[error(
        "DKIM key {path}: {what} keys cannot sign DKIM; use RSA (2048 bits or more) or Ed25519"
    )]
    Unsupported { path: PathBuf, what: &'static str },
    #[error(
        "DKIM key {path}: RSA key of {bits} bits is too short; at least {MIN_RSA_BITS} are needed"
    )]
    TooShort { path: PathBuf, bits: usize },
    #[error("DKIM key {path}: its PEM says {expected} but it is not a valid {expected} private key ({reason})")]
    Mismatch {
        path: PathBuf,
        expected: Algorithm,
        reason: String,
    },
    #[error("--dkim-keys {dir}: {problem}")]
    Layout { dir: PathBuf, problem: String },
    #[error(
        "--dkim-selector and --dkim-key come in pairs: {selectors} selector(s) for {keys} key(s)"
    )]
    Unpaired { selectors: usize, keys: usize },
    #[error("DKIM selector or domain {0:?} is not a valid DNS label sequence")]
    BadName(String),
    #[error("DKIM signing failed: {0}")]
    Sign(#[source] mail_auth::Error),
}

/// A private key read and checked, kept as DER so a signer can be made for any domain.
struct KeyMaterial {
    path: PathBuf,
    algorithm: Algorithm,
    der: DerKey,
}

enum DerKey {
    Pkcs1(Vec<u8>),
    Pkcs8(Vec<u8>),
}

/// One configured key: which selector, and which signing domain (`None`: the From domain).
struct KeyEntry {
    domain: Option<String>,
    selector: String,
    key: KeyMaterial,
}

enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// Every DKIM key of this sender, and the signers made from them per signing domain.
#[derive(Default)]
pub struct DkimKeys {
    /// From `--dkim-key`: used for every message (whose From domain has no key in the dir).
    flag_keys: Vec<KeyEntry>,
    /// From `--dkim-keys DIR`, by lower-case domain.
    dir_keys: HashMap<String, Vec<KeyEntry>>,
    /// Signers by (entry, signing domain), made on first use (loading an RSA key into ring
    /// checks it, which costs milliseconds: once per domain, not per message).
    signers: Mutex<HashMap<(usize, String), Arc<Signer>>>,
}

impl std::fmt::Debug for DkimKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKeys")
            .field("keys", &self.describe())
            .finish()
    }
}

/// What the command line says about DKIM.
#[derive(Debug, Clone, Default)]
pub struct DkimArgs {
    pub selectors: Vec<String>,
    pub keys: Vec<PathBuf>,
    pub domain: Option<String>,
    pub dir: Option<PathBuf>,
}

impl DkimKeys {
    /// Reads and checks every key; any problem stops the sender with a message naming the
    /// file.
    pub fn load(args: &DkimArgs) -> Result<Self, DkimError> {
        if args.selectors.len() != args.keys.len() {
            return Err(DkimError::Unpaired {
                selectors: args.selectors.len(),
                keys: args.keys.len(),
            });
        }
        let domain = args.domain.as_deref().map(dns_name).transpose()?;
        let mut flag_keys = Vec::new();
        for (selector, path) in args.selectors.iter().zip(&args.keys) {
            flag_keys.push(KeyEntry {
                domain: domain.clone(),
                selector: dns_name(selector)?,
                key: read_key(path)?,
            });
        }
        let dir_keys = match &args.dir {
            Some(dir) => read_dir(dir)?,
            None => HashMap::new(),
        };
        Ok(Self {
            flag_keys,
            dir_keys,
            signers: Mutex::default(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.flag_keys.is_empty() && self.dir_keys.is_empty()
    }

    /// `domain/selector (algorithm)` for each key, for the start-up log.
    pub fn describe(&self) -> Vec<String> {
        let flag = self.flag_keys.iter().map(|e| {
            let d = e.domain.as_deref().unwrap_or("<From domain>");
            format!("{d}/{} ({})", e.selector, e.key.algorithm)
        });
        let dir = self.dir_keys.iter().flat_map(|(d, es)| {
            es.iter()
                .map(move |e| format!("{d}/{} ({})", e.selector, e.key.algorithm))
        });
        flag.chain(dir).collect()
    }

    /// The `DKIM-Signature:` header lines (CRLF-terminated) to put on top of `message`, whose
    /// From address is in `from_domain`; empty when no key applies. CPU-bound: call it off
    /// the runtime thread.
    pub fn sign(&self, from_domain: &str, message: &[u8]) -> Result<Vec<u8>, DkimError> {
        let from_domain = from_domain.to_ascii_lowercase();
        let (entries, base) = match self.dir_keys.get(&from_domain) {
            Some(es) => (es.as_slice(), self.flag_keys.len()),
            None => (self.flag_keys.as_slice(), 0),
        };
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let domain = e.domain.clone().unwrap_or_else(|| from_domain.clone());
            // Dir entries are numbered after the flag entries, per domain map (the domain is
            // part of the cache key, so indices of different domains never collide).
            let signer = self.signer(base + i, e, domain)?;
            let header = match &*signer {
                Signer::Rsa(s) => s.sign(message),
                Signer::Ed25519(s) => s.sign(message),
            }
            .map_err(DkimError::Sign)?
            .to_header();
            out.extend_from_slice(without_fold_before_end(&header).as_bytes());
        }
        Ok(out)
    }

    fn signer(&self, index: usize, e: &KeyEntry, domain: String) -> Result<Arc<Signer>, DkimError> {
        let cache_key = (index, domain);
        if let Some(s) = self.signers.lock().unwrap().get(&cache_key) {
            return Ok(s.clone());
        }
        let signer = Arc::new(make_signer(&e.key, &cache_key.1, &e.selector)?);
        self.signers
            .lock()
            .unwrap()
            .insert(cache_key, signer.clone());
        Ok(signer)
    }
}

/// mail-auth folds the header when the `b=` value fills a line, which can leave the closing
/// `;` alone on a continuation line. RFC 6376 §3.5 deletes the value "including all
/// surrounding whitespace" before verifying, but verifiers differ on whitespace after it
/// (dkimpy keeps it, measured: every such signature failed there), so the fold is removed:
/// with no whitespace there, every reading hashes the same `b=;`.
fn without_fold_before_end(header: &str) -> String {
    match header.strip_suffix(";\r\n") {
        Some(body) => format!("{};\r\n", body.trim_end_matches([' ', '\t', '\r', '\n'])),
        None => header.to_string(),
    }
}

fn make_signer(key: &KeyMaterial, domain: &str, selector: &str) -> Result<Signer, DkimError> {
    let mismatch = |e: mail_auth::Error| DkimError::Mismatch {
        path: key.path.clone(),
        expected: key.algorithm,
        reason: e.to_string(),
    };
    let der = match &key.der {
        DerKey::Pkcs1(d) => PrivateKeyDer::Pkcs1(d.clone().into()),
        DerKey::Pkcs8(d) => PrivateKeyDer::Pkcs8(d.clone().into()),
    };
    Ok(match key.algorithm {
        Algorithm::Rsa => Signer::Rsa(
            DkimSigner::from_key(RsaKey::<Sha256>::from_key_der(der).map_err(mismatch)?)
                .domain(domain)
                .selector(selector)
                .headers(SIGNED_HEADERS)
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed),
        ),
        Algorithm::Ed25519 => Signer::Ed25519(
            DkimSigner::from_key(
                Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_der()).map_err(mismatch)?,
            )
            .domain(domain)
            .selector(selector)
            .headers(SIGNED_HEADERS)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed),
        ),
    })
}

/// A selector or domain as it goes into `s=`/`d=`: lower-case letters, digits, `-`, `_`
/// and dots, nothing that could break the header.
fn dns_name(s: &str) -> Result<String, DkimError> {
    let ok = !s.is_empty()
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(DkimError::BadName(s.to_string()))
    }
}

/// `DIR/<domain>/<selector>.pem`; other files are ignored, an empty layout is an error.
fn read_dir(dir: &Path) -> Result<HashMap<String, Vec<KeyEntry>>, DkimError> {
    let layout = |problem: String| DkimError::Layout {
        dir: dir.to_path_buf(),
        problem,
    };
    let domains =
        std::fs::read_dir(dir).map_err(|e| layout(format!("cannot read the directory: {e}")))?;
    let mut out: HashMap<String, Vec<KeyEntry>> = HashMap::new();
    for d in domains {
        let d = d.map_err(|e| layout(e.to_string()))?;
        if !d.path().is_dir() {
            continue;
        }
        let domain = dns_name(&d.file_name().to_string_lossy())?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(d.path())
            .map_err(|e| layout(format!("{}: {e}", d.path().display())))?
            .filter_map(|f| f.ok().map(|f| f.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pem"))
            .collect();
        files.sort();
        for path in files {
            let selector = dns_name(&path.file_stem().unwrap_or_default().to_string_lossy())?;
            let key = read_key(&path)?;
            out.entry(domain.clone()).or_default().push(KeyEntry {
                domain: Some(domain.clone()),
                selector,
                key,
            });
        }
    }
    if out.is_empty() {
        return Err(layout(
            "no key found; expected <domain>/<selector>.pem files".into(),
        ));
    }
    Ok(out)
}

/// DER object identifiers of the key algorithms inside a PKCS#8 `PrivateKeyInfo`.
const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const OID_EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// Reads one key file and checks it fully: the signer made from it is made here once too,
/// so a key ring refuses is refused at start, not at the first message.
fn read_key(path: &Path) -> Result<KeyMaterial, DkimError> {
    let bytes = std::fs::read(path).map_err(|source| DkimError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| DkimError::NotPem {
        path: path.to_path_buf(),
    })?;
    let unsupported = |what| DkimError::Unsupported {
        path: path.to_path_buf(),
        what,
    };
    let (algorithm, der) = match der {
        PrivateKeyDer::Pkcs1(d) => (Algorithm::Rsa, DerKey::Pkcs1(d.secret_pkcs1_der().to_vec())),
        PrivateKeyDer::Pkcs8(d) => {
            let der = d.secret_pkcs8_der();
            let alg = pkcs8_algorithm(der).ok_or_else(|| unsupported("unknown"))?;
            match alg {
                Pkcs8Alg::Rsa => (Algorithm::Rsa, DerKey::Pkcs8(der.to_vec())),
                Pkcs8Alg::Ed25519 => (Algorithm::Ed25519, DerKey::Pkcs8(der.to_vec())),
                Pkcs8Alg::Ec => return Err(unsupported("ECDSA")),
            }
        }
        PrivateKeyDer::Sec1(_) => return Err(unsupported("ECDSA")),
        _ => return Err(unsupported("unknown")),
    };
    let key = KeyMaterial {
        path: path.to_path_buf(),
        algorithm,
        der,
    };
    if algorithm == Algorithm::Rsa {
        let rsa = match &key.der {
            DerKey::Pkcs1(d) => Some(d.as_slice()),
            DerKey::Pkcs8(d) => pkcs8_inner(d),
        };
        if let Some(bits) = rsa.and_then(rsa_modulus_bits) {
            if bits < MIN_RSA_BITS {
                return Err(DkimError::TooShort {
                    path: path.to_path_buf(),
                    bits,
                });
            }
        }
    }
    make_signer(&key, "check.invalid", "check")?;
    Ok(key)
}

enum Pkcs8Alg {
    Rsa,
    Ed25519,
    Ec,
}

/// The algorithm named by a PKCS#8 `PrivateKeyInfo`'s AlgorithmIdentifier.
fn pkcs8_algorithm(der: &[u8]) -> Option<Pkcs8Alg> {
    let (_, body, _) = tlv(der)?; // PrivateKeyInfo SEQUENCE
    let (_, _, rest) = tlv(body)?; // version INTEGER
    let (_, alg, _) = tlv(rest)?; // AlgorithmIdentifier SEQUENCE
    if alg.starts_with(OID_RSA) {
        Some(Pkcs8Alg::Rsa)
    } else if alg.starts_with(OID_ED25519) {
        Some(Pkcs8Alg::Ed25519)
    } else if alg.starts_with(OID_EC) {
        Some(Pkcs8Alg::Ec)
    } else {
        None
    }
}

/// The PKCS#1 key inside a PKCS#8 `PrivateKeyInfo` (its privateKey OCTET STRING).
fn pkcs8_inner(der: &[u8]) -> Option<&[u8]> {
    let (_, body, _) = tlv(der)?;
    let (_, _, rest) = tlv(body)?;
    let (_, _, rest) = tlv(rest)?;
    let (tag, key, _) = tlv(rest)?;
    (tag == 0x04).then_some(key)
}

/// Bit length of the modulus of a PKCS#1 `RSAPrivateKey`.
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    let (_, body, _) = tlv(der)?;
    let (_, _, rest) = tlv(body)?; // version
    let (tag, n, _) = tlv(rest)?; // modulus INTEGER
    if tag != 0x02 {
        return None;
    }
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return Some(0),
    };
    Some(n.len() * 8 - n[0].leading_zeros() as usize)
}

/// One DER TLV: (tag, contents, what follows).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *der.first()?;
    let first = *der.get(1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let len = der
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, 2 + n)
    };
    let end = start.checked_add(len)?;
    Some((tag, der.get(start..end)?, der.get(end..)?))
}

#[cfg(test)]
mod tests;
