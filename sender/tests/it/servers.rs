//! Relays no one here wrote, and certificates, for the relay tests: aiosmtpd with STARTTLS
//! and AUTH (`aiosmtpd_relay.py`), Postfix's `smtp-sink`, and a private CA (the test kit's, made with rcgen).
//! Each server runs as a process on its own free port and is killed on drop; its own output
//! counts what it accepted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jetmail_testkit::{free_port, wait_for};

// ---- a private CA -------------------------------------------------------------------------

pub use jetmail_testkit::access::TlsFiles as Certs;

pub const CA_NAME: &str = "Jetmail Test Internal CA";

/// A company's own CA and a relay certificate it issued for `localhost` and 127.0.0.1.
pub fn private_ca(dir: &Path) -> anyhow::Result<Certs> {
    jetmail_testkit::access::private_ca(dir, CA_NAME, "relay.test")
}

// ---- aiosmtpd, a relay no one here wrote --------------------------------------------------

pub const USER: &str = "mailer";
pub const PASSWORD: &str = "s3cret-Pa55";

/// aiosmtpd (`pip install aiosmtpd`) running `aiosmtpd_relay.py`; killed on drop.
pub struct PyRelay {
    child: Child,
    pub port: u16,
    out: PathBuf,
}

impl PyRelay {
    pub async fn start(dir: &Path, name: &str, args: &[&str]) -> anyhow::Result<Self> {
        let port = free_port();
        let out = dir.join(format!("{name}.out"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/aiosmtpd_relay.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .args(args)
            .stdout(std::fs::File::create(&out)?)
            .stderr(Stdio::null())
            .spawn()?;
        let relay = Self { child, port, out };
        wait_for("aiosmtpd to listen", Duration::from_secs(20), || async {
            relay.output().contains("READY").then_some(())
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}: is aiosmtpd installed (`pip install aiosmtpd`, scripts/setup.sh)?"
            )
        })?;
        Ok(relay)
    }

    /// aiosmtpd with STARTTLS required, a certificate from `certs`, and AUTH.
    pub async fn tls_auth(dir: &Path, certs: &Certs, extra: &[&str]) -> anyhow::Result<Self> {
        let (cert, key) = (certs.cert.to_string_lossy(), certs.key.to_string_lossy());
        let mut args = vec![
            "--cert",
            &cert,
            "--key",
            &key,
            "--user",
            USER,
            "--password",
            PASSWORD,
        ];
        args.extend(extra);
        Self::start(dir, "aiosmtpd", &args).await
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// How many times each recipient was accepted.
    pub fn delivered(&self) -> HashMap<String, u64> {
        let mut counts = HashMap::new();
        for line in self.output().lines() {
            if let Some(rcpt) = line.strip_prefix("DELIVERED ") {
                *counts.entry(rcpt.to_string()).or_default() += 1;
            }
        }
        counts
    }

    pub fn url(&self, user: &str, password: &str) -> String {
        format!("smtp://{user}:{password}@localhost:{}", self.port)
    }
}

impl Drop for PyRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- Postfix's smtp-sink ------------------------------------------------------------------

/// Postfix's `smtp-sink` on its own port (it binds with SO_REUSEPORT: a leftover sink on a
/// shared port would take half the connections), dumping every transaction to a file.
pub struct PostfixSink {
    child: Child,
    pub port: u16,
    dump: PathBuf,
}

impl PostfixSink {
    pub async fn start(dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let bin = ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| {
                anyhow::anyhow!("smtp-sink not found: run scripts/setup.sh (postfix)")
            })?;
        let port = free_port();
        // smtp-sink drops to `nobody` before it writes its dump.
        let dump_dir = dir.join("smtp-sink");
        std::fs::create_dir_all(&dump_dir)?;
        std::fs::set_permissions(
            &dump_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )?;
        let dump = dump_dir.join("transactions.dump");
        let child = Command::new(bin)
            .args(["-u", "nobody", "-D"])
            .arg(&dump)
            .args(extra)
            .arg(format!("127.0.0.1:{port}"))
            .arg("64")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        wait_for("smtp-sink to listen", Duration::from_secs(10), || async {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        })
        .await?;
        Ok(Self { child, port, dump })
    }

    pub fn dumped(&self) -> String {
        std::fs::read_to_string(&self.dump).unwrap_or_default()
    }

    /// How many times each recipient was accepted, from the dump's `X-Rcpt-Args` records.
    pub fn delivered(&self) -> HashMap<String, u64> {
        let mut counts = HashMap::new();
        for line in self.dumped().lines() {
            if let Some(arg) = line.strip_prefix("X-Rcpt-Args: ") {
                let rcpt = arg.trim().trim_start_matches('<');
                let rcpt = rcpt.split('>').next().unwrap_or(rcpt);
                *counts.entry(rcpt.to_string()).or_default() += 1;
            }
        }
        counts
    }
}

impl Drop for PostfixSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
