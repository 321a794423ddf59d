//! The HTTP(S) listener: TLS, bearer-token auth, injected API faults and the request log, in
//! front of `api::handle`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::status::ApiError;
use crate::{Cluster, RequestRecord, api};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

pub fn json_response(code: u16, value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full(
            serde_json::to_vec(value).expect("JSON values serialise"),
        ))
        .expect("valid response parts")
}

pub fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.to_status())
}

/// Largest request body accepted (the real server's limit is 3 MiB).
const MAX_BODY: usize = 3 << 20;

pub async fn serve(
    cluster: Arc<Cluster>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut shutdown = cluster.shutdown.subscribe();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            _ = crate::stopped(&mut shutdown) => return,
        };
        let _ = stream.set_nodelay(true);
        let cluster = cluster.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let cluster = cluster.clone();
                async move { Ok::<_, Infallible>(handle(cluster, request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => builder.serve_connection(TokioIo::new(tls), service).await,
                    Err(error) => {
                        tracing::debug!(%error, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
}

/// The parsed request handed to the API layer.
#[derive(Debug)]
pub struct ApiRequest {
    pub method: http::Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl ApiRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

async fn handle(cluster: Arc<Cluster>, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or_default().to_string();
    let method = parts.method.to_string();

    let response = async {
        if let Some(expected) = &cluster.config.token {
            let given = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if given.strip_prefix("Bearer ").map(str::trim) != Some(expected.as_str()) {
                return (error_response(&ApiError::unauthorized()), String::new());
            }
        }
        let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return (
                    error_response(&ApiError::injected(
                        413,
                        format!("request body not read: {error}"),
                    )),
                    String::new(),
                );
            }
        };
        let body_text = String::from_utf8_lossy(&body).into_owned();
        let query = url::form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect();
        let request = ApiRequest {
            method: parts.method.clone(),
            path: path.clone(),
            query,
            headers: parts.headers,
            body,
        };

        let fault = if path.starts_with(crate::api::ADMIN_PREFIX) {
            None
        } else {
            cluster.faults.take_api_fault(&method, &path)
        };
        if let Some(fault) = &fault {
            if !fault.delay.is_zero() {
                tokio::time::sleep(fault.delay).await;
            }
            if let Some(code) = fault.status
                && !fault.after_apply
            {
                let error =
                    ApiError::injected(code, format!("injected fault: {code} for {method} {path}"));
                return (error_response(&error), body_text);
            }
        }
        let response = api::handle(&cluster, request).await;
        if let Some(fault) = fault
            && let Some(code) = fault.status
        {
            // The write happened; the client never hears so.
            let error = ApiError::injected(
                code,
                format!(
                    "injected fault after the request was carried out: {code} for {method} {path}"
                ),
            );
            return (error_response(&error), body_text);
        }
        (response, body_text)
    }
    .await;
    let (response, body) = response;
    tracing::debug!(%method, %path, query = %raw_query, status = response.status().as_u16(), "request");
    if !path.starts_with(crate::api::ADMIN_PREFIX) {
        cluster.record_request(RequestRecord {
            method,
            path,
            query: raw_query,
            status: response.status().as_u16(),
            body,
        });
    }
    response
}
