//! Deletion as the real server does it: preconditions, graceful pod termination, finalizers,
//! propagation (Orphan, Background, Foreground) and the garbage collector that follows
//! `ownerReferences` and empties terminating namespaces.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Cluster;
use crate::resources::Resource;
use crate::status::{ApiError, ApiResult};
use crate::store::{name_of, namespace_of, uid_of};

const FOREGROUND: &str = "foregroundDeletion";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub propagation: Option<Propagation>,
    pub grace_period_seconds: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn new(
        propagation: Option<&str>,
        orphan_dependents: Option<bool>,
        grace_period_seconds: Option<i64>,
        uid: Option<String>,
        resource_version: Option<String>,
        dry_run: bool,
    ) -> ApiResult<Self> {
        let propagation = match (propagation, orphan_dependents) {
            (Some("Orphan"), _) => Some(Propagation::Orphan),
            (Some("Background"), _) => Some(Propagation::Background),
            (Some("Foreground"), _) => Some(Propagation::Foreground),
            (Some(other), _) => {
                return Err(ApiError::injected(
                    422,
                    format!(
                        "DeleteOptions.propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                    ),
                ));
            }
            (None, Some(true)) => Some(Propagation::Orphan),
            (None, Some(false)) => Some(Propagation::Background),
            (None, None) => None,
        };
        Ok(DeleteOptions {
            propagation,
            grace_period_seconds,
            uid,
            resource_version,
            dry_run,
        })
    }

    pub fn background() -> Self {
        DeleteOptions {
            propagation: Some(Propagation::Background),
            ..Self::default()
        }
    }
}

/// What a delete did.
#[derive(Debug)]
pub enum Deleted {
    /// The object is gone.
    Gone(Arc<Value>),
    /// The object is marked for deletion (grace period, finalizers, foreground dependents) and
    /// goes later.
    Pending(Arc<Value>),
}

fn has_finalizers(object: &Value) -> bool {
    object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty())
}

/// Whether a pod is on the node with a process that must be stopped first.
fn pod_needs_graceful_stop(pod: &Value) -> bool {
    !pod["spec"]["nodeName"].is_null()
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

pub fn delete(
    cluster: &Cluster,
    resource: Resource,
    namespace: &str,
    name: &str,
    options: &DeleteOptions,
) -> ApiResult<Deleted> {
    let current = cluster
        .store
        .get(resource, namespace, name)
        .ok_or_else(|| ApiError::not_found(resource, name))?;
    if let Some(uid) = &options.uid
        && uid != uid_of(&current)
    {
        return Err(ApiError::uid_precondition(
            resource,
            name,
            uid,
            uid_of(&current),
        ));
    }
    if let Some(rv) = &options.resource_version
        && Some(rv.as_str()) != current["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::conflict(
            resource,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                current["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
            ),
        ));
    }
    if options.dry_run {
        return Ok(Deleted::Pending(current));
    }
    let already_deleting = !current["metadata"]["deletionTimestamp"].is_null();
    // batch/v1 Jobs orphan their pods unless told otherwise, a legacy the real server keeps:
    // clients must ask for Background or Foreground.
    let propagation = options.propagation.unwrap_or(if resource == Resource::Job {
        Propagation::Orphan
    } else {
        Propagation::Background
    });

    if resource == Resource::Pod {
        let grace = options
            .grace_period_seconds
            .or_else(|| current["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30)
            .max(0);
        if grace == 0 || !pod_needs_graceful_stop(&current) {
            if has_finalizers(&current) {
                return mark_deleting(cluster, resource, namespace, name, Some(0), &[]);
            }
            let gone = cluster
                .store
                .remove(resource, namespace, name, Some(uid_of(&current)))?;
            cluster.kubelet.forget(namespace, name);
            cluster.logs.remove_pod(namespace, name);
            return Ok(Deleted::Gone(gone));
        }
        if already_deleting {
            return Ok(Deleted::Pending(current));
        }
        return mark_deleting(cluster, resource, namespace, name, Some(grace), &[]);
    }
    if already_deleting {
        return Ok(Deleted::Pending(current));
    }
    match propagation {
        Propagation::Orphan => orphan_dependents(cluster, uid_of(&current)),
        Propagation::Foreground => {
            return mark_deleting(cluster, resource, namespace, name, None, &[FOREGROUND]);
        }
        Propagation::Background => {}
    }
    if resource == Resource::Namespace {
        return mark_deleting(cluster, resource, namespace, name, None, &[]);
    }
    if has_finalizers(&current) {
        return mark_deleting(cluster, resource, namespace, name, None, &[]);
    }
    Ok(Deleted::Gone(cluster.store.remove(
        resource,
        namespace,
        name,
        Some(uid_of(&current)),
    )?))
}

fn mark_deleting(
    cluster: &Cluster,
    resource: Resource,
    namespace: &str,
    name: &str,
    grace: Option<i64>,
    add_finalizers: &[&str],
) -> ApiResult<Deleted> {
    let updated = cluster.store.update(resource, namespace, name, |current| {
        let mut next = current.clone();
        let at = chrono::Utc::now() + chrono::Duration::seconds(grace.unwrap_or(0));
        next["metadata"]["deletionTimestamp"] =
            json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        next["metadata"]["deletionGracePeriodSeconds"] = json!(grace.unwrap_or(0));
        if !add_finalizers.is_empty() {
            let mut finalizers: Vec<Value> = next["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for f in add_finalizers {
                if !finalizers.iter().any(|v| v == f) {
                    finalizers.push(json!(f));
                }
            }
            next["metadata"]["finalizers"] = json!(finalizers);
        }
        if resource == Resource::Namespace {
            next["status"]["phase"] = json!("Terminating");
        }
        Ok(next)
    })?;
    Ok(Deleted::Pending(updated))
}

/// Removes references to `owner_uid` from its dependents, so that they outlive it.
fn orphan_dependents(cluster: &Cluster, owner_uid: &str) {
    for resource in Resource::ALL {
        let (items, _) = cluster.store.list(resource, None);
        for object in items
            .iter()
            .filter(|o| owners(o).any(|uid| uid == owner_uid))
        {
            let _ =
                cluster
                    .store
                    .update(resource, namespace_of(object), name_of(object), |current| {
                        let mut next = current.clone();
                        if let Some(refs) = next["metadata"]["ownerReferences"].as_array_mut() {
                            refs.retain(|r| r["uid"] != owner_uid);
                        }
                        Ok(next)
                    });
        }
    }
}

fn owners(object: &Value) -> impl Iterator<Item = &str> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

/// After a write: an object being deleted whose last finalizer was removed goes now.
pub fn after_update(
    cluster: &Cluster,
    resource: Resource,
    object: Arc<Value>,
) -> ApiResult<Arc<Value>> {
    if !object["metadata"]["deletionTimestamp"].is_null()
        && !has_finalizers(&object)
        && resource != Resource::Namespace
    {
        let still_running = resource == Resource::Pod && pod_needs_graceful_stop(&object);
        if !still_running {
            let gone = cluster.store.remove(
                resource,
                namespace_of(&object),
                name_of(&object),
                Some(uid_of(&object)),
            )?;
            if resource == Resource::Pod {
                cluster
                    .kubelet
                    .forget(namespace_of(&object), name_of(&object));
                cluster
                    .logs
                    .remove_pod(namespace_of(&object), name_of(&object));
            }
            return Ok(gone);
        }
    }
    Ok(object)
}

/// The garbage collector: runs a sweep after every burst of changes and twice a second.
pub async fn run_garbage_collector(cluster: Arc<Cluster>) {
    let mut changes = cluster.store.subscribe();
    let mut shutdown = cluster.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = changes.recv() => {
                // Let a burst of writes land before sweeping once.
                tokio::time::sleep(Duration::from_millis(10)).await;
                while changes.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        sweep(&cluster);
    }
}

/// One pass: dependents of deleted or foreground-deleting owners go; a foreground owner goes
/// when its dependents are gone; a terminating namespace is emptied, then goes.
fn sweep(cluster: &Cluster) {
    let mut all: Vec<(Resource, Arc<Value>)> = Vec::new();
    for resource in Resource::ALL {
        all.extend(
            cluster
                .store
                .list(resource, None)
                .0
                .into_iter()
                .map(|o| (resource, o)),
        );
    }
    let live: HashSet<&str> = all.iter().map(|(_, o)| uid_of(o)).collect();
    let foreground: HashSet<&str> = all
        .iter()
        .filter(|(_, o)| {
            !o["metadata"]["deletionTimestamp"].is_null()
                && o["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|v| v == FOREGROUND))
        })
        .map(|(_, o)| uid_of(o))
        .collect();
    let terminating: Vec<&str> = all
        .iter()
        .filter(|(r, o)| *r == Resource::Namespace && !o["metadata"]["deletionTimestamp"].is_null())
        .map(|(_, o)| name_of(o))
        .collect();

    let mut referenced: HashSet<&str> = HashSet::new();
    for (resource, object) in &all {
        let refs: Vec<&str> = owners(object).collect();
        referenced.extend(refs.iter().copied());
        let in_terminating_namespace =
            terminating.contains(&namespace_of(object)) && resource.namespaced();
        let orphaned = !refs.is_empty() && refs.iter().all(|uid| !live.contains(uid));
        let owner_deleting = refs.iter().any(|uid| foreground.contains(uid));
        if orphaned || owner_deleting || in_terminating_namespace {
            let _ = delete(
                cluster,
                *resource,
                namespace_of(object),
                name_of(object),
                &DeleteOptions::background(),
            );
        } else if refs.iter().any(|uid| !live.contains(uid)) {
            // Some owners are gone, others remain: drop the dangling references.
            let _ = cluster.store.update(
                *resource,
                namespace_of(object),
                name_of(object),
                |current| {
                    let mut next = current.clone();
                    if let Some(r) = next["metadata"]["ownerReferences"].as_array_mut() {
                        r.retain(|r| r["uid"].as_str().is_some_and(|u| live.contains(u)));
                    }
                    Ok(next)
                },
            );
        }
    }
    for (resource, object) in &all {
        let uid = uid_of(object);
        if foreground.contains(uid) && !referenced.contains(uid) {
            let result = cluster.store.update(
                *resource,
                namespace_of(object),
                name_of(object),
                |current| {
                    let mut next = current.clone();
                    if let Some(f) = next["metadata"]["finalizers"].as_array_mut() {
                        f.retain(|v| v != FOREGROUND);
                    }
                    Ok(next)
                },
            );
            if let Ok(updated) = result {
                let _ = after_update(cluster, *resource, updated);
            }
        }
    }
    for namespace in terminating {
        let empty = all
            .iter()
            .all(|(r, o)| !r.namespaced() || namespace_of(o) != namespace);
        if empty {
            let _ = cluster
                .store
                .remove(Resource::Namespace, "", namespace, None);
        }
    }
}
