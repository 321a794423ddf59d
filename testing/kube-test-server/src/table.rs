//! Server-side printing: `meta.k8s.io/v1 Table` answers for clients that ask for them
//! (`kubectl get`), with the columns kube-apiserver prints for each resource.

use serde_json::{Value, json};

use crate::resources::Resource;
use crate::server::ApiRequest;

/// kubectl's `HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => match s % 60 {
            0 => format!("{}m", s / 60),
            r => format!("{}m{r}s", s / 60),
        },
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => match (s / 60) % 60 {
            0 => format!("{}h", s / 3600),
            m => format!("{}h{m}m", s / 3600),
        },
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 8 * 86400 => match (s / 3600) % 24 {
            0 => format!("{}d", s / 86400),
            h => format!("{}d{h}h", s / 86400),
        },
        s => format!("{}d", s / 86400),
    }
}

fn seconds_since(timestamp: &Value) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(timestamp.as_str()?).ok()?;
    Some((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
}

fn age(object: &Value) -> String {
    seconds_since(&object["metadata"]["creationTimestamp"])
        .map(human_duration)
        .unwrap_or_else(|| "<unknown>".into())
}

fn column(name: &str, kind: &str, priority: u8, description: &str) -> Value {
    let mut c = json!({ "name": name, "type": kind, "format": "", "description": description, "priority": priority });
    if name == "Name" {
        c["format"] = json!("name");
    }
    c
}

fn pod_status(pod: &Value) -> String {
    let status = &pod["status"];
    let mut reason = status["phase"].as_str().unwrap_or("Pending").to_string();
    if let Some(r) = status["reason"].as_str() {
        reason = r.to_string();
    }
    for c in status["containerStatuses"].as_array().into_iter().flatten() {
        if let Some(r) = c["state"]["waiting"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            reason = r.to_string();
        } else if let Some(t) = c["state"]["terminated"].as_object() {
            reason = match t.get("reason").and_then(Value::as_str) {
                Some(r) if !r.is_empty() => r.to_string(),
                _ => format!(
                    "ExitCode:{}",
                    t.get("exitCode")
                        .and_then(Value::as_i64)
                        .unwrap_or_default()
                ),
            };
        }
    }
    if !pod["metadata"]["deletionTimestamp"].is_null() && status["reason"] != "NodeLost" {
        reason = "Terminating".into();
    }
    reason
}

fn job_status(job: &Value) -> &'static str {
    let conditions: Vec<&Value> = job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "True")
        .collect();
    let has = |t: &str| conditions.iter().any(|c| c["type"] == t);
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if !job["metadata"]["deletionTimestamp"].is_null() {
        "Terminating"
    } else if has("SuccessCriteriaMet") || has("FailureTarget") {
        if has("SuccessCriteriaMet") {
            "SuccessCriteriaMet"
        } else {
            "FailureTarget"
        }
    } else if job["spec"]["suspend"] == true {
        "Suspended"
    } else {
        "Running"
    }
}

fn columns_and_cells(resource: Resource, object: &Value) -> (Vec<Value>, Vec<Value>) {
    let name = json!(object["metadata"]["name"]);
    let name_col = column(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let age_col = column(
        "Age",
        "string",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    match resource {
        Resource::Pod => {
            let statuses = object["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = object["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|c| c["restartCount"].as_i64())
                .sum();
            (
                vec![
                    name_col,
                    column(
                        "Ready",
                        "string",
                        0,
                        "The aggregate readiness state of this pod for accepting traffic.",
                    ),
                    column(
                        "Status",
                        "string",
                        0,
                        "The aggregate status of the containers in this pod.",
                    ),
                    column(
                        "Restarts",
                        "string",
                        0,
                        "The number of times the containers in this pod have been restarted.",
                    ),
                    age_col,
                    column("IP", "string", 1, "IP address allocated to the pod."),
                    column(
                        "Node",
                        "string",
                        1,
                        "Name of the node where the pod is scheduled.",
                    ),
                ],
                vec![
                    name,
                    json!(format!("{ready}/{total}")),
                    json!(pod_status(object)),
                    json!(restarts.to_string()),
                    json!(age(object)),
                    json!(object["status"]["podIP"].as_str().unwrap_or("<none>")),
                    json!(object["spec"]["nodeName"].as_str().unwrap_or("<none>")),
                ],
            )
        }
        Resource::Job => {
            let completions = object["spec"]["completions"].as_i64().unwrap_or(1);
            let succeeded = object["status"]["succeeded"].as_i64().unwrap_or(0);
            let start = object["status"]["startTime"].clone();
            let duration = match (
                seconds_since(&start),
                seconds_since(&object["status"]["completionTime"]),
            ) {
                (Some(s), Some(c)) => human_duration(s - c),
                (Some(s), None) => human_duration(s),
                _ => String::new(),
            };
            let containers = object["spec"]["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let join = |field: &str| {
                containers
                    .iter()
                    .filter_map(|c| c[field].as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let selector = object["spec"]["selector"]["matchLabels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            (
                vec![
                    name_col,
                    column("Status", "string", 0, "Status of the job."),
                    column(
                        "Completions",
                        "string",
                        0,
                        "The completion status of the job.",
                    ),
                    column(
                        "Duration",
                        "string",
                        0,
                        "Time required to complete the job.",
                    ),
                    age_col,
                    column(
                        "Containers",
                        "string",
                        1,
                        "Names of each container in the template.",
                    ),
                    column(
                        "Images",
                        "string",
                        1,
                        "Images referenced by each container in the template.",
                    ),
                    column("Selector", "string", 1, "Selector used for filtering pods."),
                ],
                vec![
                    name,
                    json!(job_status(object)),
                    json!(format!("{succeeded}/{completions}")),
                    json!(duration),
                    json!(age(object)),
                    json!(join("name")),
                    json!(join("image")),
                    json!(selector),
                ],
            )
        }
        Resource::Event => {
            let last = seconds_since(&object["lastTimestamp"])
                .map(human_duration)
                .unwrap_or_default();
            let involved = &object["involvedObject"];
            (
                vec![
                    column(
                        "Last Seen",
                        "string",
                        0,
                        "Time since the event was last seen.",
                    ),
                    column("Type", "string", 0, "Type of the event."),
                    column("Reason", "string", 0, "Reason of the event."),
                    column("Object", "string", 0, "The object the event is about."),
                    column("Message", "string", 0, "Message of the event."),
                ],
                vec![
                    json!(last),
                    object["type"].clone(),
                    object["reason"].clone(),
                    json!(format!(
                        "{}/{}",
                        involved["kind"].as_str().unwrap_or_default().to_lowercase(),
                        involved["name"].as_str().unwrap_or_default()
                    )),
                    object["message"].clone(),
                ],
            )
        }
        Resource::Namespace => (
            vec![
                name_col,
                column("Status", "string", 0, "The status of the namespace."),
                age_col,
            ],
            vec![
                name,
                json!(object["status"]["phase"].as_str().unwrap_or("Active")),
                json!(age(object)),
            ],
        ),
        Resource::ConfigMap | Resource::Secret => {
            let count = object["data"].as_object().map_or(0, |m| m.len())
                + object["binaryData"].as_object().map_or(0, |m| m.len());
            let mut columns = vec![name_col];
            let mut cells = vec![name];
            if resource == Resource::Secret {
                columns.push(column("Type", "string", 0, "The type of the secret."));
                cells.push(object["type"].clone());
            }
            columns.push(column("Data", "string", 0, "Number of keys."));
            cells.push(json!(count.to_string()));
            columns.push(age_col);
            cells.push(json!(age(object)));
            (columns, cells)
        }
        Resource::ServiceAccount => (
            vec![
                name_col,
                column("Secrets", "string", 0, "Number of secrets."),
                age_col,
            ],
            vec![
                name,
                json!(object["secrets"].as_array().map_or(0, Vec::len).to_string()),
                json!(age(object)),
            ],
        ),
    }
}

/// A Table of `objects`; rows carry the object as `PartialObjectMetadata` unless the request
/// asks for `includeObject=Object` or `None`, like the real server.
pub fn for_objects(
    resource: Resource,
    objects: &[Value],
    resource_version: Option<u64>,
    request: &ApiRequest,
) -> Value {
    let include = request.param("includeObject").unwrap_or("Metadata");
    let mut columns = columns_and_cells(resource, &json!({"metadata": {}})).0;
    let mut rows = Vec::new();
    for object in objects {
        let (cols, cells) = columns_and_cells(resource, object);
        columns = cols;
        let mut row = json!({ "cells": cells });
        match include {
            "Object" => row["object"] = object.clone(),
            "None" => {}
            _ => {
                row["object"] = json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object["metadata"].clone(),
                })
            }
        }
        rows.push(row);
    }
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv.to_string());
    }
    json!({ "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": columns, "rows": rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(3 * 86400), "3d");
    }

    #[test]
    fn pod_status_prefers_the_waiting_reason() {
        let pod = json!({"metadata": {}, "status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff"}}}]}});
        assert_eq!(pod_status(&pod), "ImagePullBackOff");
        let job = json!({"metadata": {}, "spec": {}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        assert_eq!(job_status(&job), "Failed");
    }
}
