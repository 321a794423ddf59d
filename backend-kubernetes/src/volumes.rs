//! The `volumes` setting: what a pod mounts, written the short way and rendered as a pod
//! spec's `volumes` and the container's `volumeMounts`.
//!
//! ```toml
//! volumes = [
//!   { mount = "/data", claim = "datasets", read_only = true },  # an existing PVC
//!   { mount = "/dev/shm", memory = "40Gi" },                   # emptyDir, medium Memory
//!   { mount = "/scratch", empty_dir = "100Gi" },               # emptyDir on disk, sizeLimit
//!   { mount = "/etc/train", config_map = "train-config" },
//!   { mount = "/var/secrets/wandb", secret = "wandb" },
//! ]
//! ```

use orchestrator_core::PluginError;
use serde_json::{Value, json};

use crate::names;
use crate::settings::{NAME, did_you_mean_hint};

/// One mount of the `volumes` setting.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub mount: String,
    pub source: Source,
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Claim(String),
    /// emptyDir with `medium: Memory`, of this size (e.g. for `/dev/shm`).
    Memory(String),
    /// emptyDir on the node's disk, with a size limit if given.
    EmptyDir(Option<String>),
    ConfigMap(String),
    Secret(String),
}

const SOURCES: &[&str] = &["claim", "memory", "empty_dir", "config_map", "secret"];
/// Besides one of the sources.
const OPTIONS: &[&str] = &["mount", "read_only"];

fn keys() -> impl Iterator<Item = &'static str> + Clone {
    OPTIONS.iter().chain(SOURCES).copied()
}

fn invalid(why: impl std::fmt::Display) -> PluginError {
    PluginError::invalid_input(format!("{NAME}: setting `volumes`: {why}"))
}

/// Parses the `volumes` setting.
pub fn parse(value: &Value) -> Result<Vec<Volume>, PluginError> {
    let list = value.as_array().ok_or_else(|| {
        invalid("expected a list, e.g. [{ mount = \"/data\", claim = \"datasets\" }]")
    })?;
    let volumes = list
        .iter()
        .enumerate()
        .map(|(i, v)| parse_one(i, v))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, v) in volumes.iter().enumerate() {
        if volumes[..i].iter().any(|earlier| earlier.mount == v.mount) {
            return Err(invalid(format!("`{}` is mounted twice", v.mount)));
        }
    }
    Ok(volumes)
}

fn parse_one(i: usize, value: &Value) -> Result<Volume, PluginError> {
    let at = |why: String| invalid(format!("[{i}]: {why}"));
    let table = value.as_object().ok_or_else(|| {
        at("expected a table such as { mount = \"/data\", claim = \"datasets\" }".into())
    })?;
    for key in table.keys() {
        if !keys().any(|k| k == key) {
            let hint = did_you_mean_hint(key, keys(), || {
                format!("keys: {}", keys().collect::<Vec<_>>().join(", "))
            });
            return Err(at(format!("unknown key `{key}`; {hint}")));
        }
    }
    let text = |key: &str| -> Result<Option<String>, PluginError> {
        match table.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(at(format!("`{key}` must be a non-empty string"))),
        }
    };
    let mount = text("mount")?
        .ok_or_else(|| at("`mount` (the path in the container) is missing".into()))?;
    if !mount.starts_with('/') {
        return Err(at(format!(
            "`mount` must be an absolute path, not `{mount}`"
        )));
    }
    let read_only = match table.get("read_only") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(at("`read_only` must be true or false".into())),
    };
    let given: Vec<&str> = SOURCES
        .iter()
        .copied()
        .filter(|k| table.contains_key(*k))
        .collect();
    let source = match given.as_slice() {
        ["claim"] => Source::Claim(checked_name(&at, "claim", text("claim")?.unwrap())?),
        ["memory"] => Source::Memory(text("memory")?.unwrap()),
        ["empty_dir"] => Source::EmptyDir(match table.get("empty_dir") {
            Some(Value::Bool(true)) => None,
            _ => Some(text("empty_dir")?.unwrap()),
        }),
        ["config_map"] => Source::ConfigMap(checked_name(
            &at,
            "config_map",
            text("config_map")?.unwrap(),
        )?),
        ["secret"] => Source::Secret(checked_name(&at, "secret", text("secret")?.unwrap())?),
        [] => {
            return Err(at(format!(
                "`{mount}` has no source; give one of {}",
                SOURCES.join(", ")
            )));
        }
        many => {
            return Err(at(format!(
                "`{mount}` has several sources ({}); give exactly one",
                many.join(", ")
            )));
        }
    };
    Ok(Volume {
        mount,
        source,
        read_only,
    })
}

fn checked_name(
    at: &dyn Fn(String) -> PluginError,
    key: &str,
    name: String,
) -> Result<String, PluginError> {
    names::check_dns_subdomain(&name).map_err(|why| at(format!("`{key}` `{name}`: {why}")))?;
    Ok(name)
}

/// The pod spec's `volumes` and the container's `volumeMounts`.
pub fn render(volumes: &[Volume]) -> (Vec<Value>, Vec<Value>) {
    volumes
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let name = format!("ferry-volume-{i}");
            let mut volume = match &v.source {
                Source::Claim(claim) => json!({"persistentVolumeClaim": {"claimName": claim}}),
                Source::Memory(size) => {
                    json!({"emptyDir": {"medium": "Memory", "sizeLimit": size}})
                }
                Source::EmptyDir(None) => json!({"emptyDir": {}}),
                Source::EmptyDir(Some(size)) => json!({"emptyDir": {"sizeLimit": size}}),
                Source::ConfigMap(map) => json!({"configMap": {"name": map}}),
                Source::Secret(secret) => json!({"secret": {"secretName": secret}}),
            };
            if v.read_only
                && let Source::Claim(_) = v.source
            {
                volume["persistentVolumeClaim"]["readOnly"] = json!(true);
            }
            volume["name"] = json!(name);
            let mut mount = json!({"name": name, "mountPath": v.mount});
            if v.read_only {
                mount["readOnly"] = json!(true);
            }
            (volume, mount)
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_renders_as_in_a_pod_spec() {
        let volumes = parse(&json!([
            {"mount": "/data", "claim": "datasets", "read_only": true},
            {"mount": "/dev/shm", "memory": "40Gi"},
            {"mount": "/scratch", "empty_dir": "100Gi"},
            {"mount": "/tmp/x", "empty_dir": true},
            {"mount": "/etc/train", "config_map": "train-config"},
            {"mount": "/var/secrets/wandb", "secret": "wandb"},
        ]))
        .unwrap();
        let (pod, container) = render(&volumes);
        assert_eq!(
            pod[0],
            json!({"name": "ferry-volume-0", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": true}})
        );
        assert_eq!(
            pod[1]["emptyDir"],
            json!({"medium": "Memory", "sizeLimit": "40Gi"})
        );
        assert_eq!(pod[2]["emptyDir"], json!({"sizeLimit": "100Gi"}));
        assert_eq!(pod[3]["emptyDir"], json!({}));
        assert_eq!(pod[4]["configMap"], json!({"name": "train-config"}));
        assert_eq!(pod[5]["secret"], json!({"secretName": "wandb"}));
        assert_eq!(
            container[0],
            json!({"name": "ferry-volume-0", "mountPath": "/data", "readOnly": true})
        );
        assert_eq!(
            container[1],
            json!({"name": "ferry-volume-1", "mountPath": "/dev/shm"})
        );
    }

    #[test]
    fn mistakes_are_named() {
        let error = |v: Value| parse(&v).unwrap_err().message().to_string();
        assert!(error(json!([{"mount": "/d", "clam": "x"}])).contains("did you mean `claim`?"));
        assert!(error(json!([{"mount": "data", "claim": "x"}])).contains("absolute path"));
        assert!(error(json!([{"mount": "/d"}])).contains("has no source"));
        assert!(
            error(json!([{"mount": "/d", "claim": "x", "secret": "y"}]))
                .contains("several sources (claim, secret)")
        );
        assert!(
            error(json!([{"mount": "/d", "claim": "Bad_Name"}])).contains("`claim` `Bad_Name`")
        );
        assert!(
            error(json!([{"mount": "/d", "claim": "a"}, {"mount": "/d", "secret": "b"}]))
                .contains("mounted twice")
        );
    }
}
