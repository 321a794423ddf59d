//! Whether the kernel's out-of-memory killer struck ferry's own memory cgroup: a container's or
//! pod's memory limit. The kernel kills the largest process there, which is usually the step,
//! not ferry; without this a step killed at its pod's limit would read as a bare "killed by
//! signal 9".

/// How many processes the OOM killer has killed in this process's memory cgroup so far, or
/// `None` where that cannot be read (no cgroup memory controller, another OS). Read before
/// and after every step, so the counter's file is found once: a process stays in its cgroup.
pub(super) fn kills() -> Option<u64> {
    static COUNTER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let file = COUNTER.get_or_init(|| {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        counter_file(&cgroups)
    });
    read_kills(&std::fs::read_to_string(file.as_ref()?).ok()?)
}

/// The file holding the OOM kill counter of the memory cgroup named in `/proc/self/cgroup`.
fn counter_file(cgroups: &str) -> Option<String> {
    // cgroup v1: `N:memory:/path` → memory.oom_control; v2: `0::/path` → memory.events.
    let file = cgroups
        .lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| format!("/sys/fs/cgroup/memory{path}/memory.oom_control"))
        })
        .or_else(|| {
            let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
            Some(format!("/sys/fs/cgroup{path}/memory.events"))
        })?;
    Some(file.replace("//", "/"))
}

fn read_kills(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
fn kills_in(cgroups: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    read_kills(&read(&counter_file(cgroups)?)?)
}

#[cfg(test)]
mod tests {
    use super::kills_in;

    #[test]
    fn reads_the_counter_of_the_memory_cgroup_in_v1_and_v2() {
        let v1 = "5:cpu:/\n4:memory:/pods/abc\n0::/\n";
        let read = |path: &str| {
            (path == "/sys/fs/cgroup/memory/pods/abc/memory.oom_control")
                .then(|| "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n".to_string())
        };
        assert_eq!(kills_in(v1, read), Some(3));
        let v2 = "0::/kubepods/pod1/c1\n";
        let read = |path: &str| {
            (path == "/sys/fs/cgroup/kubepods/pod1/c1/memory.events")
                .then(|| "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n".to_string())
        };
        assert_eq!(kills_in(v2, read), Some(1));
        // At the root of a cgroup namespace (inside a container): `0::/`.
        let read =
            |path: &str| (path == "/sys/fs/cgroup/memory.events").then(|| "oom_kill 0\n".into());
        assert_eq!(kills_in("0::/\n", read), Some(0));
        assert_eq!(kills_in("0::/\n", |_| None), None);
    }
}
