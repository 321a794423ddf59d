//! The proxy in front of a small HTTPS upstream started by each test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

struct TestPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A CA and one serving certificate for 127.0.0.1 (shared by upstream and proxy, as in the
/// cluster, where both are signed by the cluster CA).
fn pki() -> TestPki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    let key = KeyPair::generate().unwrap();
    let cert_pem = leaf.signed_by(&key, &issuer).unwrap().pem();
    TestPki {
        ca_pem,
        cert_pem,
        key_pem: key.serialize_pem(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    authorization: Option<String>,
    body: String,
    at: Instant,
}

type StreamSender = mpsc::Sender<Bytes>;

/// A small HTTPS API server: records what it sees; `GET` answers JSON naming the path,
/// `POST` answers 201, `/teapot` 418, and a path containing `stream`, `watch=` or `follow=true` opens
/// a chunked stream whose chunks the test sends through [`TestUpstream::next_stream`].
struct TestUpstream {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    streams: mpsc::UnboundedReceiver<StreamSender>,
}

impl TestUpstream {
    async fn start(pki: &TestPki) -> TestUpstream {
        let certs = CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (streams_tx, streams) = mpsc::unbounded_channel();
        let state = (seen.clone(), streams_tx);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                let (seen, streams_tx) = state.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let seen = seen.clone();
                        let streams_tx = streams_tx.clone();
                        async move {
                            Ok::<_, Infallible>(upstream_handle(request, &seen, &streams_tx).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TestUpstream { url, seen, streams }
    }

    fn upstream(&self, pki: &TestPki) -> Upstream {
        Upstream {
            url: self.url.clone(),
            ca_pem: pki.ca_pem.clone(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The sender of the next streaming response the upstream opens.
    async fn next_stream(&mut self) -> StreamSender {
        tokio::time::timeout(WAIT, self.streams.recv())
            .await
            .expect("the upstream gets the streaming request")
            .unwrap()
    }
}

type UpstreamBody = UnsyncBoxBody<Bytes, Infallible>;

async fn upstream_handle(
    request: Request<Incoming>,
    seen: &Mutex<Vec<Seen>>,
    streams: &mpsc::UnboundedSender<StreamSender>,
) -> Response<UpstreamBody> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let path = parts.uri.path_and_query().unwrap().as_str().to_string();
    seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        path: path.clone(),
        authorization: parts
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    });
    let full = |code: u16, text: String| {
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .header("x-upstream", "yes")
            .body(Full::new(Bytes::from(text)).boxed_unsync())
            .unwrap()
    };
    if path.contains("stream") || path.contains("watch=") || path.contains("follow=true") {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        streams.send(tx).unwrap();
        let chunks = futures::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
        });
        return Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(StreamBody::new(chunks).boxed_unsync())
            .unwrap();
    }
    if path.starts_with("/teapot") {
        return full(418, "short and stout".into());
    }
    if parts.method == Method::POST {
        return full(
            201,
            format!("{{\"created\":{:?}}}", String::from_utf8_lossy(&body)),
        );
    }
    full(200, serde_json::json!({"path": path}).to_string())
}

type TestClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client of the proxy trusting the CA, offering HTTP/1.1 only or HTTP/2 only (ALPN).
fn client(pki: &TestPki, h2: bool) -> TestClient {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let connector = if h2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build(connector)
}

fn get(proxy: &FaultProxy, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("{}{path}", proxy.url()))
        .body(Full::default())
        .unwrap()
}

async fn text(response: Response<Incoming>) -> String {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

async fn start(pki: &TestPki) -> (TestUpstream, FaultProxy) {
    let upstream = TestUpstream::start(pki).await;
    let proxy = FaultProxy::start(upstream.upstream(pki), &pki.cert_pem, &pki.key_pem)
        .await
        .unwrap();
    (upstream, proxy)
}

/// The next data frame of a streaming body, within [`WAIT`].
async fn next_chunk(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("the stream moves within the wait")?;
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => return Some(Ok(data)),
                Err(_trailers) => continue,
            },
            Err(error) => return Some(Err(error)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_status_headers_and_body() {
    let pki = pki();
    let (upstream, proxy) = start(&pki).await;
    let client = client(&pki, false);

    let response = client
        .request(get(&proxy, "/api/v1/namespaces?limit=5"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(response.headers()["x-upstream"], "yes");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        text(response).await,
        r#"{"path":"/api/v1/namespaces?limit=5"}"#
    );

    let response = client.request(get(&proxy, "/teapot")).await.unwrap();
    assert_eq!(response.status().as_u16(), 418);
    assert_eq!(text(response).await, "short and stout");

    let post = Request::post(format!(
        "{}/api/v1/namespaces/default/configmaps",
        proxy.url()
    ))
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from_static(b"{\"kind\":\"ConfigMap\"}")))
    .unwrap();
    let response = client.request(post).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].path, "/api/v1/namespaces?limit=5");
    assert_eq!(seen[2].method, Method::POST);
    assert_eq!(seen[2].body, "{\"kind\":\"ConfigMap\"}");
    assert_eq!(
        proxy.requests(),
        vec![
            ProxiedRequest {
                method: "GET".into(),
                path: "/api/v1/namespaces?limit=5".into(),
                status: 200
            },
            ProxiedRequest {
                method: "GET".into(),
                path: "/teapot".into(),
                status: 418
            },
            ProxiedRequest {
                method: "POST".into(),
                path: "/api/v1/namespaces/default/configmaps".into(),
                status: 201
            },
        ]
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_reaches_the_upstream_through_a_kubeconfig() {
    let pki = pki();
    let (upstream, proxy) = start(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    proxy
        .write_kubeconfig(&path, &pki.ca_pem, "secret-token", None)
        .unwrap();

    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(config.cluster_url.to_string(), format!("{}/", proxy.url()));
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).unwrap();
    let answer = client
        .request_text(http::Request::get("/version").body(Vec::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(answer, r#"{"path":"/version"}"#);

    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer secret-token")
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_faults_answer_a_status_and_are_used_up() {
    let pki = pki();
    let (upstream, proxy) = start(&pki).await;
    let client = client(&pki, false);
    proxy.set_faults(vec![
        ApiFault {
            method: Some("get".into()),
            path_contains: Some("/pods".into()),
            count: 2,
            status: Some(500),
            ..ApiFault::default()
        },
        ApiFault {
            path_contains: Some("/pods".into()),
            status: Some(503),
            ..ApiFault::default()
        },
    ]);

    for _ in 0..2 {
        let response = client
            .request(get(&proxy, "/api/v1/namespaces/a/pods"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["content-type"], "application/json");
        let status: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["apiVersion"], "v1");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "InternalError");
        assert_eq!(status["code"], 500);
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("GET /api/v1/namespaces/a/pods"),
            "{status}"
        );
    }
    // A request the rules do not match goes through meanwhile.
    let response = client
        .request(get(&proxy, "/api/v1/namespaces/a/services"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The first rule is used up; the second applies once.
    let response = client
        .request(get(&proxy, "/api/v1/namespaces/a/pods"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let status: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
    assert_eq!(status["reason"], "ServiceUnavailable");
    assert_eq!(status["code"], 503);
    assert_eq!(
        upstream.seen().len(),
        1,
        "faulted requests are not forwarded"
    );
    // Then every rule is used up.
    let response = client
        .request(get(&proxy, "/api/v1/namespaces/a/pods"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].path, "/api/v1/namespaces/a/pods");
    let statuses: Vec<u16> = proxy.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 200, 503, 200]);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_apply_forwards_and_loses_the_reply() {
    let pki = pki();
    let (upstream, proxy) = start(&pki).await;
    let client = client(&pki, false);
    proxy.set_faults(vec![ApiFault {
        method: Some("POST".into()),
        path_contains: Some("/configmaps".into()),
        status: Some(500),
        after_apply: true,
        ..ApiFault::default()
    }]);
    let post = || {
        Request::post(format!(
            "{}/api/v1/namespaces/default/configmaps",
            proxy.url()
        ))
        .body(Full::new(Bytes::from_static(b"{\"name\":\"x\"}")))
        .unwrap()
    };
    let response = client.request(post()).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let status: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
    assert_eq!(status["kind"], "Status");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("after the request was carried out")
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "the request was carried out");
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].body, "{\"name\":\"x\"}");
    // The retry gets the real answer.
    let response = client.request(post()).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(upstream.seen().len(), 2);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_holds_the_request_back() {
    let pki = pki();
    let (upstream, proxy) = start(&pki).await;
    let client = client(&pki, false);
    let delay = Duration::from_millis(300);
    proxy.set_faults(vec![ApiFault {
        path_contains: Some("/secrets".into()),
        delay_ms: delay.as_millis() as u64,
        ..ApiFault::default()
    }]);
    let sent = Instant::now();
    let response = client
        .request(get(&proxy, "/api/v1/namespaces/a/secrets"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "a delay alone forwards");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].at.duration_since(sent) >= delay,
        "the upstream saw the request {:?} after it was sent",
        seen[0].at.duration_since(sent)
    );
    proxy.shutdown().await;
}

/// Opens a watch through `client`, checks that chunks arrive one by one as the upstream sends
/// them, and returns the open body with the upstream's sender.
async fn open_watch(
    upstream: &mut TestUpstream,
    proxy: &FaultProxy,
    client: &TestClient,
    path: &str,
) -> (Incoming, StreamSender) {
    let response = client.request(get(proxy, path)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let sender = upstream.next_stream().await;
    let mut body = response.into_body();
    for chunk in ["{\"type\":\"ADDED\"}\n", "{\"type\":\"MODIFIED\"}\n"] {
        sender.send(Bytes::from(chunk)).await.unwrap();
        // Each chunk arrives before the next is even sent: nothing is buffered.
        let got = next_chunk(&mut body).await.unwrap().unwrap();
        assert_eq!(got, chunk);
    }
    (body, sender)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_relayed_chunk_by_chunk_and_drop_watches_cuts_them() {
    let pki = pki();
    let (mut upstream, proxy) = start(&pki).await;
    let client = client(&pki, false);
    let (mut watch, watch_sender) = open_watch(
        &mut upstream,
        &proxy,
        &client,
        "/api/v1/namespaces/a/pods?watch=true&resourceVersion=1",
    )
    .await;
    // A chunked answer to a request that is no watch is not cut.
    let (mut other, other_sender) = open_watch(&mut upstream, &proxy, &client, "/stream").await;

    proxy.drop_watches();
    let end = next_chunk(&mut watch).await;
    assert!(matches!(end, Some(Err(_))), "the watch breaks off: {end:?}");
    tokio::time::timeout(WAIT, watch_sender.closed())
        .await
        .expect("the upstream side of the watch is closed too");

    other_sender
        .send(Bytes::from_static(b"more\n"))
        .await
        .unwrap();
    assert_eq!(next_chunk(&mut other).await.unwrap().unwrap(), "more\n");
    drop(other_sender);
    assert!(next_chunk(&mut other).await.is_none(), "ends cleanly");

    // A watch opened after the drop is not affected by it, and the proxy still serves.
    let (mut watch, watch_sender) = open_watch(
        &mut upstream,
        &proxy,
        &client,
        "/api/v1/namespaces/a/pods/x/log?follow=true",
    )
    .await;
    watch_sender
        .send(Bytes::from_static(b"line\n"))
        .await
        .unwrap();
    assert_eq!(next_chunk(&mut watch).await.unwrap().unwrap(), "line\n");
    proxy.drop_watches();
    assert!(matches!(next_chunk(&mut watch).await, Some(Err(_))));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served() {
    let pki = pki();
    let (mut upstream, proxy) = start(&pki).await;
    let client = client(&pki, true);
    let response = client.request(get(&proxy, "/api/v1/nodes")).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-upstream"], "yes");
    assert_eq!(text(response).await, r#"{"path":"/api/v1/nodes"}"#);

    proxy.set_faults(vec![ApiFault {
        status: Some(503),
        ..ApiFault::default()
    }]);
    let response = client.request(get(&proxy, "/api/v1/nodes")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    let (mut watch, _sender) =
        open_watch(&mut upstream, &proxy, &client, "/api/v1/pods?watch=1").await;
    proxy.drop_watches();
    assert!(matches!(next_chunk(&mut watch).await, Some(Err(_))));
    // The HTTP/2 connection itself survives a dropped stream.
    let response = client.request(get(&proxy, "/api/v1/nodes")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_http1_connections_and_refuses_new_ones() {
    shutdown_closes_connections_and_refuses_new_ones(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_http2_connections_and_refuses_new_ones() {
    shutdown_closes_connections_and_refuses_new_ones(true).await;
}

async fn shutdown_closes_connections_and_refuses_new_ones(h2: bool) {
    let pki = pki();
    let (mut upstream, proxy) = start(&pki).await;
    let client = client(&pki, h2);
    let address = proxy.url().trim_start_matches("https://").to_string();
    let (mut watch, _sender) =
        open_watch(&mut upstream, &proxy, &client, "/api/v1/pods?watch=true").await;
    // A request held back by a delay is in flight too.
    proxy.set_faults(vec![ApiFault {
        path_contains: Some("/slow".into()),
        delay_ms: 60_000,
        ..ApiFault::default()
    }]);
    let slow = tokio::spawn(client.request(get(&proxy, "/slow")));
    tokio::time::timeout(WAIT, async {
        while proxy.requests().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the proxy sees the slow request");

    proxy.shutdown().await;
    assert!(matches!(next_chunk(&mut watch).await, Some(Err(_))));
    let slow = tokio::time::timeout(WAIT, slow).await.unwrap().unwrap();
    assert!(slow.is_err(), "the held-back request fails: {slow:?}");
    let error = tokio::net::TcpStream::connect(&address).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        client
            .request(
                Request::get(format!("https://{address}/"))
                    .body(Full::default())
                    .unwrap()
            )
            .await
            .is_err()
    );
}

#[test]
fn streaming_requests_are_recognised() {
    let streaming = |uri: &str| is_streaming(&uri.parse().unwrap());
    assert!(streaming("/api/v1/namespaces/a/pods?watch=true"));
    assert!(streaming("/apis/batch/v1/jobs?labelSelector=x&watch=1"));
    assert!(streaming("/api/v1/watch/namespaces/a/pods"));
    assert!(streaming(
        "/api/v1/namespaces/a/pods/p/log?container=c&follow=true"
    ));
    assert!(!streaming("/api/v1/namespaces/a/pods/p/log?follow=false"));
    assert!(!streaming("/api/v1/namespaces/a/pods?watch=false"));
    assert!(!streaming(
        "/api/v1/namespaces/a/pods?labelSelector=watch%3Dtrue"
    ));
    assert!(!streaming("/api/v1/namespaces/a/configmaps/watch-list"));
    assert!(!streaming("/api/v1/namespaces/watch/pods"));
    assert!(streaming("/apis/batch/v1/watch/jobs"));
}

#[test]
fn faults_deserialise_with_the_old_defaults() {
    let fault: ApiFault =
        serde_json::from_str(r#"{"method":"POST","pathContains":"/jobs","status":500}"#).unwrap();
    assert_eq!(
        fault,
        ApiFault {
            method: Some("POST".into()),
            path_contains: Some("/jobs".into()),
            status: Some(500),
            ..ApiFault::default()
        }
    );
    assert_eq!(fault.count, 1);
}
