//! Discovery (`/version`, `/api`, `/apis`, resource lists), the OpenAPI v3 index kubectl reads
//! to learn that the server validates fields itself, health endpoints, and the test-control API.

use std::sync::Arc;

use http::{Method, Response};
use serde_json::{Value, json};

use crate::faults::{ApiFault, FaultConfig, PodMatch};
use crate::resources::Resource;
use crate::server::{ApiRequest, Body, full, json_response};
use crate::status::{ApiError, ApiResult};
use crate::{Cluster, kubelet};

/// The Kubernetes version the server claims; kubectl 1.37 and kube 5 (k8s-openapi `v1_37`)
/// are what it is tested with.
pub const MINOR: &str = "37";

pub fn serve(path: &str, request: &ApiRequest) -> Option<Response<Body>> {
    if request.method != Method::GET {
        return None;
    }
    let body = match path {
        "/version" => json!({
            "major": "1",
            "minor": MINOR,
            "emulationMajor": "1",
            "emulationMinor": MINOR,
            "minCompatibilityMajor": "1",
            "minCompatibilityMinor": "36",
            "gitVersion": format!("v1.{MINOR}.0-kube-test-server"),
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.25.0",
            "compiler": "gc",
            "platform": format!("linux/{}", std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64")),
        }),
        "/healthz" | "/readyz" | "/livez" => {
            return Some(
                Response::builder()
                    .status(200)
                    .header("content-type", "text/plain")
                    .body(full("ok"))
                    .expect("valid response"),
            );
        }
        "/api" => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443" }],
        }),
        "/apis" => {
            let version = json!({ "groupVersion": "batch/v1", "version": "v1" });
            json!({
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [{ "name": "batch", "versions": [version], "preferredVersion": version }],
            })
        }
        "/apis/batch" => {
            let version = json!({ "groupVersion": "batch/v1", "version": "v1" });
            json!({ "kind": "APIGroup", "apiVersion": "v1", "name": "batch", "versions": [version], "preferredVersion": version })
        }
        "/api/v1" => resource_list(""),
        "/apis/batch/v1" => resource_list("batch"),
        "/openapi/v3" => json!({
            "paths": {
                "api/v1": { "serverRelativeURL": "/openapi/v3/api/v1?hash=kube-test-server" },
                "apis/batch/v1": { "serverRelativeURL": "/openapi/v3/apis/batch/v1?hash=kube-test-server" },
            }
        }),
        "/openapi/v3/api/v1" => openapi_document(""),
        "/openapi/v3/apis/batch/v1" => openapi_document("batch"),
        _ => return None,
    };
    Some(json_response(200, &body))
}

fn resource_list(group: &str) -> Value {
    let mut resources = Vec::new();
    for resource in Resource::ALL.into_iter().filter(|r| r.group() == group) {
        let mut entry = json!({
            "name": resource.plural(),
            "singularName": resource.singular(),
            "namespaced": resource.namespaced(),
            "kind": resource.kind(),
            "verbs": resource.verbs(),
        });
        if !resource.short_names().is_empty() {
            entry["shortNames"] = json!(resource.short_names());
        }
        if !resource.categories().is_empty() {
            entry["categories"] = json!(resource.categories());
        }
        resources.push(entry);
        if resource.has_status() {
            resources.push(json!({
                "name": format!("{}/status", resource.plural()),
                "singularName": "",
                "namespaced": resource.namespaced(),
                "kind": resource.kind(),
                "verbs": ["get", "patch", "update"],
            }));
        }
        if resource == Resource::Pod {
            resources.push(json!({
                "name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"],
            }));
        }
        if resource == Resource::Namespace {
            resources.push(json!({
                "name": "namespaces/finalize", "singularName": "", "namespaced": false, "kind": "Namespace", "verbs": ["update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources })
}

/// Just enough OpenAPI for kubectl to see that PATCH of each kind takes `fieldValidation`, so
/// that it leaves unknown-field checks to the server (which does them, see `validation`)
/// instead of validating against schemas it would have to download.
fn openapi_document(group: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for resource in Resource::ALL.into_iter().filter(|r| r.group() == group) {
        let prefix = if group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{group}/v1")
        };
        let path = if resource.namespaced() {
            format!(
                "{prefix}/namespaces/{{namespace}}/{}/{{name}}",
                resource.plural()
            )
        } else {
            format!("{prefix}/{}/{{name}}", resource.plural())
        };
        let operation = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", resource.kind()),
                "x-kubernetes-group-version-kind": { "group": group, "version": "v1", "kind": resource.kind() },
                "parameters": [
                    { "name": "fieldValidation", "in": "query", "schema": { "type": "string", "uniqueItems": true } },
                    { "name": "dryRun", "in": "query", "schema": { "type": "string", "uniqueItems": true } },
                ],
                "responses": { "200": { "description": "OK" } },
            })
        };
        paths.insert(
            path,
            json!({ "patch": operation("patch"), "put": operation("replace") }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes (kube-test-server)", "version": format!("v1.{MINOR}.0") },
        "paths": paths,
        "components": { "schemas": {} },
    })
}

/// The test-control API under `/testserver/v1/`: faults, evictions, dropped watches and the
/// request log, for tests that run the server as a separate process.
pub async fn admin(
    cluster: &Arc<Cluster>,
    rest: &str,
    request: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let parse = |what: &str| -> ApiResult<Value> {
        serde_json::from_slice(&request.body)
            .map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
    };
    match (&request.method, rest.trim_end_matches('/')) {
        (&Method::GET, "v1/faults") => Ok(json_response(200, &json!(cluster.faults.get()))),
        (&Method::PUT, "v1/faults") => {
            let config: FaultConfig = serde_json::from_value(parse("fault config")?)
                .map_err(|e| ApiError::bad_request(format!("fault config: {e}")))?;
            cluster.faults.set(config.clone());
            Ok(json_response(200, &json!(config)))
        }
        (&Method::POST, "v1/api-faults") => {
            let fault: ApiFault = serde_json::from_value(parse("api fault")?)
                .map_err(|e| ApiError::bad_request(format!("api fault: {e}")))?;
            cluster.faults.update(|c| c.api.push(fault));
            Ok(json_response(200, &json!(cluster.faults.get())))
        }
        (&Method::POST, "v1/evict") => {
            let body = parse("eviction")?;
            let pods: PodMatch = serde_json::from_value(body["pods"].clone()).unwrap_or_default();
            let message = body["message"]
                .as_str()
                .unwrap_or("The node was lost.")
                .to_string();
            let evicted = kubelet::evict(cluster, &pods, &message).await;
            Ok(json_response(200, &json!({ "evicted": evicted })))
        }
        (&Method::POST, "v1/drop-watches") => {
            cluster.watch_epoch.send_modify(|epoch| *epoch += 1);
            Ok(json_response(200, &json!({})))
        }
        (&Method::GET, "v1/requests") => {
            let requests = cluster
                .requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Ok(json_response(200, &json!(requests)))
        }
        _ => Err(ApiError::path_not_found(&request.path)),
    }
}
