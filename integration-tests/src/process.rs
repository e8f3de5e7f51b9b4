//! Child processes that never outlive the test that started them.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How long a stopped process group gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// A child process in its own process group, its stdout and stderr going to one log file.
///
/// Dropping the guard stops the whole group: SIGTERM, a grace period for the process to
/// clean up (JupyterHub stops its proxy and single-user servers then), then SIGKILL. A guard
/// dropped during a panic prints its log first, so a failing test shows what its peers said.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Starts `command` as the leader of a new process group, logging to `log` (created or
    /// truncated). Its stdin is closed.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let out = File::create(log)
            .with_context(|| format!("cannot create the log file {}", log.display()))?;
        let err = out
            .try_clone()
            .context("cannot duplicate the log file handle")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name}: {command:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
            status: None,
        })
    }

    /// The process id, which is also its process group id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has already exited: a peer that died cannot answer.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.try_status() {
            Some(status) => anyhow::bail!("{} exited early ({status})", self.name),
            None => Ok(()),
        }
    }

    /// Everything the process has written so far.
    pub fn log_text(&self) -> String {
        match std::fs::read(&self.log) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("(cannot read {}: {e})", self.log.display()),
        }
    }

    /// Prints the log to stderr, framed with the process's name; the test harness shows it
    /// for failing tests.
    pub fn print_log(&self) {
        eprintln!(
            "----- {} log ({}) -----\n{}\n----- end of {} log -----",
            self.name,
            self.log.display(),
            self.log_text(),
            self.name
        );
    }

    /// Stops the process group (see the type's docs) and returns how the leader exited.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.try_status().is_none() {
            signal_group(self.id(), "TERM");
            let deadline = Instant::now() + TERM_GRACE;
            // std offers no wait with a timeout: poll the exit status until the deadline.
            while self.try_status().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Children that stayed in the group but outlived the leader go too.
        signal_group(self.id(), "KILL");
        if self.status.is_none() {
            self.status = self.child.wait().ok();
        }
        self.status
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            self.print_log();
        }
    }
}

/// Sends SIGname to every process in the group `pgid`, ignoring a group that is gone.
pub(crate) fn signal_group(pgid: u32, signal: &str) {
    signal_target(&format!("-{pgid}"), signal);
}

/// Sends SIGname to one process, ignoring one that is gone.
pub(crate) fn signal_process(pid: u32, signal: &str) {
    signal_target(&pid.to_string(), signal);
}

fn signal_target(target: &str, signal: &str) {
    // The workspace forbids unsafe code, so no libc::kill: kill(1) does the same.
    let _ = Command::new("kill")
        .args(["-s", signal, "--", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
