//! Users and groups from a pod's `securityContext`, as a kubelet and its runtime (containerd,
//! runc) apply them: the effective context of a container (its own fields over the pod's),
//! `runAsNonRoot` checked before the container is created, the process's uid, gid and
//! supplementary groups, `allowPrivilegeEscalation: false` as `no_new_privs`, and who owns
//! the files of the pod's volumes (`fsGroup`, and the token owner the kubelet calls FsUser).
//!
//! There is no image metadata here: an image has no `USER`, so a container without
//! `runAsUser` runs as the node agent's own user (root), and the host's `/etc/passwd` and
//! `/etc/group` stand in for the image's when a uid's primary group, home and groups are
//! looked up (as containerd reads them from the image's root file system).

use serde_json::Value;

/// The identity a container's process gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (setgroups), without duplicates, the primary gid not repeated.
    pub groups: Vec<u32>,
    /// `$HOME` when the container does not set it (runc's default: the user's home, else /).
    pub home: String,
}

/// What the container's process is started with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct ProcessSecurity {
    /// `None`: no user setting at all; the process keeps the agent's identity.
    pub identity: Option<Identity>,
    /// `PR_SET_NO_NEW_PRIVS`, from `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
}

/// The owners a kubelet gives the files of the pod's volumes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct VolumeOwners {
    /// `fsGroup`: group of every file of emptyDir, configMap, secret, downwardAPI and projected
    /// volumes (and local PersistentVolumes), with group read (and write) added.
    pub fs_group: Option<u32>,
    /// The runAsUser every container shares, if they all set the same one: owner of projected
    /// service-account tokens, which are then 0600 (so that the user can read its token).
    pub fs_user: Option<u32>,
}

fn id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// The container's field over the pod's (`DetermineEffectiveSecurityContext`).
fn effective<'a>(pod: &'a Value, container: &'a Value, field: &str) -> &'a Value {
    let own = &container["securityContext"][field];
    if own.is_null() {
        &pod["spec"]["securityContext"][field]
    } else {
        own
    }
}

/// Every container of the pod, init containers included.
fn all_containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers"]
        .into_iter()
        .flat_map(move |k| pod["spec"][k].as_array().into_iter().flatten())
}

pub(super) fn volume_owners(pod: &Value) -> VolumeOwners {
    let fs_group = id(&pod["spec"]["securityContext"]["fsGroup"]);
    // FsUserFrom: the effective runAsUser if every container has the same one.
    let mut fs_user = None;
    for container in all_containers(pod) {
        match id(effective(pod, container, "runAsUser")) {
            Some(uid) if fs_user.is_none_or(|u| u == uid) => fs_user = Some(uid),
            _ => {
                fs_user = None;
                break;
            }
        }
    }
    VolumeOwners { fs_group, fs_user }
}

/// The kubelet's `verifyRunAsNonRoot`, then the identity of the container's process. The
/// error is the kubelet's message (reported as `CreateContainerConfigError`).
///
/// `agent_uid` is what an image without a `USER` runs as here: the node agent's own user.
pub(super) fn process_security(
    pod: &Value,
    container: &Value,
    pod_desc: &str,
    agent_uid: u32,
) -> Result<ProcessSecurity, String> {
    let name = container["name"].as_str().unwrap_or_default();
    let run_as_user = effective(pod, container, "runAsUser");
    let run_as_user = if run_as_user.is_null() {
        None
    } else {
        Some(
            id(run_as_user)
                .ok_or_else(|| format!("runAsUser {run_as_user} is not a valid user id"))?,
        )
    };
    if effective(pod, container, "runAsNonRoot").as_bool() == Some(true) {
        match run_as_user {
            Some(0) => {
                return Err(format!(
                    "container's runAsUser breaks non-root policy (pod: \"{pod_desc}\", container: {name})"
                ));
            }
            Some(_) => {}
            // There is no image metadata: the image runs as whoever runs the node agent.
            None if agent_uid == 0 => {
                return Err(format!(
                    "container has runAsNonRoot and image will run as root (pod: \"{pod_desc}\", container: {name})"
                ));
            }
            None => {}
        }
    }
    let no_new_privs =
        container["securityContext"]["allowPrivilegeEscalation"].as_bool() == Some(false);

    let run_as_group = id(effective(pod, container, "runAsGroup"));
    let pod_sc = &pod["spec"]["securityContext"];
    let fs_group = id(&pod_sc["fsGroup"]);
    let supplemental: Vec<u32> = pod_sc["supplementalGroups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(id)
        .collect();
    if run_as_user.is_none()
        && run_as_group.is_none()
        && fs_group.is_none()
        && supplemental.is_empty()
    {
        return Ok(ProcessSecurity {
            identity: None,
            no_new_privs,
        });
    }
    let uid = run_as_user.unwrap_or(agent_uid);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group_file = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let user = lookup_user(&passwd, uid);
    // Without runAsGroup: the user's primary group in the image, else 0 (as containerd).
    let gid = run_as_group.or(user.as_ref().map(|u| u.gid)).unwrap_or(0);
    // SupplementalGroupsPolicy Merge (the default): the image's groups of the user, then
    // fsGroup and supplementalGroups.
    let mut groups: Vec<u32> = Vec::new();
    let mut add = |g: u32| {
        if g != gid && !groups.contains(&g) {
            groups.push(g);
        }
    };
    if let Some(u) = &user {
        for g in member_groups(&group_file, &u.name) {
            add(g);
        }
    }
    if let Some(g) = fs_group {
        add(g);
    }
    for g in supplemental {
        add(g);
    }
    let home = user
        .map(|u| u.home)
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    Ok(ProcessSecurity {
        identity: Some(Identity {
            uid,
            gid,
            groups,
            home,
        }),
        no_new_privs,
    })
}

struct User {
    name: String,
    gid: u32,
    home: String,
}

/// The `/etc/passwd` entry of `uid`.
fn lookup_user(passwd: &str, uid: u32) -> Option<User> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 6 || f[2].parse::<u32>().ok()? != uid {
            return None;
        }
        Some(User {
            name: f[0].to_string(),
            gid: f[3].parse().ok()?,
            home: f[5].to_string(),
        })
    })
}

/// The groups of `/etc/group` that list `user` as a member.
fn member_groups(group: &str, user: &str) -> Vec<u32> {
    group
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 4 && f[3].split(',').any(|m| m == user))
                .then(|| f[2].parse().ok())
                .flatten()
        })
        .collect()
}

/// `SetVolumeOwnership`: every file and directory under `dir` gets group `fs_group`, group
/// read (and write unless `read_only`), and directories group search and setgid, so that
/// what the pod creates there belongs to the group too. Symlinks are left alone.
pub(super) fn set_volume_ownership(
    dir: &std::path::Path,
    fs_group: u32,
    read_only: bool,
) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let meta =
        std::fs::symlink_metadata(dir).map_err(|e| format!("stat {}: {e}", dir.display()))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::lchown(dir, None, Some(fs_group))
        .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    let mut mask = if read_only { 0o440 } else { 0o660 };
    if meta.is_dir() {
        mask |= 0o2110;
    }
    let mode = meta.mode() & 0o7777;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | mask))
        .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("read {}: {e}", dir.display()))?;
            set_volume_ownership(&entry.path(), fs_group, read_only)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DESC: &str = "p_ns(u)";

    #[test]
    fn run_as_non_root_is_refused_with_the_kubelets_messages() {
        let pod = json!({"spec": {"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "c"}]}});
        let c = &pod["spec"]["containers"][0];
        assert_eq!(
            process_security(&pod, c, DESC, 0).unwrap_err(),
            "container has runAsNonRoot and image will run as root (pod: \"p_ns(u)\", container: c)"
        );
        // The agent is not root: the "image" is not either.
        assert!(process_security(&pod, c, DESC, 1234).is_ok());
        let c = json!({"name": "c", "securityContext": {"runAsUser": 0}});
        assert_eq!(
            process_security(&pod, &c, DESC, 0).unwrap_err(),
            "container's runAsUser breaks non-root policy (pod: \"p_ns(u)\", container: c)"
        );
        let c = json!({"name": "c", "securityContext": {"runAsUser": 1000}});
        assert_eq!(
            process_security(&pod, &c, DESC, 0)
                .unwrap()
                .identity
                .unwrap()
                .uid,
            1000
        );
        // The container's runAsNonRoot: false overrides the pod's.
        let c = json!({"name": "c", "securityContext": {"runAsNonRoot": false}});
        assert_eq!(
            process_security(&pod, &c, DESC, 0).unwrap(),
            ProcessSecurity::default()
        );
    }

    #[test]
    fn identities_merge_the_pod_and_the_container() {
        let pod = json!({"spec": {"securityContext": {
            "runAsUser": 4242, "runAsGroup": 7, "fsGroup": 2000, "supplementalGroups": [3000, 7, 2000],
        }}});
        let c = json!({"name": "c", "securityContext": {"runAsGroup": 8, "allowPrivilegeEscalation": false}});
        let s = process_security(&pod, &c, DESC, 0).unwrap();
        assert!(s.no_new_privs);
        let identity = s.identity.unwrap();
        assert_eq!((identity.uid, identity.gid), (4242, 8));
        assert_eq!(identity.groups, [2000, 3000, 7]);
        // An fsGroup alone switches groups but keeps the agent's uid.
        let pod = json!({"spec": {"securityContext": {"fsGroup": 5}}});
        let identity = process_security(&pod, &json!({"name": "c"}), DESC, 0)
            .unwrap()
            .identity
            .unwrap();
        assert_eq!(identity.uid, 0);
        assert!(identity.groups.contains(&5), "{identity:?}");
    }

    #[test]
    fn passwd_and_group_stand_in_for_the_images() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nana:x:1000:1001::/home/ana:/bin/sh\n";
        let group = "root:x:0:\ndocker:x:998:ana,bob\nvideo:x:44:bob\n";
        let ana = lookup_user(passwd, 1000).unwrap();
        assert_eq!(
            (ana.name.as_str(), ana.gid, ana.home.as_str()),
            ("ana", 1001, "/home/ana")
        );
        assert!(lookup_user(passwd, 5).is_none());
        assert_eq!(member_groups(group, "ana"), [998]);
        assert_eq!(member_groups(group, "bob"), [998, 44]);
    }

    #[test]
    fn the_token_owner_is_the_user_every_container_shares() {
        let pod = json!({"spec": {"securityContext": {"runAsUser": 1000, "fsGroup": 3},
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b", "securityContext": {"runAsUser": 1000}}]}});
        assert_eq!(
            volume_owners(&pod),
            VolumeOwners {
                fs_group: Some(3),
                fs_user: Some(1000)
            }
        );
        let pod = json!({"spec": {"containers": [
            {"name": "a", "securityContext": {"runAsUser": 1000}}, {"name": "b"}]}});
        assert_eq!(volume_owners(&pod).fs_user, None);
    }

    #[test]
    fn volume_ownership_adds_group_bits_and_setgid() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        let file = sub.join("f");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
        // Only root may give a file to any group; others to their own.
        // SAFETY: getuid and getgid have no preconditions.
        let group = unsafe {
            if libc::getuid() == 0 {
                4321
            } else {
                libc::getgid()
            }
        };
        set_volume_ownership(dir.path(), group, true).unwrap();
        let meta = |p: &std::path::Path| std::fs::metadata(p).unwrap();
        assert_eq!(meta(&file).mode() & 0o7777, 0o440);
        assert_eq!(meta(&sub).mode() & 0o7777, 0o2750);
        assert_eq!(meta(&file).gid(), group);
        set_volume_ownership(dir.path(), group, false).unwrap();
        assert_eq!(meta(&file).mode() & 0o7777, 0o660);
    }
}
