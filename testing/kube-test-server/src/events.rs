//! core/v1 Events, recorded by the controllers and the kubelet as the real components do, so
//! that `kubectl get events` and clients that explain failures have something to read.

use serde_json::{Value, json};

use crate::Cluster;
use crate::resources::Resource;
use crate::store::{name_of, namespace_of, now_rfc3339, random_suffix, uid_of};

/// Components named in `source.component`, as on a real cluster.
pub const JOB_CONTROLLER: &str = "job-controller";
pub const KUBELET: &str = "kubelet";
pub const SCHEDULER: &str = "default-scheduler";

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

pub fn record(
    cluster: &Cluster,
    resource: Resource,
    involved: &Value,
    event_type: EventType,
    reason: &str,
    message: &str,
    component: &str,
) {
    let namespace = match namespace_of(involved) {
        "" => "default",
        ns => ns,
    };
    let now = now_rfc3339();
    let name = format!(
        "{}.{}{}",
        name_of(involved),
        random_suffix(),
        random_suffix()
    );
    let mut source = json!({ "component": component });
    if component == KUBELET {
        source["host"] = json!(cluster.config.node_name);
    }
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": { "name": name, "namespace": namespace },
        "involvedObject": {
            "kind": resource.kind(),
            "namespace": namespace_of(involved),
            "name": name_of(involved),
            "uid": uid_of(involved),
            "apiVersion": resource.api_version(),
            "resourceVersion": involved["metadata"]["resourceVersion"].clone(),
        },
        "reason": reason,
        "message": message,
        "source": source,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": match event_type { EventType::Normal => "Normal", EventType::Warning => "Warning" },
        "eventTime": null,
        "reportingComponent": component,
        "reportingInstance": if component == KUBELET { cluster.config.node_name.as_str() } else { "" },
    });
    if let Err(error) = cluster.store.create(Resource::Event, namespace, event) {
        // The namespace may be going away with the object; a lost event is what a real
        // cluster does then too.
        tracing::debug!(?error, reason, "event not recorded");
    }
}
