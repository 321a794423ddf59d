//! Watches: a chunked stream of `{"type": ..., "object": ...}` lines, resuming from a
//! resourceVersion, with bookmarks, `sendInitialEvents` and selector-aware ADDED/DELETED.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http::Response;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::Cluster;
use crate::api::selectors;
use crate::resources::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::{ApiRequest, Body};
use crate::status::{ApiError, ApiResult};
use crate::store::{Change, ChangeKind, namespace_of};

/// The longest a watch stays open without `timeoutSeconds` (the real server picks 30–60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Filter {
    resource: Resource,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, object: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| namespace_of(object) == ns)
            && self.labels.matches_object(object)
            && self.fields.matches_object(object)
    }

    /// What a client watching this selection sees of a change, if anything.
    fn event(&self, change: &Change) -> Option<(&'static str, Arc<Value>)> {
        if change.resource != self.resource {
            return None;
        }
        let now = self.matches(&change.object);
        let before = change.previous.as_deref().is_some_and(|p| self.matches(p));
        let kind = match (change.kind, before, now) {
            (ChangeKind::Added, _, true) => ChangeKind::Added,
            (ChangeKind::Modified, true, true) => ChangeKind::Modified,
            (ChangeKind::Modified, false, true) => ChangeKind::Added,
            (ChangeKind::Modified, true, false) => ChangeKind::Deleted,
            (ChangeKind::Deleted, true, _) => ChangeKind::Deleted,
            _ => return None,
        };
        Some((kind.as_watch_type(), change.object.clone()))
    }
}

fn line(event_type: &str, object: &Value, table: Option<&ApiRequest>, resource: Resource) -> Bytes {
    let object = match table {
        Some(request) if event_type != "BOOKMARK" => {
            crate::table::for_objects(resource, std::slice::from_ref(object), None, request)
        }
        _ => object.clone(),
    };
    let mut bytes = serde_json::to_vec(&json!({ "type": event_type, "object": object }))
        .expect("JSON values serialise");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn bookmark(resource: Resource, resource_version: u64, initial_events_end: bool) -> Value {
    let mut metadata = json!({ "resourceVersion": resource_version.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    json!({ "kind": resource.kind(), "apiVersion": resource.api_version(), "metadata": metadata })
}

pub fn serve(
    cluster: &Arc<Cluster>,
    resource: Resource,
    namespace: Option<String>,
    request: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let (labels, fields) = selectors(resource, request)?;
    let filter = Filter {
        resource,
        namespace,
        labels,
        fields,
    };
    let bookmarks = request.flag("allowWatchBookmarks");
    let send_initial = request.flag("sendInitialEvents");
    if send_initial && (!bookmarks || request.param("resourceVersionMatch") != Some("NotOlderThan"))
    {
        return Err(ApiError::injected(
            422,
            "sendInitialEvents is only supported with resourceVersionMatch=NotOlderThan and allowWatchBookmarks=true",
        ));
    }
    let timeout = request
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(DEFAULT_TIMEOUT);
    let from = request.param("resourceVersion").unwrap_or_default();
    let table = crate::api::wants_table_request(request).then(|| ApiRequest {
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers: request.headers.clone(),
        body: Bytes::new(),
    });

    // "" and "0" mean "from any state": start with the current objects as ADDED events, as
    // the real server does; a version N replays what happened after N.
    let mut first: Vec<Bytes> = Vec::new();
    let (mut receiver, mut last_rv) = if send_initial || from.is_empty() || from == "0" {
        let (items, rv, receiver) = cluster.store.snapshot_and_subscribe(resource);
        for object in items.iter().filter(|o| filter.matches(o)) {
            first.push(line("ADDED", object, table.as_ref(), resource));
        }
        if send_initial {
            first.push(line(
                "BOOKMARK",
                &bookmark(resource, rv, true),
                None,
                resource,
            ));
        }
        (receiver, rv)
    } else {
        let from: u64 = from
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {from}")))?;
        let (replay, receiver) = cluster.store.changes_since(resource, from)?;
        let mut last = from;
        for change in &replay {
            last = change.resource_version;
            if let Some((kind, object)) = filter.event(change) {
                first.push(line(kind, &object, table.as_ref(), resource));
            }
        }
        (receiver, last)
    };

    let (sender, body) = futures::channel::mpsc::channel::<Bytes>(64);
    let mut epoch = cluster.watch_epoch.subscribe();
    let mut shutdown = cluster.shutdown.subscribe();
    let interval = cluster.config.bookmark_interval;
    tokio::spawn(async move {
        let mut sender = sender;
        use futures::SinkExt as _;
        for bytes in first {
            if sender.send(bytes).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        epoch.borrow_and_update();
        loop {
            let bytes = tokio::select! {
                received = receiver.recv() => match received {
                    Ok(change) => {
                        if change.resource_version <= last_rv {
                            continue;
                        }
                        last_rv = change.resource_version;
                        match filter.event(&change) {
                            Some((kind, object)) => line(kind, &object, table.as_ref(), resource),
                            None => continue,
                        }
                    }
                    // Fell behind or the server stopped: end the stream; the client resumes
                    // from its last version and the history fills the gap.
                    Err(RecvError::Lagged(_) | RecvError::Closed) => return,
                },
                _ = ticker.tick(), if bookmarks => line("BOOKMARK", &bookmark(resource, last_rv, false), None, resource),
                _ = &mut deadline => return,
                _ = epoch.changed() => return,
                _ = crate::stopped(&mut shutdown) => return,
            };
            if sender.send(bytes).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(body.map(|bytes| Ok(Frame::data(bytes)))).boxed_unsync();
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(body)
        .expect("valid response parts"))
}
