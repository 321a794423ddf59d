//! Running one container instance as a local process: its own process group, its own mount
//! namespace (volumes and the working directory bind-mounted where the container expects
//! them), a cgroup v1 memory cgroup for `limits.memory`, the user and groups of its
//! securityContext (and `no_new_privs`), and its output into the log.
//!
//! Every fork happens on one dedicated, long-lived thread ([`Spawner`]): the children set
//! `PR_SET_PDEATHSIG`, which fires when the *thread* that forked them exits, not the process.
//! A tokio blocking-pool thread (spawn_blocking) is reaped after a few idle seconds, and even a
//! runtime worker may be retired (block_in_place), so neither is a safe parent. The spawner
//! thread lives until [`Spawner::stop`] (after every pod process is gone) or until the agent's
//! process dies, and then the kernel SIGKILLs whatever is left.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::logs::LogFile;
use super::security::ProcessSecurity;

type SpawnReply = oneshot::Sender<std::io::Result<tokio::process::Child>>;

/// The thread that forks every pod process.
pub(super) struct Spawner {
    requests: Mutex<Option<std::sync::mpsc::Sender<(tokio::process::Command, SpawnReply)>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Spawner {
    pub fn start(runtime: tokio::runtime::Handle) -> std::io::Result<Spawner> {
        let (tx, rx) = std::sync::mpsc::channel::<(tokio::process::Command, SpawnReply)>();
        let thread = std::thread::Builder::new()
            .name("ferry-node-spawner".into())
            .spawn(move || {
                // tokio::process registers the child with the runtime's process driver.
                let _guard = runtime.enter();
                while let Ok((mut command, reply)) = rx.recv() {
                    let _ = reply.send(command.spawn());
                }
            })?;
        Ok(Spawner {
            requests: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    async fn spawn(
        &self,
        command: tokio::process::Command,
    ) -> std::io::Result<tokio::process::Child> {
        let (reply, result) = oneshot::channel();
        let sent = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|tx| tx.send((command, reply)).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(std::io::Error::other("the node agent is shutting down"));
        }
        result
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawner thread is gone")))
    }

    /// Ends the spawner thread; call only when no pod process is left (PDEATHSIG).
    pub async fn stop(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// `/sys/fs/cgroup/memory/<agent's own memory cgroup>/ferry-node-<node>-<agent pid>`: the pid
/// keeps two agents of the same node name (two clusters on one machine) apart, since removing
/// the root kills everything under it.
pub(super) struct CgroupRoot {
    path: PathBuf,
}

impl CgroupRoot {
    /// The node's parent cgroup, if the cgroup v1 memory controller is mounted and writable.
    pub fn create(node: &str) -> Option<CgroupRoot> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = own_memory_cgroup(&own)?;
        let base = Path::new("/sys/fs/cgroup/memory");
        if !base.join("cgroup.procs").exists() {
            return None;
        }
        let parent = base.join(path.trim_start_matches('/'));
        remove_stale_roots(&parent);
        let path = parent.join(format!("ferry-node-{node}-{}", std::process::id()));
        match std::fs::create_dir_all(&path) {
            Ok(()) => Some(CgroupRoot { path }),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot create the node's memory cgroup; memory limits will not be enforced");
                None
            }
        }
    }

    /// Removes the node's cgroup (its children must be gone).
    pub fn remove(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let cgroup = Cgroup { path: entry.path() };
                    cgroup.kill_all();
                    let _ = std::fs::remove_dir(cgroup.path);
                }
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.path) {
            tracing::debug!(path = %self.path.display(), error = %e, "removing the node's cgroup");
        }
    }

    /// A fresh cgroup for one container instance, with its memory limit.
    pub fn container(&self, name: &str, limit: Option<u64>) -> std::io::Result<Cgroup> {
        let path = self.path.join(name);
        if path.exists() {
            // Left over from an earlier instance: empty and remove it (its counters are stale).
            let stale = Cgroup { path: path.clone() };
            stale.kill_all();
            let _ = std::fs::remove_dir(&path);
        }
        std::fs::create_dir(&path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("create {}: {e}", path.display()))
        })?;
        let cgroup = Cgroup { path };
        if let Some(limit) = limit {
            let write = |file: &str| {
                std::fs::write(cgroup.path.join(file), limit.to_string()).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("write {}/{file}: {e}", cgroup.path.display()),
                    )
                })
            };
            write("memory.limit_in_bytes")?;
            // Without this the limit could be dodged by swapping (if swap accounting is on).
            if cgroup.path.join("memory.memsw.limit_in_bytes").exists() {
                write("memory.memsw.limit_in_bytes")?;
            }
        }
        Ok(cgroup)
    }
}

/// Removes the node cgroups that agents which died without cleaning up (SIGKILL) left in
/// `parent`; those of live agents stay.
fn remove_stale_roots(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = stale_root_pid(&name.to_string_lossy()) else {
            continue;
        };
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) == 0 }
            || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        if !alive {
            CgroupRoot { path: entry.path() }.remove();
        }
    }
}

/// The agent pid in a node cgroup's name `ferry-node-<node>-<pid>`.
fn stale_root_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("ferry-node-")?;
    let (_, pid) = rest.rsplit_once('-')?;
    pid.parse().ok().filter(|p| *p > 0)
}

/// The path of the `memory` controller's line in /proc/self/cgroup.
fn own_memory_cgroup(proc_self_cgroup: &str) -> Option<String> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    })
}

/// One container instance's memory cgroup.
#[derive(Debug)]
pub(super) struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    fn read(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.path.join(file)).ok()
    }

    /// How often the kernel's OOM killer killed something in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        self.read("memory.oom_control")
            .and_then(|text| parse_oom_kills(&text))
            .unwrap_or(0)
    }

    fn failcnt(&self) -> u64 {
        self.read("memory.failcnt")
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGKILLs every process in the cgroup (also those that left the process group).
    pub fn kill_all(&self) {
        for pid in self
            .read("cgroup.procs")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) has no memory effects.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.read("cgroup.procs")
            .is_none_or(|procs| procs.trim().is_empty())
    }

    /// Kills what is left and removes the cgroup (processes take a moment to leave it).
    pub async fn remove(&self) {
        for _ in 0..50 {
            self.kill_all();
            if self.is_empty() && std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            if !self.path.exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(path = %self.path.display(), "could not remove a container's cgroup");
    }
}

fn parse_oom_kills(oom_control: &str) -> Option<u64> {
    oom_control.lines().find_map(|line| {
        line.strip_prefix("oom_kill ")
            .and_then(|n| n.trim().parse().ok())
    })
}

/// A bind mount in the container's mount namespace.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Everything needed to start one container instance.
pub(super) struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<(String, OsString)>,
    /// The working directory as the container sees it (after the mounts).
    pub cwd: PathBuf,
    pub mounts: Vec<BindMount>,
    pub cgroup: Option<Cgroup>,
    /// Who the process runs as; switched to after the mounts, which need root.
    pub security: ProcessSecurity,
}

/// How a container instance ended.
#[derive(Debug, Clone)]
pub(super) struct ProcessExit {
    pub code: i32,
    pub oom_killed: bool,
    pub finished_at: String,
}

/// A started instance: its process group (= its pid) and the task that waits for its end.
pub(super) struct Started {
    pub pid: i32,
    pub cgroup_procs: Option<PathBuf>,
    pub exit: tokio::task::JoinHandle<ProcessExit>,
}

fn cstring(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("path {} contains a NUL byte", path.display()),
        )
    })
}

/// Starts the instance. The error is the message a container runtime would give.
pub(super) async fn launch(
    spawner: &Spawner,
    launch: Launch,
    log: Arc<LogFile>,
) -> Result<Started, String> {
    let Launch {
        argv,
        env,
        cwd,
        mounts,
        cgroup,
        security,
    } = launch;
    let program = argv.first().ok_or("no command specified")?.clone();
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);

    // Everything the child needs is prepared here: between fork and exec only raw,
    // async-signal-safe libc calls on this data are allowed (no allocation, no locks).
    let io = |e: std::io::Error| e.to_string();
    let cgroup_procs = cgroup.as_ref().map(|c| c.path.join("cgroup.procs"));
    let procs_c = cgroup_procs
        .as_deref()
        .map(cstring)
        .transpose()
        .map_err(io)?;
    let mounts_c: Vec<(CString, CString, bool)> = mounts
        .iter()
        .map(|m| Ok((cstring(&m.source)?, cstring(&m.target)?, m.read_only)))
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    let cwd_c = cstring(&cwd).map_err(io)?;
    let identity = security.identity.as_ref().map(|i| ChildIdentity {
        uid: i.uid,
        gid: i.gid,
        groups: i.groups.iter().map(|g| *g as libc::gid_t).collect(),
    });
    let no_new_privs = security.no_new_privs;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only makes async-signal-safe system calls on data prepared above.
    unsafe {
        command.pre_exec(move || {
            child_setup(
                parent,
                procs_c.as_ref(),
                &mounts_c,
                &cwd_c,
                identity.as_ref(),
                no_new_privs,
            )
        });
    }

    let mut child = spawner.spawn(command).await.map_err(|e| {
        format!(
            "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: {e}: unknown"
        )
    })?;
    let pid = child
        .id()
        .ok_or("the process exited before it could be tracked")? as i32;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let pump = super::logs::pump(log.clone(), stdout, stderr);
    let exit = tokio::spawn(async move {
        let status = child.wait().await;
        // Like a container whose init process ended: everything else in it dies too.
        signal_group(pid, libc::SIGKILL);
        if let Some(c) = &cgroup {
            c.kill_all();
        }
        // The pipes close once the last writer is gone; a process that escaped both the
        // group and the cgroup could hold them open forever, so give up after a moment.
        let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
        log.close();
        use std::os::unix::process::ExitStatusExt as _;
        let (code, signal) = match status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => (code, None),
                (None, Some(sig)) => (128 + sig, Some(sig)),
                (None, None) => (128, None),
            },
            Err(e) => {
                tracing::warn!(pid, error = %e, "waiting for a container process");
                (128, None)
            }
        };
        let oom_killed = match &cgroup {
            Some(c) => {
                let kills = c.oom_kills();
                // Older kernels lack `oom_kill`: a SIGKILL after hitting the limit is the OOM killer.
                let counted = c
                    .read("memory.oom_control")
                    .is_some_and(|t| t.contains("oom_kill "));
                kills > 0 || (!counted && signal == Some(libc::SIGKILL) && c.failcnt() > 0)
            }
            None => false,
        };
        if let Some(c) = &cgroup {
            c.remove().await;
        }
        ProcessExit {
            code,
            oom_killed,
            finished_at: super::status::now_rfc3339(),
        }
    });
    Ok(Started {
        pid,
        cgroup_procs,
        exit,
    })
}

/// The credentials the child switches to, prepared before fork.
struct ChildIdentity {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
}

/// SIGKILL when the spawner thread dies; fails if it already has.
///
/// # Safety
/// Only async-signal-safe calls: fit for a forked child.
unsafe fn die_with_parent(parent: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: prctl and getppid have no memory effects.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // The parent may have died before prctl: then nobody would kill us.
        if libc::getppid() != parent {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

/// Runs in the forked child before exec.
fn child_setup(
    parent: libc::pid_t,
    cgroup_procs: Option<&CString>,
    mounts: &[(CString, CString, bool)],
    cwd: &CString,
    identity: Option<&ChildIdentity>,
    no_new_privs: bool,
) -> std::io::Result<()> {
    let fail = || Err(std::io::Error::last_os_error());
    // SAFETY: raw system calls with valid NUL-terminated strings prepared before fork.
    unsafe {
        die_with_parent(parent)?;
        if let Some(procs) = cgroup_procs {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return fail();
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return fail();
            }
        }
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return fail();
        }
        // Our bind mounts must not propagate back to the host's namespace.
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return fail();
        }
        for (source, target, read_only) in mounts {
            if libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            {
                return fail();
            }
            if *read_only
                && libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                ) != 0
            {
                return fail();
            }
        }
        // After the mounts, so that the directory is the mounted one (std's current_dir would
        // chdir before pre_exec runs); before the user switch, as runc does.
        if libc::chdir(cwd.as_ptr()) != 0 {
            return fail();
        }
        // Last, because the mounts need root (std's uid/gid would switch before pre_exec).
        if let Some(id) = identity {
            if libc::setgroups(id.groups.len(), id.groups.as_ptr()) != 0 {
                return fail();
            }
            if libc::setresgid(id.gid, id.gid, id.gid) != 0 {
                return fail();
            }
            if libc::setresuid(id.uid, id.uid, id.uid) != 0 {
                return fail();
            }
            // Changing credentials cleared the parent-death signal (prctl(2)).
            die_with_parent(parent)?;
        }
        if no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return fail();
        }
    }
    Ok(())
}

/// Signals a process group.
pub(super) fn signal_group(pgid: i32, signal: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; no memory effects.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Signals a container instance the way a runtime does (runc `kill`): a stop signal goes to
/// the container's init process alone, which decides what its children get (ferry's agent
/// cancels its steps); SIGKILL goes to its process group and everything in its cgroup.
pub(super) fn signal_instance(pid: i32, cgroup_procs: Option<&Path>, signal: i32) {
    if signal != libc::SIGKILL {
        if pid > 1 {
            // SAFETY: kill(2) has no memory effects.
            unsafe {
                libc::kill(pid, signal);
            }
        }
        return;
    }
    signal_group(pid, signal);
    if let Some(procs) = cgroup_procs
        && let Ok(text) = std::fs::read_to_string(procs)
    {
        for p in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) has no memory effects.
            unsafe {
                libc::kill(p, signal);
            }
        }
    }
}

/// Where `program` would be found in the container's view (`PATH` lookup like execvp), as a
/// host path; used to report a missing executable the way a runtime does.
pub(super) fn find_program(
    program: &str,
    path_var: Option<&str>,
    cwd: &Path,
    mounts: &[BindMount],
) -> Result<PathBuf, String> {
    let exists = |p: &Path| {
        let host = host_path(p, mounts);
        host.is_file().then_some(host)
    };
    if program.contains('/') {
        let p = if program.starts_with('/') {
            PathBuf::from(program)
        } else {
            cwd.join(program)
        };
        return exists(&p).ok_or_else(|| format!("stat {program}: no such file or directory"));
    }
    for dir in path_var
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
    {
        if let Some(found) = exists(&Path::new(dir).join(program)) {
            return Ok(found);
        }
    }
    Err("executable file not found in $PATH".to_string())
}

/// The host path behind a container path: through the deepest mount that covers it (the
/// last one of equal depth, as a later mount shadows an earlier one).
pub(super) fn host_path(path: &Path, mounts: &[BindMount]) -> PathBuf {
    mounts
        .iter()
        .filter_map(|m| path.strip_prefix(&m.target).ok().map(|rest| (m, rest)))
        .max_by_key(|(m, _)| m.target.components().count())
        .map(|(m, rest)| {
            if rest.as_os_str().is_empty() {
                m.source.clone()
            } else {
                m.source.join(rest)
            }
        })
        .unwrap_or_else(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_cgroup_comes_from_proc_self_cgroup() {
        let text = "9:name=systemd:/\n5:devices:/\n4:memory:/process_api/abc\n0::/\n";
        assert_eq!(own_memory_cgroup(text).as_deref(), Some("/process_api/abc"));
        assert_eq!(
            own_memory_cgroup("3:cpu,memory:/x\n").as_deref(),
            Some("/x")
        );
        assert_eq!(own_memory_cgroup("0::/\n"), None);
    }

    #[test]
    fn node_cgroups_are_named_after_their_agent() {
        assert_eq!(stale_root_pid("ferry-node-ferry-gpu-node-4242"), Some(4242));
        assert_eq!(stale_root_pid("ferry-node-ferry-node"), None);
        assert_eq!(stale_root_pid("other-1"), None);
    }

    #[test]
    fn oom_kills_are_read_from_oom_control() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(parse_oom_kills(text), Some(2));
        assert_eq!(parse_oom_kills("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn container_paths_resolve_through_the_deepest_mount() {
        let mounts = vec![
            BindMount {
                source: "/data/p/work".into(),
                target: "/workspace".into(),
                read_only: false,
            },
            BindMount {
                source: "/data/p/volumes/cfg".into(),
                target: "/workspace/cfg".into(),
                read_only: true,
            },
        ];
        assert_eq!(
            host_path(Path::new("/workspace/a/b"), &mounts),
            Path::new("/data/p/work/a/b")
        );
        assert_eq!(
            host_path(Path::new("/workspace/cfg/x"), &mounts),
            Path::new("/data/p/volumes/cfg/x")
        );
        assert_eq!(
            host_path(Path::new("/workspace"), &mounts),
            Path::new("/data/p/work")
        );
        assert_eq!(
            host_path(Path::new("/workspacex"), &mounts),
            Path::new("/workspacex")
        );
        assert_eq!(
            host_path(Path::new("/usr/bin"), &mounts),
            Path::new("/usr/bin")
        );
    }

    #[test]
    fn programs_are_looked_up_in_the_containers_view() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("tool"), "#!/bin/sh\n").unwrap();
        let mounts = vec![BindMount {
            source: bin.clone(),
            target: "/scripts".into(),
            read_only: true,
        }];
        let cwd = Path::new("/");
        assert_eq!(
            find_program("/scripts/tool", None, cwd, &mounts).unwrap(),
            bin.join("tool")
        );
        assert_eq!(
            find_program("tool", Some("/nope:/scripts"), cwd, &mounts).unwrap(),
            bin.join("tool")
        );
        assert_eq!(
            find_program("tool", Some("/nope"), cwd, &mounts).unwrap_err(),
            "executable file not found in $PATH"
        );
        assert_eq!(
            find_program("/scripts/none", None, cwd, &mounts).unwrap_err(),
            "stat /scripts/none: no such file or directory"
        );
    }
}
