//! Request routing and the REST verbs: get, list, watch, create, update, patch, delete and
//! deletecollection, for every resource in `resources`.

use std::sync::Arc;

use http::{Method, Response};
use serde_json::{Value, json};

use crate::lifecycle::{self, DeleteOptions, Deleted};
use crate::resources::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::{ApiRequest, Body, error_response, json_response};
use crate::status::{ApiError, ApiResult, deleted_status};
use crate::store::{name_of, resource_version_of};
use crate::validation::{self, FieldValidation};
use crate::{Cluster, discovery, logs, strategy, table, watch};

/// Paths under this prefix are the test-control API (faults, evictions), not Kubernetes.
pub const ADMIN_PREFIX: &str = "/testserver/";

/// Where a request path points.
#[derive(Debug, PartialEq)]
enum Target {
    Collection {
        resource: Resource,
        namespace: Option<String>,
    },
    Object {
        resource: Resource,
        namespace: String,
        name: String,
        subresource: Option<String>,
    },
}

fn parse_target(group: &str, rest: &[&str]) -> Option<Target> {
    let resource = |plural: &str| Resource::from_path(group, plural);
    match rest {
        ["namespaces"] if group.is_empty() => Some(Target::Collection {
            resource: Resource::Namespace,
            namespace: None,
        }),
        ["namespaces", name] if group.is_empty() => Some(Target::Object {
            resource: Resource::Namespace,
            namespace: String::new(),
            name: name.to_string(),
            subresource: None,
        }),
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => {
            Some(Target::Object {
                resource: Resource::Namespace,
                namespace: String::new(),
                name: name.to_string(),
                subresource: Some(sub.to_string()),
            })
        }
        ["namespaces", ns, plural] => {
            let resource = resource(plural).filter(|r| r.namespaced())?;
            Some(Target::Collection {
                resource,
                namespace: Some(ns.to_string()),
            })
        }
        ["namespaces", ns, plural, name] => Some(Target::Object {
            resource: resource(plural).filter(|r| r.namespaced())?,
            namespace: ns.to_string(),
            name: name.to_string(),
            subresource: None,
        }),
        ["namespaces", ns, plural, name, sub] => Some(Target::Object {
            resource: resource(plural).filter(|r| r.namespaced())?,
            namespace: ns.to_string(),
            name: name.to_string(),
            subresource: Some(sub.to_string()),
        }),
        [plural] => Some(Target::Collection {
            resource: resource(plural)?,
            namespace: None,
        }),
        _ => None,
    }
}

pub async fn handle(cluster: &Arc<Cluster>, request: ApiRequest) -> Response<Body> {
    match route(cluster, &request).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}

async fn route(cluster: &Arc<Cluster>, request: &ApiRequest) -> ApiResult<Response<Body>> {
    let path = request.path.trim_end_matches('/');
    if let Some(rest) = request.path.strip_prefix(ADMIN_PREFIX) {
        return crate::discovery::admin(cluster, rest, request).await;
    }
    if let Some(response) = discovery::serve(path, request) {
        return Ok(response);
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, "v1", rest @ ..] => (*group, rest),
        _ => return Err(ApiError::path_not_found(path)),
    };
    let target = parse_target(group, rest).ok_or_else(|| ApiError::path_not_found(path))?;
    match (&request.method, target) {
        (
            &Method::GET,
            Target::Collection {
                resource,
                namespace,
            },
        ) => {
            if request.flag("watch") {
                watch::serve(cluster, resource, namespace, request)
            } else {
                list(cluster, resource, namespace.as_deref(), request)
            }
        }
        (
            &Method::POST,
            Target::Collection {
                resource,
                namespace: Some(ns),
            },
        ) => create(cluster, resource, &ns, request),
        (
            &Method::POST,
            Target::Collection {
                resource: Resource::Namespace,
                namespace: None,
            },
        ) => create(cluster, Resource::Namespace, "", request),
        (
            &Method::DELETE,
            Target::Collection {
                resource,
                namespace,
            },
        ) => delete_collection(cluster, resource, namespace.as_deref(), request),
        (
            &Method::GET,
            Target::Object {
                resource: Resource::Pod,
                namespace,
                name,
                subresource: Some(sub),
            },
        ) if sub == "log" => logs::serve(cluster, &namespace, &name, request).await,
        (
            &Method::GET,
            Target::Object {
                resource,
                namespace,
                name,
                subresource,
            },
        ) => {
            check_subresource(resource, subresource.as_deref())?;
            let object = cluster
                .store
                .get(resource, &namespace, &name)
                .ok_or_else(|| ApiError::not_found(resource, &name))?;
            Ok(render_object(200, resource, &object, request, &[]))
        }
        (
            &Method::PUT,
            Target::Object {
                resource,
                namespace,
                name,
                subresource,
            },
        ) => {
            check_subresource(resource, subresource.as_deref())?;
            update(
                cluster,
                resource,
                &namespace,
                &name,
                subresource.as_deref(),
                request,
            )
        }
        (
            &Method::PATCH,
            Target::Object {
                resource,
                namespace,
                name,
                subresource,
            },
        ) => {
            check_subresource(resource, subresource.as_deref())?;
            patch(
                cluster,
                resource,
                &namespace,
                &name,
                subresource.as_deref(),
                request,
            )
        }
        (
            &Method::DELETE,
            Target::Object {
                resource,
                namespace,
                name,
                subresource: None,
            },
        ) => {
            let options = delete_options(request)?;
            let outcome = lifecycle::delete(cluster, resource, &namespace, &name, &options)?;
            Ok(match outcome {
                Deleted::Pending(object) => {
                    json_response(if options.dry_run { 200 } else { 202 }, &object)
                }
                Deleted::Gone(object) if resource == Resource::Pod => json_response(200, &object),
                Deleted::Gone(object) => json_response(
                    200,
                    &deleted_status(resource, &name, crate::store::uid_of(&object)),
                ),
            })
        }
        (method, _) => Err(ApiError::method_not_allowed(method.as_str(), path)),
    }
}

fn check_subresource(resource: Resource, subresource: Option<&str>) -> ApiResult<()> {
    match subresource {
        None => Ok(()),
        Some("status") if resource.has_status() => Ok(()),
        Some("finalize") if resource == Resource::Namespace => Ok(()),
        Some(other) => Err(ApiError::path_not_found(&format!(
            "{}/{other}",
            resource.plural()
        ))),
    }
}

pub fn wants_table_request(request: &ApiRequest) -> bool {
    request.header("accept").contains("as=Table")
}

fn warning_header(warnings: &[String]) -> Vec<String> {
    warnings
        .iter()
        .map(|w| {
            format!(
                "299 - {}",
                serde_json::to_string(w).expect("strings serialise")
            )
        })
        .collect()
}

fn render_object(
    code: u16,
    resource: Resource,
    object: &Value,
    request: &ApiRequest,
    warnings: &[String],
) -> Response<Body> {
    let body = if wants_table_request(request) {
        table::for_objects(resource, std::slice::from_ref(object), None, request)
    } else {
        object.clone()
    };
    let mut response = json_response(code, &body);
    for warning in warning_header(warnings) {
        response.headers_mut().append(
            "warning",
            warning
                .parse()
                .expect("warnings are ASCII after JSON escaping"),
        );
    }
    response
}

/// Parses `labelSelector` and `fieldSelector`, refusing field paths the real server does not
/// index for that resource, so that a client relying on one fails here as it would there.
pub fn selectors(
    resource: Resource,
    request: &ApiRequest,
) -> ApiResult<(LabelSelector, FieldSelector)> {
    let labels = LabelSelector::parse(request.param("labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields_text = request.param("fieldSelector").unwrap_or_default();
    let fields =
        FieldSelector::parse(fields_text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    for path in fields.paths() {
        if !strategy::supported_field_selectors(resource).contains(&path) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {path}"
            )));
        }
    }
    Ok((labels, fields))
}

fn list(
    cluster: &Cluster,
    resource: Resource,
    namespace: Option<&str>,
    request: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let (labels, fields) = selectors(resource, request)?;
    // A missing namespace lists as an empty collection, as on a real server.
    let (items, rv) = cluster.store.list(resource, namespace);
    let items: Vec<Value> = items
        .iter()
        .filter(|o| labels.matches_object(o) && fields.matches_object(o))
        .map(|o| (**o).clone())
        .collect();
    if wants_table_request(request) {
        return Ok(json_response(
            200,
            &table::for_objects(resource, &items, Some(rv), request),
        ));
    }
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", resource.kind()),
            "apiVersion": resource.api_version(),
            "metadata": { "resourceVersion": rv.to_string() },
            "items": items,
        }),
    ))
}

/// Reads the body as a JSON object of the URL's type, filling `apiVersion` and `kind` when
/// absent and refusing a mismatch, as the real server's decoder does.
fn decode_body(resource: Resource, request: &ApiRequest) -> ApiResult<Value> {
    let content_type = request.header("content-type");
    if content_type.contains("protobuf") {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    let mut object: Value = serde_json::from_slice(&request.body).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"v1\" cannot be handled as a {}: {e}",
            resource.kind(),
            resource.kind()
        ))
    })?;
    let Some(map) = object.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    match map.get("apiVersion").and_then(Value::as_str) {
        None => {
            map.insert("apiVersion".into(), json!(resource.api_version()));
        }
        Some(v) if v == resource.api_version() => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({})",
                resource.api_version()
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None => {
            map.insert("kind".into(), json!(resource.kind()));
        }
        Some(k) if k == resource.kind() => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                resource.kind()
            )));
        }
    }
    if !map.get("metadata").is_some_and(Value::is_object) {
        map.insert("metadata".into(), json!({}));
    }
    Ok(object)
}

/// Applies `fieldValidation` (Strict fails, Warn warns, Ignore drops) to unknown fields.
fn check_fields(
    resource: Resource,
    object: &mut Value,
    request: &ApiRequest,
) -> ApiResult<Vec<String>> {
    let mode = match request.param("fieldValidation") {
        Some(value) => FieldValidation::parse(value).map_err(ApiError::bad_request)?,
        None => FieldValidation::default(),
    };
    let kind = resource;
    let unknown = validation::unknown_fields(kind, object).map_err(ApiError::bad_request)?;
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    match mode {
        FieldValidation::Strict => Err(ApiError::bad_request(validation::strict_error_message(
            &unknown,
        ))),
        FieldValidation::Warn | FieldValidation::Ignore => {
            validation::strip_unknown(kind, object);
            Ok(if mode == FieldValidation::Warn {
                unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect()
            } else {
                Vec::new()
            })
        }
    }
}

fn dry_run(request: &ApiRequest) -> bool {
    request
        .query
        .iter()
        .any(|(k, v)| k == "dryRun" && v == "All")
}

fn create(
    cluster: &Arc<Cluster>,
    resource: Resource,
    namespace: &str,
    request: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let mut object = decode_body(resource, request)?;
    if resource.namespaced() {
        match object["metadata"]["namespace"].as_str() {
            None | Some("") => {}
            Some(ns) if ns == namespace => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
    }
    let warnings = check_fields(resource, &mut object, request)?;
    strategy::prepare_for_create(resource, &mut object);
    let causes = validation::validate(resource, &object, None);
    if !causes.is_empty() {
        let name = name_of(&object).to_string();
        return Err(ApiError::invalid(resource, &name, &causes));
    }
    strategy::admit(cluster, resource, namespace, &object)?;
    if dry_run(request) {
        return Ok(render_object(201, resource, &object, request, &warnings));
    }
    let created = cluster.store.create(resource, namespace, object)?;
    strategy::after_create(cluster, resource, &created);
    Ok(render_object(201, resource, &created, request, &warnings))
}

/// Shared tail of PUT and PATCH: status handling, validation, optimistic concurrency.
fn write_update(
    cluster: &Arc<Cluster>,
    resource: Resource,
    namespace: &str,
    name: &str,
    subresource: Option<&str>,
    request: &ApiRequest,
    make: impl FnOnce(&Value) -> ApiResult<(Value, Vec<String>)>,
) -> ApiResult<Response<Body>> {
    let prepare = |current: &Value| -> ApiResult<(Value, Vec<String>)> {
        let (mut next, warnings) = make(current)?;
        if let Some(wanted) = resource_version_of(&next)
            && Some(wanted) != resource_version_of(current)
        {
            return Err(ApiError::stale_write(resource, name));
        }
        if name_of(&next) != name && !name_of(&next).is_empty() {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(&next)
            )));
        }
        strategy::prepare_for_update(resource, current, &mut next, subresource == Some("status"));
        let causes = validation::validate(resource, &next, Some(current));
        if !causes.is_empty() {
            return Err(ApiError::invalid(resource, name, &causes));
        }
        Ok((next, warnings))
    };
    if dry_run(request) {
        // Everything but the write.
        let current = cluster
            .store
            .get(resource, namespace, name)
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        let (next, warnings) = prepare(&current)?;
        return Ok(render_object(200, resource, &next, request, &warnings));
    }
    let mut warnings = Vec::new();
    let updated = cluster.store.update(resource, namespace, name, |current| {
        let (next, found) = prepare(current)?;
        warnings = found;
        Ok(next)
    })?;
    let updated = lifecycle::after_update(cluster, resource, updated)?;
    Ok(render_object(200, resource, &updated, request, &warnings))
}

fn update(
    cluster: &Arc<Cluster>,
    resource: Resource,
    namespace: &str,
    name: &str,
    subresource: Option<&str>,
    request: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let mut object = decode_body(resource, request)?;
    let warnings = check_fields(resource, &mut object, request)?;
    write_update(
        cluster,
        resource,
        namespace,
        name,
        subresource,
        request,
        move |_| Ok((object, warnings)),
    )
}

fn patch(
    cluster: &Arc<Cluster>,
    resource: Resource,
    namespace: &str,
    name: &str,
    subresource: Option<&str>,
    request: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let content_type = request
        .header("content-type")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let patch: Value = serde_json::from_slice(&request.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if content_type == "application/apply-patch+yaml" {
        return Err(ApiError::unsupported_media_type(&content_type));
    }
    write_update(
        cluster,
        resource,
        namespace,
        name,
        subresource,
        request,
        |current| {
            let mut next = (*current).clone();
            // The stored resourceVersion is not a precondition of a patch; only one the patch
            // itself names is.
            if let Some(m) = next["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            let result = match content_type.as_str() {
                "application/merge-patch+json" => {
                    crate::patch::merge_patch(&mut next, &patch);
                    Ok(())
                }
                "application/strategic-merge-patch+json" => {
                    crate::patch::strategic_merge_patch(&mut next, &patch)
                }
                "application/json-patch+json" => crate::patch::json_patch(&mut next, &patch),
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            result.map_err(|e| {
                ApiError::injected(422, format!("the patch could not be applied: {}", e.0))
            })?;
            let warnings = check_fields(resource, &mut next, request)?;
            Ok((next, warnings))
        },
    )
}

fn delete_options(request: &ApiRequest) -> ApiResult<DeleteOptions> {
    let body: Value = if request.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&request.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let propagation = request
        .param("propagationPolicy")
        .or_else(|| body["propagationPolicy"].as_str())
        .map(str::to_string);
    let orphan = body["orphanDependents"]
        .as_bool()
        .or_else(|| request.param("orphanDependents").map(|v| v == "true"));
    let grace = request
        .param("gracePeriodSeconds")
        .and_then(|v| v.parse().ok())
        .or_else(|| body["gracePeriodSeconds"].as_i64());
    let dry_run = dry_run(request)
        || body["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    DeleteOptions::new(
        propagation.as_deref(),
        orphan,
        grace,
        body["preconditions"]["uid"].as_str().map(str::to_string),
        body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
        dry_run,
    )
}

fn delete_collection(
    cluster: &Arc<Cluster>,
    resource: Resource,
    namespace: Option<&str>,
    request: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let (labels, fields) = selectors(resource, request)?;
    let options = delete_options(request)?;
    let (items, _) = cluster.store.list(resource, namespace);
    let mut deleted = Vec::new();
    for object in items
        .iter()
        .filter(|o| labels.matches_object(o) && fields.matches_object(o))
    {
        let ns = crate::store::namespace_of(object).to_string();
        match lifecycle::delete(cluster, resource, &ns, name_of(object), &options) {
            Ok(Deleted::Gone(o) | Deleted::Pending(o)) => deleted.push((*o).clone()),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", resource.kind()),
            "apiVersion": resource.api_version(),
            "metadata": { "resourceVersion": cluster.store.resource_version().to_string() },
            "items": deleted,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_collections_and_objects() {
        assert_eq!(
            parse_target("batch", &["namespaces", "ml", "jobs"]),
            Some(Target::Collection {
                resource: Resource::Job,
                namespace: Some("ml".into())
            })
        );
        assert_eq!(
            parse_target("", &["namespaces", "ml", "pods", "p", "log"]),
            Some(Target::Object {
                resource: Resource::Pod,
                namespace: "ml".into(),
                name: "p".into(),
                subresource: Some("log".into())
            })
        );
        assert_eq!(
            parse_target("", &["namespaces", "ml"]),
            Some(Target::Object {
                resource: Resource::Namespace,
                namespace: String::new(),
                name: "ml".into(),
                subresource: None
            })
        );
        assert_eq!(
            parse_target("", &["pods"]),
            Some(Target::Collection {
                resource: Resource::Pod,
                namespace: None
            })
        );
        assert_eq!(parse_target("batch", &["namespaces", "ml", "pods"]), None);
        assert_eq!(parse_target("", &["namespaces", "ml", "namespaces"]), None);
    }
}
