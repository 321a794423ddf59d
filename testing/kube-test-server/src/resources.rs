//! The resource types this server serves, with the names discovery and error messages need.

/// One served resource type (also the kind `validation` checks). Adding one means adding it
/// here, to `validation` and, if it has behaviour, to a controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Namespace,
    Pod,
    Job,
    ConfigMap,
    Secret,
    ServiceAccount,
    Event,
}

impl Resource {
    pub const ALL: [Resource; 7] = [
        Resource::Namespace,
        Resource::Pod,
        Resource::Job,
        Resource::ConfigMap,
        Resource::Secret,
        Resource::ServiceAccount,
        Resource::Event,
    ];

    /// The URL segment (`jobs`).
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Namespace => "namespaces",
            Resource::Pod => "pods",
            Resource::Job => "jobs",
            Resource::ConfigMap => "configmaps",
            Resource::Secret => "secrets",
            Resource::ServiceAccount => "serviceaccounts",
            Resource::Event => "events",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            Resource::Namespace => "namespace",
            Resource::Pod => "pod",
            Resource::Job => "job",
            Resource::ConfigMap => "configmap",
            Resource::Secret => "secret",
            Resource::ServiceAccount => "serviceaccount",
            Resource::Event => "event",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Resource::Namespace => "Namespace",
            Resource::Pod => "Pod",
            Resource::Job => "Job",
            Resource::ConfigMap => "ConfigMap",
            Resource::Secret => "Secret",
            Resource::ServiceAccount => "ServiceAccount",
            Resource::Event => "Event",
        }
    }

    /// API group: "" for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Resource::Job => "batch",
            _ => "",
        }
    }

    /// `apiVersion` of the objects (`v1`, `batch/v1`).
    pub fn api_version(self) -> &'static str {
        match self {
            Resource::Job => "batch/v1",
            _ => "v1",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Resource::Namespace)
    }

    /// How the real server names the resource in messages: `jobs.batch`, `pods`.
    pub fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_string(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Resource::Namespace => &["ns"],
            Resource::Pod => &["po"],
            Resource::ConfigMap => &["cm"],
            Resource::ServiceAccount => &["sa"],
            Resource::Event => &["ev"],
            Resource::Job | Resource::Secret => &[],
        }
    }

    pub fn categories(self) -> &'static [&'static str] {
        match self {
            Resource::Pod | Resource::Job => &["all"],
            _ => &[],
        }
    }

    /// Whether the resource has a `/status` subresource (writes to the main resource keep the
    /// stored status, as on a real server).
    pub fn has_status(self) -> bool {
        matches!(self, Resource::Pod | Resource::Job | Resource::Namespace)
    }

    /// Looks a resource up by group and plural, as found in a request path.
    pub fn from_path(group: &str, plural: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| r.group() == group && r.plural() == plural)
    }

    /// Verbs for discovery; kubectl uses them to decide what it may do.
    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Resource::ServiceAccount => &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ],
            _ => &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_the_resource_with_its_group() {
        assert_eq!(Resource::from_path("batch", "jobs"), Some(Resource::Job));
        assert_eq!(Resource::from_path("", "jobs"), None);
        assert_eq!(Resource::from_path("", "pods"), Some(Resource::Pod));
        assert_eq!(Resource::Job.qualified(), "jobs.batch");
        assert_eq!(Resource::Pod.qualified(), "pods");
        assert!(!Resource::Namespace.namespaced());
    }
}
