//! Cluster misbehaviour that a test switches on: images that fail to pull, pods that never
//! schedule, OOM kills, API errors and latency. Only tests set these; nothing in the
//! request path looks at who the client is.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::selector::LabelSelector;

/// Which pods a rule applies to: all of the given conditions must hold; an empty match
/// matches every pod.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodMatch {
    /// A label selector in query syntax (`app=train,tier!=db`).
    pub label_selector: String,
    pub namespace: Option<String>,
    pub name_prefix: Option<String>,
}

impl PodMatch {
    pub fn matches(&self, pod: &Value) -> bool {
        let metadata = &pod["metadata"];
        if let Some(ns) = &self.namespace
            && metadata["namespace"].as_str() != Some(ns)
        {
            return false;
        }
        if let Some(prefix) = &self.name_prefix
            && !metadata["name"]
                .as_str()
                .unwrap_or_default()
                .starts_with(prefix.as_str())
        {
            return false;
        }
        match LabelSelector::parse(&self.label_selector) {
            Ok(selector) => selector.matches_object(pod),
            Err(_) => false,
        }
    }
}

/// A pod whose container is OOM-killed: the process starts and is SIGKILLed after `after_ms`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OomKill {
    #[serde(default)]
    pub pods: PodMatch,
    #[serde(default)]
    pub after_ms: u64,
    /// The exit code reported with reason OOMKilled: 137 normally; some runtimes have reported
    /// 0, which a client must still treat as a failure.
    #[serde(default = "default_oom_exit_code")]
    pub exit_code: i32,
}

fn default_oom_exit_code() -> i32 {
    137
}

/// Misbehaviour for the next `count` API requests that match.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiFault {
    /// HTTP method to match (`POST`); any when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// A substring of the request path to match (`/jobs`); any when absent.
    #[serde(default)]
    pub path_contains: Option<String>,
    /// How many matching requests are affected.
    #[serde(default = "one")]
    pub count: u32,
    /// Delay before the request is handled.
    #[serde(default)]
    pub delay_ms: u64,
    /// Answer with this status code (a `Status` body) instead of the real answer.
    #[serde(default)]
    pub status: Option<u16>,
    /// Carry the request out, then answer with `status` anyway: a reply lost after the write
    /// happened, so that a client's retry meets its own object.
    #[serde(default)]
    pub after_apply: bool,
}

fn one() -> u32 {
    1
}

impl Default for ApiFault {
    /// Matches any request, once, and changes nothing until a field says what to do.
    fn default() -> Self {
        ApiFault {
            method: None,
            path_contains: None,
            count: one(),
            delay_ms: 0,
            status: None,
            after_apply: false,
        }
    }
}

/// Everything a test can switch on. Replaced as a whole or appended to.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultConfig {
    /// Images that fail to pull (ErrImagePull, then ImagePullBackOff). An entry ending in `*`
    /// matches by prefix.
    pub image_pull_failures: Vec<String>,
    /// Pods that stay Pending with PodScheduled=False/Unschedulable.
    pub unschedulable: Vec<PodMatch>,
    pub oom_kills: Vec<OomKill>,
    pub api: Vec<ApiFault>,
}

/// What a matching API fault asks the request path to do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiFaultAction {
    pub delay: Duration,
    pub status: Option<u16>,
    pub after_apply: bool,
}

#[derive(Debug, Default)]
pub struct Faults {
    config: Mutex<FaultConfig>,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, FaultConfig> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self) -> FaultConfig {
        self.lock().clone()
    }

    pub fn set(&self, config: FaultConfig) {
        *self.lock() = config;
    }

    pub fn update(&self, f: impl FnOnce(&mut FaultConfig)) {
        f(&mut self.lock());
    }

    pub fn image_fails_to_pull(&self, image: &str) -> bool {
        self.lock()
            .image_pull_failures
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => image.starts_with(prefix),
                None => image == pattern,
            })
    }

    pub fn unschedulable(&self, pod: &Value) -> bool {
        self.lock().unschedulable.iter().any(|m| m.matches(pod))
    }

    pub fn oom_kill(&self, pod: &Value) -> Option<OomKill> {
        self.lock()
            .oom_kills
            .iter()
            .find(|o| o.pods.matches(pod))
            .cloned()
    }

    /// Consumes one use of the first API fault matching the request, if any.
    pub fn take_api_fault(&self, method: &str, path: &str) -> Option<ApiFaultAction> {
        let mut config = self.lock();
        let index = config.api.iter().position(|f| {
            f.count > 0
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && f.path_contains.as_deref().is_none_or(|p| path.contains(p))
        })?;
        let fault = &mut config.api[index];
        fault.count -= 1;
        let action = ApiFaultAction {
            delay: Duration::from_millis(fault.delay_ms),
            status: fault.status,
            after_apply: fault.after_apply,
        };
        if fault.count == 0 {
            config.api.remove(index);
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn api_faults_are_used_up_in_order() {
        let faults = Faults::default();
        faults.update(|c| {
            c.api.push(ApiFault {
                method: Some("POST".into()),
                path_contains: Some("/jobs".into()),
                count: 2,
                delay_ms: 0,
                status: Some(500),
                after_apply: true,
            })
        });
        assert_eq!(
            faults.take_api_fault("GET", "/apis/batch/v1/namespaces/a/jobs"),
            None
        );
        let action = faults
            .take_api_fault("post", "/apis/batch/v1/namespaces/a/jobs")
            .unwrap();
        assert_eq!(action.status, Some(500));
        assert!(action.after_apply);
        assert!(
            faults
                .take_api_fault("POST", "/apis/batch/v1/namespaces/a/jobs")
                .is_some()
        );
        assert_eq!(
            faults.take_api_fault("POST", "/apis/batch/v1/namespaces/a/jobs"),
            None
        );
    }

    #[test]
    fn pod_rules_match_on_labels_namespace_and_prefix() {
        let pod =
            json!({"metadata": {"name": "train-x", "namespace": "ml", "labels": {"app": "t"}}});
        let rule = PodMatch {
            label_selector: "app=t".into(),
            namespace: Some("ml".into()),
            name_prefix: Some("train".into()),
        };
        assert!(rule.matches(&pod));
        let other = PodMatch {
            label_selector: "app=u".into(),
            ..PodMatch::default()
        };
        assert!(!other.matches(&pod));
        let faults = Faults::default();
        faults
            .update(|c| c.image_pull_failures = vec!["registry.invalid/*".into(), "nope:1".into()]);
        assert!(faults.image_fails_to_pull("registry.invalid/x:1"));
        assert!(faults.image_fails_to_pull("nope:1"));
        assert!(!faults.image_fails_to_pull("nope:2"));
    }
}
