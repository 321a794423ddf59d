//! Pod volumes: materialised as directories under `<pod dir>/volumes/<name>` (configMap,
//! secret, emptyDir, downwardAPI, projected with serviceAccountToken / configMap / secret /
//! downwardAPI sources; an emptyDir of `medium: Memory` is a tmpfs mounted there, in the
//! agent's own mount namespace, so that every container of the pod shares it) or taken from
//! the host (hostPath, and the hostPath or local PersistentVolume a claim is bound to), then
//! bind-mounted at each container's `mountPath` inside the container's own mount namespace
//! ([`mount_plan`]).
//!
//! As a kubelet: claims are resolved first, and a pod whose claim is missing or not bound
//! waits (the worker retries); emptyDirs are 0777; configMap, secret, downwardAPI and projected
//! volumes are mounted read-only; `fsGroup` owns the files of the volumes a kubelet manages.
//!
//! Volumes are written once, when the pod starts (like a kubelet's first mount); later
//! changes to a ConfigMap or Secret and token expiry are not propagated.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use super::env::{self, EnvList, NodeFacts};
use super::process::{BindMount, host_path};
use super::security::{VolumeOwners, set_volume_ownership};

/// Why the pod's volumes could not be set up (reported as a FailedMount event).
#[derive(Debug, PartialEq)]
pub(super) enum VolumeError {
    /// Setting up one volume failed (`volume` is the PersistentVolume's name for a claim).
    SetUp { volume: String, message: String },
    /// A claim could not be resolved to a volume (missing, not bound, no plugin for its
    /// PersistentVolume): the pod's volumes named in `volumes`, with each error.
    Process {
        volumes: Vec<String>,
        messages: Vec<String>,
    },
}

impl VolumeError {
    /// The event message a kubelet gives.
    pub fn event_message(&self) -> String {
        match self {
            VolumeError::SetUp { volume, message } => {
                format!("MountVolume.SetUp failed for volume \"{volume}\" : {message}")
            }
            // The volume manager's WaitForAttachAndMount error, which the kubelet records
            // prefixed with "Unable to attach or mount volumes".
            VolumeError::Process { volumes, messages } => format!(
                "Unable to attach or mount volumes: unmounted volumes=[{}], unattached volumes=[], failed to process volumes=[{}]: {}",
                volumes.join(" "),
                volumes.join(" "),
                messages.join("; ")
            ),
        }
    }
}

/// A volume ready to be bind-mounted into containers.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Volume {
    /// On the host.
    pub path: PathBuf,
    /// Every mount of it is read-only, whatever the volumeMount says (claims with
    /// `readOnly`, and the volumes a kubelet always mounts read-only).
    pub read_only: bool,
}

/// A relative path inside a volume, refusing anything that leaves it.
fn inside(base: &Path, relative: &str) -> Result<PathBuf, String> {
    let mut out = base.to_path_buf();
    for part in Path::new(relative).components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "invalid path {relative:?}: must be relative and may not contain '..'"
                ));
            }
        }
    }
    Ok(out)
}

fn write_file(dir: &Path, relative: &str, data: &[u8], mode: u32) -> Result<(), String> {
    let file = inside(dir, relative)?;
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    }
    std::fs::write(&file, data).map_err(|e| format!("write {}: {e}", file.display()))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", file.display()))
}

fn mode_of(v: &Value, default: u32) -> u32 {
    v.as_u64().map(|m| m as u32).unwrap_or(default)
}

/// Writes a ConfigMap's or Secret's keys (or its `items`) into `dir`.
fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: &Value,
    default_mode: u32,
    kind: &str,
) -> Result<(), String> {
    match items.as_array() {
        Some(items) => {
            for item in items {
                let key = item["key"].as_str().unwrap_or_default();
                let path = item["path"].as_str().unwrap_or(key);
                let Some(value) = data.get(key) else {
                    return Err(if kind == "secret" {
                        format!("references non-existent secret key: {key}")
                    } else {
                        format!("configmap references non-existent config key: {key}")
                    });
                };
                write_file(dir, path, value, mode_of(&item["mode"], default_mode))?;
            }
        }
        None => {
            for (key, value) in data {
                write_file(dir, key, value, default_mode)?;
            }
        }
    }
    Ok(())
}

/// A downward-API item's content.
fn downward_item(pod: &Value, item: &Value, node: &NodeFacts) -> Result<Vec<u8>, String> {
    if let Some(path) = item["fieldRef"]["fieldPath"].as_str() {
        return Ok(match path {
            "metadata.labels" => env::format_map(&pod["metadata"]["labels"]),
            "metadata.annotations" => env::format_map(&pod["metadata"]["annotations"]),
            other => env::field_ref(pod, other, &node.node_name)?,
        }
        .into_bytes());
    }
    let r = &item["resourceFieldRef"];
    if r.is_object() {
        let name = r["containerName"].as_str().unwrap_or_default();
        let container = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .ok_or_else(|| format!("container {name:?} not found in pod"))?;
        return Ok(env::resource_field(
            container,
            r["resource"].as_str().unwrap_or_default(),
            r["divisor"].as_str(),
            node,
        )?
        .into_bytes());
    }
    Err("downwardAPI item has neither fieldRef nor resourceFieldRef".into())
}

/// Materialises every volume of `pod`; returns each by name.
pub(super) async fn materialise(
    client: &kube::Client,
    pod: &Value,
    pod_dir: &Path,
    node: &NodeFacts,
    owners: VolumeOwners,
) -> Result<HashMap<String, Volume>, VolumeError> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    // Claims first, as the kubelet's volume manager resolves them before it mounts anything.
    let claims = resolve_claims(client, pod).await?;
    let mut out = HashMap::new();
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or_default().to_string();
        let fail = |message: String| VolumeError::SetUp {
            volume: name.clone(),
            message,
        };
        if let Some(claim) = claims.get(&name) {
            let v = set_up_claim(claim, owners)?;
            out.insert(name, v);
            continue;
        }
        if volume["hostPath"].is_object() {
            let host = host_path_volume(&volume["hostPath"]).map_err(fail)?;
            out.insert(
                name,
                Volume {
                    path: host,
                    read_only: false,
                },
            );
            continue;
        }
        let dir = pod_dir.join("volumes").join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| fail(format!("mkdir {}: {e}", dir.display())))?;
        // configMap, secret, downwardAPI and projected volumes: read-only mounts, and fsGroup
        // gets read access (a kubelet's ReadOnly volume attribute).
        let mut read_only = true;
        if volume["emptyDir"].is_object() {
            read_only = false;
            set_up_empty_dir(pod, &volume["emptyDir"], &dir, node).map_err(&fail)?;
        } else if volume["configMap"].is_object() || volume["secret"].is_object() {
            let (spec, kind, ref_name) = if volume["configMap"].is_object() {
                let s = &volume["configMap"];
                (s, "configmap", s["name"].as_str().unwrap_or_default())
            } else {
                let s = &volume["secret"];
                (s, "secret", s["secretName"].as_str().unwrap_or_default())
            };
            let data = fetch(client, namespace, kind, ref_name)
                .await
                .map_err(&fail)?;
            match data {
                Some(data) => write_keys(
                    &dir,
                    &data,
                    &spec["items"],
                    mode_of(&spec["defaultMode"], 0o644),
                    kind,
                )
                .map_err(&fail)?,
                None if spec["optional"].as_bool() == Some(true) => {}
                None => return Err(fail(format!("{kind} \"{ref_name}\" not found"))),
            }
        } else if volume["downwardAPI"].is_object() {
            let spec = &volume["downwardAPI"];
            let default_mode = mode_of(&spec["defaultMode"], 0o644);
            for item in spec["items"].as_array().into_iter().flatten() {
                let content = downward_item(pod, item, node).map_err(&fail)?;
                let path = item["path"].as_str().unwrap_or_default();
                write_file(&dir, path, &content, mode_of(&item["mode"], default_mode))
                    .map_err(&fail)?;
            }
        } else if volume["projected"].is_object() {
            let spec = &volume["projected"];
            let default_mode = mode_of(&spec["defaultMode"], 0o644);
            for source in spec["sources"].as_array().into_iter().flatten() {
                if let Some(token) = source.get("serviceAccountToken").filter(|v| v.is_object()) {
                    let jwt = request_token(client, pod, token).await.map_err(&fail)?;
                    let path = token["path"].as_str().unwrap_or("token");
                    // With an owner (the pods' shared runAsUser) or fsGroup, a kubelet writes
                    // the token 0600 and lets the ownership change give the group read.
                    let owned = owners.fs_user.is_some() || owners.fs_group.is_some();
                    let mode = if owned || spec["defaultMode"].is_null() {
                        0o600
                    } else {
                        default_mode
                    };
                    write_file(&dir, path, jwt.as_bytes(), mode).map_err(&fail)?;
                    if let Some(uid) = owners.fs_user {
                        let file = inside(&dir, path).map_err(&fail)?;
                        std::os::unix::fs::chown(&file, Some(uid), None)
                            .map_err(|e| fail(format!("chown {}: {e}", file.display())))?;
                    }
                } else if let Some(s) = ["configMap", "secret"]
                    .iter()
                    .find_map(|k| source.get(*k).filter(|v| v.is_object()).map(|v| (*k, v)))
                {
                    let (field, spec) = s;
                    let kind = if field == "configMap" {
                        "configmap"
                    } else {
                        "secret"
                    };
                    let ref_name = spec["name"].as_str().unwrap_or_default();
                    match fetch(client, namespace, kind, ref_name)
                        .await
                        .map_err(&fail)?
                    {
                        Some(data) => write_keys(&dir, &data, &spec["items"], default_mode, kind)
                            .map_err(&fail)?,
                        None if spec["optional"].as_bool() == Some(true) => {}
                        None => return Err(fail(format!("{kind} \"{ref_name}\" not found"))),
                    }
                } else if let Some(d) = source.get("downwardAPI").filter(|v| v.is_object()) {
                    for item in d["items"].as_array().into_iter().flatten() {
                        let content = downward_item(pod, item, node).map_err(&fail)?;
                        let path = item["path"].as_str().unwrap_or_default();
                        write_file(&dir, path, &content, mode_of(&item["mode"], default_mode))
                            .map_err(&fail)?;
                    }
                } else {
                    return Err(fail(format!(
                        "unsupported projected volume source (this node supports serviceAccountToken, configMap, secret and downwardAPI): {source}"
                    )));
                }
            }
        } else {
            let kind = volume
                .as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
                .unwrap_or_default();
            return Err(fail(format!(
                "volume type {kind:?} is not supported by this node (configMap, secret, emptyDir, downwardAPI, projected, hostPath and persistentVolumeClaim are)"
            )));
        }
        if let Some(group) = owners.fs_group {
            set_volume_ownership(&dir, group, read_only).map_err(&fail)?;
        }
        out.insert(
            name,
            Volume {
                path: dir,
                read_only,
            },
        );
    }
    Ok(out)
}

/// A hostPath volume's directory, after the checks its `type` asks for.
fn host_path_volume(spec: &Value) -> Result<PathBuf, String> {
    let host = PathBuf::from(spec["path"].as_str().unwrap_or_default());
    match spec["type"].as_str().unwrap_or_default() {
        "DirectoryOrCreate" => {
            std::fs::create_dir_all(&host).map_err(|e| format!("mkdir {}: {e}", host.display()))?
        }
        "" => {}
        _ if !host.exists() => {
            return Err(format!(
                "hostPath type check failed: {} does not exist",
                host.display()
            ));
        }
        _ => {}
    }
    Ok(host)
}

/// An emptyDir: a 0777 directory, with a tmpfs over it for `medium: Memory`.
fn set_up_empty_dir(pod: &Value, spec: &Value, dir: &Path, node: &NodeFacts) -> Result<(), String> {
    let medium = spec["medium"].as_str().unwrap_or_default();
    if medium == "Memory" && is_mount_point(dir) {
        // Set up by an earlier pass over this pod: a chmod now would reach the tmpfs root and
        // drop its sticky bit (what made the mode flap between 1777 and 0777).
        return Ok(());
    }
    // As a kubelet: 0777, so that any user the containers run as may use it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    match medium {
        "" => Ok(()),
        "Memory" => mount_tmpfs(dir, memory_volume_size(pod, spec, node.memory_bytes)),
        m if m.starts_with("HugePages") => Err(format!(
            "emptyDir medium {m:?} is not supported by this node (it has no huge pages)"
        )),
        m => Err(format!("unknown storage medium {m:?}")),
    }
}

/// The size of a memory-backed emptyDir (`calculateEmptyDirMemorySize`): the node's
/// allocatable memory, or the pod's memory limit if all its containers have one and it is
/// smaller, or the volume's `sizeLimit` if that is smaller still.
pub(super) fn memory_volume_size(pod: &Value, spec: &Value, allocatable: u64) -> u64 {
    let limit = |c: &Value| {
        c["resources"]["limits"]["memory"]
            .as_str()
            .and_then(env::parse_quantity)
            .map(|n| ((n + env::NANO - 1) / env::NANO).max(0) as u64)
    };
    let mut size = allocatable;
    let main: Vec<Option<u64>> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(limit)
        .collect();
    if !main.is_empty() && main.iter().all(|l| l.is_some_and(|l| l > 0)) {
        let sum: u64 = main.iter().flatten().sum();
        let init = pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(limit)
            .max()
            .unwrap_or(0);
        let pod_limit = sum.max(init);
        if pod_limit > 0 && pod_limit <= size {
            size = pod_limit;
        }
    }
    if let Some(l) = spec["sizeLimit"]
        .as_str()
        .and_then(env::parse_quantity)
        .map(|n| ((n + env::NANO - 1) / env::NANO).max(0) as u64)
        && l > 0
        && l <= size
    {
        size = l;
    }
    size
}

fn mount_tmpfs(dir: &Path, size: u64) -> Result<(), String> {
    let c = |s: &[u8]| std::ffi::CString::new(s).map_err(|e| e.to_string());
    use std::os::unix::ffi::OsStrExt as _;
    let target = c(dir.as_os_str().as_bytes())?;
    // `mode=1777`: what Linux gives a tmpfs root by default, and so what a kubelet's pods see.
    let options = c(format!("size={size},mode=1777").as_bytes())?;
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "mount -t tmpfs -o size={size},mode=1777 tmpfs {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Whether `dir` is the root of a mount (its device differs from its parent's).
fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
        (Ok(d), Some(Ok(p))) => d.dev() != p.dev(),
        _ => false,
    }
}

/// Detaches every mount at or below `dir` (the pod's tmpfs volumes), deepest first, so that
/// the directory can be removed.
pub(super) fn unmount_under(dir: &Path) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        use std::os::unix::ffi::OsStrExt as _;
        let Ok(c) = std::ffi::CString::new(point.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: umount2(2) with a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            tracing::warn!(path = %point.display(), error = %std::io::Error::last_os_error(), "unmounting a pod volume");
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(p: &str) -> String {
    let bytes = p.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let n = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A claim resolved to its bound PersistentVolume.
#[derive(Debug)]
struct Claim {
    pv_name: String,
    pv: Value,
    /// `persistentVolumeClaim.readOnly` of the pod's volume.
    read_only: bool,
}

/// Resolves every `persistentVolumeClaim` volume used by a container, as the kubelet's
/// desired-state populator does, collecting the errors of all of them.
async fn resolve_claims(
    client: &kube::Client,
    pod: &Value,
) -> Result<HashMap<String, Claim>, VolumeError> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut used = std::collections::HashSet::new();
    for k in ["initContainers", "containers"] {
        for c in pod["spec"][k].as_array().into_iter().flatten() {
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                used.insert(m["name"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    let mut claims = HashMap::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let source = &volume["persistentVolumeClaim"];
        if !source.is_object() {
            continue;
        }
        let name = volume["name"].as_str().unwrap_or_default().to_string();
        if !used.contains(&name) {
            // A kubelet skips volumes no container mounts.
            continue;
        }
        let claim_name = source["claimName"].as_str().unwrap_or_default();
        match resolve_claim(client, namespace, claim_name, &name).await {
            Ok((pv_name, pv)) => {
                claims.insert(
                    name,
                    Claim {
                        pv_name,
                        pv,
                        read_only: source["readOnly"].as_bool() == Some(true),
                    },
                );
            }
            Err(e) => failed.push((name, e)),
        }
    }
    if failed.is_empty() {
        return Ok(claims);
    }
    failed.sort();
    Err(VolumeError::Process {
        volumes: failed.iter().map(|(v, _)| v.clone()).collect(),
        messages: failed.into_iter().map(|(_, m)| m).collect(),
    })
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// `getPVCExtractPV` and `getPVSpec`, with the kubelet's messages.
async fn resolve_claim(
    client: &kube::Client,
    namespace: &str,
    claim_name: &str,
    volume_name: &str,
) -> Result<(String, Value), String> {
    let prefix = format!("error processing PVC {namespace}/{claim_name}");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pvc = claims.get(claim_name).await.map_err(|e| {
        format!(
            "{prefix}: failed to fetch PVC from API server: {}",
            api_message(&e)
        )
    })?;
    if pvc.metadata.deletion_timestamp.is_some() {
        return Err(format!("{prefix}: PVC is being deleted"));
    }
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    if phase != Some("Bound") {
        return Err(format!("{prefix}: PVC is not bound"));
    }
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{prefix}: PVC has empty pvc.Spec.VolumeName"))?;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = volumes.get(&pv_name).await.map_err(|e| {
        format!(
            "{prefix}: failed to fetch PV {pv_name} from API server: {}",
            api_message(&e)
        )
    })?;
    let pv = serde_json::to_value(&pv).map_err(|e| format!("{prefix}: {e}"))?;
    let claim_ref = &pv["spec"]["claimRef"];
    if !claim_ref.is_object() {
        return Err(format!(
            "{prefix}: found PV object {pv_name} but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim"
        ));
    }
    let expected = pvc.metadata.uid.clone().unwrap_or_default();
    let actual = claim_ref["uid"].as_str().unwrap_or_default();
    if actual != expected {
        return Err(format!(
            "{prefix}: found PV object {pv_name} but its pv.Spec.ClaimRef.UID {actual} does not point to claim.UID {expected}"
        ));
    }
    let mode = pv["spec"]["volumeMode"].as_str().unwrap_or("Filesystem");
    if mode != "Filesystem" {
        return Err(format!(
            "volume {volume_name} has volumeMode {mode}, but is specified in volumeMounts"
        ));
    }
    if !pv["spec"]["hostPath"].is_object() && !pv["spec"]["local"].is_object() {
        // No plugin for the volume's source on this node.
        return Err(format!(
            "failed to get Plugin from volumeSpec for volume \"{pv_name}\" err=no volume plugin matched (node agents of this test cluster mount hostPath and local PersistentVolumes only)"
        ));
    }
    Ok((pv_name, pv))
}

/// Mounts a bound claim's PersistentVolume: its hostPath or local path.
fn set_up_claim(claim: &Claim, owners: VolumeOwners) -> Result<Volume, VolumeError> {
    let fail = |message: String| VolumeError::SetUp {
        volume: claim.pv_name.clone(),
        message,
    };
    let spec = &claim.pv["spec"];
    let path = if spec["hostPath"].is_object() {
        // The hostPath plugin changes no ownership.
        host_path_volume(&spec["hostPath"]).map_err(fail)?
    } else {
        let path = PathBuf::from(spec["local"]["path"].as_str().unwrap_or_default());
        if !path.exists() {
            return Err(fail(format!(
                "mount failed: stat {}: no such file or directory",
                path.display()
            )));
        }
        // The local plugin gives a writable volume to fsGroup.
        if let Some(group) = owners.fs_group
            && !claim.read_only
        {
            set_volume_ownership(&path, group, false).map_err(fail)?;
        }
        path
    };
    Ok(Volume {
        path,
        read_only: claim.read_only,
    })
}

async fn fetch(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    if kind == "secret" {
        env::fetch_secret(client, namespace, name).await
    } else {
        env::fetch_configmap(client, namespace, name).await
    }
}

/// The TokenRequest body a kubelet sends for a projected serviceAccountToken source.
pub(super) fn token_request(pod: &Value, source: &Value) -> Value {
    let mut spec = json!({
        "expirationSeconds": source["expirationSeconds"].as_i64().unwrap_or(3600),
        "boundObjectRef": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod["metadata"]["name"],
            "uid": pod["metadata"]["uid"],
        },
    });
    match source["audience"].as_str() {
        Some(a) if !a.is_empty() => spec["audiences"] = json!([a]),
        // Empty: the API server's own audiences.
        _ => spec["audiences"] = json!([]),
    }
    json!({ "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec })
}

async fn request_token(
    client: &kube::Client,
    pod: &Value,
    source: &Value,
) -> Result<String, String> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let account = pod["spec"]["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let response: Value = api
        .create_subresource(
            "token",
            account,
            &PostParams::default(),
            &token_request(pod, source),
        )
        .await
        .map_err(|e| {
            format!(
                "failed to fetch token: serviceaccounts \"{account}\" token request failed: {e}"
            )
        })?;
    response["status"]["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "failed to fetch token: the TokenRequest response holds no token".into())
}

/// The bind mounts and working directory of one container.
///
/// `fresh_workdir` is bind-mounted onto `workingDir` unless a volume covers it, so that two
/// pods never share it; without a `workingDir` the process starts in `fresh_workdir` itself
/// (an image's WORKDIR is unknown here). Mounts are ordered parents first.
pub(super) fn mount_plan(
    container: &Value,
    volumes: &HashMap<String, Volume>,
    env: &EnvList,
    fresh_workdir: &Path,
) -> Result<(Vec<BindMount>, PathBuf), String> {
    let mut mounts = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or_default();
        let target = m["mountPath"].as_str().unwrap_or_default();
        if !target.starts_with('/') {
            return Err(format!(
                "mountPath {target:?} of volume {name:?} is not absolute"
            ));
        }
        let volume = volumes
            .get(name)
            .ok_or_else(|| format!("volume {name:?} is not defined in the pod"))?;
        let mut source = volume.path.clone();
        let sub = match (m["subPath"].as_str(), m["subPathExpr"].as_str()) {
            (Some(s), _) if !s.is_empty() => Some(s.to_string()),
            (_, Some(e)) if !e.is_empty() => Some(env::expand(e, |k| env.get(k))),
            _ => None,
        };
        if let Some(sub) = sub {
            source = inside(&source, &sub)?;
        }
        mounts.push(BindMount {
            source,
            target: normalise(target),
            read_only: volume.read_only || m["readOnly"].as_bool() == Some(true),
        });
    }
    let cwd = match container["workingDir"].as_str().filter(|w| !w.is_empty()) {
        Some(w) => {
            let w = normalise(w);
            let covered = w == Path::new("/") || mounts.iter().any(|m| w.starts_with(&m.target));
            if !covered {
                mounts.push(BindMount {
                    source: fresh_workdir.to_path_buf(),
                    target: w.clone(),
                    read_only: false,
                });
            }
            w
        }
        None => fresh_workdir.to_path_buf(),
    };
    mounts.sort_by_key(|m| m.target.components().count());
    Ok((mounts, cwd))
}

fn normalise(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in Path::new(path).components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Creates every mount point (as seen through the mounts before it) and the working
/// directory, from the agent, before the container's process is forked.
pub(super) fn prepare_mount_points(mounts: &[BindMount], cwd: &Path) -> Result<(), String> {
    let mkdir =
        |p: &Path| std::fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()));
    for (i, m) in mounts.iter().enumerate() {
        if !m.source.exists() {
            // A subPath that does not exist yet is created, as a kubelet does.
            mkdir(&m.source)?;
        }
        let point = host_path(&m.target, &mounts[..i]);
        if m.source.is_dir() {
            mkdir(&point)?;
        } else {
            if let Some(parent) = point.parent() {
                mkdir(parent)?;
            }
            if !point.exists() {
                std::fs::File::create(&point)
                    .map_err(|e| format!("create {}: {e}", point.display()))?;
            }
        }
    }
    mkdir(&host_path(cwd, mounts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_plans_bind_volumes_and_a_private_workdir() {
        let volume = |path: &str, read_only| Volume {
            path: PathBuf::from(path),
            read_only,
        };
        let volumes = HashMap::from([
            ("data".to_string(), volume("/d/volumes/data", false)),
            ("cfg".to_string(), volume("/d/volumes/cfg", false)),
            ("claim".to_string(), volume("/srv/pv", true)),
        ]);
        let env = EnvList(vec![("POD".into(), "p1".into())]);
        let container = json!({
            "workingDir": "/workspace",
            "volumeMounts": [
                {"name": "cfg", "mountPath": "/workspace/cfg", "readOnly": true},
                {"name": "data", "mountPath": "/data", "subPathExpr": "$(POD)"},
            ],
        });
        let (mounts, cwd) = mount_plan(&container, &volumes, &env, Path::new("/d/work")).unwrap();
        assert_eq!(cwd, Path::new("/workspace"));
        let targets: Vec<_> = mounts.iter().map(|m| m.target.to_str().unwrap()).collect();
        assert_eq!(targets, ["/data", "/workspace", "/workspace/cfg"]);
        assert_eq!(mounts[0].source, Path::new("/d/volumes/data/p1"));
        assert_eq!(mounts[1].source, Path::new("/d/work"));
        assert!(mounts[2].read_only && !mounts[1].read_only);

        // A volume at the working directory covers it: no private directory.
        let container = json!({"workingDir": "/data/", "volumeMounts": [{"name": "data", "mountPath": "/data"}]});
        let (mounts, cwd) = mount_plan(&container, &volumes, &env, Path::new("/d/work")).unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(cwd, Path::new("/data"));

        // No working directory: start in the private one, unmounted.
        let (mounts, cwd) = mount_plan(&json!({}), &volumes, &env, Path::new("/d/work")).unwrap();
        assert!(mounts.is_empty());
        assert_eq!(cwd, Path::new("/d/work"));

        let bad =
            json!({"volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../../etc"}]});
        assert!(mount_plan(&bad, &volumes, &env, Path::new("/w")).is_err());
        let unknown = json!({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]});
        assert!(mount_plan(&unknown, &volumes, &env, Path::new("/w")).is_err());

        // A read-only volume (a claim with readOnly) is mounted read-only whatever the mount says.
        let claim =
            json!({"volumeMounts": [{"name": "claim", "mountPath": "/pv", "readOnly": false}]});
        let (mounts, _) = mount_plan(&claim, &volumes, &env, Path::new("/w")).unwrap();
        assert!(mounts[0].read_only);
    }

    #[test]
    fn memory_volumes_are_as_large_as_the_smallest_limit() {
        let gib = 1u64 << 30;
        let pod = |containers: Value| json!({"spec": {"containers": containers}});
        let limited = pod(json!([
            {"resources": {"limits": {"memory": "1Gi"}}},
            {"resources": {"limits": {"memory": "512Mi"}}},
        ]));
        // Node allocatable, then the pod's limit (all containers have one), then sizeLimit.
        assert_eq!(
            memory_volume_size(&pod(json!([{}])), &json!({}), 16 * gib),
            16 * gib
        );
        assert_eq!(
            memory_volume_size(&limited, &json!({}), 16 * gib),
            gib + gib / 2
        );
        assert_eq!(
            memory_volume_size(&limited, &json!({"sizeLimit": "8Mi"}), 16 * gib),
            8 << 20
        );
        // A sizeLimit above what the pod may use does not raise it.
        assert_eq!(
            memory_volume_size(&limited, &json!({"sizeLimit": "64Gi"}), 16 * gib),
            gib + gib / 2
        );
        // One container without a limit: the pod has none.
        let partly = pod(json!([{"resources": {"limits": {"memory": "1Gi"}}}, {}]));
        assert_eq!(memory_volume_size(&partly, &json!({}), 16 * gib), 16 * gib);
    }

    #[test]
    fn volume_errors_read_like_the_kubelets_events() {
        let process = VolumeError::Process {
            volumes: vec!["a".into(), "data".into()],
            messages: vec![
                "error processing PVC ns/x: PVC is not bound".into(),
                "error processing PVC ns/y: PVC is being deleted".into(),
            ],
        };
        assert_eq!(
            process.event_message(),
            "Unable to attach or mount volumes: unmounted volumes=[a data], unattached volumes=[], failed to process volumes=[a data]: error processing PVC ns/x: PVC is not bound; error processing PVC ns/y: PVC is being deleted"
        );
        let setup = VolumeError::SetUp {
            volume: "pv-1".into(),
            message: "hostPath type check failed: /x does not exist".into(),
        };
        assert_eq!(
            setup.event_message(),
            "MountVolume.SetUp failed for volume \"pv-1\" : hostPath type check failed: /x does not exist"
        );
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/a\\040b/c"), "/a b/c");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path("/end\\"), "/end\\");
    }

    #[test]
    fn mount_points_are_created_through_earlier_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let work = base.join("work");
        let cfg = base.join("cfg");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::write(cfg.join("file"), "x").unwrap();
        let target = base.join("view");
        let mounts = vec![
            BindMount {
                source: work.clone(),
                target: target.clone(),
                read_only: false,
            },
            BindMount {
                source: cfg.clone(),
                target: target.join("etc/cfg"),
                read_only: true,
            },
            BindMount {
                source: cfg.join("file"),
                target: target.join("one-file"),
                read_only: true,
            },
        ];
        prepare_mount_points(&mounts, &target.join("sub")).unwrap();
        assert!(target.is_dir());
        // Nested mount points land in the directory mounted above them.
        assert!(work.join("etc/cfg").is_dir());
        assert!(work.join("one-file").is_file());
        assert!(work.join("sub").is_dir());
    }

    #[test]
    fn volume_files_honour_items_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let data = BTreeMap::from([
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]);
        write_keys(dir.path(), &data, &Value::Null, 0o640, "configmap").unwrap();
        assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), b"2");
        let mode = std::fs::metadata(dir.path().join("a"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o640);
        let items = json!([{"key": "a", "path": "sub/renamed", "mode": 0o400}]);
        write_keys(dir.path(), &data, &items, 0o644, "secret").unwrap();
        assert_eq!(std::fs::read(dir.path().join("sub/renamed")).unwrap(), b"1");
        let missing = json!([{"key": "zz", "path": "zz"}]);
        assert_eq!(
            write_keys(dir.path(), &data, &missing, 0o644, "configmap").unwrap_err(),
            "configmap references non-existent config key: zz"
        );
        assert!(write_file(dir.path(), "../escape", b"", 0o644).is_err());
    }

    #[test]
    fn token_requests_bind_to_the_pod() {
        let pod = json!({"metadata": {"name": "p", "uid": "u"}});
        let body = token_request(&pod, &json!({"expirationSeconds": 3607, "path": "token"}));
        assert_eq!(body["spec"]["expirationSeconds"], 3607);
        assert_eq!(
            body["spec"]["boundObjectRef"],
            json!({"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u"})
        );
        assert_eq!(body["spec"]["audiences"], json!([]));
        let body = token_request(&pod, &json!({"audience": "vault"}));
        assert_eq!(body["spec"]["audiences"], json!(["vault"]));
        assert_eq!(body["spec"]["expirationSeconds"], 3600);
    }

    #[test]
    fn downward_api_files_render_labels_and_fields() {
        let node = NodeFacts {
            node_name: "n".into(),
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            ephemeral_bytes: 0,
        };
        let pod = json!({"metadata": {"namespace": "ns", "labels": {"b": "2", "a": "1"}},
                         "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "500m"}}}]}});
        let item = |v: Value| downward_item(&pod, &v, &node).map(|b| String::from_utf8(b).unwrap());
        assert_eq!(
            item(json!({"fieldRef": {"fieldPath": "metadata.namespace"}})).unwrap(),
            "ns"
        );
        assert_eq!(
            item(json!({"fieldRef": {"fieldPath": "metadata.labels"}})).unwrap(),
            "a=\"1\"\nb=\"2\""
        );
        assert_eq!(
            item(json!({"resourceFieldRef": {"containerName": "c", "resource": "limits.cpu", "divisor": "1m"}})).unwrap(),
            "500"
        );
    }
}
