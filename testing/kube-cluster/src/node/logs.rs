//! Container logs and the kubelet's HTTPS API.
//!
//! Each container instance's stdout and stderr go, line by line, to its own file in the CRI
//! log format (`<RFC3339Nano> <stream> <F|P> <text>`), under
//! `<data_dir>/pods/<uid>/logs/<container>/<restartCount>.log`, as a real runtime writes them.
//! The kubelet API serves them at `GET /containerLogs/{namespace}/{pod}/{container}` with the
//! query parameters the API server's `pods/log` proxy passes on (`follow`, `tailLines`,
//! `timestamps`, `sinceSeconds`, `sinceTime`, `limitBytes`, `previous`), and `GET /healthz`.
//!
//! Clients are authenticated by TLS client certificate against `client_ca_pem` (the API server
//! presents its kubelet client certificate); a client without one may only ask for `/healthz`
//! and gets 401 otherwise, like a kubelet with anonymous auth disabled. Any authenticated
//! client may read any log (no SubjectAccessReview).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch};

/// CRI splits longer lines into partial records.
const MAX_RECORD: usize = 16 * 1024;

/// One container instance's log file.
pub(super) struct LogFile {
    path: PathBuf,
    /// (records written, closed): followers wait on it.
    state: watch::Sender<(u64, bool)>,
}

impl LogFile {
    pub fn create(path: PathBuf) -> std::io::Result<Arc<LogFile>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::File::create(&path)?;
        Ok(Arc::new(LogFile {
            path,
            state: watch::channel((0, false)).0,
        }))
    }

    /// The instance has ended and its output is drained.
    pub fn close(&self) {
        self.state.send_modify(|s| s.1 = true);
    }

    fn is_closed(&self) -> bool {
        self.state.borrow().1
    }
}

/// Go's RFC3339Nano: trailing zeros of the fraction dropped.
pub(super) fn rfc3339_nano(t: DateTime<Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos == 0 {
        return format!("{base}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{base}.{}Z", frac.trim_end_matches('0'))
}

fn record(time: DateTime<Utc>, stream: &str, partial: bool, text: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{} {stream} {} ",
        rfc3339_nano(time),
        if partial { 'P' } else { 'F' }
    )
    .into_bytes();
    out.extend_from_slice(text);
    out.push(b'\n');
    out
}

/// Copies a process's stdout and stderr into `log`, line by line; ends at EOF of both.
pub(super) fn pump(
    log: Arc<LogFile>,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
    fn reader(
        mut input: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        stream: &'static str,
        tx: mpsc::Sender<Vec<u8>>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut line = Vec::new();
            loop {
                let n = match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let now = Utc::now();
                line.extend_from_slice(&buf[..n]);
                let mut start = 0;
                while let Some(i) = line[start..].iter().position(|b| *b == b'\n') {
                    let end = start + i;
                    for chunk in split_long(&line[start..end]) {
                        let _ = tx.send(record(now, stream, chunk.1, chunk.0)).await;
                    }
                    start = end + 1;
                }
                line.drain(..start);
                while line.len() >= MAX_RECORD {
                    let rest = line.split_off(MAX_RECORD);
                    let _ = tx.send(record(now, stream, true, &line)).await;
                    line = rest;
                }
            }
            if !line.is_empty() {
                // An unterminated last line stays unterminated.
                let _ = tx.send(record(Utc::now(), stream, true, &line)).await;
            }
        })
    }
    let readers: Vec<_> = [
        stdout.map(|s| reader(s, "stdout", tx.clone())),
        stderr.map(|s| reader(s, "stderr", tx.clone())),
    ]
    .into_iter()
    .flatten()
    .collect();
    drop(tx);
    tokio::spawn(async move {
        let file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&log.path)
            .await;
        let mut file = match file {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(path = %log.path.display(), error = %e, "cannot open a container log");
                None
            }
        };
        while let Some(bytes) = rx.recv().await {
            if let Some(f) = file.as_mut() {
                if f.write_all(&bytes).await.is_err() || f.flush().await.is_err() {
                    file = None;
                    continue;
                }
                log.state.send_modify(|s| s.0 += 1);
            }
        }
        for r in readers {
            let _ = r.await;
        }
    })
}

/// `(text, partial)` chunks of at most MAX_RECORD bytes; the last one is the full line's end.
fn split_long(line: &[u8]) -> Vec<(&[u8], bool)> {
    if line.len() <= MAX_RECORD {
        return vec![(line, false)];
    }
    let chunks: Vec<&[u8]> = line.chunks(MAX_RECORD).collect();
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c, i != last))
        .collect()
}

/// One parsed CRI log record.
#[derive(Debug, PartialEq)]
pub(super) struct Record<'a> {
    pub time: DateTime<Utc>,
    pub partial: bool,
    pub text: &'a [u8],
}

pub(super) fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    Some(Record {
        time: DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc),
        partial: tag == b"P",
        text,
    })
}

/// The log query a kubelet accepts.
#[derive(Debug, Default, PartialEq)]
pub(super) struct LogQuery {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    pub limit_bytes: Option<i64>,
}

fn parse_bool(v: &str) -> Option<bool> {
    // Go's strconv.ParseBool.
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn parse_query(query: Option<&str>, now: DateTime<Utc>) -> Result<LogQuery, String> {
    let mut q = LogQuery::default();
    let mut since_seconds = None;
    let mut since_time = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        let flag = |v: &str| parse_bool(v).ok_or_else(|| format!("invalid value for {key}: {v:?}"));
        let int = |v: &str| {
            v.parse::<i64>()
                .map_err(|_| format!("invalid value for {key}: {v:?}"))
        };
        match key {
            "follow" => q.follow = flag(&value)?,
            "previous" => q.previous = flag(&value)?,
            "timestamps" => q.timestamps = flag(&value)?,
            "tailLines" => q.tail_lines = Some(int(&value)?),
            "limitBytes" => q.limit_bytes = Some(int(&value)?),
            "sinceSeconds" => since_seconds = Some(int(&value)?),
            "sinceTime" => {
                since_time = Some(
                    DateTime::parse_from_rfc3339(&value)
                        .map_err(|e| format!("invalid sinceTime {value:?}: {e}"))?
                        .with_timezone(&Utc),
                )
            }
            _ => {}
        }
    }
    if since_seconds.is_some() && since_time.is_some() {
        return Err("at most one of sinceTime or sinceSeconds may be specified".into());
    }
    if let Some(s) = since_seconds {
        if s < 1 {
            return Err("sinceSeconds must be greater than 0".into());
        }
        q.since = Some(now - chrono::Duration::seconds(s));
    }
    if since_time.is_some() {
        q.since = since_time;
    }
    if q.limit_bytes.is_some_and(|l| l < 1) {
        return Err("limitBytes must be a positive integer".into());
    }
    Ok(q)
}

/// Renders complete records (`data` holds whole lines only) with the query's filters.
/// `budget` is what `limitBytes` still allows; it is decreased.
fn render_records(
    data: &[u8],
    timestamps: bool,
    since: Option<DateTime<Utc>>,
    budget: &mut Option<i64>,
    out: &mut Vec<u8>,
) {
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if budget.is_some_and(|b| b <= 0) {
            return;
        }
        let Some(r) = parse_record(line) else {
            continue;
        };
        if since.is_some_and(|s| r.time < s) {
            continue;
        }
        let mut rendered = Vec::with_capacity(r.text.len() + 40);
        if timestamps {
            rendered.extend_from_slice(rfc3339_nano(r.time).as_bytes());
            rendered.push(b' ');
        }
        rendered.extend_from_slice(r.text);
        if !r.partial {
            rendered.push(b'\n');
        }
        if let Some(b) = budget {
            let take = rendered.len().min(*b as usize);
            rendered.truncate(take);
            *b -= take as i64;
        }
        out.extend_from_slice(&rendered);
    }
}

/// The start of the last `n` records of `data` (whole lines).
fn tail_start(data: &[u8], n: i64) -> usize {
    if n < 0 {
        return 0;
    }
    let mut count = 0;
    // data ends with '\n'; skip it, then count newlines backwards.
    let end = data.len().saturating_sub(1);
    for i in (0..end).rev() {
        if data[i] == b'\n' {
            count += 1;
            if count == n {
                return i + 1;
            }
        }
    }
    if n == 0 { data.len() } else { 0 }
}

/// The complete lines of `data`: up to and including its last newline.
fn complete(data: &[u8]) -> &[u8] {
    match data.iter().rposition(|b| *b == b'\n') {
        Some(i) => &data[..=i],
        None => &[],
    }
}

/// The logs of one container of one pod.
#[derive(Default)]
struct ContainerLogs {
    /// Instances, oldest first; only the last two are kept.
    instances: Vec<Arc<LogFile>>,
    /// Why the container is not running (None: running, or terminated for good).
    waiting: Option<String>,
}

struct PodLogs {
    uid: String,
    containers: BTreeMap<String, ContainerLogs>,
}

/// Every pod's logs, keyed by namespace and name (the newest pod of that name).
#[derive(Default)]
pub(super) struct LogRegistry {
    pods: Mutex<HashMap<(String, String), PodLogs>>,
}

impl LogRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), PodLogs>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register_pod(&self, namespace: &str, name: &str, uid: &str, containers: &[String]) {
        self.lock().insert(
            (namespace.into(), name.into()),
            PodLogs {
                uid: uid.into(),
                containers: containers
                    .iter()
                    .map(|c| (c.clone(), ContainerLogs::default()))
                    .collect(),
            },
        );
    }

    fn with_container(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        container: &str,
        f: impl FnOnce(&mut ContainerLogs),
    ) {
        let mut pods = self.lock();
        if let Some(pod) = pods.get_mut(&(namespace.to_string(), name.to_string()))
            && pod.uid == uid
        {
            f(pod.containers.entry(container.to_string()).or_default());
        }
    }

    /// Records what the container is waiting for (None: running, or terminated for good).
    pub fn set_waiting(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        container: &str,
        waiting: Option<&str>,
    ) {
        self.with_container(namespace, name, uid, container, |c| {
            c.waiting = waiting.map(str::to_string);
        });
    }

    /// A new instance of the container starts writing to `log`.
    pub fn add_instance(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        container: &str,
        log: Arc<LogFile>,
    ) {
        self.with_container(namespace, name, uid, container, |c| {
            c.instances.push(log);
            while c.instances.len() > 2 {
                let old = c.instances.remove(0);
                let _ = std::fs::remove_file(&old.path);
            }
        });
    }

    /// The pod is gone: its logs go with it (followers see the end of the stream).
    pub fn remove_pod(&self, namespace: &str, name: &str, uid: &str) {
        let mut pods = self.lock();
        let key = (namespace.to_string(), name.to_string());
        if pods.get(&key).is_some_and(|p| p.uid == uid)
            && let Some(pod) = pods.remove(&key)
        {
            for c in pod.containers.values() {
                for i in &c.instances {
                    i.close();
                }
            }
        }
    }

    /// The log file a request is for, or the status and message a kubelet answers with.
    fn find(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        previous: bool,
    ) -> Result<Arc<LogFile>, (StatusCode, String)> {
        let pods = self.lock();
        let pod = pods
            .get(&(namespace.to_string(), name.to_string()))
            .ok_or_else(|| {
                (
                    StatusCode::NOT_FOUND,
                    format!("pod \"{name}_{namespace}\" does not exist\n"),
                )
            })?;
        let c = pod.containers.get(container).ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("container \"{container}\" not found in pod \"{name}_{namespace}\"\n"),
            )
        })?;
        let bad = |m: String| Err((StatusCode::BAD_REQUEST, m));
        // Waiting with an instance behind it: the last instance is dead (lastState), a next
        // one is to come; both the current and the previous log are that last instance.
        let last_is_dead = c.waiting.is_some() && !c.instances.is_empty();
        if previous {
            let index = if last_is_dead {
                c.instances.len().checked_sub(1)
            } else {
                c.instances.len().checked_sub(2)
            };
            return match index.and_then(|i| c.instances.get(i)) {
                Some(log) => Ok(log.clone()),
                None => bad(format!(
                    "previous terminated container \"{container}\" in pod \"{name}\" not found"
                )),
            };
        }
        if let Some(log) = c.instances.last() {
            return Ok(log.clone());
        }
        bad(match c.waiting.as_deref() {
            Some("ErrImagePull") => format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: image can't be pulled"
            ),
            Some("ImagePullBackOff") => format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: trying and failing to pull image"
            ),
            Some(other) => {
                format!("container \"{container}\" in pod \"{name}\" is waiting to start: {other}")
            }
            None => format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start - no logs yet"
            ),
        })
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(body.into()).boxed_unsync())
        .expect("valid response parts")
}

/// Serves the kubelet API on `listener` until `shutdown`.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    logs: Arc<LogRegistry>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = super::stopped(&mut shutdown) => return,
        };
        let (tcp, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "kubelet API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let logs = logs.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "kubelet API: TLS handshake failed");
                    return;
                }
            };
            let authenticated = stream
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            let service = hyper::service::service_fn(move |req| {
                let logs = logs.clone();
                let shutdown = shutdown.clone();
                async move { Ok::<_, Infallible>(handle(req, authenticated, &logs, shutdown).await) }
            });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "kubelet API connection");
            }
        });
    }
}

async fn handle<B>(
    req: Request<B>,
    authenticated: bool,
    logs: &LogRegistry,
    shutdown: watch::Receiver<bool>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    if !authenticated {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let Some(rest) = path.strip_prefix("/containerLogs/") else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    if req.method() != http::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let parts: Vec<String> = rest.split('/').map(percent_decode).collect();
    let [namespace, pod, container] = parts.as_slice() else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    if container.is_empty() {
        return text(StatusCode::BAD_REQUEST, "missing container name\n");
    }
    let query = match parse_query(req.uri().query(), Utc::now()) {
        Ok(q) => q,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let log = match logs.find(namespace, pod, container, query.previous) {
        Ok(l) => l,
        Err((status, message)) => return text(status, message),
    };
    match stream_log(log, query, shutdown).await {
        Ok(body) => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/plain")
            .body(body)
            .expect("valid response parts"),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// The body of a log response; with `follow`, it streams until the instance has ended and the
/// file is drained.
async fn stream_log(
    log: Arc<LogFile>,
    query: LogQuery,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Body> {
    let mut state = log.state.subscribe();
    // Closed before the read: if it was, the read sees everything.
    let closed_before = log.is_closed();
    let data = tokio::fs::read(&log.path)
        .await
        .with_context(|| format!("read {}", log.path.display()))?;
    let data = complete(&data);
    let start = query.tail_lines.map(|n| tail_start(data, n)).unwrap_or(0);
    let mut budget = query.limit_bytes;
    let mut first = Vec::new();
    render_records(
        &data[start..],
        query.timestamps,
        query.since,
        &mut budget,
        &mut first,
    );
    if !query.follow || closed_before || budget.is_some_and(|b| b <= 0) {
        return Ok(Full::new(Bytes::from(first)).boxed_unsync());
    }
    let mut offset = data.len() as u64;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        let mut file = match tokio::fs::File::open(&log.path).await {
            Ok(f) => f,
            Err(_) => return,
        };
        loop {
            let closed = log.is_closed();
            // Read what was appended since `offset`.
            let mut chunk = Vec::new();
            if file.seek(std::io::SeekFrom::Start(offset)).await.is_err()
                || file.read_to_end(&mut chunk).await.is_err()
            {
                return;
            }
            let whole = complete(&chunk);
            offset += whole.len() as u64;
            let mut out = Vec::new();
            render_records(whole, query.timestamps, query.since, &mut budget, &mut out);
            if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                return;
            }
            if closed || budget.is_some_and(|b| b <= 0) {
                return;
            }
            tokio::select! {
                changed = state.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
                _ = super::stopped(&mut shutdown) => return,
                // A pod removed from the registry drops nothing here; poll now and then too.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Ok(StreamBody::new(stream).boxed_unsync())
}

/// The rustls configuration of the kubelet API: the serving certificate, and client
/// certificates verified against `client_ca_pem` when presented.
pub(super) fn tls_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("parse the kubelet serving certificate")?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the kubelet serving certificate PEM holds no certificate"
    );
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .context("parse the kubelet serving key")?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots
            .add(ca.context("parse the client CA")?)
            .context("add the client CA")?;
    }
    anyhow::ensure!(!roots.is_empty(), "the client CA PEM holds no certificate");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .context("build the client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("the kubelet serving certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn timestamps_are_go_rfc3339_nano() {
        assert_eq!(
            rfc3339_nano(at("2024-05-01T10:00:00Z")),
            "2024-05-01T10:00:00Z"
        );
        assert_eq!(
            rfc3339_nano(at("2024-05-01T10:00:00.120000000Z")),
            "2024-05-01T10:00:00.12Z"
        );
        assert_eq!(
            rfc3339_nano(at("2024-05-01T10:00:00.000000001Z")),
            "2024-05-01T10:00:00.000000001Z"
        );
    }

    #[test]
    fn records_round_trip() {
        let r = record(
            at("2024-05-01T10:00:00.5Z"),
            "stderr",
            false,
            b"hello world",
        );
        assert_eq!(r, b"2024-05-01T10:00:00.5Z stderr F hello world\n");
        let parsed = parse_record(&r[..r.len() - 1]).unwrap();
        assert_eq!(parsed.text, b"hello world");
        assert!(!parsed.partial);
        assert_eq!(parsed.time, at("2024-05-01T10:00:00.5Z"));
        let long = vec![b'x'; MAX_RECORD + 10];
        let chunks = split_long(&long);
        assert_eq!(chunks.len(), 2);
        assert!(chunks[0].1 && !chunks[1].1);
        assert_eq!(chunks[1].0.len(), 10);
    }

    #[test]
    fn queries_parse_like_a_kubelet() {
        let now = at("2024-05-01T10:00:00Z");
        let q = parse_query(
            Some("follow=true&tailLines=5&timestamps=1&limitBytes=100&sinceSeconds=10"),
            now,
        )
        .unwrap();
        assert!(q.follow && q.timestamps && !q.previous);
        assert_eq!(q.tail_lines, Some(5));
        assert_eq!(q.limit_bytes, Some(100));
        assert_eq!(q.since, Some(at("2024-05-01T09:59:50Z")));
        let q = parse_query(
            Some("sinceTime=2024-05-01T09%3A00%3A00Z&previous=true"),
            now,
        )
        .unwrap();
        assert_eq!(q.since, Some(at("2024-05-01T09:00:00Z")));
        assert!(q.previous);
        assert!(parse_query(Some("follow=yes"), now).is_err());
        assert!(parse_query(Some("sinceSeconds=1&sinceTime=2024-05-01T09:00:00Z"), now).is_err());
        assert!(parse_query(Some("limitBytes=0"), now).is_err());
        assert_eq!(parse_query(None, now).unwrap(), LogQuery::default());
    }

    fn sample() -> Vec<u8> {
        let mut data = Vec::new();
        for (i, t) in [
            "2024-05-01T10:00:01Z",
            "2024-05-01T10:00:02Z",
            "2024-05-01T10:00:03Z",
        ]
        .iter()
        .enumerate()
        {
            data.extend(record(
                at(t),
                "stdout",
                false,
                format!("line{i}").as_bytes(),
            ));
        }
        data.extend(record(
            at("2024-05-01T10:00:04Z"),
            "stdout",
            true,
            b"partial",
        ));
        data
    }

    #[test]
    fn tail_since_and_limit_select_like_a_kubelet() {
        let data = sample();
        let render = |tail: Option<i64>, since: Option<&str>, limit: Option<i64>, ts: bool| {
            let start = tail.map(|n| tail_start(&data, n)).unwrap_or(0);
            let mut budget = limit;
            let mut out = Vec::new();
            render_records(&data[start..], ts, since.map(at), &mut budget, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            render(None, None, None, false),
            "line0\nline1\nline2\npartial"
        );
        assert_eq!(render(Some(2), None, None, false), "line2\npartial");
        assert_eq!(render(Some(0), None, None, false), "");
        assert_eq!(
            render(Some(10), None, None, false),
            "line0\nline1\nline2\npartial"
        );
        assert_eq!(
            render(None, Some("2024-05-01T10:00:02Z"), None, false),
            "line1\nline2\npartial"
        );
        assert_eq!(render(None, None, Some(8), false), "line0\nli");
        assert_eq!(
            render(Some(1), None, None, true),
            "2024-05-01T10:00:04Z partial"
        );
        assert_eq!(complete(b"a\nb"), b"a\n");
        assert_eq!(complete(b"ab"), b"");
    }

    #[test]
    fn the_registry_answers_like_a_kubelet() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogRegistry::default();
        logs.register_pod("ns", "p", "u1", &["c".to_string()]);
        let err = |r: Result<Arc<LogFile>, (StatusCode, String)>| r.err().unwrap();
        assert_eq!(
            err(logs.find("ns", "q", "c", false)).0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            err(logs.find("ns", "p", "x", false)).0,
            StatusCode::NOT_FOUND
        );
        logs.set_waiting("ns", "p", "u1", "c", Some("ImagePullBackOff"));
        assert_eq!(
            err(logs.find("ns", "p", "c", false)).1,
            "container \"c\" in pod \"p\" is waiting to start: trying and failing to pull image"
        );
        let first = LogFile::create(dir.path().join("0.log")).unwrap();
        logs.add_instance("ns", "p", "u1", "c", first.clone());
        logs.set_waiting("ns", "p", "u1", "c", None);
        assert!(Arc::ptr_eq(
            &logs.find("ns", "p", "c", false).unwrap(),
            &first
        ));
        let e = err(logs.find("ns", "p", "c", true));
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.1,
            "previous terminated container \"c\" in pod \"p\" not found"
        );
        // Crashed, waiting to restart: the current log is the crashed one, and so is previous.
        logs.set_waiting("ns", "p", "u1", "c", Some("CrashLoopBackOff"));
        assert!(Arc::ptr_eq(
            &logs.find("ns", "p", "c", false).unwrap(),
            &first
        ));
        assert!(Arc::ptr_eq(
            &logs.find("ns", "p", "c", true).unwrap(),
            &first
        ));
        let second = LogFile::create(dir.path().join("1.log")).unwrap();
        logs.add_instance("ns", "p", "u1", "c", second.clone());
        logs.set_waiting("ns", "p", "u1", "c", None);
        assert!(Arc::ptr_eq(
            &logs.find("ns", "p", "c", false).unwrap(),
            &second
        ));
        assert!(Arc::ptr_eq(
            &logs.find("ns", "p", "c", true).unwrap(),
            &first
        ));
        // Another uid does not remove the pod's logs.
        logs.remove_pod("ns", "p", "other");
        assert!(logs.find("ns", "p", "c", false).is_ok());
        logs.remove_pod("ns", "p", "u1");
        assert!(second.is_closed());
        assert_eq!(
            err(logs.find("ns", "p", "c", false)).0,
            StatusCode::NOT_FOUND
        );
    }
}
