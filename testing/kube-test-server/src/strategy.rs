//! Per-resource rules of the real API server: defaulting, the Job selector and labels,
//! status handling on writes, admission (service accounts must exist), and which field
//! selectors each resource supports.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::Cluster;
use crate::resources::Resource;
use crate::status::{ApiError, ApiResult};
use crate::store::{name_of, new_uid};

/// Field selectors the real server indexes, per resource; anything else is refused.
pub fn supported_field_selectors(resource: Resource) -> &'static [&'static str] {
    match resource {
        Resource::Pod => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        Resource::Job => &["metadata.name", "metadata.namespace", "status.successful"],
        Resource::Event => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        Resource::Secret => &["metadata.name", "metadata.namespace", "type"],
        Resource::Namespace => &["metadata.name", "status.phase"],
        Resource::ConfigMap | Resource::ServiceAccount => &["metadata.name", "metadata.namespace"],
    }
}

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

/// The image pull policy a real server fills in: `Always` for `:latest` or untagged images.
fn default_pull_policy(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// Pod spec defaults (also applied to Job templates).
fn default_pod_spec(spec: &mut Value) {
    let Some(map) = spec.as_object_mut() else {
        return;
    };
    set_default(map, "restartPolicy", json!("Always"));
    set_default(map, "terminationGracePeriodSeconds", json!(30));
    set_default(map, "dnsPolicy", json!("ClusterFirst"));
    set_default(map, "securityContext", json!({}));
    set_default(map, "schedulerName", json!("default-scheduler"));
    set_default(map, "enableServiceLinks", json!(true));
    // The ServiceAccount admission plugin fills both; the deprecated field mirrors the new one.
    let account = map
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .or_else(|| map.get("serviceAccount").and_then(Value::as_str))
        .unwrap_or("default")
        .to_string();
    map.insert("serviceAccountName".into(), json!(account));
    map.insert("serviceAccount".into(), json!(account));
    for list in ["containers", "initContainers"] {
        if let Some(containers) = map.get_mut(list).and_then(Value::as_array_mut) {
            for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                let image = container
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                set_default(
                    container,
                    "imagePullPolicy",
                    json!(default_pull_policy(&image)),
                );
                set_default(
                    container,
                    "terminationMessagePath",
                    json!("/dev/termination-log"),
                );
                set_default(container, "terminationMessagePolicy", json!("File"));
                set_default(container, "resources", json!({}));
                // Limits without requests: requests default to the limits.
                let resources = container
                    .get_mut("resources")
                    .and_then(Value::as_object_mut)
                    .expect("defaulted above");
                if let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() {
                    let requests = resources.entry("requests").or_insert_with(|| json!({}));
                    if let Some(requests) = requests.as_object_mut() {
                        for (k, v) in limits {
                            requests.entry(k).or_insert(v);
                        }
                    }
                }
            }
        }
    }
}

fn qos_class(spec: &Value) -> &'static str {
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let requests = &c["resources"]["requests"];
        let limits = &c["resources"]["limits"];
        for key in ["cpu", "memory"] {
            if !requests[key].is_null() || !limits[key].is_null() {
                any = true;
            }
            if limits[key].is_null() || requests[key] != limits[key] {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Fills what the real server fills before validation of a create.
pub fn prepare_for_create(resource: Resource, object: &mut Value) {
    if let Some(metadata) = object["metadata"].as_object_mut() {
        for server_owned in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
            "selfLink",
        ] {
            metadata.remove(server_owned);
        }
    }
    match resource {
        Resource::Pod => {
            default_pod_spec(&mut object["spec"]);
            let qos = qos_class(&object["spec"]);
            object["status"] = json!({ "phase": "Pending", "qosClass": qos });
        }
        Resource::Job => {
            // The uid is needed now: the selector and template labels are made from it.
            let uid = new_uid();
            object["metadata"]["uid"] = json!(uid);
            let name = name_of(object).to_string();
            let spec = &mut object["spec"];
            if let Some(map) = spec.as_object_mut() {
                set_default(map, "parallelism", json!(1));
                set_default(map, "completions", json!(1));
                if map.get("podFailurePolicy").is_none_or(Value::is_null) {
                    set_default(map, "backoffLimit", json!(6));
                }
                set_default(map, "completionMode", json!("NonIndexed"));
                set_default(map, "suspend", json!(false));
                let replacement = if map.get("podFailurePolicy").is_some_and(|p| !p.is_null()) {
                    "Failed"
                } else {
                    "TerminatingOrFailed"
                };
                set_default(map, "podReplacementPolicy", json!(replacement));
                set_default(map, "manualSelector", Value::Null);
                map.remove("manualSelector");
            }
            let manual = spec["manualSelector"].as_bool() == Some(true);
            if !manual {
                let mut labels = json!({
                    "batch.kubernetes.io/controller-uid": uid,
                    "controller-uid": uid,
                });
                // With generateName the final name is not known yet; `after_create` adds the
                // job-name labels then.
                if !name.is_empty() {
                    labels["batch.kubernetes.io/job-name"] = json!(name);
                    labels["job-name"] = json!(name);
                }
                if spec["template"]["metadata"].is_null() {
                    spec["template"]["metadata"] = json!({});
                }
                let template_labels = spec["template"]["metadata"]["labels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                let mut merged = template_labels;
                for (k, v) in labels.as_object().expect("object literal") {
                    merged.insert(k.clone(), v.clone());
                }
                spec["template"]["metadata"]["labels"] = Value::Object(merged);
                spec["selector"] =
                    json!({ "matchLabels": { "batch.kubernetes.io/controller-uid": uid } });
            }
            default_pod_spec(&mut spec["template"]["spec"]);
            object["status"] = json!({});
        }
        Resource::Namespace => {
            let name = name_of(object).to_string();
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            object["spec"] = json!({ "finalizers": ["kubernetes"] });
            object["status"] = json!({ "phase": "Active" });
        }
        Resource::Secret => {
            fold_string_data(object);
            if object["type"].is_null() {
                object["type"] = json!("Opaque");
            }
        }
        Resource::ConfigMap | Resource::ServiceAccount | Resource::Event => {}
    }
}

/// `stringData` is write-only: it is merged into `data`, base64-encoded.
fn fold_string_data(secret: &mut Value) {
    let Some(string_data) = secret.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    let Some(string_data) = string_data.as_object() else {
        return;
    };
    if !secret["data"].is_object() {
        secret["data"] = json!({});
    }
    for (key, value) in string_data {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(value.as_str().unwrap_or_default());
        secret["data"][key] = json!(encoded);
    }
}

/// Keeps what a write may not change: the status on the main resource, everything but the
/// status on `/status`.
pub fn prepare_for_update(
    resource: Resource,
    current: &Value,
    next: &mut Value,
    status_subresource: bool,
) {
    if status_subresource {
        let status = next["status"].take();
        *next = current.clone();
        next["status"] = status;
        return;
    }
    if resource.has_status() {
        next["status"] = current["status"].clone();
    }
    if resource == Resource::Secret {
        fold_string_data(next);
    }
    // deletionTimestamp is the server's to set.
    next["metadata"]["deletionTimestamp"] = current["metadata"]["deletionTimestamp"].clone();
    next["metadata"]["deletionGracePeriodSeconds"] =
        current["metadata"]["deletionGracePeriodSeconds"].clone();
    if let Some(m) = next["metadata"].as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
}

/// Admission checks that need other objects: a pod's service account must exist (the
/// ServiceAccount admission plugin), and so must the namespace.
pub fn admit(
    cluster: &Cluster,
    resource: Resource,
    namespace: &str,
    object: &Value,
) -> ApiResult<()> {
    if resource.namespaced()
        && cluster
            .store
            .get(Resource::Namespace, "", namespace)
            .is_none()
    {
        return Err(ApiError::namespace_not_found(namespace));
    }
    if resource == Resource::Pod {
        check_service_account(cluster, namespace, object)?;
    }
    Ok(())
}

pub fn check_service_account(cluster: &Cluster, namespace: &str, pod: &Value) -> ApiResult<()> {
    let account = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    if cluster
        .store
        .get(Resource::ServiceAccount, namespace, account)
        .is_none()
    {
        let name = match name_of(pod) {
            "" => pod["metadata"]["generateName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            name => name.to_string(),
        };
        return Err(ApiError::injected(
            403,
            format!(
                "pods \"{name}\" is forbidden: error looking up service account {namespace}/{account}: serviceaccount \"{account}\" not found"
            ),
        ));
    }
    Ok(())
}

/// What follows a create: a Job made with generateName gets its job-name labels; a new
/// namespace gets its `default` service account.
pub fn after_create(cluster: &Cluster, resource: Resource, object: &Value) {
    match resource {
        Resource::Job => {
            let name = name_of(object).to_string();
            let namespace = crate::store::namespace_of(object).to_string();
            let labels = &object["spec"]["template"]["metadata"]["labels"];
            if object["spec"]["manualSelector"].as_bool() != Some(true)
                && labels["batch.kubernetes.io/job-name"].is_null()
            {
                let _ = cluster.store.update(Resource::Job, &namespace, &name, |current| {
                    let mut next = current.clone();
                    next["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"] = json!(name);
                    next["spec"]["template"]["metadata"]["labels"]["job-name"] = json!(name);
                    Ok(next)
                });
            }
        }
        Resource::Namespace => ensure_default_service_account(cluster, name_of(object)),
        _ => {}
    }
}

pub fn ensure_default_service_account(cluster: &Cluster, namespace: &str) {
    if cluster
        .store
        .get(Resource::ServiceAccount, namespace, "default")
        .is_none()
    {
        let account =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
        if let Err(error) = cluster
            .store
            .create(Resource::ServiceAccount, namespace, account)
        {
            tracing::warn!(namespace, ?error, "default service account not created");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_follow_the_tag() {
        assert_eq!(default_pull_policy("python"), "Always");
        assert_eq!(default_pull_policy("python:latest"), "Always");
        assert_eq!(default_pull_policy("python:3.12"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/ferry"), "Always");
        assert_eq!(
            default_pull_policy("localhost:5000/ferry:1"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("ferry@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn jobs_get_a_selector_and_labels_from_their_uid() {
        let mut job = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "train"},
            "spec": {"template": {"metadata": {"labels": {"app": "x"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1", "resources": {"limits": {"memory": "1Gi"}}}]}}}
        });
        prepare_for_create(Resource::Job, &mut job);
        let uid = job["metadata"]["uid"].as_str().unwrap().to_string();
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            uid.as_str()
        );
        let labels = &job["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["job-name"], "train");
        assert_eq!(labels["app"], "x");
        assert_eq!(job["spec"]["backoffLimit"], 6);
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["imagePullPolicy"], "IfNotPresent");
        assert_eq!(container["resources"]["requests"]["memory"], "1Gi");
        assert_eq!(
            job["spec"]["template"]["spec"]["serviceAccountName"],
            "default"
        );
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let mut secret = json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}});
        prepare_for_create(Resource::Secret, &mut secret);
        assert_eq!(secret["data"]["k"], "dg==");
        assert!(secret.get("stringData").is_none());
        assert_eq!(secret["type"], "Opaque");
    }
}
