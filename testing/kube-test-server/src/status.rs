//! API errors, answered as `meta/v1 Status` objects with the real server's codes and wording.

use serde_json::{Value, json};

use crate::resources::Resource;
use crate::validation::{self, Cause};

/// A failed API request. Clients (kube-rs, kubectl) read `reason` and `code`, people read
/// `message`, so both follow kube-apiserver.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, resource: Resource, name: &str) -> Self {
        let mut details = json!({ "name": name, "kind": resource.plural() });
        if !resource.group().is_empty() {
            details["group"] = json!(resource.group());
        }
        self.details = Some(details);
        self
    }

    pub fn not_found(resource: Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", resource.qualified()),
        )
        .with_details(resource, name)
    }

    pub fn namespace_not_found(namespace: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
        )
        .with_details(Resource::Namespace, namespace)
    }

    pub fn already_exists(resource: Resource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", resource.qualified()),
        )
        .with_details(resource, name)
    }

    /// A write whose `resourceVersion` or `uid` precondition no longer holds.
    pub fn conflict(resource: Resource, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                resource.qualified()
            ),
        )
        .with_details(resource, name)
    }

    /// A delete or removal whose `uid` precondition names another object of the same name.
    pub fn uid_precondition(resource: Resource, name: &str, wanted: &str, actual: &str) -> Self {
        Self::conflict(
            resource,
            name,
            &format!(
                "Precondition failed: UID in precondition: {wanted}, UID in object meta: {actual}"
            ),
        )
    }

    pub fn stale_write(resource: Resource, name: &str) -> Self {
        Self::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(resource: Resource, name: &str, causes: &[Cause]) -> Self {
        let message = validation::invalid_message(resource, name, causes);
        let mut error = Self::new(422, "Invalid", message).with_details(resource, name);
        if let Some(details) = error.details.as_mut() {
            details["kind"] = json!(resource.kind());
            details["causes"] = causes
                .iter()
                .map(|c| json!({ "reason": c.reason, "message": c.message, "field": c.field }))
                .collect();
        }
        error
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// A watch or list from a resourceVersion older than the kept history.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            ),
        )
    }

    pub fn path_not_found(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// An error injected by a test (see `faults`).
    pub fn injected(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        Self::new(code, reason, message)
    }

    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// The `Status` a successful delete answers with for resources deleted at once.
pub fn deleted_status(resource: Resource, name: &str, uid: &str) -> Value {
    let mut details = json!({ "name": name, "kind": resource.plural(), "uid": uid });
    if !resource.group().is_empty() {
        details["group"] = json!(resource.group());
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_like_the_real_servers() {
        let status = ApiError::already_exists(Resource::Job, "train").to_status();
        assert_eq!(status["message"], "jobs.batch \"train\" already exists");
        assert_eq!(status["reason"], "AlreadyExists");
        assert_eq!(status["code"], 409);
        assert_eq!(status["details"]["group"], "batch");
        let status = ApiError::not_found(Resource::Pod, "p").to_status();
        assert_eq!(status["message"], "pods \"p\" not found");
        assert!(status["details"].get("group").is_none());
    }
}
