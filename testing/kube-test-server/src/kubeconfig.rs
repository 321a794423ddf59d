//! The kubeconfig clients use to reach the server.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;

/// Writes a kubeconfig with one cluster, user and context, all named `kube-test-server`, with
/// namespace `default`. JSON strings are valid YAML scalars, so values are quoted with serde_json.
pub fn write(
    path: &Path,
    url: &str,
    ca_pem: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<()> {
    let q = |s: &str| serde_json::to_string(s).expect("strings serialise");
    let mut cluster = format!("    server: {}\n", q(url));
    if let Some(ca) = ca_pem {
        let data = base64::engine::general_purpose::STANDARD.encode(ca);
        cluster.push_str(&format!("    certificate-authority-data: {}\n", q(&data)));
    }
    let user = match token {
        Some(token) => format!("    token: {}\n", q(token)),
        None => "    {}\n".to_string(),
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-test-server\n  cluster:\n{cluster}users:\n- name: kube-test-server\n  user:\n{user}contexts:\n- name: kube-test-server\n  context:\n    cluster: kube-test-server\n    user: kube-test-server\n    namespace: default\ncurrent-context: kube-test-server\npreferences: {{}}\n"
    );
    // The token is a credential: owner-only, like kubectl writes it.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
