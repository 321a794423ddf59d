//! A scripted API server for unit tests (kube's `tower-test` mock service): each test lists
//! the requests it expects and the answers, in order or routed by path.

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

pub type MockHandle = Handle<Request<Body>, Response<Body>>;

/// A client whose requests go to the returned handle.
pub fn client() -> (kube::Client, MockHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// A connection to the namespace `default` through a mock client.
pub fn connection() -> (crate::client::Connection, MockHandle) {
    let (client, handle) = client();
    let connection = crate::client::Connection {
        client,
        namespace: "default".into(),
        source: "test".into(),
        cluster_url: "https://mock.invalid/".into(),
    };
    (connection, handle)
}

pub fn json_response(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

pub fn text_response(text: &str) -> Response<Body> {
    Response::builder()
        .status(200)
        .body(Body::from(text.as_bytes().to_vec()))
        .unwrap()
}

pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason, "message": message, "code": code})
}

/// A request as the tests see it: method, path with query, and the JSON body if any.
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub body: Value,
}

/// Waits for the next request.
pub async fn next(
    handle: &mut MockHandle,
) -> (Seen, tower_test::mock::SendResponse<Response<Body>>) {
    use http_body_util::BodyExt as _;
    let (request, send) = handle
        .next_request()
        .await
        .expect("the client made a request");
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (
        Seen {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            body,
        },
        send,
    )
}
