//! PATCH bodies: JSON merge patch (RFC 7386), Kubernetes strategic merge patch and JSON patch (RFC 6902).
//!
//! The server has no OpenAPI schema, so strategic merge patch takes its
//! per-field list strategy from a small table keyed by field name (see
//! `list_strategy`). That covers what clients of Jobs, Pods, ConfigMaps,
//! Secrets and object metadata send (kubectl patch/label/annotate, kube-rs
//! `Patch::Strategic`), which is all this test server needs.

use std::fmt;

use serde_json::{Map, Value};

/// A patch that could not be applied. The target is left unchanged whenever
/// this is returned, so the server can answer 422 without rolling back.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchError(pub String);

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatchError {}

fn err<T>(msg: impl Into<String>) -> Result<T, PatchError> {
    Err(PatchError(msg.into()))
}

// ---------------------------------------------------------------------------
// RFC 7386 JSON merge patch
// ---------------------------------------------------------------------------

/// Applies an RFC 7386 JSON merge patch: objects merge recursively, `null`
/// deletes a member, and anything else (arrays included) replaces wholesale.
/// It cannot fail, which is why it returns nothing.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Strategic merge patch
// ---------------------------------------------------------------------------

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

/// How a list-valued field is combined with the list in a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// Lists of objects merged element-wise, matching elements by this key.
    MergeKey(&'static str),
    /// Lists of scalars merged as a set (original order, new values appended).
    Set,
    /// The patch's list replaces the original (the default for any list).
    Replace,
}

/// The merge-key table: the strategy for a list field, chosen by the field's
/// *name only* (not its path), since the server has no schema. The names below
/// mean the same thing wherever they occur in the core and batch kinds:
///
/// | field | strategy |
/// |---|---|
/// | `containers`, `initContainers`, `ephemeralContainers`, `env`, `volumes`, `imagePullSecrets`, `resourceClaims` | merge by `name` |
/// | `ports` | merge by `containerPort` (by `port` if the elements have `port` but no `containerPort`, as in Service ports) |
/// | `volumeMounts` | merge by `mountPath` |
/// | `volumeDevices` | merge by `devicePath` |
/// | `conditions`, `addresses` | merge by `type` |
/// | `ownerReferences` | merge by `uid` |
/// | `hostAliases` | merge by `ip` |
/// | `topologySpreadConstraints` | merge by `topologyKey` |
/// | `finalizers` | scalar set |
/// | anything else (`tolerations`, `args`, `command`, ...) | replace |
fn list_strategy(field: &str, original: &[Value], patch: &[Value]) -> ListStrategy {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => ListStrategy::MergeKey("name"),
        "ports" => {
            let has = |k: &str| original.iter().chain(patch).any(|e| e.get(k).is_some());
            if !has("containerPort") && has("port") {
                ListStrategy::MergeKey("port")
            } else {
                ListStrategy::MergeKey("containerPort")
            }
        }
        "volumeMounts" => ListStrategy::MergeKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeKey("devicePath"),
        "conditions" | "addresses" => ListStrategy::MergeKey("type"),
        "ownerReferences" => ListStrategy::MergeKey("uid"),
        "hostAliases" => ListStrategy::MergeKey("ip"),
        "topologySpreadConstraints" => ListStrategy::MergeKey("topologyKey"),
        "finalizers" => ListStrategy::Set,
        _ => ListStrategy::Replace,
    }
}

/// Applies a Kubernetes strategic merge patch.
///
/// Like [`merge_patch`], except that list fields named in the merge-key table
/// (`list_strategy`) merge element-wise, and the directives `$patch`
/// (`merge`/`replace`/`delete`), `$retainKeys`, `$deleteFromPrimitiveList/<f>`
/// and `$setElementOrder/<f>` are understood. `$setElementOrder` is accepted
/// but not honoured: merged lists keep the original order with new elements
/// appended. No directive ever reaches the result. On error the target is
/// left untouched.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Object(p) = patch else {
        return err(format!(
            "strategic merge patch must be a JSON object, got {}",
            type_name(patch)
        ));
    };
    let original = target.as_object().cloned().unwrap_or_default();
    let merged = merge_map(original, p)?;
    *target = Value::Object(merged);
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_directive_key(k: &str) -> bool {
    k == PATCH_DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
        || k.starts_with(SET_ELEMENT_ORDER)
}

/// Merges a patch value into an (optional) original value living under
/// `field`. A type mismatch means the patch wins, as in apimachinery; merging
/// onto `None` is also how new subtrees get their directives and nulls removed.
fn merge_value(original: Option<Value>, patch: &Value, field: &str) -> Result<Value, PatchError> {
    match patch {
        Value::Object(p) => {
            let orig = match original {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            merge_map(orig, p).map(Value::Object)
        }
        Value::Array(p) => {
            let orig = match original {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            };
            merge_list(orig, p, field).map(Value::Array)
        }
        other => Ok(other.clone()),
    }
}

/// apimachinery's `mergeMap`: map-level `$patch` first, then `$retainKeys`
/// and `$deleteFromPrimitiveList`, then the ordinary fields.
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(d) = patch.get(PATCH_DIRECTIVE) {
        match d.as_str() {
            Some("replace") => {
                let mut rest = patch.clone();
                rest.remove(PATCH_DIRECTIVE);
                return merge_map(Map::new(), &rest);
            }
            // apimachinery turns a deleted map into an empty one.
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => {
                return err(format!(
                    "unknown patch type: {d} in map: {}",
                    Value::Object(patch.clone())
                ));
            }
        }
    }

    if let Some(rk) = patch.get(RETAIN_KEYS) {
        let keys = rk
            .as_array()
            .filter(|a| a.iter().all(Value::is_string))
            .ok_or_else(|| {
                PatchError(format!(
                    "invalid $retainKeys directive: {rk} is not a list of strings"
                ))
            })?;
        original.retain(|k, _| keys.iter().any(|x| x.as_str() == Some(k)));
    }

    for (k, v) in patch {
        if let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let Some(remove) = v.as_array() else {
                return err(format!(
                    "invalid type for $deleteFromPrimitiveList/{field}: {v} is not a list"
                ));
            };
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|e| !remove.contains(e));
            }
        } else if let Some(field) = k.strip_prefix(SET_ELEMENT_ORDER)
            && !v.is_array()
        {
            return err(format!(
                "invalid type for $setElementOrder/{field}: {v} is not a list"
            ));
        }
    }

    for (k, v) in patch {
        if is_directive_key(k) {
            continue;
        }
        if v.is_null() {
            original.remove(k);
            continue;
        }
        // Take the old value in place so key order survives `preserve_order`.
        match original.get_mut(k) {
            Some(slot) => {
                let old = std::mem::take(slot);
                *slot = merge_value(Some(old), v, k)?;
            }
            None => {
                let new = merge_value(None, v, k)?;
                original.insert(k.clone(), new);
            }
        }
    }
    Ok(original)
}

/// The `$patch` directive of a list element, if it is an object carrying one.
fn element_directive(e: &Value) -> Option<&Value> {
    e.as_object().and_then(|m| m.get(PATCH_DIRECTIVE))
}

/// `{"$patch": "replace"}` alone as a list element: replace the whole list
/// with the patch's other elements.
fn is_list_replace_marker(e: &Value) -> bool {
    e.as_object().is_some_and(|m| {
        m.len() == 1 && m.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some("replace")
    })
}

fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    field: &str,
) -> Result<Vec<Value>, PatchError> {
    match list_strategy(field, &original, patch) {
        ListStrategy::MergeKey(key) => merge_keyed_list(original, patch, field, key),
        ListStrategy::Set => {
            // Original values first (deduplicated, as apimachinery does), then
            // values new in the patch.
            let base = if patch.iter().any(is_list_replace_marker) {
                Vec::new()
            } else {
                original
            };
            let mut out: Vec<Value> = Vec::with_capacity(base.len() + patch.len());
            for v in base.into_iter().chain(plain_elements(patch, field)?) {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
            Ok(out)
        }
        ListStrategy::Replace => plain_elements(patch, field),
    }
}

/// The elements of a list without a merge key, with directives removed from
/// any nested objects. Only the standalone list-replace marker makes sense
/// here (the list is replaced anyway); other `$patch` elements are errors
/// because there is no key to say which element they mean.
fn plain_elements(patch: &[Value], field: &str) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(patch.len());
    for e in patch {
        if is_list_replace_marker(e) {
            continue;
        }
        if let Some(d) = element_directive(e) {
            return err(format!(
                "$patch: {d} is not supported in list '{field}', which has no merge key"
            ));
        }
        out.push(merge_value(None, e, field)?);
    }
    Ok(out)
}

/// apimachinery's `mergeSlice` for lists of objects with a merge key: deletes
/// (`$patch: delete`) first, then each patch element merges into the original
/// element with the same key or is appended. A lone `{"$patch": "replace"}`
/// drops the original list; an element carrying its key plus
/// `$patch: replace` replaces just that element (an extension: apimachinery
/// would treat it as a whole-list replace and drop the element).
fn merge_keyed_list(
    mut original: Vec<Value>,
    patch: &[Value],
    field: &str,
    key: &str,
) -> Result<Vec<Value>, PatchError> {
    let mut elements: Vec<(&Map<String, Value>, &Value, Option<&str>)> = Vec::new();
    let mut replace_all = false;
    for e in patch {
        if is_list_replace_marker(e) {
            replace_all = true;
            continue;
        }
        let Some(m) = e.as_object() else {
            return err(format!(
                "cannot merge list '{field}': element {e} is not an object with merge key {key}"
            ));
        };
        let directive = match m.get(PATCH_DIRECTIVE) {
            None => None,
            Some(d) => match d.as_str() {
                Some(s @ ("delete" | "replace" | "merge")) => Some(s),
                _ => return err(format!("unknown patch type: {d} in map: {e}")),
            },
        };
        let Some(kv) = m.get(key) else {
            return err(format!(
                "map: {e} does not contain declared merge key: {key}"
            ));
        };
        elements.push((m, kv, directive));
    }

    if replace_all {
        original.clear();
    }
    for (_, kv, directive) in &elements {
        if *directive == Some("delete") {
            original.retain(|o| o.get(key) != Some(*kv));
        }
    }
    for (m, kv, directive) in elements {
        let pos = original.iter().position(|o| o.get(key) == Some(kv));
        let merged = match directive {
            Some("delete") => continue,
            Some("replace") => {
                let mut rest = m.clone();
                rest.remove(PATCH_DIRECTIVE);
                merge_map(Map::new(), &rest)?
            }
            _ => {
                let base = match pos.map(|i| std::mem::take(&mut original[i])) {
                    Some(Value::Object(o)) => o,
                    _ => Map::new(),
                };
                let mut m = m.clone();
                m.remove(PATCH_DIRECTIVE);
                merge_map(base, &m)?
            }
        };
        match pos {
            Some(i) => original[i] = Value::Object(merged),
            None => original.push(Value::Object(merged)),
        }
    }
    Ok(original)
}

// ---------------------------------------------------------------------------
// RFC 6902 JSON patch
// ---------------------------------------------------------------------------

/// Applies an RFC 6902 JSON patch (`add`, `remove`, `replace`, `move`, `copy`,
/// `test`). The operations run on a copy that replaces the target only if all
/// of them succeed, so a failing `test` (the usual optimistic-concurrency
/// guard) or any other failing operation leaves the target unchanged.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Array(ops) = patch else {
        return err(format!(
            "json patch must be a JSON array of operations, got {}",
            type_name(patch)
        ));
    };
    let mut doc = target.clone();
    for op in ops {
        apply_op(&mut doc, op)?;
    }
    *target = doc;
    Ok(())
}

fn str_member<'a>(
    op: &'a Map<String, Value>,
    kind: &str,
    name: &str,
) -> Result<&'a str, PatchError> {
    op.get(name).and_then(Value::as_str).ok_or_else(|| {
        PatchError(format!(
            "{kind} operation is missing a string \"{name}\" member"
        ))
    })
}

fn apply_op(doc: &mut Value, op: &Value) -> Result<(), PatchError> {
    let Some(o) = op.as_object() else {
        return err(format!("json patch operation {op} is not an object"));
    };
    let kind = match o.get("op").and_then(Value::as_str) {
        Some(k) => k,
        None => return err(format!("Unexpected kind: operation {op} has no \"op\"")),
    };
    let path = str_member(o, kind, "path")?;
    let value = || {
        o.get("value")
            .cloned()
            .ok_or_else(|| PatchError(format!("{kind} operation is missing a \"value\" member")))
    };
    let missing = |p: &str| {
        PatchError(format!(
            "{kind} operation does not apply: doc is missing path: \"{p}\""
        ))
    };
    match kind {
        "add" => add(doc, &pointer(path)?, value()?, kind, path),
        "remove" => remove(doc, &pointer(path)?, kind, path).map(drop),
        "replace" => {
            let v = value()?;
            let slot = lookup_mut(doc, &pointer(path)?).ok_or_else(|| missing(path))?;
            *slot = v;
            Ok(())
        }
        "move" => {
            let from = str_member(o, kind, "from")?;
            if from == path {
                return Ok(());
            }
            if path.starts_with(from) && path[from.len()..].starts_with('/') {
                return err(format!(
                    "move operation does not apply: \"from\" {from} is a prefix of \"path\" {path}"
                ));
            }
            let v = remove(doc, &pointer(from)?, kind, from)?;
            add(doc, &pointer(path)?, v, kind, path)
        }
        "copy" => {
            let from = str_member(o, kind, "from")?;
            let v = lookup(doc, &pointer(from)?)
                .cloned()
                .ok_or_else(|| missing(from))?;
            add(doc, &pointer(path)?, v, kind, path)
        }
        "test" => {
            let expected = value()?;
            let actual = lookup(doc, &pointer(path)?).ok_or_else(|| missing(path))?;
            if json_eq(actual, &expected) {
                Ok(())
            } else {
                err(format!("testing value {path} failed: test failed"))
            }
        }
        other => err(format!("Unexpected kind: {other}")),
    }
}

/// Decodes an RFC 6901 JSON pointer into its unescaped reference tokens.
fn pointer(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return err(format!(
            "invalid JSON pointer \"{path}\": must be empty or start with '/'"
        ));
    };
    rest.split('/')
        .map(|t| {
            let bad_escape = t
                .match_indices('~')
                .any(|(i, _)| !matches!(t.as_bytes().get(i + 1), Some(b'0' | b'1')));
            if bad_escape {
                err(format!(
                    "invalid JSON pointer \"{path}\": '~' must be followed by 0 or 1"
                ))
            } else {
                Ok(t.replace("~1", "/").replace("~0", "~"))
            }
        })
        .collect()
}

/// An array index token: decimal without leading zeros, below `len`
/// (`-` means `len` itself, which only `add` may use via `allow_end`).
fn array_index(tok: &str, len: usize, allow_end: bool) -> Option<usize> {
    if tok == "-" {
        return allow_end.then_some(len);
    }
    if tok.is_empty()
        || !tok.bytes().all(|b| b.is_ascii_digit())
        || (tok.len() > 1 && tok.starts_with('0'))
    {
        return None;
    }
    let i: usize = tok.parse().ok()?;
    let limit = if allow_end { len + 1 } else { len };
    (i < limit).then_some(i)
}

fn lookup<'a>(doc: &'a Value, toks: &[String]) -> Option<&'a Value> {
    toks.iter().try_fold(doc, |cur, t| match cur {
        Value::Object(m) => m.get(t),
        Value::Array(a) => array_index(t, a.len(), false).map(|i| &a[i]),
        _ => None,
    })
}

fn lookup_mut<'a>(doc: &'a mut Value, toks: &[String]) -> Option<&'a mut Value> {
    toks.iter().try_fold(doc, |cur, t| match cur {
        Value::Object(m) => m.get_mut(t),
        Value::Array(a) => array_index(t, a.len(), false).map(move |i| &mut a[i]),
        _ => None,
    })
}

fn add(
    doc: &mut Value,
    toks: &[String],
    value: Value,
    kind: &str,
    path: &str,
) -> Result<(), PatchError> {
    let Some((last, parent)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    let missing = || {
        PatchError(format!(
            "{kind} operation does not apply: doc is missing path: \"{path}\""
        ))
    };
    match lookup_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true).ok_or_else(|| {
                PatchError(format!(
                    "{kind} operation does not apply: index out of range or invalid in \"{path}\""
                ))
            })?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(missing()),
    }
}

fn remove(doc: &mut Value, toks: &[String], kind: &str, path: &str) -> Result<Value, PatchError> {
    let Some((last, parent)) = toks.split_last() else {
        return err(format!(
            "{kind} operation does not apply: cannot remove the whole document"
        ));
    };
    let missing = || {
        PatchError(format!(
            "{kind} operation does not apply: doc is missing path: \"{path}\""
        ))
    };
    match lookup_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false).ok_or_else(missing)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// RFC 6902 equality for `test`: like `==`, except that numbers compare by
/// value, so `1` equals `1.0`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                x.as_f64() == y.as_f64()
            } else {
                x == y
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(target: Value, patch: Value) -> Value {
        let mut t = target;
        strategic_merge_patch(&mut t, &patch).unwrap_or_else(|e| panic!("patch failed: {e}"));
        t
    }

    /// Every directive key anywhere in the value, so tests can assert none leak.
    fn directives(v: &Value) -> Vec<String> {
        match v {
            Value::Object(m) => m
                .iter()
                .flat_map(|(k, v)| {
                    let mut d = directives(v);
                    if k.starts_with('$') {
                        d.push(k.clone());
                    }
                    d
                })
                .collect(),
            Value::Array(a) => a.iter().flat_map(directives).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn merge_patch_rfc7386_appendix_a() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, want) in cases {
            let mut t = target.clone();
            merge_patch(&mut t, &patch);
            assert_eq!(t, want, "target {target} patch {patch}");
        }
    }

    #[test]
    fn merge_patch_replaces_lists_and_deletes_labels() {
        let mut obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
                             "spec": {"containers": [{"name": "c", "image": "x"}]}});
        merge_patch(
            &mut obj,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}},
                    "spec": {"containers": [{"name": "d"}]}}),
        );
        assert_eq!(obj["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(obj["spec"]["containers"], json!([{"name": "d"}]));
    }

    #[test]
    fn strategic_merges_container_env_by_name() {
        let pod = json!({"spec": {"containers": [
            {"name": "main", "image": "busybox", "env": [
                {"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "sidecar", "image": "envoy"}]}});
        let out = smp(
            pod,
            json!({"spec": {"containers": [{"name": "main", "env": [
                {"name": "B", "value": "two"}, {"name": "C", "value": "3"}]}]}}),
        );
        let c = &out["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 2);
        assert_eq!(c[0]["image"], "busybox");
        assert_eq!(
            c[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "two"},
                   {"name": "C", "value": "3"}])
        );
        assert_eq!(c[1], json!({"name": "sidecar", "image": "envoy"}));
    }

    #[test]
    fn strategic_delete_element_by_key() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
                                  "volumes": [{"name": "v1", "emptyDir": {}}]}});
        let out = smp(
            pod,
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}],
                            "volumes": [{"$patch": "delete", "name": "v1"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "b"}]));
        assert_eq!(out["spec"]["volumes"], json!([]));
        // deleting a key that is not there is a no-op, and a delete plus a
        // re-add of the same key yields the fresh element
        let out = smp(
            out,
            json!({"spec": {"containers": [{"name": "b", "image": "new"},
                                           {"name": "b", "$patch": "delete"},
                                           {"name": "zz", "$patch": "delete"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "b", "image": "new"}])
        );
    }

    #[test]
    fn strategic_finalizers_set_merge_and_delete_from_primitive_list() {
        let obj = json!({"metadata": {"finalizers": ["a", "b"]}});
        let out = smp(obj, json!({"metadata": {"finalizers": ["b", "c"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let out = smp(
            out,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "c"],
                                "finalizers": ["d"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "d"]));
        assert!(directives(&out).is_empty());
    }

    #[test]
    fn strategic_metadata_labels_annotations_and_null_deletes() {
        let cm = json!({"metadata": {"name": "cm", "labels": {"a": "1"},
                                     "annotations": {"x": "1", "y": "2"}},
                        "data": {"k": "v", "old": "o"}});
        let out = smp(
            cm,
            json!({"metadata": {"labels": {"b": "2"}, "annotations": {"x": null}},
                   "data": {"old": null, "new": "n"}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        assert_eq!(out["metadata"]["annotations"], json!({"y": "2"}));
        assert_eq!(out["data"], json!({"k": "v", "new": "n"}));
        assert_eq!(out["metadata"]["name"], "cm");
    }

    #[test]
    fn strategic_replace_directives() {
        let obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
                         "spec": {"containers": [{"name": "a", "image": "x", "args": ["1"]},
                                                 {"name": "b"}]}});
        // map-level replace
        let out = smp(
            obj.clone(),
            json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
        // a lone {"$patch":"replace"} element replaces the whole list
        let out = smp(
            obj.clone(),
            json!({"spec": {"containers": [{"name": "z"}, {"$patch": "replace"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "z"}]));
        // an element carrying its key replaces only that element
        let out = smp(
            obj,
            json!({"spec": {"containers": [{"name": "a", "image": "y", "$patch": "replace"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "image": "y"}, {"name": "b"}])
        );
        // map-level delete empties the map
        let out = smp(out, json!({"metadata": {"labels": {"$patch": "delete"}}}));
        assert_eq!(out["metadata"]["labels"], json!({}));
    }

    #[test]
    fn strategic_lists_without_key_are_replaced() {
        let pod = json!({"spec": {"tolerations": [{"key": "a", "operator": "Exists"}],
                                  "containers": [{"name": "c", "args": ["x", "y"]}]}});
        let out = smp(
            pod,
            json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}],
                            "containers": [{"name": "c", "args": ["z"]}]}}),
        );
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "b", "operator": "Exists"}])
        );
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["z"]));
    }

    #[test]
    fn strategic_other_merge_keys() {
        let obj = json!({
            "metadata": {"ownerReferences": [{"uid": "u1", "kind": "Job", "name": "j"}]},
            "spec": {"containers": [{"name": "c",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "volumeMounts": [{"mountPath": "/data", "name": "d"}]}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"},
                                      {"type": "Complete", "status": "False"}]}});
        let out = smp(
            obj,
            json!({
                "metadata": {"ownerReferences": [{"uid": "u1", "controller": true},
                                                 {"uid": "u2", "kind": "Pod", "name": "p"}]},
                "spec": {"containers": [{"name": "c",
                    "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}],
                    "volumeMounts": [{"mountPath": "/data", "readOnly": true}]}]},
                "status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
        );
        assert_eq!(out["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(out["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(out["metadata"]["ownerReferences"][1]["uid"], "u2");
        let c = &out["spec"]["containers"][0];
        assert_eq!(
            c["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}])
        );
        assert_eq!(
            c["volumeMounts"],
            json!([{"mountPath": "/data", "name": "d", "readOnly": true}])
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "False"}, {"type": "Complete", "status": "True"}])
        );
        // Service ports (no containerPort) merge by `port`
        let svc = smp(
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
            json!({"spec": {"ports": [{"port": 80, "name": "http"}]}}),
        );
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"port": 80, "targetPort": 8080, "name": "http"}])
        );
    }

    #[test]
    fn strategic_directives_never_stored() {
        let obj = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "env": [{"name": "X", "value": "1"}]}]}}}});
        let out = smp(
            obj,
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [
                    {"name": "a", "$setElementOrder/env": [{"name": "X"}], "env": [{"name": "X", "value": "2"}]},
                    {"name": "b", "$patch": "merge", "env": [{"name": "Y", "$patch": "delete"}]}],
                "volumes": [{"name": "v", "$patch": "replace", "emptyDir": {"medium": null}}],
                "newMap": {"$patch": "replace", "k": "v", "gone": null}}}}}),
        );
        assert!(
            directives(&out).is_empty(),
            "leaked: {:?} in {out}",
            directives(&out)
        );
        let spec = &out["spec"]["template"]["spec"];
        assert_eq!(
            spec["containers"][0]["env"],
            json!([{"name": "X", "value": "2"}])
        );
        assert_eq!(spec["containers"][1], json!({"name": "b", "env": []}));
        assert_eq!(spec["volumes"], json!([{"name": "v", "emptyDir": {}}]));
        assert_eq!(spec["newMap"], json!({"k": "v"}));
    }

    #[test]
    fn strategic_retain_keys() {
        let dep = json!({"spec": {"strategy": {"type": "RollingUpdate",
                                               "rollingUpdate": {"maxSurge": 1}}}});
        let out = smp(
            dep,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn strategic_errors_leave_target_unchanged() {
        let orig = json!({"metadata": {"labels": {"a": "1"}},
                          "spec": {"containers": [{"name": "c"}]}});
        let bad = [
            json!({"metadata": {"labels": {"b": "2", "$patch": "explode"}}}),
            json!({"spec": {"containers": [{"image": "no-name"}]}}),
            json!({"spec": {"containers": [{"name": "c", "$patch": "bogus"}]}}),
            json!({"spec": {"containers": ["c"]}}),
            json!({"spec": {"tolerations": [{"key": "k", "$patch": "delete"}]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
            json!(["not", "an", "object"]),
        ];
        for p in bad {
            let mut t = orig.clone();
            let e = strategic_merge_patch(&mut t, &p).expect_err(&p.to_string());
            assert!(!e.0.is_empty());
            assert_eq!(t, orig, "target changed by failing patch {p}");
        }
        let mut t = orig.clone();
        let e =
            strategic_merge_patch(&mut t, &json!({"metadata": {"$patch": "explode"}})).unwrap_err();
        assert!(e.0.starts_with("unknown patch type: \"explode\""), "{e}");
        let e = strategic_merge_patch(&mut t, &json!({"spec": {"containers": [{"image": "x"}]}}))
            .unwrap_err();
        assert!(
            e.0.contains("does not contain declared merge key: name"),
            "{e}"
        );
    }

    #[test]
    fn json_patch_all_operations() {
        let mut doc = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1, 2, 3]}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "test", "path": "/metadata/labels/a", "value": "1"},
                {"op": "add", "path": "/metadata/annotations", "value": {}},
                {"op": "add", "path": "/metadata/annotations/x~1y", "value": "slash"},
                {"op": "add", "path": "/metadata/annotations/t~0z", "value": "tilde"},
                {"op": "replace", "path": "/metadata/labels/a", "value": "2"},
                {"op": "add", "path": "/spec/list/-", "value": 4},
                {"op": "add", "path": "/spec/list/0", "value": 0},
                {"op": "remove", "path": "/spec/list/1"},
                {"op": "copy", "from": "/metadata/labels/a", "path": "/metadata/labels/b"},
                {"op": "move", "from": "/spec/list", "path": "/status"},
                {"op": "test", "path": "/status/0", "value": 0.0}
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"a": "2", "b": "2"},
                                "annotations": {"x/y": "slash", "t~z": "tilde"}},
                   "spec": {}, "status": [0, 2, 3, 4]})
        );
        // the empty pointer addresses the whole document
        json_patch(
            &mut doc,
            &json!([{"op": "replace", "path": "", "value": {"k": 1}}]),
        )
        .unwrap();
        assert_eq!(doc, json!({"k": 1}));
    }

    #[test]
    fn json_patch_failed_test_leaves_target_unchanged() {
        let orig = json!({"metadata": {"resourceVersion": "5", "labels": {"a": "1"}}});
        let mut doc = orig.clone();
        let e = json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "test", "path": "/metadata/resourceVersion", "value": "4"},
                {"op": "remove", "path": "/metadata/labels"}
            ]),
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            "testing value /metadata/resourceVersion failed: test failed"
        );
        assert_eq!(doc, orig);
    }

    #[test]
    fn json_patch_errors() {
        let orig = json!({"a": {"b": [1, 2]}, "s": "x"});
        let cases = [
            (
                json!([{"op": "remove", "path": "/nope"}]),
                "doc is missing path: \"/nope\"",
            ),
            (
                json!([{"op": "replace", "path": "/a/c", "value": 1}]),
                "doc is missing path",
            ),
            (
                json!([{"op": "add", "path": "/a/b/3", "value": 1}]),
                "index out of range",
            ),
            (
                json!([{"op": "add", "path": "/a/b/01", "value": 1}]),
                "index out of range",
            ),
            (
                json!([{"op": "remove", "path": "/a/b/-"}]),
                "doc is missing path",
            ),
            (
                json!([{"op": "add", "path": "/x/y", "value": 1}]),
                "doc is missing path",
            ),
            (
                json!([{"op": "add", "path": "a", "value": 1}]),
                "invalid JSON pointer",
            ),
            (json!([{"op": "add", "path": "/a"}]), "missing a \"value\""),
            (
                json!([{"op": "add", "path": "/a~2", "value": 1}]),
                "'~' must be followed by 0 or 1",
            ),
            (
                json!([{"op": "move", "from": "/a", "path": "/a/b/x"}]),
                "is a prefix of",
            ),
            (
                json!([{"op": "copy", "path": "/z"}]),
                "missing a string \"from\"",
            ),
            (
                json!([{"op": "frobnicate", "path": "/a"}]),
                "Unexpected kind: frobnicate",
            ),
            (
                json!([{"op": "test", "path": "/s", "value": "y"}]),
                "test failed",
            ),
            (json!({"op": "add"}), "must be a JSON array"),
        ];
        for (patch, want) in cases {
            let mut doc = orig.clone();
            let e = json_patch(&mut doc, &patch).expect_err(&patch.to_string());
            assert!(e.0.contains(want), "{patch}: {e}");
            assert_eq!(doc, orig);
        }
        // moving onto itself is a no-op, moving to a sibling with a shared
        // name prefix is not mistaken for moving into a child
        let mut doc = orig.clone();
        json_patch(
            &mut doc,
            &json!([{"op": "move", "from": "/a", "path": "/a"},
                                     {"op": "move", "from": "/s", "path": "/ss"}]),
        )
        .unwrap();
        assert_eq!(doc, json!({"a": {"b": [1, 2]}, "ss": "x"}));
    }
}
