//! Container logs: what the kubelet's processes print, kept per container, and `pods/log` with
//! `follow`, `tailLines`, `timestamps`, `sinceSeconds` and `limitBytes`.
//!
//! Like a real node, the log goes when the pod goes: a client that wants logs to outlive pods
//! must keep them itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{SinkExt as _, StreamExt as _};
use http::Response;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use tokio::sync::watch;

use crate::Cluster;
use crate::resources::Resource;
use crate::server::{ApiRequest, Body, full};
use crate::status::{ApiError, ApiResult};

#[derive(Default)]
struct LogState {
    lines: Vec<(DateTime<Utc>, Bytes)>,
    partial: Vec<u8>,
    closed: bool,
}

/// One container's output, line by line with the time each line arrived.
pub struct LogBuffer {
    state: Mutex<LogState>,
    /// Bumped on every append and at close, so that followers wake up.
    version: watch::Sender<u64>,
}

impl Default for LogBuffer {
    fn default() -> Self {
        LogBuffer {
            state: Mutex::default(),
            version: watch::channel(0).0,
        }
    }
}

impl LogBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn append(&self, chunk: &[u8]) {
        let mut state = self.lock();
        state.partial.extend_from_slice(chunk);
        let now = Utc::now();
        while let Some(end) = state.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = state.partial.drain(..=end).collect();
            state.lines.push((now, Bytes::from(line)));
        }
        drop(state);
        self.version.send_modify(|v| *v += 1);
    }

    /// The process ended: an unterminated last line is kept as it is.
    pub fn close(&self) {
        let mut state = self.lock();
        if !state.partial.is_empty() {
            let line = std::mem::take(&mut state.partial);
            state.lines.push((Utc::now(), Bytes::from(line)));
        }
        state.closed = true;
        drop(state);
        self.version.send_modify(|v| *v += 1);
    }

    /// Lines from index `from` on, and whether the log is complete.
    fn lines_from(&self, from: usize) -> (Vec<(DateTime<Utc>, Bytes)>, bool) {
        let state = self.lock();
        (
            state.lines.get(from..).unwrap_or_default().to_vec(),
            state.closed,
        )
    }

    fn len(&self) -> usize {
        self.lock().lines.len()
    }
}

/// All containers' logs, keyed by namespace, pod and container.
#[derive(Default)]
pub struct LogStore {
    buffers: Mutex<HashMap<(String, String, String), Arc<LogBuffer>>>,
}

impl LogStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), Arc<LogBuffer>>> {
        self.buffers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh buffer for a container that starts (a restart replaces the old one).
    pub fn start(&self, namespace: &str, pod: &str, container: &str) -> Arc<LogBuffer> {
        let buffer = Arc::new(LogBuffer::default());
        self.lock().insert(
            (namespace.into(), pod.into(), container.into()),
            buffer.clone(),
        );
        buffer
    }

    pub fn get(&self, namespace: &str, pod: &str, container: &str) -> Option<Arc<LogBuffer>> {
        self.lock()
            .get(&(namespace.into(), pod.into(), container.into()))
            .cloned()
    }

    /// Drops a deleted pod's logs; followers see the end of the stream.
    pub fn remove_pod(&self, namespace: &str, pod: &str) {
        let removed: Vec<Arc<LogBuffer>> = {
            let mut buffers = self.lock();
            let keys: Vec<_> = buffers
                .keys()
                .filter(|(ns, p, _)| ns == namespace && p == pod)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| buffers.remove(k)).collect()
        };
        for buffer in removed {
            buffer.close();
        }
    }
}

struct LogOptions {
    follow: bool,
    timestamps: bool,
    tail_lines: Option<usize>,
    since: Option<DateTime<Utc>>,
    limit_bytes: Option<usize>,
}

fn render(line: &(DateTime<Utc>, Bytes), timestamps: bool) -> Bytes {
    if timestamps {
        let mut out = line
            .0
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
            .into_bytes();
        out.push(b' ');
        out.extend_from_slice(&line.1);
        Bytes::from(out)
    } else {
        line.1.clone()
    }
}

pub async fn serve(
    cluster: &Arc<Cluster>,
    namespace: &str,
    name: &str,
    request: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let pod = cluster
        .store
        .get(Resource::Pod, namespace, name)
        .ok_or_else(|| ApiError::not_found(Resource::Pod, name))?;
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    let container = match request.param("container") {
        Some(c) if containers.contains(&c) => c.to_string(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if containers.len() == 1 => containers[0].to_string(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let Some(buffer) = cluster.logs.get(namespace, name, &container) else {
        let reason = pod["status"]["containerStatuses"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == container.as_str()))
            .and_then(|c| c["state"]["waiting"]["reason"].as_str())
            .unwrap_or("ContainerCreating")
            .to_string();
        let why = match reason.as_str() {
            "ErrImagePull" | "ImagePullBackOff" => "trying and failing to pull image".to_string(),
            other => other.to_string(),
        };
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {why}"
        )));
    };
    let number = |key: &str| -> ApiResult<Option<i64>> {
        request
            .param(key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid {key}: {v}")))
            })
            .transpose()
    };
    let options = LogOptions {
        follow: request.flag("follow"),
        timestamps: request.flag("timestamps"),
        tail_lines: number("tailLines")?.map(|n| n.max(0) as usize),
        since: number("sinceSeconds")?.map(|s| Utc::now() - chrono::Duration::seconds(s)),
        limit_bytes: number("limitBytes")?.map(|n| n.max(0) as usize),
    };

    let (mut lines, closed) = buffer.lines_from(0);
    let mut next_index = lines.len();
    if let Some(since) = options.since {
        lines.retain(|(t, _)| *t >= since);
    }
    if let Some(tail) = options.tail_lines {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    let mut first: Vec<Bytes> = lines
        .iter()
        .map(|l| render(l, options.timestamps))
        .collect();
    let mut budget = options.limit_bytes.unwrap_or(usize::MAX);
    trim_to_budget(&mut first, &mut budget);

    if !options.follow || closed || budget == 0 {
        let mut all = Vec::new();
        for chunk in first {
            all.extend_from_slice(&chunk);
        }
        return Ok(text_response(full(all)));
    }

    let (sender, body) = futures::channel::mpsc::channel::<Bytes>(64);
    let mut version = buffer.version.subscribe();
    let mut shutdown = cluster.shutdown.subscribe();
    tokio::spawn(async move {
        let mut sender = sender;
        for chunk in first {
            if sender.send(chunk).await.is_err() {
                return;
            }
        }
        loop {
            let (more, closed) = buffer.lines_from(next_index);
            next_index += more.len();
            let mut chunks: Vec<Bytes> =
                more.iter().map(|l| render(l, options.timestamps)).collect();
            trim_to_budget(&mut chunks, &mut budget);
            for chunk in chunks {
                if sender.send(chunk).await.is_err() {
                    return;
                }
            }
            if closed || budget == 0 {
                return;
            }
            if next_index >= buffer.len() {
                tokio::select! {
                    changed = version.changed() => if changed.is_err() { return },
                    _ = crate::stopped(&mut shutdown) => return,
                }
            }
        }
    });
    Ok(text_response(
        StreamBody::new(body.map(|bytes| Ok(Frame::data(bytes)))).boxed_unsync(),
    ))
}

fn trim_to_budget(chunks: &mut Vec<Bytes>, budget: &mut usize) {
    let mut kept = Vec::with_capacity(chunks.len());
    for chunk in chunks.drain(..) {
        if *budget == 0 {
            break;
        }
        let take = chunk.len().min(*budget);
        *budget -= take;
        kept.push(chunk.slice(..take));
    }
    *chunks = kept;
}

fn text_response(body: Body) -> Response<Body> {
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(body)
        .expect("valid response parts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_split_into_lines_and_a_partial_line_is_kept_at_close() {
        let buffer = LogBuffer::default();
        buffer.append(b"one\ntw");
        buffer.append(b"o\nthree");
        let (lines, closed) = buffer.lines_from(0);
        assert_eq!(
            lines.iter().map(|l| l.1.clone()).collect::<Vec<_>>(),
            [Bytes::from("one\n"), Bytes::from("two\n")]
        );
        assert!(!closed);
        buffer.close();
        let (lines, closed) = buffer.lines_from(2);
        assert_eq!(lines[0].1, Bytes::from("three"));
        assert!(closed);
    }

    #[test]
    fn limit_bytes_cuts_the_stream() {
        let mut chunks = vec![Bytes::from("abc\n"), Bytes::from("def\n")];
        let mut budget = 6;
        trim_to_budget(&mut chunks, &mut budget);
        assert_eq!(chunks, [Bytes::from("abc\n"), Bytes::from("de")]);
        assert_eq!(budget, 0);
    }
}
