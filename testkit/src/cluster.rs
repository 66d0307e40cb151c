//! A real 3-node JetStream cluster on loopback (or one node started the same way): three `nats-server` processes (`n1`, `n2`,
//! `n3`), each with its own client port, route port and store, routed to each other. A node
//! can be `kill -9`ed and restarted on the same ports and store, as a machine crash would; the
//! cluster tells which node leads a stream (its info's `cluster.leader`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::ServerAddr;
use jetmail_common::topology::{all_stores, stream_replication};

use crate::nats::nats_server_bin;
use crate::{free_port, wait_for, TempDir};

/// The cluster's name in every node's `cluster` block.
pub const CLUSTER_NAME: &str = "jetmail";

/// How a node writes JetStream data to disk: the server's default (fsync every 2 minutes),
/// or `sync_interval: always` (fsync before every acknowledgement).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sync {
    #[default]
    Default,
    Always,
}

impl Sync {
    fn config_line(self) -> &'static str {
        match self {
            Sync::Default => "",
            Sync::Always => "sync_interval: always",
        }
    }
}

/// One node: its ports, store and process.
struct Node {
    name: String,
    port: u16,
    route_port: u16,
    dir: TempDir,
    child: Option<Child>,
}

/// Three routed nats-servers with JetStream; every node is killed on drop.
pub struct NatsCluster {
    nodes: Vec<Node>,
    sync: Sync,
}

impl NatsCluster {
    /// Starts three nodes and waits until JetStream answers on each (a meta leader exists).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Sync::Default).await
    }

    pub async fn start_with(sync: Sync) -> anyhow::Result<Self> {
        Self::start_nodes(3, sync).await
    }

    /// Starts `n` nodes; a single node gets no `cluster` block (a plain JetStream server
    /// started the same way, for comparisons).
    pub async fn start_nodes(n: usize, sync: Sync) -> anyhow::Result<Self> {
        let nodes = (1..=n)
            .map(|i| Node {
                name: format!("n{i}"),
                port: free_port(),
                route_port: free_port(),
                dir: TempDir::new(&format!("cluster-n{i}")),
                child: None,
            })
            .collect();
        let mut cluster = Self { nodes, sync };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_ready(i).await?;
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s server name (`n1` for 0).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Node `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Every node's client URL, comma-separated: what `--nats-url` takes.
    pub fn urls(&self) -> String {
        (0..self.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The flags a service gets: all three URLs and `--replicas 3`.
    pub fn service_args(&self) -> Vec<String> {
        vec![
            "--nats-url".into(),
            self.urls(),
            "--replicas".into(),
            self.len().to_string(),
        ]
    }

    /// A client that knows every node and moves to a surviving one by itself.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        let addrs: Vec<ServerAddr> = (0..self.len())
            .map(|i| self.url(i).parse())
            .collect::<Result<_, _>>()?;
        Ok(async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(addrs)
            .await?)
    }

    fn config(&self, i: usize) -> String {
        let n = &self.nodes[i];
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, o)| format!("nats-route://127.0.0.1:{}", o.route_port))
            .collect();
        let store = n.dir.path().join("store");
        let mut conf = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
             jetstream {{\n  store_dir: {store:?}\n  {sync}\n}}\n",
            name = n.name,
            port = n.port,
            sync = self.sync.config_line(),
        );
        if self.len() > 1 {
            conf += &format!(
                "cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{route}\n  \
                 routes: [{routes}]\n}}\n",
                route = n.route_port,
                routes = routes.join(", "),
            );
        }
        conf
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let conf: PathBuf = self.nodes[i].dir.path().join("nats.conf");
        std::fs::write(&conf, self.config(i))?;
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.dir.path().join("nats.log"))?;
        let child = Command::new(nats_server_bin()?)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        n.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&self, i: usize) -> anyhow::Result<()> {
        let url = self.url(i);
        wait_for(
            &format!("{} to answer JetStream requests", self.name(i)),
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    let client = async_nats::connect(url).await.ok()?;
                    let js = async_nats::jetstream::new(client);
                    js.query_account().await.ok().map(|_| ())
                }
            },
        )
        .await
    }

    /// `kill -9` node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on the same ports and store, and waits until it answers.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        self.wait_ready(i).await
    }

    /// The index of the node leading `stream` (a KV bucket's is `KV_<bucket>`), asked of any
    /// node still up.
    pub async fn leader(&self, client: &async_nats::Client, stream: &str) -> Option<usize> {
        let js = async_nats::jetstream::new(client.clone());
        let (_, r) = stream_replication(&js, stream).await.ok()?;
        let leader = r.leader?;
        self.nodes.iter().position(|n| n.name == leader)
    }

    /// Waits until every jetmail stream and bucket has a leader and all its copies current:
    /// what a rolling restart waits for before taking the next node down.
    pub async fn wait_in_sync(
        &self,
        client: &async_nats::Client,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let js = async_nats::jetstream::new(client.clone());
        wait_for("every stream in sync", timeout, || async {
            for store in all_stores() {
                let (_, r) = stream_replication(&js, &store.stream).await.ok()?;
                if !r.in_sync() {
                    return None;
                }
            }
            Some(())
        })
        .await
    }

    /// Node `i`'s log so far, for failure messages.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
