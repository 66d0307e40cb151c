//! NATS with the shipped access control: nats-server started the way compose starts it
//! (`deploy/nats-entrypoint.sh` reading one password file per user, then `nats.conf` or
//! `deploy/nats-tls.conf`), with fresh passwords and, for TLS, a private CA and a server
//! certificate for 127.0.0.1 made with rcgen. Tests that need no users keep using
//! [`crate::NatsServer::start`].

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TempDir;

/// The users `nats.conf` defines.
pub const NATS_USERS: [&str; 5] = ["admin", "ingest", "sender", "monitor", "webui"];

/// The repository's root (where `nats.conf` and `deploy/` are).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits in the workspace")
        .to_path_buf()
}

/// A CA and the server certificate it signed, as PEM files.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Passwords (and certificates) for one server run: what an operator puts in secret files.
pub struct NatsAccess {
    dir: TempDir,
    pub tls: Option<TlsFiles>,
}

impl NatsAccess {
    /// A fresh password for every user of `nats.conf`; with `tls`, a CA and a certificate for
    /// `127.0.0.1` and `localhost`.
    pub fn new(tls: bool) -> anyhow::Result<Self> {
        let dir = TempDir::new("nats-access");
        std::fs::create_dir_all(dir.path().join("secrets"))?;
        for user in NATS_USERS {
            std::fs::write(secret_path(dir.path(), user), format!("{}\n", password()))?;
        }
        let tls = if tls {
            Some(private_ca(dir.path(), "Jetmail Test NATS CA", "nats.test")?)
        } else {
            None
        };
        Ok(Self { dir, tls })
    }

    /// The file holding `user`'s password (as compose mounts it: one line).
    pub fn password_file(&self, user: &str) -> PathBuf {
        secret_path(self.dir.path(), user)
    }

    pub fn password(&self, user: &str) -> String {
        std::fs::read_to_string(self.password_file(user))
            .expect("password file")
            .trim_end()
            .to_string()
    }

    /// The flags a service run as `user` gets: its user, its password file and, with TLS,
    /// the CA.
    pub fn service_args(&self, user: &str) -> Vec<String> {
        let mut args = vec![
            "--nats-user".to_string(),
            user.to_string(),
            "--nats-password-file".to_string(),
            self.password_file(user).display().to_string(),
        ];
        if let Some(tls) = &self.tls {
            args.push("--nats-tls-ca".into());
            args.push(tls.ca.display().to_string());
        }
        args
    }

    /// Connect options for `user` (`None`: anonymous), trusting the CA when there is one.
    pub fn options(&self, user: Option<&str>) -> async_nats::ConnectOptions {
        let mut opts = async_nats::ConnectOptions::new();
        if let Some(user) = user {
            opts = opts.user_and_password(user.to_string(), self.password(user));
        }
        if let Some(tls) = &self.tls {
            opts = opts.add_root_certificates(tls.ca.clone()).require_tls(true);
        }
        opts
    }

    /// The shipped server command: the entrypoint script reading the password files, then
    /// nats-server with `nats.conf` (or `deploy/nats-tls.conf`), `args` after it.
    pub fn command(&self, nats_server: &Path, args: &[String]) -> Command {
        let root = repo_root();
        let conf = match self.tls {
            Some(_) => root.join("deploy/nats-tls.conf"),
            None => root.join("nats.conf"),
        };
        let mut cmd = Command::new("sh");
        cmd.arg(root.join("deploy/nats-entrypoint.sh"))
            .arg("-c")
            .arg(conf)
            .args(args)
            .env("JETMAIL_NATS_SECRETS_DIR", self.dir.path().join("secrets"))
            .env("NATS_SERVER_BIN", nats_server);
        if let Some(tls) = &self.tls {
            cmd.env("JETMAIL_NATS_TLS_CERT", &tls.cert)
                .env("JETMAIL_NATS_TLS_KEY", &tls.key);
        }
        cmd
    }
}

fn secret_path(dir: &Path, user: &str) -> PathBuf {
    dir.join("secrets").join(format!("nats_{user}_password"))
}

/// 32 random hex digits after a letter: what `deploy/nats-entrypoint.sh` accepts.
fn password() -> String {
    let random = |_| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let [a, b]: [u64; 2] = std::array::from_fn(random);
    format!("p{a:016x}{b:016x}")
}

/// A private CA named `ca_name` and a certificate it issued to `server_name` for 127.0.0.1 and
/// localhost, written to `dir` as `ca.pem`, `server.pem` and `server.key`: the TLS of the NATS
/// tests and of the relay tests alike.
pub fn private_ca(dir: &Path, ca_name: &str, server_name: &str) -> anyhow::Result<TlsFiles> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, server_name);
    let cert = params.signed_by(&key, &issuer)?;
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.ca, ca_cert.pem())?;
    std::fs::write(&files.cert, cert.pem())?;
    std::fs::write(&files.key, key.serialize_pem())?;
    Ok(files)
}
