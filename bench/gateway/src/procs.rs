//! Child processes on free loopback ports: start, wait until they answer, stop.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use http::StatusCode;

use crate::load::{self, Endpoint};

/// A free port on 127.0.0.1 (bound and released at once: another process could take it in
/// between, which on a loopback-only bench is unlikely enough).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A started child process; its output goes to a log file.
pub struct Child {
    pub name: String,
    child: tokio::process::Child,
    pub log: PathBuf,
    /// Started as the leader of its own process group, which is stopped as a whole.
    group: bool,
    stopped: bool,
}

impl Child {
    /// Starts `cmd` with stdout and stderr appended to `log`. `group`: in a process group of its
    /// own (for servers that fork workers), so that stopping it stops them too.
    pub fn spawn(
        name: &str,
        mut cmd: tokio::process::Command,
        log: &Path,
        group: bool,
    ) -> anyhow::Result<Child> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        if group {
            cmd.process_group(0);
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Child {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
            group,
            stopped: false,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn signal_group(&self, sig: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([sig, "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Stops it: a process group gets SIGTERM and, after 10 s, SIGKILL; a single process SIGKILL.
    pub async fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if self.group {
            self.signal_group("-TERM");
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_err()
            {
                self.signal_group("-KILL");
            } else {
                // The leader is gone; make sure its workers are too.
                self.signal_group("-KILL");
            }
        }
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.stopped && self.group {
            self.signal_group("-KILL");
        }
        // kill_on_drop takes care of the process itself.
    }
}

/// Polls `GET base_url + path` until it answers 200, the child exits, or `timeout` passes.
pub async fn wait_ready(
    child: &mut Child,
    base_url: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let ep = Endpoint::new(base_url, None)?;
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if let Some(status) = child.exited() {
            bail!(
                "{} exited ({status}) before it was ready; its log ends:\n{}",
                child.name,
                child.log_tail(30)
            );
        }
        match load::get(&ep, path, Duration::from_secs(2)).await {
            Ok((StatusCode::OK, _)) => return Ok(()),
            Ok((s, _)) => last = format!("status {s}"),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "{} was not ready after {timeout:?} ({last}); its log ends:\n{}",
        child.name,
        child.log_tail(30)
    )
}
