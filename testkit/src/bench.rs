//! What jetmail's benchmarks measure besides messages per second: CPU time and peak memory of
//! running processes (from `/proc`), the broker's message counters (`/varz`), Postfix's
//! `smtp-sink` as the relay and `smtp-source` as the reference for the raw SMTP path, and
//! latency histograms. Benchmarks, not tests: nothing here asserts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// CPU time (user + system) a process has used so far, in microseconds.
pub fn cpu_us(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf only reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000 / hz
}

/// Peak resident set of a running process, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// CPU used by a set of processes between two points of a run.
pub struct CpuMeter {
    start: Vec<(String, u32, u64)>,
}

impl CpuMeter {
    pub fn start(procs: &[(String, u32)]) -> Self {
        Self {
            start: procs
                .iter()
                .map(|(name, pid)| (name.clone(), *pid, cpu_us(*pid)))
                .collect(),
        }
    }

    /// Each process's CPU since [`CpuMeter::start`], in microseconds.
    pub fn stop(&self) -> Vec<(String, u64)> {
        self.start
            .iter()
            .map(|(name, pid, at)| (name.clone(), cpu_us(*pid).saturating_sub(*at)))
            .collect()
    }
}

/// The broker's own counters (`/varz`): every message in and out, whatever the subject.
#[derive(Debug, Clone, Copy, Default)]
pub struct Varz {
    pub in_msgs: u64,
    pub out_msgs: u64,
}

impl Varz {
    pub async fn read(monitor_port: u16) -> Self {
        let body = crate::http_request(monitor_port, "GET", "/varz", "")
            .await
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&dechunk(&body)).unwrap_or_default();
        Self {
            in_msgs: v["in_msgs"].as_u64().unwrap_or(0),
            out_msgs: v["out_msgs"].as_u64().unwrap_or(0),
        }
    }

    pub fn since(self, before: Varz) -> Varz {
        Varz {
            in_msgs: self.in_msgs.saturating_sub(before.in_msgs),
            out_msgs: self.out_msgs.saturating_sub(before.out_msgs),
        }
    }
}

/// The body of a `Transfer-Encoding: chunked` answer (nats-server's monitoring port sends one),
/// or the text itself when it is not chunked.
fn dechunk(text: &str) -> String {
    let chunked = text
        .split_once("\r\n")
        .is_some_and(|(size, _)| usize::from_str_radix(size.trim(), 16).is_ok());
    if !chunked {
        return text.to_string();
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return text.to_string();
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// A CSV of `n` recipients over 50 domains, with a `name` column for the templates.
pub fn write_csv(path: &Path, n: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "email,name")?;
    for i in 0..n {
        writeln!(f, "user{i}@domain{}.example.com,Name {i}", i % 50)?;
    }
    Ok(f.flush()?)
}

fn postfix_tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Postfix's `smtp-sink` on a port of its own (it binds with SO_REUSEPORT: a leftover sink on
/// a shared port would take half the connections).
pub struct PostfixSink {
    child: Child,
    pub port: u16,
    out: PathBuf,
}

impl PostfixSink {
    /// `delay`: answer every DATA that much later (`-w`), like a distant MX. `backlog` is also
    /// the most connections it serves at once.
    pub fn start(dir: &Path, backlog: u32, delay: Option<Duration>) -> anyhow::Result<Self> {
        let bin = postfix_tool("smtp-sink").ok_or_else(|| {
            anyhow::anyhow!("Postfix's smtp-sink is missing: run scripts/setup.sh --bench")
        })?;
        let port = crate::free_port();
        let out = dir.join(format!("smtp-sink-{port}.out"));
        let mut cmd = Command::new(bin);
        // `-m`: smtp-sink serves 256 connections at once by default and leaves the rest
        // queued in the kernel, which caps a 2,000-session run at about 250 msg/s.
        cmd.args(["-u", "nobody", "-c", "-m", &backlog.to_string()]);
        if let Some(d) = delay {
            cmd.arg("-w").arg(d.as_secs().max(1).to_string());
        }
        let child = cmd
            .arg(format!("127.0.0.1:{port}"))
            .arg(backlog.to_string())
            .stdout(std::fs::File::create(&out)?)
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { child, port, out })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Messages accepted so far, from the sink's running counter (`mesg=N`).
    pub fn messages(&self) -> u64 {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.rsplit("mesg=")
            .next()
            .and_then(|t| {
                t.trim()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for PostfixSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Postfix's daemons, as Debian installs them.
const POSTFIX_DAEMONS: &str = "/usr/lib/postfix/sbin";

/// A private Postfix instance that relays everything it is given to a sink on `127.0.0.1`:
/// its own configuration, queue and log in a folder of its own, listening on a port of its
/// own, so the machine's mail system (Debian installs the package unconfigured) is untouched.
/// Postfix as it ships but for what relaying needs: no local delivery, no TLS, no DNS. It
/// needs root, as Postfix's master does. Stopped on drop.
pub struct PostfixRelay {
    conf: PathBuf,
    log: PathBuf,
    pub port: u16,
}

impl PostfixRelay {
    /// Whether this machine can run one: Postfix installed and this process root.
    pub fn available() -> bool {
        postfix_tool("postfix").is_some()
            && Path::new(POSTFIX_DAEMONS).join("master").exists()
            // SAFETY: geteuid has no preconditions.
            && unsafe { libc::geteuid() } == 0
    }

    /// Starts an instance under `dir` relaying to `127.0.0.1:relay_port`.
    pub fn start(dir: &Path, relay_port: u16) -> anyhow::Result<Self> {
        let postfix = postfix_tool("postfix")
            .ok_or_else(|| anyhow::anyhow!("Postfix is missing: run scripts/setup.sh --bench"))?;
        let root = dir.join("postfix");
        let (conf, queue, data) = (root.join("conf"), root.join("queue"), root.join("data"));
        for d in [&conf, &queue, &data] {
            std::fs::create_dir_all(d)?;
        }
        // The master locks its pid file in the data folder as the postfix user.
        let chown = Command::new("chown").arg("postfix").arg(&data).status()?;
        anyhow::ensure!(chown.success(), "cannot give {} to postfix", data.display());
        let port = crate::free_port();
        let log = root.join("maillog");
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {queue}\n\
             data_directory = {data}\n\
             command_directory = /usr/sbin\n\
             daemon_directory = {POSTFIX_DAEMONS}\n\
             meta_directory = /etc/postfix\n\
             shlib_directory = /usr/lib/postfix\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             myhostname = relay.bench.invalid\n\
             mydestination =\n\
             alias_maps =\n\
             alias_database =\n\
             mynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             relayhost = [127.0.0.1]:{relay_port}\n\
             smtp_tls_security_level = none\n\
             smtpd_tls_security_level = none\n\
             maillog_file_prefixes = {root}\n\
             maillog_file = {log}\n",
            queue = queue.display(),
            data = data.display(),
            root = root.display(),
            log = log.display(),
        );
        std::fs::write(conf.join("main.cf"), main_cf)?;
        // Debian's master.cf without the services relaying does not use, none chrooted (the
        // chroot would need a copy of /etc in the queue folder).
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n\
             pickup unix n - n 60 1 pickup\n\
             cleanup unix n - n - 0 cleanup\n\
             qmgr unix n - n 300 1 qmgr\n\
             rewrite unix - - n - - trivial-rewrite\n\
             bounce unix - - n - 0 bounce\n\
             defer unix - - n - 0 bounce\n\
             trace unix - - n - 0 bounce\n\
             verify unix - - n - 1 verify\n\
             flush unix n - n 1000? 0 flush\n\
             proxymap unix - - n - - proxymap\n\
             smtp unix - - n - - smtp\n\
             relay unix - - n - - smtp\n\
             showq unix n - n - - showq\n\
             error unix - - n - - error\n\
             retry unix - - n - - error\n\
             discard unix - - n - - discard\n\
             anvil unix - - n - 1 anvil\n\
             scache unix - - n - 1 scache\n\
             postlog unix-dgram n - n - 1 postlogd\n"
        );
        std::fs::write(conf.join("master.cf"), master_cf)?;
        let relay = Self { conf, log, port };
        let started = Command::new(&postfix)
            .arg("-c")
            .arg(&relay.conf)
            .arg("start")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        // Postfix says why only in its log (or on a terminal).
        anyhow::ensure!(
            started.success(),
            "Postfix did not start: {}",
            relay.log_tail()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "Postfix does not listen on {port}: {}",
                relay.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(relay)
    }

    /// `mail_version` of the instance.
    pub fn version(&self) -> String {
        Command::new(postfix_tool("postconf").unwrap_or_else(|| "postconf".into()))
            .arg("-c")
            .arg(&self.conf)
            .args(["-h", "mail_version"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "?".into())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

impl Drop for PostfixRelay {
    fn drop(&mut self) {
        if let Some(postfix) = postfix_tool("postfix") {
            let _ = Command::new(postfix)
                .arg("-c")
                .arg(&self.conf)
                .arg("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Postfix relaying `messages` of `size` bytes from `smtp-source` (`sessions` sessions) into a
/// fresh `smtp-sink`: msg/s from the first connection to the last message at the sink, and
/// Postfix's version. `None` where Postfix cannot run (not installed, not root).
pub fn postfix_relay(
    dir: &Path,
    sessions: usize,
    messages: usize,
    size: usize,
) -> anyhow::Result<Option<(f64, String)>> {
    if !PostfixRelay::available() {
        return Ok(None);
    }
    let sink = PostfixSink::start(dir, 4096, None)?;
    let relay = PostfixRelay::start(dir, sink.port)?;
    let started = Instant::now();
    run_smtp_source(sessions, messages, size, relay.port)?;
    let mut last = (0, Instant::now());
    while last.0 < messages as u64 {
        let n = sink.messages();
        if n > last.0 {
            last = (n, Instant::now());
        }
        anyhow::ensure!(
            last.1.elapsed() < Duration::from_secs(60),
            "Postfix relayed only {} of {messages} (nothing for 60 s): {}",
            last.0,
            relay.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = last.1.duration_since(started).as_secs_f64().max(1e-3);
    Ok(Some((messages as f64 / secs, relay.version())))
}

/// What one `smtp-source` run measured.
pub struct SourceRun {
    pub msg_per_s: f64,
    /// The sink's CPU per message, in microseconds.
    pub sink_cpu_us: f64,
}

/// The raw SMTP path: `smtp-source` with `sessions` parallel sessions, each reusing its
/// connection (`-d`), sending `messages` of `size` bytes into a fresh sink (delayed like
/// `delay`). This is the reference every jetmail figure is divided by.
pub fn smtp_source(
    dir: &Path,
    sessions: usize,
    messages: usize,
    size: usize,
    delay: Option<Duration>,
) -> anyhow::Result<SourceRun> {
    let sink = PostfixSink::start(dir, 4096.max(sessions as u32 * 2), delay)?;
    let cpu = cpu_us(sink.pid());
    let started = Instant::now();
    run_smtp_source(sessions, messages, size, sink.port)?;
    let secs = started.elapsed().as_secs_f64();
    Ok(SourceRun {
        msg_per_s: messages as f64 / secs,
        sink_cpu_us: cpu_us(sink.pid()).saturating_sub(cpu) as f64 / messages as f64,
    })
}

/// `smtp-source` with `sessions` sessions reusing their connections (`-d`), `messages` of
/// `size` bytes to `127.0.0.1:port`; returns once it has handed over the last one.
fn run_smtp_source(sessions: usize, messages: usize, size: usize, port: u16) -> anyhow::Result<()> {
    let bin = postfix_tool("smtp-source").ok_or_else(|| {
        anyhow::anyhow!("Postfix's smtp-source is missing: run scripts/setup.sh --bench")
    })?;
    let status = Command::new(bin)
        .args(["-s", &sessions.to_string(), "-d"])
        .args(["-m", &messages.to_string(), "-l", &size.to_string()])
        .args(["-f", "bench@example.com", "-t", "rcpt@example.com"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(
        status.success(),
        "smtp-source into port {port} failed: {status}"
    );
    Ok(())
}

/// A latency histogram in milliseconds, printed as cumulative shares per bucket.
pub struct Histogram {
    sorted: Vec<u64>,
}

impl Histogram {
    pub fn new(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        Self { sorted: samples }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    pub fn percentile(&self, p: f64) -> u64 {
        if self.sorted.is_empty() {
            return 0;
        }
        self.sorted[((self.sorted.len() as f64 - 1.0) * p).round() as usize]
    }

    /// `p50 … p99 … max` on one line, then one line per bucket: `≤ N ms  share  bar`.
    pub fn print(&self, indent: &str) {
        if self.sorted.is_empty() {
            println!("{indent}(no samples)");
            return;
        }
        println!(
            "{indent}p50 {} ms, p90 {} ms, p99 {} ms, max {} ms ({} samples)",
            self.percentile(0.5),
            self.percentile(0.9),
            self.percentile(0.99),
            self.sorted.last().copied().unwrap_or(0),
            self.sorted.len()
        );
        let n = self.sorted.len() as f64;
        let mut below_prev = 0usize;
        for bound in [
            1u64, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000,
        ] {
            let below = self.sorted.partition_point(|v| *v <= bound);
            if below > below_prev {
                let share = (below - below_prev) as f64 / n;
                println!(
                    "{indent}  <= {bound:>6} ms {:>6.1}% {}",
                    share * 100.0,
                    "#".repeat((share * 50.0).round() as usize)
                );
            }
            below_prev = below;
            if below == self.sorted.len() {
                return;
            }
        }
        let share = (self.sorted.len() - below_prev) as f64 / n;
        println!("{indent}   > {:>6} ms {:>6.1}%", 10_000, share * 100.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_cpu_and_memory() {
        let pid = std::process::id();
        let before = cpu_us(pid);
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_us(pid) > before);
        assert!(peak_rss_mib(pid) > 1.0);
    }

    #[test]
    fn reads_a_chunked_body() {
        assert_eq!(
            dechunk("3\r\n{\"a\r\n2\r\n\":\r\n2\r\n1}\r\n0\r\n\r\n"),
            "{\"a\":1}"
        );
        assert_eq!(dechunk("{}"), "{}");
    }

    #[test]
    fn percentiles_of_a_histogram() {
        let h = Histogram::new((1..=100).collect());
        assert_eq!(h.percentile(0.5), 51);
        assert_eq!(h.percentile(0.99), 99);
        assert_eq!(h.len(), 100);
    }
}
