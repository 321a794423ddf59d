//! The object store: every object as JSON, one resourceVersion counter, and the change history
//! that watches replay.
//!
//! Like etcd behind kube-apiserver, every write bumps one global counter, and each object's
//! `metadata.resourceVersion` is the counter value of its last write. A watch from version N
//! replays the kept changes after N and then follows live ones; a version older than the kept
//! history is answered with 410 Gone, which clients handle by listing again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::resources::Resource;
use crate::status::{ApiError, ApiResult};

/// `(resource, namespace or "", name)`.
pub type ObjectKey = (Resource, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_watch_type(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One write, as watches and controllers see it.
#[derive(Clone, Debug)]
pub struct Change {
    pub resource: Resource,
    pub kind: ChangeKind,
    /// The object after the write (for a delete: the last state, with the delete's version).
    pub object: Arc<Value>,
    /// The object before the write, so that a selector watch can tell an object leaving the
    /// selection (sent as DELETED) from one entering it (sent as ADDED).
    pub previous: Option<Arc<Value>>,
    pub resource_version: u64,
}

struct Inner {
    resource_version: u64,
    objects: BTreeMap<ObjectKey, Arc<Value>>,
    history: VecDeque<Change>,
}

/// Shared by the API handlers and the controllers.
pub struct Store {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Change>,
    history_limit: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A random id in UUID v4 form, for `metadata.uid`.
pub fn new_uid() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The 5-character suffix `generateName` gets, from the same alphabet as the real server
/// (no vowels, so no words).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

pub fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

pub fn namespace_of(object: &Value) -> &str {
    object["metadata"]["namespace"].as_str().unwrap_or_default()
}

pub fn uid_of(object: &Value) -> &str {
    object["metadata"]["uid"].as_str().unwrap_or_default()
}

pub fn resource_version_of(object: &Value) -> Option<u64> {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (changes, _) = broadcast::channel(16 * 1024);
        Store {
            inner: Mutex::new(Inner {
                resource_version: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
            }),
            changes,
            history_limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves no half-written object (writes are single
        // inserts), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// All live changes from now on (controllers use this).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let key = (resource, namespace.to_string(), name.to_string());
        self.lock().objects.get(&key).cloned()
    }

    /// Objects of a type in one namespace (`Some`) or everywhere (`None`), in key order, with
    /// the version the list is consistent at.
    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let items = Self::of_type(&inner, resource, namespace).collect();
        (items, inner.resource_version)
    }

    /// Objects of one type (in one namespace, or all), found by key range rather than by a
    /// scan of the whole store (events alone grow without bound).
    fn of_type<'a>(
        inner: &'a Inner,
        resource: Resource,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = Arc<Value>> + 'a {
        let start = (
            resource,
            namespace.unwrap_or_default().to_string(),
            String::new(),
        );
        inner
            .objects
            .range(start..)
            .take_while(move |((r, ns, _), _)| {
                *r == resource && namespace.is_none_or(|want| ns == want)
            })
            .map(|(_, object)| object.clone())
    }

    fn record(&self, inner: &mut Inner, change: Change) {
        inner.history.push_back(change.clone());
        while inner.history.len() > self.history_limit {
            inner.history.pop_front();
        }
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(change);
    }

    /// Stores a new object: fills name (from `generateName`), uid, creationTimestamp,
    /// resourceVersion and generation. The object must already be validated.
    pub fn create(
        &self,
        resource: Resource,
        namespace: &str,
        mut object: Value,
    ) -> ApiResult<Arc<Value>> {
        let mut inner = self.lock();
        if resource.namespaced() {
            let ns_key = (Resource::Namespace, String::new(), namespace.to_string());
            match inner.objects.get(&ns_key) {
                None => return Err(ApiError::namespace_not_found(namespace)),
                Some(ns) if !ns["metadata"]["deletionTimestamp"].is_null() => {
                    return Err(ApiError::injected(
                        403,
                        format!(
                            "{} \"{}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                            resource.qualified(),
                            name_of(&object)
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let mut name = name_of(&object).to_string();
        if name.is_empty() {
            let prefix = object["metadata"]["generateName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            // The real server retries a generated name that is taken; so does this one.
            name = loop {
                let candidate = format!("{prefix}{}", random_suffix());
                let key = (resource, namespace.to_string(), candidate.clone());
                if !inner.objects.contains_key(&key) {
                    break candidate;
                }
            };
        }
        let key = (resource, namespace.to_string(), name.clone());
        if inner.objects.contains_key(&key) {
            return Err(ApiError::already_exists(resource, &name));
        }
        inner.resource_version += 1;
        let rv = inner.resource_version;
        let metadata = object["metadata"]
            .as_object_mut()
            .expect("validated objects have metadata");
        metadata.insert("name".into(), json!(name));
        if resource.namespaced() {
            metadata.insert("namespace".into(), json!(namespace));
        } else {
            metadata.remove("namespace");
        }
        // A uid already set is the strategy's (a Job's selector is made from it); clients'
        // uids were removed before.
        if !metadata.get("uid").is_some_and(Value::is_string) {
            metadata.insert("uid".into(), json!(new_uid()));
        }
        metadata.insert("resourceVersion".into(), json!(rv.to_string()));
        metadata.insert("creationTimestamp".into(), json!(now_rfc3339()));
        metadata.insert("generation".into(), json!(1));
        metadata.remove("deletionTimestamp");
        metadata.remove("deletionGracePeriodSeconds");
        let object = Arc::new(object);
        inner.objects.insert(key, object.clone());
        self.record(
            &mut inner,
            Change {
                resource,
                kind: ChangeKind::Added,
                object: object.clone(),
                previous: None,
                resource_version: rv,
            },
        );
        Ok(object)
    }

    /// Replaces an object with what `update` makes of the current one, atomically. Returning
    /// an unchanged object is a no-op that does not bump the version, as on a real server.
    pub fn update(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        update: impl FnOnce(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Arc<Value>> {
        let mut inner = self.lock();
        let key = (resource, namespace.to_string(), name.to_string());
        let current = inner
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        let mut updated = update(&current)?;
        // Identity fields are the server's, whatever the client sent.
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "resourceVersion",
        ] {
            match current["metadata"].get(field) {
                Some(value) => updated["metadata"][field] = value.clone(),
                None => {
                    if let Some(m) = updated["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        if updated == *current {
            return Ok(current);
        }
        if updated["spec"] != current["spec"] {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
            updated["metadata"]["generation"] = json!(generation + 1);
        }
        inner.resource_version += 1;
        let rv = inner.resource_version;
        updated["metadata"]["resourceVersion"] = json!(rv.to_string());
        let updated = Arc::new(updated);
        inner.objects.insert(key, updated.clone());
        self.record(
            &mut inner,
            Change {
                resource,
                kind: ChangeKind::Modified,
                object: updated.clone(),
                previous: Some(current),
                resource_version: rv,
            },
        );
        Ok(updated)
    }

    /// Removes an object for good. `expected_uid` guards against removing a newer object of
    /// the same name.
    pub fn remove(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        expected_uid: Option<&str>,
    ) -> ApiResult<Arc<Value>> {
        let mut inner = self.lock();
        let key = (resource, namespace.to_string(), name.to_string());
        let current = inner
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        if let Some(uid) = expected_uid
            && uid_of(&current) != uid
        {
            return Err(ApiError::uid_precondition(
                resource,
                name,
                uid,
                uid_of(&current),
            ));
        }
        inner.objects.remove(&key);
        inner.resource_version += 1;
        let rv = inner.resource_version;
        let mut last = (*current).clone();
        last["metadata"]["resourceVersion"] = json!(rv.to_string());
        let last = Arc::new(last);
        self.record(
            &mut inner,
            Change {
                resource,
                kind: ChangeKind::Deleted,
                object: last.clone(),
                previous: Some(current),
                resource_version: rv,
            },
        );
        Ok(last)
    }

    /// The kept changes to `resource` after version `from`, and a receiver for the ones after
    /// them, taken under one lock so that nothing falls between the two.
    pub fn changes_since(
        &self,
        resource: Resource,
        from: u64,
    ) -> ApiResult<(Vec<Change>, broadcast::Receiver<Change>)> {
        let inner = self.lock();
        let receiver = self.changes.subscribe();
        if from < inner.resource_version
            && let Some(oldest) = inner.history.front()
            && oldest.resource_version > from + 1
            && inner.history.len() >= self.history_limit
        {
            return Err(ApiError::gone(format!(
                "too old resource version: {from} ({})",
                oldest.resource_version - 1
            )));
        }
        let replay = inner
            .history
            .iter()
            .filter(|c| c.resource == resource && c.resource_version > from)
            .cloned()
            .collect();
        Ok((replay, receiver))
    }

    /// Current objects and a receiver for what follows, under one lock (for watches that start
    /// with the current state).
    pub fn snapshot_and_subscribe(
        &self,
        resource: Resource,
    ) -> (Vec<Arc<Value>>, u64, broadcast::Receiver<Change>) {
        let inner = self.lock();
        let receiver = self.changes.subscribe();
        let items = Self::of_type(&inner, resource, None).collect();
        (items, inner.resource_version, receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_default_namespace() -> Store {
        let store = Store::new(100);
        store
            .create(
                Resource::Namespace,
                "",
                json!({"metadata": {"name": "default"}}),
            )
            .unwrap();
        store
    }

    #[test]
    fn create_assigns_identity_and_refuses_duplicates() {
        let store = store_with_default_namespace();
        let cm = store
            .create(
                Resource::ConfigMap,
                "default",
                json!({"metadata": {"name": "a"}}),
            )
            .unwrap();
        assert_eq!(cm["metadata"]["namespace"], "default");
        assert_eq!(uid_of(&cm).len(), 36);
        assert_eq!(resource_version_of(&cm), Some(store.resource_version()));
        let err = store
            .create(
                Resource::ConfigMap,
                "default",
                json!({"metadata": {"name": "a"}}),
            )
            .unwrap_err();
        assert_eq!(err.code, 409);
        let err = store
            .create(
                Resource::ConfigMap,
                "nope",
                json!({"metadata": {"name": "a"}}),
            )
            .unwrap_err();
        assert_eq!(err.message, "namespaces \"nope\" not found");
    }

    #[test]
    fn generate_name_appends_five_characters() {
        let store = store_with_default_namespace();
        let pod = store
            .create(
                Resource::Pod,
                "default",
                json!({"metadata": {"generateName": "train-"}}),
            )
            .unwrap();
        let name = name_of(&pod);
        assert!(
            name.starts_with("train-") && name.len() == "train-".len() + 5,
            "{name}"
        );
    }

    #[test]
    fn unchanged_updates_keep_the_version_and_changes_replay_in_order() {
        let store = store_with_default_namespace();
        let start = store.resource_version();
        store
            .create(
                Resource::ConfigMap,
                "default",
                json!({"metadata": {"name": "a"}, "data": {"k": "1"}}),
            )
            .unwrap();
        let same = store
            .update(Resource::ConfigMap, "default", "a", |cur| Ok(cur.clone()))
            .unwrap();
        assert_eq!(resource_version_of(&same), Some(start + 1));
        store
            .update(Resource::ConfigMap, "default", "a", |cur| {
                let mut next = cur.clone();
                next["data"]["k"] = json!("2");
                Ok(next)
            })
            .unwrap();
        store
            .remove(Resource::ConfigMap, "default", "a", None)
            .unwrap();
        let (replay, _) = store.changes_since(Resource::ConfigMap, start).unwrap();
        let kinds: Vec<_> = replay.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [ChangeKind::Added, ChangeKind::Modified, ChangeKind::Deleted]
        );
        assert_eq!(replay[2].previous.as_ref().unwrap()["data"]["k"], "2");
    }

    #[test]
    fn a_version_older_than_the_history_is_gone() {
        let store = Store::new(3);
        for i in 0..6 {
            store
                .create(
                    Resource::Namespace,
                    "",
                    json!({"metadata": {"name": format!("ns{i}")}}),
                )
                .unwrap();
        }
        let err = store.changes_since(Resource::Namespace, 1).unwrap_err();
        assert_eq!(err.code, 410);
        assert!(
            store
                .changes_since(Resource::Namespace, store.resource_version() - 2)
                .is_ok()
        );
    }
}
