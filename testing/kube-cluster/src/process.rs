//! The control plane's programs as child processes: output to a log file each, stopped with
//! SIGTERM then SIGKILL, and killed by the kernel if the process that started them dies
//! (PR_SET_PDEATHSIG), so that no apiserver or etcd outlives a crashed test run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// One running program of the control plane.
pub struct Supervised {
    pub name: &'static str,
    pub log: PathBuf,
    child: Child,
}

impl Supervised {
    /// Starts `program` with `args`, its stdout and stderr appended to `log`.
    ///
    /// Must be called from a thread that lives as long as the child should (a runtime worker
    /// or the main thread, never a `spawn_blocking` thread): the death signal fires when the
    /// spawning thread exits.
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<Supervised> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| {
            format!(
                "start {name} ({}): build the control plane with `scripts/kube-cluster.sh build`",
                program.display()
            )
        })?;
        Ok(Supervised {
            name,
            log: log.to_path_buf(),
            child,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fails with the tail of the program's log if it has already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 30)
            );
        }
        Ok(())
    }

    /// SIGTERM, up to `grace` for the program to exit, then SIGKILL.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain kill(2) on our own child.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("find a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}
