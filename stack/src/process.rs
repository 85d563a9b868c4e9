//! Child processes for the harness: spawned with a log file, killed when dropped (and when
//! the harness dies), and waited for until they answer.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process that is killed when dropped.
pub struct Service {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    /// Sent SIGTERM first on stop (a forking server stops its own workers).
    graceful: bool,
}

impl Service {
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> Result<Service, String> {
        if !program.exists() {
            return Err(format!(
                "{} not found (run ./cxgate build first)",
                program.display()
            ));
        }
        std::fs::create_dir_all(log_dir).map_err(|e| e.to_string())?;
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child when
        // its parent dies, so a crashed harness leaves no process behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Service {
            name: name.to_string(),
            child,
            log,
            graceful: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the service's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stop with SIGTERM (waiting up to 5 s) before SIGKILL.
    pub fn graceful(mut self) -> Service {
        self.graceful = true;
        self
    }

    pub fn stop(&mut self) {
        if self.graceful && self.alive() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                // SAFETY: signals only the child this Service started, by its PID.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let started = Instant::now();
            while self.alive() && started.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `url` until it answers 2xx, up to `timeout`; fails early if the service exits.
pub fn wait_ready(
    service: &mut Service,
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    wait_ready_with(service, &client, url, headers, timeout)
}

/// [`wait_ready`] with a client of the caller's (one that trusts a test CA, say).
pub fn wait_ready_with(
    service: &mut Service,
    client: &reqwest::blocking::Client,
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if !service.alive() {
            return Err(format!(
                "{} exited during start-up:\n{}",
                service.name,
                service.log_tail(30)
            ));
        }
        let mut req = client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if req.send().is_ok_and(|resp| resp.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} not ready at {url} after {timeout:?}:\n{}",
                service.name,
                service.log_tail(30)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
