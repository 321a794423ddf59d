//! A fault-injecting HTTPS proxy in front of the real kube-apiserver.
//!
//! Fault tests point their clients at the proxy instead of the API server. The proxy terminates
//! TLS with its own serving certificate (signed by the cluster CA), forwards every request to the
//! upstream API server over TLS (verifying it with the cluster CA) and relays the answer:
//! status, headers (minus hop-by-hop ones) and body, streamed in both directions without
//! buffering, so watches (`watch=true`) and log follows (`pods/{name}/log?follow=true`) work as
//! they do against the API server itself. Clients may speak HTTP/1.1 or HTTP/2 (ALPN `h2`, as
//! kubectl does); the proxy picks whichever the upstream offers on its own side.
//!
//! Clients of the proxy must authenticate with bearer tokens: the `Authorization` header is
//! passed through unchanged, but a client certificate presented to the proxy ends at the proxy
//! (TLS is terminated there) and cannot be forwarded, so the API server would see an anonymous
//! request. [`FaultProxy::write_kubeconfig`] writes a kubeconfig that uses a token.
//!
//! Protocol upgrades (`exec`, `attach`, `port-forward` over SPDY or WebSockets) are not relayed.
//!
//! What the proxy does to requests is set with [`FaultProxy::set_faults`] ([`ApiFault`], the
//! fault model of the old simulated server): 500s and 503s, lost replies (the request is carried
//! out, then the reply replaced by an error), slow requests; [`FaultProxy::drop_watches`] cuts
//! every streaming response in flight, and [`FaultProxy::shutdown`] makes the cluster vanish.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt as _, Full, combinators::UnsyncBoxBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

#[cfg(test)]
mod tests;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
type UpstreamClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Incoming>;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Misbehaviour for the next `count` API requests that match.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiFault {
    /// HTTP method to match (`POST`, case-insensitive); any when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// A substring of the request path (without the query) to match (`/jobs`); any when absent.
    #[serde(default)]
    pub path_contains: Option<String>,
    /// How many matching requests are affected.
    #[serde(default = "one")]
    pub count: u32,
    /// Delay before the request is forwarded.
    #[serde(default)]
    pub delay_ms: u64,
    /// Answer with this status code (a `Status` body) instead of forwarding the request.
    #[serde(default)]
    pub status: Option<u16>,
    /// Forward the request and let the API server carry it out, then discard its reply and
    /// answer with `status` anyway: a reply lost after the write happened, so that a client's
    /// retry meets its own object. Without `status` the request is simply forwarded.
    #[serde(default)]
    pub after_apply: bool,
}

fn one() -> u32 {
    1
}

impl Default for ApiFault {
    /// Matches any request, once, and changes nothing until a field says what to do.
    fn default() -> Self {
        ApiFault {
            method: None,
            path_contains: None,
            count: one(),
            delay_ms: 0,
            status: None,
            after_apply: false,
        }
    }
}

/// What a matching fault asks the proxy to do with one request.
#[derive(Clone, Debug, Default, PartialEq)]
struct FaultAction {
    delay: Duration,
    status: Option<u16>,
    after_apply: bool,
}

/// One request the proxy saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxiedRequest {
    pub method: String,
    /// The path with its query (`/api/v1/namespaces/a/pods?watch=true`).
    pub path: String,
    /// The status answered (the injected one for a faulted request); 0 while no answer has
    /// been given yet, or when the client went away before one was.
    pub status: u16,
}

/// The API server behind the proxy.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// The CA that signed the API server's serving certificate, PEM.
    pub ca_pem: String,
}

/// State shared by the listener, every connection and the [`FaultProxy`] handle.
struct Shared {
    /// The upstream URL without a trailing `/`; request paths are appended to it.
    base: String,
    client: UpstreamClient,
    faults: Mutex<Vec<ApiFault>>,
    requests: Mutex<Vec<ProxiedRequest>>,
    /// Bumped by `drop_watches`: every streaming response started before is cut.
    watch_epoch: watch::Sender<u64>,
    /// Set once the proxy shuts down: every connection and response is cut.
    closed: watch::Sender<bool>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Consumes one use of the first fault matching the request, if any.
    fn take_fault(&self, method: &str, path: &str) -> Option<FaultAction> {
        let mut faults = lock(&self.faults);
        let index = faults.iter().position(|f| {
            f.count > 0
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && f.path_contains.as_deref().is_none_or(|p| path.contains(p))
        })?;
        let fault = &mut faults[index];
        fault.count -= 1;
        let action = FaultAction {
            delay: Duration::from_millis(fault.delay_ms),
            status: fault.status,
            after_apply: fault.after_apply,
        };
        if fault.count == 0 {
            faults.remove(index);
        }
        Some(action)
    }

    fn record(&self, method: String, path: String) -> usize {
        let mut requests = lock(&self.requests);
        requests.push(ProxiedRequest {
            method,
            path,
            status: 0,
        });
        requests.len() - 1
    }

    fn set_status(&self, index: usize, status: u16) {
        if let Some(request) = lock(&self.requests).get_mut(index) {
            request.status = status;
        }
    }

    /// Resolves when a response to a request that starts now must be cut: at the next
    /// `drop_watches` for a streaming one, and at shutdown for every one.
    fn cut_signal(&self, streaming: bool) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut epoch = self.watch_epoch.subscribe();
        let closed = self.closed.subscribe();
        Box::pin(async move {
            let dropped = async {
                if streaming {
                    // An error means the proxy is gone: cut as well.
                    let _ = epoch.changed().await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = dropped => {}
                () = wait_closed(closed) => {}
            }
        })
    }

    fn upstream_request(&self, request: Request<Incoming>) -> anyhow::Result<Request<Incoming>> {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("{}{path}", self.base)
            .parse::<Uri>()
            .context("upstream URI")?;
        // The upstream connection's protocol is negotiated on its own; hyper picks the framing.
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        strip_hop_by_hop(&mut parts.headers);
        // Set again from the upstream URI.
        parts.headers.remove(header::HOST);
        Ok(Request::from_parts(parts, body))
    }
}

async fn wait_closed(mut closed: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means closed.
    let _ = closed.wait_for(|closed| *closed).await;
}

/// A fault-injecting proxy listening on `127.0.0.1`. Dropping it stops it as
/// [`FaultProxy::shutdown`] does, without waiting.
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port), serving with `cert_pem`/`key_pem` (which must name
    /// `127.0.0.1`), in front of `upstream`.
    pub async fn start(
        upstream: Upstream,
        cert_pem: &str,
        key_pem: &str,
    ) -> anyhow::Result<FaultProxy> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let base = upstream.url.trim_end_matches('/').to_string();
        let base_uri: Uri = base
            .parse()
            .with_context(|| format!("upstream URL {base}"))?;
        anyhow::ensure!(
            base_uri.scheme_str() == Some("https") && base_uri.authority().is_some(),
            "upstream URL {base} is not https://HOST:PORT"
        );

        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(upstream.ca_pem.as_bytes()) {
            roots
                .add(cert.context("upstream CA PEM")?)
                .context("upstream CA certificate")?;
        }
        anyhow::ensure!(!roots.is_empty(), "no certificate in the upstream CA PEM");
        let client_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);

        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("proxy serving certificate PEM")?;
        anyhow::ensure!(
            !certs.is_empty(),
            "no certificate in the proxy's certificate PEM"
        );
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("proxy key PEM")?;
        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("proxy serving certificate")?;
        server_tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));

        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the fault proxy")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            base,
            client,
            faults: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            watch_epoch: watch::Sender::new(0),
            closed: watch::Sender::new(false),
        });
        let task = tokio::spawn(serve(shared.clone(), listener, acceptor));
        tracing::debug!(%addr, upstream = %upstream.url, "fault proxy listening");
        Ok(FaultProxy {
            shared,
            addr,
            task: Some(task),
        })
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Replaces the fault list. Rules are used in order: each request takes one use of the
    /// first rule that matches it and has uses left; used-up rules are removed.
    pub fn set_faults(&self, faults: Vec<ApiFault>) {
        *lock(&self.shared.faults) = faults;
    }

    /// Cuts every streaming response in flight (watches and log
    /// follows): the client sees its stream end abruptly (an HTTP/1.1 connection is
    /// closed in the middle of the chunked body, an HTTP/2 stream is reset), as when an API
    /// server or a load balancer drops them. Streams started afterwards are not affected.
    pub fn drop_watches(&self) {
        self.shared.watch_epoch.send_modify(|epoch| *epoch += 1);
    }

    /// Every request seen so far, in the order they arrived.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Writes a kubeconfig pointing at the proxy: server = [`FaultProxy::url`], the cluster's
    /// CA, a bearer `token` (the only credential a proxy can pass on) and `namespace`.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        ca_pem: &str,
        token: &str,
        namespace: Option<&str>,
    ) -> anyhow::Result<()> {
        crate::kubeconfig::write(
            path,
            &self.url(),
            ca_pem,
            "ferry-fault-proxy",
            crate::kubeconfig::Credentials::Token(token),
            namespace,
        )
    }

    /// Stops listening and closes every open connection at once: to the proxy's clients the
    /// cluster is gone (in-flight responses break, new connections are refused).
    pub async fn shutdown(mut self) {
        self.shared.closed.send_replace(true);
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "fault proxy task failed");
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.closed.send_replace(true);
    }
}

/// Accepts connections until the proxy closes, then drops the listener and every connection.
async fn serve(shared: Arc<Shared>, listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor) {
    let mut connections = JoinSet::new();
    let closed = wait_closed(shared.closed.subscribe());
    tokio::pin!(closed);
    loop {
        tokio::select! {
            () = &mut closed => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(shared.clone(), acceptor.clone(), stream));
                }
                Err(error) => {
                    tracing::warn!(%error, "fault proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Aborting a connection's task drops its socket: the client sees the connection close.
    connections.shutdown().await;
    tracing::debug!("fault proxy stopped");
}

async fn serve_connection(
    shared: Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
) {
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%error, "fault proxy: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("fault proxy: TLS handshake timed out");
            return;
        }
    };
    let shared_closed = shared.closed.subscribe();
    let service = hyper::service::service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, request).await) }
    });
    let executor = ProxyExecutor {
        closed: shared_closed,
    };
    let builder = hyper_util::server::conn::auto::Builder::new(executor);
    if let Err(error) = builder.serve_connection(TokioIo::new(tls), service).await {
        tracing::debug!(%error, "fault proxy: connection ended with an error");
    }
}

/// Runs the tasks hyper spawns for a connection (one per HTTP/2 stream) until they end or the
/// proxy shuts down, so that no stream outlives the shutdown.
#[derive(Clone)]
struct ProxyExecutor {
    closed: watch::Receiver<bool>,
}

impl<F> hyper::rt::Executor<F> for ProxyExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, task: F) {
        let closed = self.closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = task => {}
                () = wait_closed(closed) => {}
            }
        });
    }
}

/// Whether the answer to this request is a long-lived stream that `drop_watches` cuts: a watch
/// (`?watch=true`, or a legacy `/api/v1/watch/...` or `/apis/GROUP/VERSION/watch/...` path) or a
/// log follow (`.../log?follow=true`).
fn is_streaming(uri: &Uri) -> bool {
    let path = uri.path();
    let flag = |name: &str| {
        uri.query().unwrap_or_default().split('&').any(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            key == name && matches!(value, "true" | "1")
        })
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let legacy_watch = match segments.first() {
        Some(&"api") => segments.get(2) == Some(&"watch"),
        Some(&"apis") => segments.get(3) == Some(&"watch"),
        _ => false,
    };
    flag("watch") || legacy_watch || (path.ends_with("/log") && flag("follow"))
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<ProxyBody> {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_string());
    let index = shared.record(method.clone(), path_and_query.clone());
    // Subscribed now, so that a `drop_watches` from here on cuts this response.
    let cut = shared.cut_signal(is_streaming(request.uri()));
    let fault = shared.take_fault(&method, &path);
    let response = answer(shared, request, fault, cut, &method, &path).await;
    let status = response.status().as_u16();
    tracing::debug!(%method, path = %path_and_query, status, "fault proxy request");
    shared.set_status(index, status);
    response
}

async fn answer(
    shared: &Shared,
    request: Request<Incoming>,
    fault: Option<FaultAction>,
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
    method: &str,
    path: &str,
) -> Response<ProxyBody> {
    if let Some(fault) = &fault {
        if !fault.delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(fault.delay) => {}
                // Nothing reaches the upstream once the proxy is gone.
                () = wait_closed(shared.closed.subscribe()) => return never_answer().await,
            }
        }
        if let Some(code) = fault.status
            && !fault.after_apply
        {
            return status_response(code, format!("injected fault: {code} for {method} {path}"));
        }
    }
    if *shared.closed.borrow() {
        return never_answer().await;
    }
    let response = match shared.upstream_request(request) {
        Ok(request) => tokio::select! {
            response = shared.client.request(request) => response.map_err(anyhow::Error::from),
            () = wait_closed(shared.closed.subscribe()) => return never_answer().await,
        },
        Err(error) => Err(error),
    };
    let response = match response {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(error = format!("{error:#}"), %method, %path, "fault proxy: upstream request failed");
            return status_response(
                502,
                format!("fault proxy: upstream request failed: {error:#}"),
            );
        }
    };
    if let Some(fault) = fault
        && let Some(code) = fault.status
    {
        // The upstream has carried the request out; the client never hears so.
        drop(response);
        return status_response(
            code,
            format!("injected fault after the request was carried out: {code} for {method} {path}"),
        );
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    let body = Relay {
        inner: body,
        cut: Some(cut),
        done: false,
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// What a request caught by the shutdown waits for: no answer must go out (the cluster is
/// gone), and the connection or task carrying it is dropped by the shutdown.
async fn never_answer() -> Response<ProxyBody> {
    std::future::pending().await
}

/// Removes the headers that belong to one connection, not to the message (RFC 9110 §7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

/// The `reason` the API server gives with a status code.
fn reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// An answer with a metav1 `Status` body, as the API server gives for errors.
fn status_response(code: u16, message: String) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let code = status.as_u16();
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason(code),
        "code": code,
    });
    let body = serde_json::to_vec(&body).expect("JSON values serialise");
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// An upstream response body relayed frame by frame, until it ends or is cut.
struct Relay {
    inner: Incoming,
    cut: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    done: bool,
}

impl Body for Relay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(cut) = this.cut.as_mut()
            && cut.as_mut().poll(cx).is_ready()
        {
            this.cut = None;
            this.done = true;
            // An error, not an end: the server aborts the message instead of finishing it.
            return Poll::Ready(Some(Err("stream cut by the fault proxy".into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                this.done = true;
                Poll::Ready(Some(Err(error.into())))
            }
            other => other.map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
