//! Per-step pod settings. A stack names pod profiles (`profiles.gpu = { gpus = 1, ... }` in
//! the orchestrator's settings); a step picks one with `profile: gpu` and may override the
//! same keys inline in a `kubernetes:` block. For that step's pod, the profile's keys and then
//! the inline ones replace the stack's (key by key; a table such as `node_selector` is
//! replaced whole, not merged), and the result is parsed and checked exactly as the stack's
//! settings are: one parser, one set of messages.
//!
//! Only `mode = "steps"` gives a step a pod of its own; in pipeline mode every step shares one
//! pod, so a step with a profile or a `kubernetes:` block is refused (see `lib.rs`).

use std::collections::BTreeMap;

use orchestrator_core::PluginError;
use orchestrator_core::pipeline::Step;
use serde_json::{Map, Value};

use crate::settings::{NAME, Settings, did_you_mean_hint};

/// The keys a profile or a `kubernetes:` block may set: what differs from pod to pod.
pub const PROFILE_KEYS: &[(&str, &str)] = &[
    ("node_selector", "node labels the pod requires"),
    ("tolerations", "pod tolerations, as in a pod spec"),
    ("affinity", "pod affinity, as in a pod spec"),
    (
        "resources",
        "container resources (`requests`, `limits`); the step's own `resources` override",
    ),
    ("gpus", "GPUs the pod asks for, as limits of `gpu_resource`"),
    (
        "gpu_resource",
        "extended resource GPUs are counted in (\"nvidia.com/gpu\", \"amd.com/gpu\", ...)",
    ),
    ("service_account", "service account of the pod"),
    ("image", "image of the pod (a step's own `image` wins)"),
    ("priority_class", "priorityClassName of the pod"),
    (
        "env_from_secrets",
        "Secrets whose keys become environment variables",
    ),
    ("run_as_user", "uid the container runs as"),
    ("volumes", "what the pod mounts (replaces the stack's list)"),
];

/// `profiles` as written: a table of profile tables, each key one of [`PROFILE_KEYS`] and
/// each value valid for its setting.
pub fn parse_profiles(value: &Value) -> Result<BTreeMap<String, Map<String, Value>>, PluginError> {
    let table = value.as_object().ok_or_else(|| {
        PluginError::invalid_input(format!(
            "{NAME}: setting `profiles`: expected a table of profiles, e.g. [stacks.k8s.orchestrator.settings.profiles.gpu] with gpus = 1"
        ))
    })?;
    let mut profiles = BTreeMap::new();
    for (name, keys) in table {
        let what = format!("{NAME}: profile `{name}`");
        let keys = keys.as_object().ok_or_else(|| {
            PluginError::invalid_input(format!("{what}: expected a table of pod settings"))
        })?;
        check_keys(&what, keys)?;
        // The values are checked as the stack's own settings would be.
        Settings::from_map(keys).map_err(|e| in_context(&what, e))?;
        profiles.insert(name.clone(), keys.clone());
    }
    Ok(profiles)
}

/// The settings of `step`'s own pod, or `None` when it has neither a profile nor a
/// `kubernetes:` block (the stack's settings apply as they are).
pub fn for_step(settings: &Settings, step: &Step) -> Result<Option<Settings>, PluginError> {
    if step.profile.is_none() && step.kubernetes.is_none() {
        return Ok(None);
    }
    let mut merged = settings.source.clone();
    if let Some(name) = &step.profile {
        let profile = settings.profiles.get(name).ok_or_else(|| {
            let names = settings.profiles.keys().map(String::as_str);
            let hint = did_you_mean_hint(name, names, || {
                if settings.profiles.is_empty() {
                    "the stack defines no profiles; add one under [stacks.NAME.orchestrator.settings.profiles.NAME]".into()
                } else {
                    format!(
                        "the stack's profiles: {}",
                        settings.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                }
            });
            PluginError::invalid_input(format!(
                "{NAME}: step `{}` names profile `{name}`, which the stack does not define; {hint}",
                step.name
            ))
        })?;
        merged.extend(profile.clone());
    }
    if let Some(inline) = &step.kubernetes {
        let what = format!("{NAME}: step `{}`'s `kubernetes:` block", step.name);
        check_keys(&what, inline)?;
        merged.extend(inline.clone());
    }
    let mut own =
        Settings::from_map(&merged).map_err(|e| in_context(&format!("step `{}`", step.name), e))?;
    // What is not per pod stays exactly the stack's (a kubeconfig path was resolved against
    // the project when the stack was parsed).
    own.kubeconfig.clone_from(&settings.kubeconfig);
    own.source.clone_from(&settings.source);
    Ok(Some(own))
}

fn check_keys(what: &str, keys: &Map<String, Value>) -> Result<(), PluginError> {
    for key in keys.keys() {
        if !PROFILE_KEYS.iter().any(|(k, _)| k == key) {
            let names = PROFILE_KEYS.iter().map(|(k, _)| *k);
            let hint = did_you_mean_hint(key, names.clone(), || {
                format!("pod settings: {}", names.collect::<Vec<_>>().join(", "))
            });
            return Err(PluginError::invalid_input(format!(
                "{what}: unknown pod setting `{key}`; {hint}"
            )));
        }
    }
    Ok(())
}

fn in_context(what: &str, error: PluginError) -> PluginError {
    PluginError::invalid_input(format!("{what}: {}", error.message()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(value: Value) -> Result<Settings, PluginError> {
        Settings::from_map(value.as_object().unwrap())
    }

    fn step(yaml: Value) -> Step {
        let mut value = json!({"name": "train", "action": {"command": ["true"]}});
        value
            .as_object_mut()
            .unwrap()
            .extend(yaml.as_object().unwrap().clone());
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_profile_then_the_inline_block_replace_the_stacks_keys_for_that_step() {
        let s = settings(json!({
            "mode": "steps",
            "node_selector": {"pool": "cpu"},
            "service_account": "runner",
            "profiles": {"gpu": {
                "gpus": 2, "gpu_resource": "amd.com/gpu", "node_selector": {"pool": "gpu"},
                "priority_class": "high", "image": "registry.example/train:1"
            }}
        }))
        .unwrap();
        assert!(for_step(&s, &step(json!({}))).unwrap().is_none());
        let gpu = for_step(&s, &step(json!({"profile": "gpu"})))
            .unwrap()
            .unwrap();
        assert_eq!(gpu.gpus, Some(2));
        assert_eq!(gpu.gpu_resource, "amd.com/gpu");
        assert_eq!(gpu.node_selector["pool"], "gpu");
        assert_eq!(gpu.service_account.as_deref(), Some("runner"));
        assert_eq!(gpu.priority_class.as_deref(), Some("high"));
        assert_eq!(gpu.image, "registry.example/train:1");
        let inline = for_step(
            &s,
            &step(
                json!({"profile": "gpu", "kubernetes": {"gpus": 1, "service_account": "trainer"}}),
            ),
        )
        .unwrap()
        .unwrap();
        assert_eq!(inline.gpus, Some(1));
        assert_eq!(inline.gpu_resource, "amd.com/gpu");
        assert_eq!(inline.service_account.as_deref(), Some("trainer"));
    }

    #[test]
    fn unknown_profiles_and_keys_are_refused_with_did_you_mean() {
        let e = settings(json!({"profiles": {"gpu": {"node_selecter": {}}}})).unwrap_err();
        assert!(
            e.message().contains("profile `gpu`")
                && e.message().contains("did you mean `node_selector`?"),
            "{}",
            e.message()
        );
        // Stack-wide keys are not per pod.
        let e = settings(json!({"profiles": {"gpu": {"namespace": "x"}}})).unwrap_err();
        assert!(
            e.message().contains("unknown pod setting `namespace`"),
            "{}",
            e.message()
        );
        let e = settings(json!({"profiles": {"gpu": {"gpus": "many"}}})).unwrap_err();
        assert!(
            e.message().contains("profile `gpu`") && e.message().contains("`gpus`"),
            "{}",
            e.message()
        );
        let s = settings(json!({"profiles": {"gpu": {"gpus": 1}}})).unwrap();
        let e = for_step(&s, &step(json!({"profile": "gpus"}))).unwrap_err();
        assert!(
            e.message().contains("step `train` names profile `gpus`")
                && e.message().contains("did you mean `gpu`?"),
            "{}",
            e.message()
        );
        let e = for_step(&s, &step(json!({"kubernetes": {"toleration": []}}))).unwrap_err();
        assert!(
            e.message().contains("`kubernetes:` block")
                && e.message().contains("did you mean `tolerations`?"),
            "{}",
            e.message()
        );
    }
}
