//! A real SMTP server for tests and the demo: it speaks SMTP over TCP to any client, records
//! every accepted message per recipient (the ground truth of a test), and injects faults on
//! demand: 451 or 550 on chosen or random recipients, hang-ups, stalls after DATA, latency,
//! connection limits (a hang-up or a 421 after N messages), a refused MAIL FROM, a 421 above
//! a rate, and being down altogether. Each accepted recipient is recorded with its arrival
//! time, so tests can measure the rate a limit holds. It offers PIPELINING (RFC 2920) and counts the commands that came pipelined.
//! Written here rather than taken from a crate because tests need to switch those faults at
//! run time and count deliveries exactly.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Faults the sink injects; change them at any time with [`SmtpSink::set_faults`].
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer `451 4.7.1` to this fraction (0.0..=1.0) of RCPT commands, at random.
    pub tempfail_ratio: f64,
    /// Answer `550 5.1.1 user unknown` to these recipients, always.
    pub reject: HashSet<String>,
    /// Answer RCPT for these recipients with the reply given (say `550 5.7.1 spam`), always.
    pub reject_with: HashMap<String, String>,
    /// Record the message after DATA, then never answer (the client must time out).
    pub stall_after_data: bool,
    /// Record the message after DATA, then close the connection without answering.
    pub drop_after_data: bool,
    /// Send every reply this long after its command arrived, as a relay this far away would:
    /// replies to commands that arrived together (pipelined) leave together.
    pub delay: Duration,
    /// Answer `421` to new connections.
    pub greet_tempfail: bool,
    /// Do not offer PIPELINING in the EHLO reply.
    pub no_pipelining: bool,
    /// Close the connection without a word after this many messages on it (after the last
    /// one's `250`), as relays with a per-connection limit do.
    pub drop_every: Option<u32>,
    /// Once this many messages were accepted on a connection, answer the next MAIL FROM with
    /// `421 4.7.0 too many messages` and close it (Exchange, hosted relays).
    pub tempfail_421_after: Option<u32>,
    /// Answer every MAIL FROM with this reply (say `554 5.7.1 relaying denied`).
    pub mail_from_reply: Option<String>,
    /// While this many messages or more were accepted within the last second (by the whole
    /// sink), answer MAIL FROM with `421 4.7.0 rate limited` and close the connection, as a
    /// mailbox provider that throttles a sender does.
    pub tempfail_421_above_rate: Option<u32>,
}

/// When one recipient's message was accepted (after its `.`), for rate measurements.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: std::time::Instant,
    pub rcpt: String,
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: String,
}

#[derive(Default)]
struct Shared {
    faults: Mutex<Faults>,
    received: Mutex<Vec<Received>>,
    counts: Mutex<HashMap<String, u64>>,
    arrivals: Mutex<Vec<Arrival>>,
    /// Replies `421 4.7.0` sent by the rate fault.
    refused_421: AtomicU64,
    total: AtomicU64,
    connections: AtomicU64,
    /// Transactions open now (MAIL FROM accepted, the DATA reply not sent yet), and the most
    /// open at once: the sessions a relay sees busy, what a session cap limits.
    open_transactions: AtomicU64,
    max_open_transactions: AtomicU64,
    pipelined: AtomicU64,
    rng: AtomicU64,
    keep_bodies: bool,
    maildir: Option<std::path::PathBuf>,
    /// The highest `<n>.eml` already in `maildir` at start: a restarted sink (compose `down`
    /// then `up` keeps the mail volume) numbers on after it instead of overwriting.
    maildir_first: u64,
}

impl Shared {
    fn random(&self) -> f64 {
        // xorshift: reproducibility is not needed, only a spread.
        let mut x = self.rng.load(Ordering::Relaxed) | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A running SMTP server on 127.0.0.1; stopped on drop.
pub struct SmtpSink {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl SmtpSink {
    /// Starts on a free port, keeping message bodies.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0".parse()?, true, None).await
    }

    /// Starts on `addr`; `keep_bodies = false` keeps only counts (for large runs); with a
    /// `maildir`, every message is also written there as `<n>.eml`, numbered on after the
    /// files already there.
    pub async fn start_on(
        addr: SocketAddr,
        keep_bodies: bool,
        maildir: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Self> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64;
        let maildir_first = maildir.as_deref().map_or(0, last_eml_number);
        let shared = Arc::new(Shared {
            keep_bodies,
            maildir,
            maildir_first,
            rng: AtomicU64::new(seed),
            ..Default::default()
        });
        let mut sink = Self {
            addr,
            shared,
            task: None,
        };
        sink.listen().await?;
        Ok(sink)
    }

    async fn listen(&mut self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.addr = listener.local_addr()?;
        let shared = self.shared.clone();
        self.task = Some(tokio::spawn(accept_loop(listener, shared)));
        Ok(())
    }

    /// `smtp://127.0.0.1:<port>`, the form `jetmail-sender --smtp-url` takes.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Stops listening and drops every open connection: clients get "connection refused".
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same port after [`SmtpSink::stop`].
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        self.stop();
        // Aborted tasks release the socket asynchronously: retry the bind briefly.
        for _ in 0..100 {
            match self.listen().await {
                Ok(()) => return Ok(()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        self.listen().await
    }

    pub fn set_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.shared.faults.lock().unwrap());
    }

    /// How many times each recipient was accepted.
    pub fn counts(&self) -> HashMap<String, u64> {
        self.shared.counts.lock().unwrap().clone()
    }

    /// Accepted messages (with bodies when kept).
    pub fn messages(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Every accepted recipient with the time it arrived, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.shared.arrivals.lock().unwrap().clone()
    }

    /// How many MAIL FROM commands the rate fault answered with `421 4.7.0`.
    pub fn refused_421(&self) -> u64 {
        self.shared.refused_421.load(Ordering::Relaxed)
    }

    /// Accepted (recipient, message) pairs.
    pub fn total(&self) -> u64 {
        self.shared.total.load(Ordering::Relaxed)
    }

    /// Distinct recipients accepted.
    pub fn distinct(&self) -> usize {
        self.shared.counts.lock().unwrap().len()
    }

    /// The most transactions open at once so far (MAIL FROM accepted, final reply to DATA
    /// not sent yet, on any connection).
    pub fn max_open_transactions(&self) -> u64 {
        self.shared.max_open_transactions.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// MAIL FROM commands that arrived together with the command after them (pipelined).
    pub fn pipelined(&self) -> u64 {
        self.shared.pipelined.load(Ordering::Relaxed)
    }

    /// Extra deliveries beyond the first, summed over recipients.
    pub fn duplicates(&self) -> u64 {
        self.shared
            .counts
            .lock()
            .unwrap()
            .values()
            .map(|n| n.saturating_sub(1))
            .sum()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connection tasks live in the set so that aborting this task closes them all.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let _ = stream.set_nodelay(true);
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    conns.spawn(session(stream, shared.clone()));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One open transaction, counted in [`Shared::open_transactions`] until dropped: just before
/// the final reply to DATA is written, at RSET, or with the connection.
struct OpenTransaction(Arc<Shared>);

impl OpenTransaction {
    fn open(shared: &Arc<Shared>) -> Self {
        let now = shared.open_transactions.fetch_add(1, Ordering::SeqCst) + 1;
        shared
            .max_open_transactions
            .fetch_max(now, Ordering::SeqCst);
        Self(shared.clone())
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        self.0.open_transactions.fetch_sub(1, Ordering::SeqCst);
    }
}

fn faults(shared: &Shared) -> Faults {
    shared.faults.lock().unwrap().clone()
}

/// Writes one reply (`text` may hold several lines), `delay` after `arrived`.
async fn reply(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
    arrived: Instant,
    text: &str,
) -> std::io::Result<()> {
    let delay = shared.faults.lock().unwrap().delay;
    if !delay.is_zero() {
        tokio::time::sleep_until(arrived + delay).await;
    }
    w.write_all(text.as_bytes()).await?;
    w.write_all(b"\r\n").await
}

/// Reads one line into `line`; returns when it arrived: a line that was already buffered
/// came with the read before it (the client pipelined it), so it shares that read's time.
async fn read_line(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &mut Vec<u8>,
    last: Instant,
) -> std::io::Result<(usize, Instant)> {
    let buffered = r.buffer().contains(&b'\n');
    let n = r.read_until(b'\n', line).await?;
    Ok((n, if buffered { last } else { Instant::now() }))
}

fn angle_addr(arg: &str) -> String {
    let start = arg.find('<').map(|i| i + 1).unwrap_or(0);
    let end = arg[start..]
        .find('>')
        .map(|i| start + i)
        .unwrap_or(arg.len());
    arg[start..end].trim().to_string()
}

async fn session(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut at = Instant::now();
    if faults(&shared).greet_tempfail {
        reply(&mut w, &shared, at, "421 4.3.2 service not available").await?;
        return Ok(());
    }
    reply(&mut w, &shared, at, "220 jetmail-sink ESMTP ready").await?;
    let mut from = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = Vec::new();
    // Messages accepted on this connection, for the per-connection limits.
    let mut accepted = 0u32;
    // A transaction is open (MAIL FROM accepted): RCPT outside one is refused, as real
    // servers do, so a client that pipelines after a refused MAIL FROM is tested for real.
    let mut in_mail = false;
    let mut transaction: Option<OpenTransaction> = None;
    loop {
        line.clear();
        let n;
        (n, at) = read_line(&mut r, &mut line, at).await?;
        if n == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                let pipelining = if faults(&shared).no_pipelining {
                    ""
                } else {
                    "250-PIPELINING\r\n"
                };
                let ehlo = format!(
                    "250-jetmail-sink\r\n{pipelining}250-8BITMIME\r\n250-SMTPUTF8\r\n250-SIZE 52428800\r\n250 ENHANCEDSTATUSCODES"
                );
                reply(&mut w, &shared, at, &ehlo).await?
            }
            "HELO" => reply(&mut w, &shared, at, "250 jetmail-sink").await?,
            "MAIL" => {
                if r.buffer().contains(&b'\n') {
                    shared.pipelined.fetch_add(1, Ordering::Relaxed);
                }
                let f = faults(&shared);
                if f.tempfail_421_after.is_some_and(|n| accepted >= n) {
                    reply(&mut w, &shared, at, "421 4.7.0 too many messages, closing").await?;
                    return Ok(());
                }
                if f.tempfail_421_above_rate
                    .is_some_and(|n| accepted_last_second(&shared) >= n as usize)
                {
                    shared.refused_421.fetch_add(1, Ordering::Relaxed);
                    reply(&mut w, &shared, at, "421 4.7.0 rate limited, slow down").await?;
                    return Ok(());
                }
                if let Some(text) = f.mail_from_reply {
                    reply(&mut w, &shared, at, &text).await?;
                    continue;
                }
                from = angle_addr(arg);
                in_mail = true;
                // A MAIL inside a transaction starts a new one; the old one is over first.
                drop(transaction.take());
                transaction = Some(OpenTransaction::open(&shared));
                rcpts.clear();
                reply(&mut w, &shared, at, "250 2.1.0 ok").await?
            }
            "RCPT" => {
                let rcpt = angle_addr(arg);
                let f = faults(&shared);
                if !in_mail {
                    reply(&mut w, &shared, at, "503 5.5.1 need MAIL first").await?
                } else if f.reject.contains(&rcpt) {
                    reply(&mut w, &shared, at, "550 5.1.1 user unknown").await?
                } else if let Some(text) = f.reject_with.get(&rcpt) {
                    reply(&mut w, &shared, at, text).await?
                } else if f.tempfail_ratio > 0.0 && shared.random() < f.tempfail_ratio {
                    reply(&mut w, &shared, at, "451 4.7.1 try again later").await?
                } else {
                    rcpts.push(rcpt);
                    reply(&mut w, &shared, at, "250 2.1.5 ok").await?
                }
            }
            "DATA" => {
                if rcpts.is_empty() {
                    drop(transaction.take());
                    reply(&mut w, &shared, at, "554 5.5.1 no valid recipients").await?;
                    continue;
                }
                reply(&mut w, &shared, at, "354 end data with <CR><LF>.<CR><LF>").await?;
                let mut data = Vec::new();
                loop {
                    line.clear();
                    let n;
                    (n, at) = read_line(&mut r, &mut line, at).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                    let body = if line.starts_with(b"..") {
                        &line[1..]
                    } else {
                        &line[..]
                    };
                    data.extend_from_slice(body);
                }
                record(&shared, &from, &rcpts, data);
                rcpts.clear();
                in_mail = false;
                accepted += 1;
                let f = faults(&shared);
                if f.stall_after_data {
                    // Never answer; hold the connection until the client gives up.
                    std::future::pending::<()>().await;
                }
                if f.drop_after_data {
                    return Ok(());
                }
                // Over before its reply leaves: the client may start its next transaction
                // the moment the reply arrives, before this task would get to count it closed.
                drop(transaction.take());
                reply(&mut w, &shared, at, "250 2.0.0 queued").await?;
                if f.drop_every.is_some_and(|n| accepted >= n) {
                    return Ok(());
                }
            }
            "RSET" => {
                rcpts.clear();
                in_mail = false;
                drop(transaction.take());
                reply(&mut w, &shared, at, "250 2.0.0 ok").await?
            }
            "NOOP" => reply(&mut w, &shared, at, "250 2.0.0 ok").await?,
            "QUIT" => {
                reply(&mut w, &shared, at, "221 2.0.0 bye").await?;
                return Ok(());
            }
            _ => reply(&mut w, &shared, at, "502 5.5.2 command not recognized").await?,
        }
    }
}

/// Recipients accepted within the last second.
fn accepted_last_second(shared: &Shared) -> usize {
    let since = std::time::Instant::now() - Duration::from_secs(1);
    let arrivals = shared.arrivals.lock().unwrap();
    arrivals.iter().rev().take_while(|a| a.at >= since).count()
}

/// The highest `n` of the `<n>.eml` files in `dir` (0 when there are none).
fn last_eml_number(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            name.to_str()?.strip_suffix(".eml")?.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}

fn record(shared: &Shared, from: &str, rcpts: &[String], data: Vec<u8>) {
    let n = shared
        .total
        .fetch_add(rcpts.len() as u64, Ordering::Relaxed);
    {
        let at = std::time::Instant::now();
        let mut arrivals = shared.arrivals.lock().unwrap();
        arrivals.extend(rcpts.iter().map(|r| Arrival {
            at,
            rcpt: r.clone(),
        }));
    }
    {
        let mut counts = shared.counts.lock().unwrap();
        for r in rcpts {
            *counts.entry(r.clone()).or_default() += 1;
        }
    }
    if let Some(dir) = &shared.maildir {
        let n = shared.maildir_first + n + 1;
        let _ = std::fs::write(dir.join(format!("{n:08}.eml")), &data);
    }
    if shared.keep_bodies {
        shared.received.lock().unwrap().push(Received {
            from: from.to_string(),
            rcpts: rcpts.to_vec(),
            data: String::from_utf8_lossy(&data).into_owned(),
        });
    }
}
