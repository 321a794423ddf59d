//! Pod volumes: materialised as directories under `<pod dir>/volumes/<name>` (configMap,
//! secret, emptyDir, downwardAPI, projected with serviceAccountToken / configMap / secret /
//! downwardAPI sources) or taken from the host (hostPath), then bind-mounted at each
//! container's `mountPath` inside the container's own mount namespace ([`mount_plan`]).
//!
//! Volumes are written once, when the pod starts (like a kubelet's first mount); later
//! changes to a ConfigMap or Secret and token expiry are not propagated.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use super::env::{self, EnvList, NodeFacts};
use super::process::{BindMount, host_path};

/// Why a volume could not be set up (reported as a FailedMount event).
#[derive(Debug)]
pub(super) struct VolumeError {
    pub volume: String,
    pub message: String,
}

impl VolumeError {
    /// The event message a kubelet gives.
    pub fn event_message(&self) -> String {
        format!(
            "MountVolume.SetUp failed for volume \"{}\" : {}",
            self.volume, self.message
        )
    }
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

/// Materialises every volume of `pod`; returns the host directory of each by name.
pub(super) async fn materialise(
    client: &kube::Client,
    pod: &Value,
    pod_dir: &Path,
    node: &NodeFacts,
) -> Result<HashMap<String, PathBuf>, VolumeError> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut out = HashMap::new();
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or_default().to_string();
        let fail = |message: String| VolumeError {
            volume: name.clone(),
            message,
        };
        if let Some(host) = volume["hostPath"]["path"].as_str() {
            let host = PathBuf::from(host);
            match volume["hostPath"]["type"].as_str().unwrap_or_default() {
                "DirectoryOrCreate" => std::fs::create_dir_all(&host)
                    .map_err(|e| fail(format!("mkdir {}: {e}", host.display())))?,
                "" => {}
                _ if !host.exists() => {
                    return Err(fail(format!(
                        "hostPath type check failed: {} does not exist",
                        host.display()
                    )));
                }
                _ => {}
            }
            out.insert(name, host);
            continue;
        }
        let dir = pod_dir.join("volumes").join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| fail(format!("mkdir {}: {e}", dir.display())))?;
        if volume["emptyDir"].is_object() {
            // Nothing to write: an empty directory that lives as long as the pod.
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
                    // Tokens are private (a kubelet writes them 0600 unless defaultMode says so).
                    let mode = if spec["defaultMode"].is_null() {
                        0o600
                    } else {
                        default_mode
                    };
                    write_file(&dir, path, jwt.as_bytes(), mode).map_err(&fail)?;
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
                "volume type {kind:?} is not supported by this node (configMap, secret, emptyDir, downwardAPI, projected and hostPath are)"
            )));
        }
        out.insert(name, dir);
    }
    Ok(out)
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
    volumes: &HashMap<String, PathBuf>,
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
        let mut source = volumes
            .get(name)
            .cloned()
            .ok_or_else(|| format!("volume {name:?} is not defined in the pod"))?;
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
            read_only: m["readOnly"].as_bool() == Some(true),
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
        let volumes = HashMap::from([
            ("data".to_string(), PathBuf::from("/d/volumes/data")),
            ("cfg".to_string(), PathBuf::from("/d/volumes/cfg")),
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
