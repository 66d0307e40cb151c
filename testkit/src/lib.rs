//! Test support, used only as a dev-dependency (and by the demo's mail sink): a real
//! `nats-server` on a free port with its own store, a real SMTP server with fault modes that
//! counts what it receives, and real service processes that are killed when dropped, so a
//! failing test leaves nothing running.

pub mod access;
pub mod bench;
pub mod cluster;
pub mod nats;
pub mod process;
pub mod smtp;
pub mod stack;
pub mod throttle;

use std::time::{Duration, Instant};

pub use access::{NatsAccess, NATS_USERS};
pub use cluster::NatsCluster;
pub use nats::NatsServer;
pub use process::{bin_path, Service};
pub use smtp::{Faults, SmtpSink};
pub use stack::{apply_senders_policy, policy, Stack};
pub use throttle::{per_second, rate_between, RateReport};

/// A free TCP port on 127.0.0.1 (bound, then released: good enough for one test run).
/// One HTTP/1.1 request to `127.0.0.1:port` on a fresh connection; the body of the answer if
/// its status is 2xx, `None` otherwise (or when nothing answers).
pub async fn http_request(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.split(' ')
        .nth(1)?
        .starts_with('2')
        .then(|| body.to_string())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// Polls `check` until it returns `Some`, or fails with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "jetmail-{prefix}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("JETMAIL_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
