//! Kubeconfig files for the cluster's users. Written as JSON, which every kubeconfig reader
//! (kubectl, client-go, kube-rs) accepts since YAML is a superset of it.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::json;

/// How a kubeconfig's user proves who it is.
pub enum Credentials<'a> {
    /// A client certificate and key (PEM).
    Certificate { cert_pem: &'a str, key_pem: &'a str },
    /// A bearer token.
    Token(&'a str),
}

/// Writes a kubeconfig with one cluster, one user and one context (the current one).
pub fn write(
    path: &Path,
    server: &str,
    ca_pem: &str,
    user: &str,
    credentials: Credentials<'_>,
    namespace: Option<&str>,
) -> anyhow::Result<()> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user_entry = match credentials {
        Credentials::Certificate { cert_pem, key_pem } => json!({
            "client-certificate-data": b64(cert_pem),
            "client-key-data": b64(key_pem),
        }),
        Credentials::Token(token) => json!({ "token": token }),
    };
    let mut context = json!({ "cluster": "ferry-test", "user": user });
    if let Some(namespace) = namespace {
        context["namespace"] = json!(namespace);
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "ferry-test", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca_pem),
        }}],
        "users": [{ "name": user, "user": user_entry }],
        "contexts": [{ "name": "ferry-test", "context": context }],
        "current-context": "ferry-test",
    });
    let text = serde_json::to_string_pretty(&config)?;
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}
