//! Real service processes for end-to-end tests: spawned from the workspace's built binaries,
//! their output kept in a log file, killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary (`jetmail-sender`, …) next to the running test executable.
/// `cargo test --workspace` builds them all.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test-exe>: the binaries are in target/<profile>.
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.is_file() {
        anyhow::bail!(
            "{} not built: run the tests with `cargo test --workspace` (or `cargo build --workspace` first)",
            path.display()
        );
    }
    Ok(path)
}

/// A running service process.
pub struct Service {
    pub name: String,
    child: Option<Child>,
    log_path: PathBuf,
    bin: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Service {
    /// Spawns `bin` with `args`; stdout and stderr go to `<log_dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        bin: &str,
        args: &[String],
        envs: &[(&str, &str)],
        log_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let mut s = Self {
            name: name.to_string(),
            child: None,
            log_path: log_dir.join(format!("{name}.log")),
            bin: bin_path(bin)?,
            args: args.to_vec(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.start()?;
        Ok(s)
    }

    /// Starts the process (again), appending to the same log.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn()?);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9`, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            anyhow::bail!("{} is not running", self.name);
        };
        // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = log
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!("---- last lines of {} ----\n{tail}", self.name);
        }
    }
}
