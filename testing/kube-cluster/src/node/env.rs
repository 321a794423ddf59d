//! A container's environment as a kubelet computes it (`makeEnvironmentVariables`): `envFrom`
//! first, then `env` in order with `$(VAR)` expansion over what is defined so far plus the
//! service variables, then the service variables not already defined. ConfigMaps and Secrets
//! are fetched beforehand ([`fetch_sources`]) so that the resolution itself is pure and
//! testable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use serde_json::Value;

/// Data of the ConfigMaps and Secrets a container references; `None` = does not exist.
#[derive(Default, Debug)]
pub(super) struct Sources {
    pub configmaps: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    pub secrets: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

/// What the downward API and `resourceFieldRef` need to know about the node.
#[derive(Clone, Debug)]
pub(super) struct NodeFacts {
    pub node_name: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_bytes: u64,
}

/// The ConfigMap and Secret names `container` refers to in `env` and `envFrom`.
pub(super) fn referenced(container: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        if let Some(name) = source["configMapRef"]["name"].as_str() {
            maps.insert(name.to_string());
        }
        if let Some(name) = source["secretRef"]["name"].as_str() {
            secrets.insert(name.to_string());
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let from = &var["valueFrom"];
        if let Some(name) = from["configMapKeyRef"]["name"].as_str() {
            maps.insert(name.to_string());
        }
        if let Some(name) = from["secretKeyRef"]["name"].as_str() {
            secrets.insert(name.to_string());
        }
    }
    (maps, secrets)
}

/// A ConfigMap's `data` and `binaryData` as bytes; `None` if it does not exist.
pub(super) async fn fetch_configmap(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(None) => Ok(None),
        Ok(Some(map)) => {
            let mut data: BTreeMap<String, Vec<u8>> = map
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            for (k, v) in map.binary_data.unwrap_or_default() {
                data.insert(k, v.0);
            }
            Ok(Some(data))
        }
        Err(e) => Err(format!("couldn't get configMap {namespace}/{name}: {e}")),
    }
}

/// A Secret's `data` (decoded) as bytes; `None` if it does not exist.
pub(super) async fn fetch_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(None) => Ok(None),
        Ok(Some(secret)) => {
            let mut data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            // stringData is write-only on the server, but harmless to honour.
            for (k, v) in secret.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            Ok(Some(data))
        }
        Err(e) => Err(format!("couldn't get secret {namespace}/{name}: {e}")),
    }
}

/// Fetches everything `container` references. An API error (other than not found) is an
/// error: the kubelet then reports CreateContainerConfigError and retries.
pub(super) async fn fetch_sources(
    client: &kube::Client,
    namespace: &str,
    container: &Value,
) -> Result<Sources, String> {
    let (maps, secrets) = referenced(container);
    let mut sources = Sources::default();
    for name in maps {
        let data = fetch_configmap(client, namespace, &name).await?;
        sources.configmaps.insert(name, data);
    }
    for name in secrets {
        let data = fetch_secret(client, namespace, &name).await?;
        sources.secrets.insert(name, data);
    }
    Ok(sources)
}

/// The variables a kubelet sets for the `kubernetes` service of the default namespace. There
/// is no service proxy on this node, so they point at the API server's own address.
pub(super) fn service_env(api_server: SocketAddr) -> Vec<(String, String)> {
    let host = api_server.ip().to_string();
    let port = api_server.port();
    let url = format!("tcp://{}", fmt_host_port(&host, port));
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
        ("KUBERNETES_PORT".into(), url.clone()),
        (format!("KUBERNETES_PORT_{port}_TCP"), url),
        (format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".into()),
        (format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.to_string()),
        (format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host),
    ]
}

fn fmt_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An ordered variable list where a later definition replaces the value in place.
#[derive(Default, Debug, Clone)]
pub(super) struct EnvList(pub Vec<(String, String)>);

impl EnvList {
    pub fn set(&mut self, name: String, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Resolves `container`'s environment. The error is the message of a
/// `CreateContainerConfigError`.
pub(super) fn resolve(
    pod: &Value,
    container: &Value,
    sources: &Sources,
    node: &NodeFacts,
    service: &[(String, String)],
) -> Result<EnvList, String> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut env = EnvList::default();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = source["prefix"].as_str().unwrap_or_default();
        for (field, kind, table) in [
            ("configMapRef", "configmap", &sources.configmaps),
            ("secretRef", "secret", &sources.secrets),
        ] {
            let reference = &source[field];
            if reference.is_null() {
                continue;
            }
            let name = reference["name"].as_str().unwrap_or_default();
            match table.get(name).and_then(Option::as_ref) {
                Some(data) => {
                    for (k, v) in data {
                        env.set(
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(v).into_owned(),
                        );
                    }
                }
                None if reference["optional"].as_bool() == Some(true) => {}
                None => return Err(format!("{kind} \"{name}\" not found")),
            }
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default().to_string();
        let from = &var["valueFrom"];
        let value = match var["value"].as_str() {
            Some(value) if !value.is_empty() => expand(value, |k| {
                env.get(k).or_else(|| {
                    service
                        .iter()
                        .find(|(s, _)| s == k)
                        .map(|(_, v)| v.as_str())
                })
            }),
            _ if from.is_object() => {
                if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                    field_ref(pod, path, &node.node_name)?
                } else if !from["resourceFieldRef"].is_null() {
                    let r = &from["resourceFieldRef"];
                    let target = match r["containerName"].as_str() {
                        Some(other) if !other.is_empty() => find_container(pod, other)
                            .ok_or_else(|| format!("container {other} not found in pod"))?,
                        _ => container,
                    };
                    resource_field(
                        target,
                        r["resource"].as_str().unwrap_or_default(),
                        r["divisor"].as_str(),
                        node,
                    )?
                } else {
                    let mut found = None;
                    for (field, kind, table) in [
                        ("configMapKeyRef", "ConfigMap", &sources.configmaps),
                        ("secretKeyRef", "Secret", &sources.secrets),
                    ] {
                        let reference = &from[field];
                        if reference.is_null() {
                            continue;
                        }
                        let ref_name = reference["name"].as_str().unwrap_or_default();
                        let key = reference["key"].as_str().unwrap_or_default();
                        let optional = reference["optional"].as_bool() == Some(true);
                        match table.get(ref_name).and_then(Option::as_ref) {
                            Some(data) => match data.get(key) {
                                Some(v) => found = Some(String::from_utf8_lossy(v).into_owned()),
                                None if optional => {}
                                None => {
                                    return Err(format!(
                                        "couldn't find key {key} in {kind} {namespace}/{ref_name}"
                                    ));
                                }
                            },
                            None if optional => {}
                            None => {
                                return Err(format!(
                                    "{} \"{ref_name}\" not found",
                                    kind.to_lowercase()
                                ));
                            }
                        }
                    }
                    match found {
                        Some(v) => v,
                        // An optional reference that does not resolve leaves the variable unset.
                        None => continue,
                    }
                }
            }
            _ => String::new(),
        };
        env.set(name, value);
    }
    for (k, v) in service {
        if env.get(k).is_none() {
            env.set(k.clone(), v.clone());
        }
    }
    Ok(env)
}

fn find_container<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["containers", "initContainers"]
        .iter()
        .flat_map(|f| pod["spec"][*f].as_array().into_iter().flatten())
        .find(|c| c["name"] == name)
}

/// Expands `$(VAR)` as Kubernetes does: a defined variable is replaced, an undefined one is
/// kept as written, `$$` is a literal `$`, and any other `$` is kept.
pub(super) fn expand<'a>(text: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match lookup(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A downward-API `fieldRef` for an environment variable (what `podFieldSelectorRuntimeValue`
/// supports). Pods here share the host's network, so both IPs are 127.0.0.1.
pub(super) fn field_ref(pod: &Value, path: &str, node_name: &str) -> Result<String, String> {
    let meta = &pod["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Ok(match path {
        "metadata.name" => text(&meta["name"]),
        "metadata.namespace" => text(&meta["namespace"]),
        "metadata.uid" => text(&meta["uid"]),
        "spec.nodeName" => pod["spec"]["nodeName"]
            .as_str()
            .unwrap_or(node_name)
            .to_string(),
        "spec.serviceAccountName" => pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        "status.podIP" | "status.hostIP" | "status.podIPs" | "status.hostIPs" => {
            "127.0.0.1".to_string()
        }
        _ => {
            for (prefix, field) in [
                ("metadata.labels['", "labels"),
                ("metadata.annotations['", "annotations"),
            ] {
                if let Some(key) = path.strip_prefix(prefix).and_then(|k| k.strip_suffix("']")) {
                    return Ok(text(&meta[field][key]));
                }
            }
            return Err(format!("unsupported fieldPath: {path}"));
        }
    })
}

/// `metadata.labels` / `metadata.annotations` as a downward-API volume file shows them:
/// `key="value"` lines sorted by key, values quoted like Go's `%q`.
pub(super) fn format_map(map: &Value) -> String {
    let mut lines: Vec<String> = map
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                serde_json::to_string(v.as_str().unwrap_or_default()).unwrap_or_default()
            )
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

/// `resourceFieldRef`: limits default to the node's allocatable (as on a real node); the value
/// is divided by `divisor` (default 1) and rounded up.
pub(super) fn resource_field(
    container: &Value,
    resource: &str,
    divisor: Option<&str>,
    node: &NodeFacts,
) -> Result<String, String> {
    let (section, kind) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource: {resource}"))?;
    if !matches!(section, "limits" | "requests") {
        return Err(format!("unsupported container resource: {resource}"));
    }
    let declared = container["resources"][section][kind]
        .as_str()
        .map(|q| parse_quantity(q).ok_or_else(|| format!("invalid quantity {q:?}")))
        .transpose()?;
    let divisor_nanos = match divisor {
        Some(d) if !d.is_empty() => {
            parse_quantity(d).ok_or_else(|| format!("invalid divisor {d:?}"))?
        }
        _ => NANO,
    };
    if divisor_nanos <= 0 {
        return Err(format!("invalid divisor {divisor:?}"));
    }
    let allocatable = |section: &str, bytes: u64| -> i128 {
        if section == "limits" {
            i128::from(bytes) * NANO
        } else {
            0
        }
    };
    let value = match kind {
        "cpu" => {
            let v = declared.unwrap_or(allocatable(section, node.cpu_millis) / 1000);
            // The kubelet works in millicores: ceil(milli(value) / milli(divisor)).
            let milli = ceil_div(v, NANO / 1000);
            let divisor_milli = ceil_div(divisor_nanos, NANO / 1000).max(1);
            ceil_div(milli, divisor_milli)
        }
        "memory" | "ephemeral-storage" => {
            let default = if kind == "memory" {
                node.memory_bytes
            } else {
                node.ephemeral_bytes
            };
            let v = declared.unwrap_or(allocatable(section, default));
            ceil_div(ceil_div(v, NANO), ceil_div(divisor_nanos, NANO).max(1))
        }
        other if other.starts_with("hugepages-") => {
            let v = declared.unwrap_or(0);
            ceil_div(ceil_div(v, NANO), ceil_div(divisor_nanos, NANO).max(1))
        }
        _ => return Err(format!("unsupported container resource: {resource}")),
    };
    Ok(value.to_string())
}

fn ceil_div(a: i128, b: i128) -> i128 {
    if a >= 0 { (a + b - 1) / b } else { a / b }
}

/// Nano-units per unit.
pub(super) const NANO: i128 = 1_000_000_000;

/// Parses a Kubernetes quantity (`100m`, `1.5Gi`, `2e3`, `512Ki`) into nano-units, so that
/// `1` is `1_000_000_000` and `1m` is `1_000_000`. `None` if it is not a quantity.
pub(super) fn parse_quantity(text: &str) -> Option<i128> {
    let text = text.trim();
    let (sign, text) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number == "." {
        return None;
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if frac_part.contains('.') {
        return None;
    }
    // The number as a decimal mantissa and a power of ten.
    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = digits.parse().ok()?;
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut binary: i128 = 1;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => binary = 1 << 10,
        "Mi" => binary = 1 << 20,
        "Gi" => binary = 1 << 30,
        "Ti" => binary = 1 << 40,
        "Pi" => binary = 1 << 50,
        "Ei" => binary = 1 << 60,
        s if s.starts_with(['e', 'E']) => exp10 += s[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    // value = mantissa * binary * 10^exp10, in nano-units: * 10^9.
    let exp = exp10 + 9;
    let scaled = mantissa.checked_mul(binary)?;
    let value = if exp >= 0 {
        scaled.checked_mul(10i128.checked_pow(exp as u32)?)?
    } else {
        // Below a nano-unit: rounded up, as Kubernetes rounds quantities up.
        ceil_div(scaled, 10i128.checked_pow((-exp) as u32)?)
    };
    Some(sign * value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts() -> NodeFacts {
        NodeFacts {
            node_name: "n1".into(),
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            ephemeral_bytes: 100 << 30,
        }
    }

    fn pod() -> Value {
        json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                          "labels": {"app": "x", "b": "q\"uote"}, "annotations": {"a": "1"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "runner",
                     "containers": [{"name": "main"}, {"name": "side", "resources": {"limits": {"memory": "64Mi"}}}]},
        })
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let vars = [("A", "1"), ("B", "x y")];
        let lookup = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        assert_eq!(expand("$(A)-$(B)", lookup), "1-x y");
        assert_eq!(expand("$$(A) $(MISSING) $", lookup), "$(A) $(MISSING) $");
        assert_eq!(expand("a$b $(A", lookup), "a$b $(A");
        assert_eq!(expand("$$$(A)", lookup), "$1");
    }

    #[test]
    fn field_refs_cover_what_a_kubelet_supports() {
        let pod = pod();
        assert_eq!(field_ref(&pod, "metadata.name", "n").unwrap(), "p");
        assert_eq!(field_ref(&pod, "metadata.namespace", "n").unwrap(), "ns");
        assert_eq!(field_ref(&pod, "metadata.uid", "n").unwrap(), "u-1");
        assert_eq!(field_ref(&pod, "metadata.labels['app']", "n").unwrap(), "x");
        assert_eq!(field_ref(&pod, "metadata.labels['none']", "n").unwrap(), "");
        assert_eq!(
            field_ref(&pod, "metadata.annotations['a']", "n").unwrap(),
            "1"
        );
        assert_eq!(field_ref(&pod, "spec.nodeName", "n").unwrap(), "n1");
        assert_eq!(
            field_ref(&pod, "spec.serviceAccountName", "n").unwrap(),
            "runner"
        );
        assert_eq!(field_ref(&pod, "status.podIP", "n").unwrap(), "127.0.0.1");
        assert!(field_ref(&pod, "spec.bogus", "n").is_err());
        assert_eq!(
            format_map(&pod["metadata"]["labels"]),
            "app=\"x\"\nb=\"q\\\"uote\""
        );
    }

    #[test]
    fn quantities_parse_exactly() {
        assert_eq!(parse_quantity("1"), Some(NANO));
        assert_eq!(parse_quantity("100m"), Some(NANO / 10));
        assert_eq!(parse_quantity("1.5"), Some(3 * NANO / 2));
        assert_eq!(parse_quantity("64Mi"), Some((64 << 20) * NANO));
        assert_eq!(parse_quantity("1k"), Some(1000 * NANO));
        assert_eq!(parse_quantity("2e3"), Some(2000 * NANO));
        assert_eq!(parse_quantity("1n"), Some(1));
        assert_eq!(parse_quantity("abc"), None);
        assert_eq!(parse_quantity("1Xi"), None);
    }

    #[test]
    fn resource_fields_round_up_and_default_to_allocatable() {
        let c = json!({"resources": {"limits": {"cpu": "1500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}}});
        let n = facts();
        assert_eq!(resource_field(&c, "limits.cpu", None, &n).unwrap(), "2");
        assert_eq!(
            resource_field(&c, "limits.cpu", Some("1m"), &n).unwrap(),
            "1500"
        );
        assert_eq!(resource_field(&c, "requests.cpu", None, &n).unwrap(), "1");
        assert_eq!(
            resource_field(&c, "limits.memory", None, &n).unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            resource_field(&c, "limits.memory", Some("1Mi"), &n).unwrap(),
            "64"
        );
        let empty = json!({});
        assert_eq!(resource_field(&empty, "limits.cpu", None, &n).unwrap(), "4");
        assert_eq!(
            resource_field(&empty, "limits.memory", None, &n).unwrap(),
            (8u64 << 30).to_string()
        );
        assert_eq!(
            resource_field(&empty, "requests.memory", None, &n).unwrap(),
            "0"
        );
        assert!(resource_field(&empty, "limits.bogus", None, &n).is_err());
    }

    #[test]
    fn environment_resolves_like_a_kubelet() {
        let pod = pod();
        let container = json!({
            "name": "main",
            "envFrom": [
                {"configMapRef": {"name": "cm"}, "prefix": "CM_"},
                {"secretRef": {"name": "missing", "optional": true}},
            ],
            "env": [
                {"name": "A", "value": "a"},
                {"name": "B", "value": "$(A)-$(CM_k)-$(KUBERNETES_SERVICE_PORT)-$(NOPE)"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nope", "optional": true}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"containerName": "side", "resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "EMPTY"},
                {"name": "A", "value": "again"},
            ],
        });
        let mut sources = Sources::default();
        sources.configmaps.insert(
            "cm".into(),
            Some(BTreeMap::from([("k".to_string(), b"v".to_vec())])),
        );
        sources.secrets.insert("missing".into(), None);
        sources.secrets.insert(
            "sec".into(),
            Some(BTreeMap::from([("token".to_string(), b"s3cret".to_vec())])),
        );
        let service = service_env("127.0.0.1:6443".parse().unwrap());
        let env = resolve(&pod, &container, &sources, &facts(), &service).unwrap();
        assert_eq!(env.get("CM_k"), Some("v"));
        assert_eq!(env.get("B"), Some("a-v-6443-$(NOPE)"));
        assert_eq!(env.get("POD"), Some("p"));
        assert_eq!(env.get("S"), Some("s3cret"));
        assert_eq!(env.get("OPT"), None);
        assert_eq!(env.get("MEM"), Some("64"));
        assert_eq!(env.get("EMPTY"), Some(""));
        assert_eq!(env.get("A"), Some("again"));
        assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("127.0.0.1"));
        assert_eq!(
            env.get("KUBERNETES_PORT_6443_TCP"),
            Some("tcp://127.0.0.1:6443")
        );
        // The redefinition keeps the first position.
        assert_eq!(env.0.iter().position(|(k, _)| k == "A"), Some(1));

        let missing_key = json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nope"}}}]});
        assert_eq!(
            resolve(&pod, &missing_key, &sources, &facts(), &service).unwrap_err(),
            "couldn't find key nope in ConfigMap ns/cm"
        );
        let missing_map = json!({"envFrom": [{"configMapRef": {"name": "other"}}]});
        assert_eq!(
            resolve(&pod, &missing_map, &sources, &facts(), &service).unwrap_err(),
            "configmap \"other\" not found"
        );
        assert_eq!(
            referenced(&container),
            (
                BTreeSet::from(["cm".to_string()]),
                BTreeSet::from(["missing".to_string(), "sec".to_string()])
            )
        );
    }
}
