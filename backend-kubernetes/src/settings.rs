//! The stack settings of the Kubernetes orchestrator: the seed's (ZenML) settings with the same
//! meaning, plus what its users asked for. Parsed and checked once, when the stack opens.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use orchestrator_core::PluginError;
use orchestrator_core::sdk::PluginConfig;
use orchestrator_core::store::settings::{unknown_key, value_string};
use serde_json::Value;

use crate::names;

pub const NAME: &str = "kubernetes";

/// The documented keys; `kubernetes_config_path` (the seed's name) is an alias of `kubeconfig`.
pub const KEYS: &[(&str, &str)] = &[
    (
        "image",
        "container image with ferry and its plugins (default: the runtime image of this ferry version)",
    ),
    ("job_prefix", "prefix of Job names (default \"ferry-\")"),
    (
        "extra_labels",
        "labels added to every object, e.g. { team = \"ml\" }",
    ),
    ("extra_annotations", "annotations added to every object"),
    (
        "namespace",
        "namespace of the run's objects (default: the kubeconfig context's, else \"default\")",
    ),
    (
        "image_pull_policy",
        "Always | Never | IfNotPresent (default IfNotPresent)",
    ),
    (
        "kubeconfig",
        "kubeconfig file (alias: kubernetes_config_path; default $KUBECONFIG, then ~/.kube/config, then in-cluster)",
    ),
    (
        "context",
        "kubeconfig context (default: the current context)",
    ),
    ("service_account", "service account of the pods"),
    (
        "run_as_user",
        "uid the containers run as (default 10001, the runtime image's `ferry` user; rendered with runAsNonRoot unless 0). Steps then cannot read the credentials the agent holds",
    ),
    (
        "image_pull_secrets",
        "names of Secrets for pulling the image, e.g. [\"regcred\"]",
    ),
    (
        "node_selector",
        "node labels the pods require, e.g. { \"cloud.google.com/gke-nodepool\" = \"gpu\" }",
    ),
    ("tolerations", "pod tolerations, as in a pod spec"),
    (
        "gpus",
        "GPUs each pod asks for (a step's `resources.gpu` overrides), as limits of `gpu_resource`",
    ),
    (
        "gpu_resource",
        "extended resource GPUs are counted in (default \"nvidia.com/gpu\"; e.g. \"amd.com/gpu\")",
    ),
    ("priority_class", "priorityClassName of the pods"),
    (
        "volumes",
        "what the pods mount, e.g. [{ mount = \"/data\", claim = \"datasets\", read_only = true }, { mount = \"/dev/shm\", memory = \"40Gi\" }]; sources: claim, memory, empty_dir, config_map, secret",
    ),
    (
        "profiles",
        "named pod settings a step picks with `profile: NAME`, e.g. [stacks.k8s.orchestrator.settings.profiles.gpu] gpus = 1; keys: see `profile::PROFILE_KEYS`",
    ),
    ("affinity", "pod affinity, as in a pod spec"),
    (
        "resources",
        "default container resources, e.g. { requests = { cpu = \"1\", memory = \"2Gi\" } }; a step's own resources override",
    ),
    (
        "env",
        "extra environment variables of the pods, e.g. { LOG_LEVEL = \"debug\" }",
    ),
    (
        "env_from_secrets",
        "names of Secrets whose keys become environment variables",
    ),
    (
        "ttl_seconds_after_finished",
        "delete finished Jobs (and their pods) after this many seconds (default 3600)",
    ),
    (
        "active_deadline_seconds",
        "fail a Job that runs longer than this",
    ),
    (
        "backoff_limit",
        "pod retries per Job (default 0: ferry retries steps itself)",
    ),
    (
        "pending_timeout",
        "fail a run whose pod stays unschedulable this long, e.g. \"10m\" (default 10m)",
    ),
    (
        "mode",
        "pipeline (default): one Job runs the whole pipeline | steps: a coordinator Job starts one Job per step, in DAG order, each with the step's image and resources",
    ),
    (
        "parallelism",
        "steps mode: at most this many step Jobs at once (default 16)",
    ),
    (
        "role",
        "set by ferry in a steps run's coordinator pod (\"coordinator\"); not for ferry.toml",
    ),
    (
        "store_credentials",
        "secret (default: the store's settings travel in a per-run Secret) | workload-identity (nothing is shipped; the pod's identity reaches the store)",
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    Never,
    IfNotPresent,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::Never => "Never",
            PullPolicy::IfNotPresent => "IfNotPresent",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One Job runs the whole pipeline, as the seed did.
    Pipeline,
    /// One Job per step, in DAG order.
    Steps,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreCredentials {
    Secret,
    WorkloadIdentity,
}

/// Validated settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub image: String,
    pub job_prefix: String,
    pub extra_labels: BTreeMap<String, String>,
    pub extra_annotations: BTreeMap<String, String>,
    pub namespace: Option<String>,
    pub image_pull_policy: PullPolicy,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub service_account: Option<String>,
    /// The containers' uid (and gid): non-root, so that a step cannot read its agent's memory.
    pub run_as_user: i64,
    pub image_pull_secrets: Vec<String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Option<Value>,
    pub gpus: Option<u32>,
    pub gpu_resource: String,
    pub priority_class: Option<String>,
    pub volumes: Vec<crate::volumes::Volume>,
    /// Named pod settings (validated key by key when parsed).
    pub profiles: BTreeMap<String, serde_json::Map<String, Value>>,
    pub affinity: Option<Value>,
    pub resources: Option<Value>,
    pub env: BTreeMap<String, String>,
    pub env_from_secrets: Vec<String>,
    pub ttl_seconds_after_finished: Option<i64>,
    pub active_deadline_seconds: Option<i64>,
    pub backoff_limit: i32,
    pub pending_timeout: Duration,
    pub mode: Mode,
    pub parallelism: usize,
    pub role: Role,
    pub store_credentials: StoreCredentials,
    /// The settings as written, for the coordinator of a `steps` run.
    pub source: serde_json::Map<String, Value>,
}

/// Which side of a run this plugin instance is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// On the user's machine: creates the run's objects and follows them.
    Submitter,
    /// Inside a steps run's coordinator pod: starts and follows one Job per step.
    Coordinator,
}

/// What GPUs are counted in unless `gpu_resource` says otherwise (NVIDIA's device plugin).
pub const DEFAULT_GPU_RESOURCE: &str = "nvidia.com/gpu";

/// The uid of the runtime image's `ferry` user (`useradd --uid` in the Dockerfile).
pub const RUNTIME_IMAGE_UID: i64 = 10001;

/// The runtime image of this ferry version (see the Dockerfile at the repository root).
pub fn default_image() -> String {
    format!("ghcr.io/ferry-dev/ferry:{}", env!("CARGO_PKG_VERSION"))
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            image: default_image(),
            job_prefix: "ferry-".into(),
            extra_labels: BTreeMap::new(),
            extra_annotations: BTreeMap::new(),
            namespace: None,
            image_pull_policy: PullPolicy::IfNotPresent,
            kubeconfig: None,
            context: None,
            service_account: None,
            run_as_user: RUNTIME_IMAGE_UID,
            image_pull_secrets: Vec::new(),
            node_selector: BTreeMap::new(),
            tolerations: None,
            gpus: None,
            gpu_resource: DEFAULT_GPU_RESOURCE.into(),
            priority_class: None,
            volumes: Vec::new(),
            profiles: BTreeMap::new(),
            affinity: None,
            resources: None,
            env: BTreeMap::new(),
            env_from_secrets: Vec::new(),
            ttl_seconds_after_finished: Some(3600),
            active_deadline_seconds: None,
            backoff_limit: 0,
            pending_timeout: Duration::from_secs(600),
            mode: Mode::Pipeline,
            parallelism: 16,
            role: Role::Submitter,
            store_credentials: StoreCredentials::Secret,
            source: serde_json::Map::new(),
        }
    }
}

/// "did you mean `x`?" for a misspelt name, else `otherwise` (the valid names, or advice).
pub(crate) fn did_you_mean_hint<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    otherwise: impl FnOnce() -> String,
) -> String {
    match orchestrator_core::suggest::did_you_mean(input, candidates) {
        Some(best) => format!("did you mean `{best}`?"),
        None => otherwise(),
    }
}

fn invalid(key: &str, why: impl std::fmt::Display) -> PluginError {
    PluginError::invalid_input(format!("{NAME}: setting `{key}`: {why}"))
}

fn string_map(key: &str, value: &Value) -> Result<BTreeMap<String, String>, PluginError> {
    let map = value
        .as_object()
        .ok_or_else(|| invalid(key, "expected a table of names to strings"))?;
    map.iter()
        .map(|(k, v)| Ok((k.clone(), value_string(&format!("{key}.{k}"), v)?)))
        .collect()
}

fn string_list(key: &str, value: &Value) -> Result<Vec<String>, PluginError> {
    let list = value
        .as_array()
        .ok_or_else(|| invalid(key, "expected a list of names"))?;
    list.iter()
        .enumerate()
        .map(|(i, v)| value_string(&format!("{key}[{i}]"), v))
        .collect()
}

fn integer(key: &str, value: &Value, min: i64) -> Result<i64, PluginError> {
    let n = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid(key, "expected a whole number"))?;
    if n < min {
        return Err(invalid(key, format!("must be at least {min}, got {n}")));
    }
    Ok(n)
}

impl Settings {
    pub fn from_config(config: &PluginConfig) -> Result<Self, PluginError> {
        Self::parse(&config.settings, &|path| config.resolve_path(path))
    }

    /// Parses and checks settings as written in ferry.toml; a relative `kubeconfig` stays
    /// relative to the working directory.
    pub fn from_map(settings: &serde_json::Map<String, Value>) -> Result<Self, PluginError> {
        Self::parse(settings, &|path| PathBuf::from(path))
    }

    fn parse(
        settings: &serde_json::Map<String, Value>,
        resolve_path: &dyn Fn(&str) -> PathBuf,
    ) -> Result<Self, PluginError> {
        let mut s = Settings {
            source: settings.clone(),
            ..Settings::default()
        };
        for (key, value) in settings {
            match key.as_str() {
                "gpus" => s.gpus = Some(integer(key, value, 0)?.min(i64::from(u32::MAX)) as u32),
                "gpu_resource" => {
                    let name = value_string(key, value)?;
                    names::check_qualified_name(&name)
                        .map_err(|why| invalid(key, format!("`{name}`: {why}")))?;
                    s.gpu_resource = name;
                }
                "priority_class" => {
                    let name = value_string(key, value)?;
                    names::check_dns_subdomain(&name)
                        .map_err(|why| invalid(key, format!("`{name}`: {why}")))?;
                    s.priority_class = Some(name);
                }
                "volumes" => s.volumes = crate::volumes::parse(value)?,
                "profiles" => s.profiles = crate::profile::parse_profiles(value)?,
                "image" => s.image = value_string(key, value)?,
                "job_prefix" => s.job_prefix = value_string(key, value)?,
                "extra_labels" => s.extra_labels = string_map(key, value)?,
                "extra_annotations" => s.extra_annotations = string_map(key, value)?,
                "namespace" => s.namespace = Some(value_string(key, value)?),
                "image_pull_policy" => {
                    s.image_pull_policy = match value_string(key, value)?.as_str() {
                        "Always" => PullPolicy::Always,
                        "Never" => PullPolicy::Never,
                        "IfNotPresent" => PullPolicy::IfNotPresent,
                        other => {
                            return Err(invalid(
                                key,
                                format!(
                                    "`{other}` is not a pull policy; use Always, Never or IfNotPresent"
                                ),
                            ));
                        }
                    }
                }
                "kubeconfig" | "kubernetes_config_path" => {
                    s.kubeconfig = Some(resolve_path(&value_string(key, value)?));
                }
                "context" => s.context = Some(value_string(key, value)?),
                "service_account" => s.service_account = Some(value_string(key, value)?),
                "run_as_user" => s.run_as_user = integer(key, value, 0)?.min(i64::from(i32::MAX)),
                "image_pull_secrets" => s.image_pull_secrets = string_list(key, value)?,
                "node_selector" => s.node_selector = string_map(key, value)?,
                "tolerations" => s.tolerations = Some(value.clone()),
                "affinity" => s.affinity = Some(value.clone()),
                "resources" => s.resources = Some(value.clone()),
                "env" => s.env = string_map(key, value)?,
                "env_from_secrets" => s.env_from_secrets = string_list(key, value)?,
                "ttl_seconds_after_finished" => {
                    s.ttl_seconds_after_finished = Some(integer(key, value, 0)?)
                }
                "active_deadline_seconds" => {
                    s.active_deadline_seconds = Some(integer(key, value, 1)?)
                }
                "backoff_limit" => {
                    s.backoff_limit = integer(key, value, 0)?.min(i64::from(i32::MAX)) as i32
                }
                "pending_timeout" => {
                    let text = value_string(key, value)?;
                    s.pending_timeout = humantime::parse_duration(&text).map_err(|e| {
                        invalid(
                            key,
                            format!("`{text}` is not a duration ({e}); write e.g. \"10m\""),
                        )
                    })?;
                }
                "mode" => {
                    s.mode = match value_string(key, value)?.as_str() {
                        "pipeline" => Mode::Pipeline,
                        "steps" => Mode::Steps,
                        other => {
                            return Err(invalid(
                                key,
                                format!("`{other}` is not a mode; use \"pipeline\" or \"steps\""),
                            ));
                        }
                    }
                }
                "parallelism" => {
                    s.parallelism = usize::try_from(integer(key, value, 1)?).unwrap_or(usize::MAX)
                }
                "role" => {
                    s.role = match value_string(key, value)?.as_str() {
                        "submitter" => Role::Submitter,
                        "coordinator" => Role::Coordinator,
                        other => {
                            return Err(invalid(
                                key,
                                format!(
                                    "`{other}` is not a role; ferry sets this setting itself, remove it"
                                ),
                            ));
                        }
                    }
                }
                "store_credentials" => {
                    s.store_credentials = match value_string(key, value)?.as_str() {
                        "secret" => StoreCredentials::Secret,
                        "workload-identity" => StoreCredentials::WorkloadIdentity,
                        other => {
                            return Err(invalid(
                                key,
                                format!(
                                    "`{other}` is not supported; use secret or workload-identity"
                                ),
                            ));
                        }
                    }
                }
                other => return Err(unknown_key(NAME, other, KEYS)),
            }
        }
        s.check()?;
        Ok(s)
    }

    /// Checks what the API server would refuse later, so that a typo fails at once with the
    /// setting's name rather than as a 422 in the middle of a run.
    fn check(&self) -> Result<(), PluginError> {
        if self.image.trim().is_empty() {
            return Err(invalid("image", "must not be empty"));
        }
        names::check_prefix(&self.job_prefix).map_err(|why| invalid("job_prefix", why))?;
        for (key, value) in &self.extra_labels {
            names::check_label(key, value).map_err(|why| invalid("extra_labels", why))?;
        }
        for key in self.extra_annotations.keys() {
            names::check_qualified_name(key)
                .map_err(|why| invalid("extra_annotations", format!("key `{key}`: {why}")))?;
        }
        for (key, value) in &self.node_selector {
            names::check_label(key, value).map_err(|why| invalid("node_selector", why))?;
        }
        if let Some(ns) = &self.namespace {
            names::check_dns_label(ns)
                .map_err(|why| invalid("namespace", format!("`{ns}`: {why}")))?;
        }
        if let Some(sa) = &self.service_account {
            names::check_dns_subdomain(sa)
                .map_err(|why| invalid("service_account", format!("`{sa}`: {why}")))?;
        }
        for secret in self.image_pull_secrets.iter().chain(&self.env_from_secrets) {
            names::check_dns_subdomain(secret).map_err(|why| {
                invalid(
                    "image_pull_secrets / env_from_secrets",
                    format!("`{secret}`: {why}"),
                )
            })?;
        }
        for name in self.env.keys() {
            names::check_env_name(name)
                .map_err(|why| invalid("env", format!("`{name}`: {why}")))?;
            // `env` values are literals in the Job spec, readable by anyone who can read Jobs.
            if orchestrator_core::store::settings::is_secret_key(name) {
                return Err(invalid(
                    "env",
                    format!(
                        "`{name}` looks like a credential, and `env` values are written into the Job spec in plain text; put it in a Kubernetes Secret and name that Secret in `env_from_secrets`"
                    ),
                ));
            }
        }
        if let Some(t) = &self.tolerations
            && !t.is_array()
        {
            return Err(invalid("tolerations", "expected a list of tolerations"));
        }
        if let Some(a) = &self.affinity
            && !a.is_object()
        {
            return Err(invalid("affinity", "expected a table"));
        }
        if let Some(r) = &self.resources {
            let map = r.as_object().ok_or_else(|| {
                invalid(
                    "resources",
                    "expected a table with `requests` and/or `limits`",
                )
            })?;
            for (section, quantities) in map {
                if !matches!(section.as_str(), "requests" | "limits") {
                    return Err(invalid(
                        "resources",
                        format!("`{section}` is not `requests` or `limits`"),
                    ));
                }
                let ok = quantities
                    .as_object()
                    .is_some_and(|q| q.values().all(|v| v.is_string() || v.is_number()));
                if !ok {
                    return Err(invalid(
                        "resources",
                        format!(
                            "`{section}` must be a table of quantities, e.g. {{ cpu = \"500m\", memory = \"1Gi\" }}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(settings: Value) -> Result<Settings, PluginError> {
        let mut config = PluginConfig::new(settings.as_object().unwrap().clone());
        config.project_root = Some(PathBuf::from("/project"));
        Settings::from_config(&config)
    }

    #[test]
    fn seed_settings_keep_their_meaning() {
        let s = parse(json!({
            "image": "registry.example/ferry:1",
            "job_prefix": "train-",
            "extra_labels": {"team": "ml"},
            "extra_annotations": {"example.com/owner": "ana"},
            "namespace": "ml",
            "image_pull_policy": "Always",
            "kubernetes_config_path": "kube/config",
        }))
        .unwrap();
        assert_eq!(s.image, "registry.example/ferry:1");
        assert_eq!(s.job_prefix, "train-");
        assert_eq!(s.extra_labels["team"], "ml");
        assert_eq!(s.namespace.as_deref(), Some("ml"));
        assert_eq!(s.image_pull_policy, PullPolicy::Always);
        assert_eq!(s.kubeconfig, Some(PathBuf::from("/project/kube/config")));
    }

    #[test]
    fn defaults_are_safe() {
        let s = parse(json!({})).unwrap();
        assert_eq!(s.image_pull_policy, PullPolicy::IfNotPresent);
        assert_eq!(s.job_prefix, "ferry-");
        assert_eq!(s.mode, Mode::Pipeline);
        assert_eq!(s.role, Role::Submitter);
        assert_eq!(parse(json!({"mode": "steps"})).unwrap().mode, Mode::Steps);
        assert_eq!(s.ttl_seconds_after_finished, Some(3600));
        assert!(s.image.ends_with(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases = [
            (
                json!({"image_pull_policy": "Sometimes"}),
                "setting `image_pull_policy`: `Sometimes` is not a pull policy",
            ),
            (json!({"job_prefix": "Train_"}), "setting `job_prefix`"),
            (
                json!({"extra_labels": {"bad key!": "x"}}),
                "setting `extra_labels`",
            ),
            (json!({"namespace": "ML"}), "setting `namespace`: `ML`"),
            (json!({"mode": "dag"}), "`dag` is not a mode"),
            (
                json!({"parallelism": 0}),
                "setting `parallelism`: must be at least 1",
            ),
            (json!({"role": "boss"}), "ferry sets this setting itself"),
            (
                json!({"env": {"WANDB_API_KEY": "k"}}),
                "`WANDB_API_KEY` looks like a credential",
            ),
            (
                json!({"resources": {"request": {"cpu": "1"}}}),
                "`request` is not `requests` or `limits`",
            ),
            (
                json!({"pending_timeout": "soon"}),
                "`soon` is not a duration",
            ),
            (json!({"backoff_limit": -1}), "must be at least 0"),
            (json!({"image_pul_policy": "Always"}), "image_pull_policy"),
        ];
        for (settings, expected) in cases {
            let error = parse(settings.clone()).unwrap_err().to_string();
            assert!(error.contains(expected), "{settings}: {error}");
        }
    }
}
