//! Decides, the way kube-apiserver 1.37 would, whether a request body decodes, which of its fields are unknown, and which of its values are invalid.
//!
//! The server applies defaults before calling [`validate`], so rules for fields it always
//! defaults (pull policy, DNS policy, ...) only fire when the field is present: a field the
//! defaulting missed must not turn a valid object into a 422. Messages copy the real ones
//! (`k8s.io/apimachinery/pkg/util/validation` and `pkg/apis/*/validation`) so that clients
//! matching on them see the same text.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod, Secret, ServiceAccount};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The kinds validated are exactly the served resources.
pub use crate::resources::Resource as Kind;

/// `schema.GroupKind.String()`: core kinds have no group suffix.
fn qualified_kind(kind: Kind) -> &'static str {
    match kind {
        Kind::Job => "Job.batch",
        other => other.kind(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Strict,
    #[default]
    Warn,
    Ignore,
}

impl FieldValidation {
    /// Parses the `fieldValidation` query parameter. An empty value means the default (`Warn`),
    /// as in the real server, which lists `""` among the supported values.
    pub fn parse(query_value: &str) -> Result<Self, String> {
        match query_value {
            "Strict" => Ok(Self::Strict),
            "Warn" | "" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            other => Err(format!(
                "fieldValidation: Unsupported value: {}: supported values: \"\", \"Ignore\", \"Strict\", \"Warn\"",
                go_quote(other)
            )),
        }
    }
}

/// The text `resource.ParseQuantity` fails with; the real server reports it while decoding.
const QUANTITY_FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

// ---------------------------------------------------------------------------------------------
// Decoding and unknown fields
// ---------------------------------------------------------------------------------------------

/// Err(message) when the body cannot be decoded as the typed object (wrong types): the server answers 400 with it.
/// Message starts with `<Kind> in version "v1" cannot be handled as a <Kind>: ` followed by the decode error.
/// Ok(paths) = unknown-field paths like `spec.template.spec.containers[0].imagePulPolicy`.
pub fn unknown_fields(kind: Kind, obj: &serde_json::Value) -> Result<Vec<String>, String> {
    let known = round_trip(kind, obj)?;
    let mut unknown = Vec::new();
    collect_unknown(obj, &known, "", &mut unknown);
    Ok(unknown)
}

/// `strict decoding error: unknown field "spec.x", unknown field "spec.y"`
pub fn strict_error_message(unknown: &[String]) -> String {
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    format!("strict decoding error: {}", fields.join(", "))
}

/// Removes unknown fields in place.
pub fn strip_unknown(kind: Kind, obj: &mut serde_json::Value) {
    // A body that does not decode is rejected before anything is stored, so leave it alone.
    if let Ok(known) = round_trip(kind, obj) {
        strip(obj, &known);
    }
}

/// Decodes into the k8s-openapi type and re-encodes: what survives is what the schema knows.
/// k8s-openapi ignores unknown keys and defaults missing required fields, like Go's decoder.
fn round_trip(kind: Kind, obj: &Value) -> Result<Value, String> {
    let decode_error = |detail: &str| {
        let k = kind.kind();
        format!("{k} in version \"v1\" cannot be handled as a {k}: {detail}")
    };
    let mut input = obj.clone();
    if let Some(map) = input.as_object_mut() {
        // The server routes by URL; a mismatched apiVersion/kind is its business, not the schema's.
        map.remove("apiVersion");
        map.remove("kind");
    }
    // Quantities are plain strings in k8s-openapi; Go parses them while decoding.
    let mut bad_quantity = false;
    for_each_quantity(kind, &mut input, &mut |q| match q {
        Value::Number(n) => *q = Value::String(n.to_string()),
        Value::String(s) if parse_quantity(s).is_none() => bad_quantity = true,
        _ => {}
    });
    if bad_quantity {
        return Err(decode_error(QUANTITY_FORMAT_ERROR));
    }
    // Go's base64 accepts line breaks and loose trailing bits, the base64 crate does not:
    // check with Go's rules here and hand k8s-openapi something it cannot trip on.
    let bytes_field = match kind {
        Kind::Secret => Some("data"),
        Kind::ConfigMap => Some("binaryData"),
        _ => None,
    };
    if let Some(field) = bytes_field
        && let Some(map) = input.get_mut(field).and_then(Value::as_object_mut)
    {
        for value in map.values_mut() {
            if let Value::String(s) = value {
                if let Err(at) = go_base64_decoded_len(s) {
                    return Err(decode_error(&format!(
                        "illegal base64 data at input byte {at}"
                    )));
                }
                *value = Value::String(String::new());
            }
        }
    }
    fn rt<T: DeserializeOwned + Serialize>(v: Value) -> Result<Value, serde_json::Error> {
        let typed: T = serde_json::from_value(v)?;
        serde_json::to_value(typed)
    }
    let result = match kind {
        Kind::Namespace => rt::<Namespace>(input),
        Kind::Pod => rt::<Pod>(input),
        Kind::Job => rt::<Job>(input),
        Kind::ConfigMap => rt::<ConfigMap>(input),
        Kind::Secret => rt::<Secret>(input),
        Kind::ServiceAccount => rt::<ServiceAccount>(input),
        Kind::Event => rt::<Event>(input),
    };
    result.map_err(|e| decode_error(&e.to_string()))
}

/// Keys present in `input` but not in `known`; null values are skipped (they decode to nothing).
fn collect_unknown(input: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(input), Value::Object(known)) => {
            for (key, value) in input {
                if value.is_null() {
                    continue;
                }
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match known.get(key) {
                    None => out.push(child),
                    Some(known_value) => collect_unknown(value, known_value, &child, out),
                }
            }
        }
        (Value::Array(input), Value::Array(known)) => {
            for (i, (value, known_value)) in input.iter().zip(known).enumerate() {
                collect_unknown(value, known_value, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn strip(input: &mut Value, known: &Value) {
    match (input, known) {
        (Value::Object(input), Value::Object(known)) => {
            input.retain(|key, _| known.contains_key(key));
            for (key, value) in input.iter_mut() {
                if let Some(known_value) = known.get(key) {
                    strip(value, known_value);
                }
            }
        }
        (Value::Array(input), Value::Array(known)) => {
            for (value, known_value) in input.iter_mut().zip(known) {
                strip(value, known_value);
            }
        }
        _ => {}
    }
}

/// Visits every value the schema types as `resource.Quantity` in the pod specs of `kind`
/// (container resources, pod-level resources, overhead, emptyDir size limits).
fn for_each_quantity(kind: Kind, obj: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    let spec = match kind {
        Kind::Pod => obj.get_mut("spec"),
        Kind::Job => obj
            .get_mut("spec")
            .and_then(|s| s.get_mut("template"))
            .and_then(|t| t.get_mut("spec")),
        _ => None,
    };
    let Some(spec) = spec.and_then(Value::as_object_mut) else {
        return;
    };
    fn visit_requirements(res: Option<&mut Value>, f: &mut dyn FnMut(&mut Value)) {
        if let Some(res) = res {
            for which in ["limits", "requests"] {
                if let Some(map) = res.get_mut(which).and_then(Value::as_object_mut) {
                    map.values_mut().for_each(&mut *f);
                }
            }
        }
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers {
                visit_requirements(c.get_mut("resources"), f);
            }
        }
    }
    visit_requirements(spec.get_mut("resources"), f);
    if let Some(map) = spec.get_mut("overhead").and_then(Value::as_object_mut) {
        map.values_mut().for_each(&mut *f);
    }
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in volumes {
            if let Some(limit) = v.get_mut("emptyDir").and_then(|e| e.get_mut("sizeLimit")) {
                f(limit);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Causes and messages
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

/// `Job.batch "Build_1" is invalid: metadata.name: Invalid value: ...` (single cause) or
/// `Job.batch "x" is invalid: [a: ..., b: ...]` (several). Core kinds have no group suffix.
/// Repeated `field: message` lines are shown once, as `ErrorList.ToAggregate` does.
pub fn invalid_message(kind: Kind, name: &str, causes: &[Cause]) -> String {
    let mut seen = BTreeSet::new();
    let mut parts = Vec::new();
    for cause in causes {
        let line = format!("{}: {}", cause.field, cause.message);
        if seen.insert(line.clone()) {
            parts.push(line);
        }
    }
    let body = match parts.len() {
        0 => "<nil>".to_string(),
        1 => parts.remove(0),
        _ => format!("[{}]", parts.join(", ")),
    };
    format!(
        "{} {} is invalid: {body}",
        qualified_kind(kind),
        go_quote(name)
    )
}

/// Go's `%q`, used by the real messages for names and string values.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The offending value as `field.Error` renders it: strings quoted, numbers bare, others as JSON.
enum Bad<'a> {
    Str(&'a str),
    Int(i64),
    Json(&'a Value),
}

impl Bad<'_> {
    fn render(&self) -> String {
        match self {
            Bad::Str(s) => go_quote(s),
            Bad::Int(n) => n.to_string(),
            Bad::Json(Value::String(s)) => go_quote(s),
            Bad::Json(v) => serde_json::to_string(v).unwrap_or_default(),
        }
    }
}

/// Collects causes with the reason and message shapes of `field.Error`.
#[derive(Default)]
struct Errs(Vec<Cause>);

impl Errs {
    fn push(&mut self, reason: &'static str, field: &str, message: String) {
        self.0.push(Cause {
            reason,
            message,
            field: field.to_string(),
        });
    }

    fn with_detail(head: String, detail: &str) -> String {
        if detail.is_empty() {
            head
        } else {
            format!("{head}: {detail}")
        }
    }

    fn invalid(&mut self, field: &str, bad: Bad, detail: &str) {
        let message = Self::with_detail(format!("Invalid value: {}", bad.render()), detail);
        self.push("FieldValueInvalid", field, message);
    }

    fn required(&mut self, field: &str, detail: &str) {
        let message = Self::with_detail("Required value".to_string(), detail);
        self.push("FieldValueRequired", field, message);
    }

    fn not_supported(&mut self, field: &str, value: &str, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        let message = format!(
            "Unsupported value: {}: supported values: {}",
            go_quote(value),
            list.join(", ")
        );
        self.push("FieldValueNotSupported", field, message);
    }

    fn duplicate(&mut self, field: &str, value: &str) {
        let message = format!("Duplicate value: {}", go_quote(value));
        self.push("FieldValueDuplicate", field, message);
    }

    fn forbidden(&mut self, field: &str, detail: &str) {
        let message = Self::with_detail("Forbidden".to_string(), detail);
        self.push("FieldValueForbidden", field, message);
    }

    fn too_long(&mut self, field: &str, max: usize) {
        let message = format!("Too long: may not be more than {max} bytes");
        self.push("FieldValueTooLong", field, message);
    }

    fn not_found(&mut self, field: &str, value: &str) {
        let message = format!("Not found: {}", go_quote(value));
        self.push("FieldValueNotFound", field, message);
    }

    /// One `Invalid` cause per message, as the real `for _, msg := range IsX(v)` loops do.
    fn invalid_each(&mut self, field: &str, value: &str, msgs: Vec<String>) {
        for msg in msgs {
            self.invalid(field, Bad::Str(value), &msg);
        }
    }

    fn nonnegative(&mut self, field: &str, value: Option<i64>) {
        if let Some(n) = value
            && n < 0
        {
            self.invalid(field, Bad::Int(n), "must be greater than or equal to 0");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// String format checks (hand-written versions of the apimachinery regular expressions)
// ---------------------------------------------------------------------------------------------

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_ERR: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const ENV_VAR_NAME_ERR: &str = "a valid environment variable name must consist only of printable ASCII characters other than '='";
const IMMUTABLE: &str = "field is immutable";
const IMMUTABLE_WHEN_SET: &str = "field is immutable when `immutable` is set";

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !matches_dns_label(s) {
        errs.push(DNS1123_LABEL_ERR.to_string());
    }
    errs
}

fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !s.split('.').all(matches_dns_label) {
        errs.push(DNS1123_SUBDOMAIN_ERR.to_string());
    }
    errs
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

pub(crate) fn is_qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {QUALIFIED_NAME_ERR} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!("name part {QUALIFIED_NAME_ERR}"));
    }
    errs
}

pub(crate) fn is_valid_label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !s.is_empty() && !matches_qualified_name_part(s) {
        errs.push(LABEL_VALUE_ERR.to_string());
    }
    errs
}

fn is_config_map_key(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    let ok = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        errs.push(CONFIG_KEY_ERR.to_string());
    }
    if s == "." {
        errs.push("must not be '.'".to_string());
    } else if s == ".." {
        errs.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// RelaxedEnvironmentVariableValidation is GA since 1.34: any printable ASCII except '='.
fn is_env_var_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.is_empty() {
        errs.push("environment variable name must be non-empty".to_string());
    }
    if s.chars().any(|c| !(' '..='~').contains(&c) || c == '=') {
        errs.push(ENV_VAR_NAME_ERR.to_string());
    }
    errs
}

/// `NameIsDNSSubdomain` / `NameIsDNSLabel`: a generateName prefix may end in '-'
/// because random characters are appended to it.
fn name_check(check: fn(&str) -> Vec<String>, name: &str, prefix: bool) -> Vec<String> {
    if prefix && name.len() > 1 && name.ends_with('-') {
        let masked = format!("{}a", &name[..name.len() - 1]);
        return check(&masked);
    }
    check(name)
}

// ---------------------------------------------------------------------------------------------
// JSON access helpers (lenient: validate may see objects that never went through decoding)
// ---------------------------------------------------------------------------------------------

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn string<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn map<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

fn quantity_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Drops nulls, empty lists and empty maps, so that comparisons treat them as absent
/// (`apiequality.Semantic.DeepEqual` treats nil and empty collections alike).
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| !is_empty_value(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    let n = |v: Option<&Value>| v.map(normalized).filter(|v| !is_empty_value(v));
    n(a) == n(b)
}

// ---------------------------------------------------------------------------------------------
// Validation entry point
// ---------------------------------------------------------------------------------------------

/// reason: "FieldValueInvalid" | "FieldValueRequired" | "FieldValueNotSupported" | "FieldValueDuplicate" |
/// "FieldValueTooLong" | "FieldValueForbidden" | "FieldValueNotFound" (volumeMounts naming no volume).
pub fn validate(
    kind: Kind,
    obj: &serde_json::Value,
    old: Option<&serde_json::Value>,
) -> Vec<Cause> {
    let mut e = Errs::default();
    let null = Value::Null;
    let meta = get(obj, "metadata").unwrap_or(&null);
    let name_rule: fn(&str) -> Vec<String> = match kind {
        Kind::Namespace => is_dns1123_label,
        _ => is_dns1123_subdomain,
    };
    validate_object_meta(&mut e, kind, meta, name_rule);
    if let Some(old) = old {
        validate_object_meta_update(&mut e, meta, get(old, "metadata").unwrap_or(&null));
    }
    match kind {
        Kind::Namespace => validate_namespace(&mut e, obj),
        Kind::Pod => validate_pod(&mut e, obj, old),
        Kind::Job => validate_job(&mut e, obj, old),
        Kind::ConfigMap => validate_config_map(&mut e, obj, old),
        Kind::Secret => validate_secret(&mut e, obj, old),
        Kind::ServiceAccount => {}
        Kind::Event => validate_event(&mut e, obj),
    }
    e.0
}

// ---------------------------------------------------------------------------------------------
// ObjectMeta
// ---------------------------------------------------------------------------------------------

const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

fn validate_object_meta(
    e: &mut Errs,
    kind: Kind,
    meta: &Value,
    name_rule: fn(&str) -> Vec<String>,
) {
    let generate_name = string(meta, "generateName");
    if !generate_name.is_empty() {
        let msgs = name_check(name_rule, generate_name, true);
        e.invalid_each("metadata.generateName", generate_name, msgs);
    }
    let name = string(meta, "name");
    if name.is_empty() {
        // The real server generates the name from generateName before validating.
        if generate_name.is_empty() {
            e.required("metadata.name", "name or generateName is required");
        }
    } else {
        e.invalid_each("metadata.name", name, name_check(name_rule, name, false));
    }
    // The namespace comes from the URL, and may not be in the body yet: only check its format.
    let namespace = string(meta, "namespace");
    if kind != Kind::Namespace && !namespace.is_empty() {
        e.invalid_each("metadata.namespace", namespace, is_dns1123_label(namespace));
    }
    e.nonnegative("metadata.generation", int(meta, "generation"));
    validate_labels(e, map(meta, "labels"), "metadata.labels");
    validate_annotations(e, map(meta, "annotations"), "metadata.annotations");
    validate_owner_references(e, list(meta, "ownerReferences"));
    for finalizer in list(meta, "finalizers") {
        validate_finalizer(e, finalizer.as_str().unwrap_or(""), "metadata.finalizers");
    }
}

fn validate_object_meta_update(e: &mut Errs, meta: &Value, old: &Value) {
    for (key, field) in [
        ("name", "metadata.name"),
        ("namespace", "metadata.namespace"),
        ("uid", "metadata.uid"),
    ] {
        let (new_value, old_value) = (string(meta, key), string(old, key));
        // An omitted value is filled from the stored object, so only a different one is a change.
        if !new_value.is_empty() && !old_value.is_empty() && new_value != old_value {
            e.invalid(field, Bad::Str(new_value), IMMUTABLE);
        }
    }
}

/// `ValidateLabels`: errors name the whole map, not the key.
fn validate_labels(e: &mut Errs, labels: Option<&Map<String, Value>>, field: &str) {
    for (key, value) in labels.into_iter().flatten() {
        e.invalid_each(field, key, is_qualified_name(key));
        let value = value.as_str().unwrap_or("");
        e.invalid_each(field, value, is_valid_label_value(value));
    }
}

fn validate_annotations(e: &mut Errs, annotations: Option<&Map<String, Value>>, field: &str) {
    let mut total = 0;
    for (key, value) in annotations.into_iter().flatten() {
        // Annotation keys are qualified names, except that case does not matter.
        e.invalid_each(field, key, is_qualified_name(&key.to_lowercase()));
        total += key.len() + value.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        e.too_long(field, TOTAL_ANNOTATION_SIZE_LIMIT);
    }
}

/// The real code reports owner-reference errors without an index.
fn validate_owner_references(e: &mut Errs, refs: &[Value]) {
    let path = "metadata.ownerReferences";
    let mut first_controller: Option<String> = None;
    for r in refs {
        let api_version = string(r, "apiVersion");
        let version = match api_version.split('/').collect::<Vec<_>>().as_slice() {
            [v] => *v,
            [_, v] => *v,
            _ => "",
        };
        if version.is_empty() {
            e.invalid(
                &format!("{path}.apiVersion"),
                Bad::Str(api_version),
                "version must not be empty",
            );
        }
        for (key, detail) in [
            ("kind", "kind must not be empty"),
            ("name", "name must not be empty"),
            ("uid", "uid must not be empty"),
        ] {
            if string(r, key).is_empty() {
                e.invalid(&format!("{path}.{key}"), Bad::Str(""), detail);
            }
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{}/{}", string(r, "kind"), string(r, "name"));
            match &first_controller {
                Some(first) => {
                    let detail = format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                    );
                    e.invalid(path, Bad::Json(&Value::Array(refs.to_vec())), &detail);
                }
                None => first_controller = Some(current),
            }
        }
    }
}

fn validate_finalizer(e: &mut Errs, finalizer: &str, field: &str) {
    e.invalid_each(field, finalizer, is_qualified_name(finalizer));
    if !finalizer.contains('/') && !STANDARD_FINALIZERS.contains(&finalizer) {
        e.invalid(
            field,
            Bad::Str(finalizer),
            "name is neither a standard finalizer name nor is it fully qualified",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Namespace, Event
// ---------------------------------------------------------------------------------------------

fn validate_namespace(e: &mut Errs, obj: &Value) {
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    for finalizer in list(spec, "finalizers") {
        validate_finalizer(e, finalizer.as_str().unwrap_or(""), "spec.finalizers");
    }
}

/// `legacyValidateEvent` for core/v1 Events.
fn validate_event(e: &mut Errs, obj: &Value) {
    let null = Value::Null;
    let namespace = get(obj, "metadata").map_or("", |m| string(m, "namespace"));
    let involved = get(obj, "involvedObject").unwrap_or(&null);
    let involved_ns = string(involved, "namespace");
    let ns_field = "involvedObject.namespace";
    let ns_detail = "does not match event.namespace";
    let event_time = string(obj, "eventTime");
    // The namespace may be filled in from the URL after validation; only compare a known one.
    if event_time.is_empty() {
        if !namespace.is_empty() {
            let mismatch = if involved_ns.is_empty() {
                namespace != "default"
            } else {
                namespace != involved_ns
            };
            if mismatch {
                e.invalid(ns_field, Bad::Str(involved_ns), ns_detail);
            }
        }
    } else {
        if involved_ns.is_empty()
            && !namespace.is_empty()
            && namespace != "default"
            && namespace != "kube-system"
        {
            e.invalid(ns_field, Bad::Str(involved_ns), ns_detail);
        }
        let controller = string(obj, "reportingComponent");
        if controller.is_empty() {
            e.required("reportingComponent", "");
        }
        e.invalid_each(
            "reportingComponent",
            controller,
            is_qualified_name(controller),
        );
        for (key, limit, required) in [
            ("reportingInstance", 128, true),
            ("action", 128, true),
            ("reason", 128, true),
            ("message", 1024, false),
        ] {
            let value = string(obj, key);
            if required && value.is_empty() {
                e.required(key, "");
            }
            if value.len() > limit {
                e.invalid(
                    key,
                    Bad::Str(""),
                    &format!("can have at most {limit} characters"),
                );
            }
        }
    }
    if !namespace.is_empty() {
        e.invalid_each("namespace", namespace, is_dns1123_subdomain(namespace));
    }
}

// ---------------------------------------------------------------------------------------------
// ConfigMap, Secret
// ---------------------------------------------------------------------------------------------

const MAX_SECRET_SIZE: usize = 1024 * 1024;

/// Decoded length of a base64 string under Go's `StdEncoding` (padding required, CR/LF
/// ignored), or the input offset Go reports for illegal data.
fn go_base64_decoded_len(s: &str) -> Result<usize, usize> {
    let chars: Vec<(usize, u8)> = s
        .bytes()
        .enumerate()
        .filter(|(_, c)| *c != b'\r' && *c != b'\n')
        .collect();
    let is_alphabet = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    let mut len = 0;
    for (q, quantum) in chars.chunks(4).enumerate() {
        let start = quantum[0].0;
        if quantum.len() < 4 {
            return Err(start);
        }
        let last = q == chars.len().div_ceil(4) - 1;
        let pad = quantum.iter().rev().take_while(|(_, c)| *c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            let first_pad = quantum[4 - pad].0;
            return Err(first_pad);
        }
        if let Some((at, _)) = quantum[..4 - pad].iter().find(|(_, c)| !is_alphabet(*c)) {
            return Err(*at);
        }
        len += 3 - pad;
    }
    Ok(len)
}

fn validate_data_keys(e: &mut Errs, data: Option<&Map<String, Value>>, field: &str) {
    for key in data.into_iter().flatten().map(|(k, _)| k) {
        e.invalid_each(&format!("{field}[{key}]"), key, is_config_map_key(key));
    }
}

fn validate_config_map(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let data = map(obj, "data");
    let binary = map(obj, "binaryData");
    let mut total = 0;
    validate_data_keys(e, data, "data");
    for (key, value) in data.into_iter().flatten() {
        if binary.is_some_and(|b| b.contains_key(key)) {
            e.invalid(
                &format!("data[{key}]"),
                Bad::Str(key),
                "duplicate of key present in binaryData",
            );
        }
        total += value.as_str().map_or(0, str::len);
    }
    validate_data_keys(e, binary, "binaryData");
    for (key, value) in binary.into_iter().flatten() {
        if data.is_some_and(|d| d.contains_key(key)) {
            e.invalid(
                &format!("binaryData[{key}]"),
                Bad::Str(key),
                "duplicate of key present in data",
            );
        }
        total += value
            .as_str()
            .and_then(|s| go_base64_decoded_len(s).ok())
            .unwrap_or(0);
    }
    if total > MAX_SECRET_SIZE {
        // The real server passes an empty path: the error is about the whole object.
        e.too_long("", MAX_SECRET_SIZE);
    }
    if let Some(old) = old
        && old.get("immutable").and_then(Value::as_bool) == Some(true)
    {
        if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
            e.forbidden("immutable", IMMUTABLE_WHEN_SET);
        }
        for field in ["data", "binaryData"] {
            if !same(get(obj, field), get(old, field)) {
                e.forbidden(field, IMMUTABLE_WHEN_SET);
            }
        }
    }
}

fn secret_type(obj: &Value) -> &str {
    match string(obj, "type") {
        "" => "Opaque",
        t => t,
    }
}

fn validate_secret(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    // stringData is merged into data (by conversion) before the real validation runs.
    let mut keys: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, value) in map(obj, "data").into_iter().flatten() {
        let len = match value.as_str().map(go_base64_decoded_len) {
            Some(Ok(len)) => len,
            Some(Err(at)) => {
                // Normally caught while decoding (400); kept so `validate` alone is safe.
                e.invalid(
                    &format!("data[{key}]"),
                    Bad::Str("<secret contents redacted>"),
                    &format!("illegal base64 data at input byte {at}"),
                );
                0
            }
            None => 0,
        };
        keys.insert(key, len);
    }
    for (key, value) in map(obj, "stringData").into_iter().flatten() {
        keys.insert(key, value.as_str().map_or(0, str::len));
    }
    let mut total = 0;
    for (key, len) in &keys {
        e.invalid_each(&format!("data[{key}]"), key, is_config_map_key(key));
        total += len;
    }
    if total > MAX_SECRET_SIZE {
        e.too_long("data", MAX_SECRET_SIZE);
    }
    let has = |k: &str| keys.contains_key(k);
    match secret_type(obj) {
        "kubernetes.io/service-account-token" => {
            let annotation = get(obj, "metadata")
                .and_then(|m| map(m, "annotations"))
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if annotation.is_empty() {
                e.required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                );
            }
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => e.required("data[.dockercfg]", ""),
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            e.required("data[.dockerconfigjson]", "")
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            e.required("data[username]", "");
            e.required("data[password]", "");
        }
        "kubernetes.io/ssh-auth" if keys.get("ssh-privatekey").is_none_or(|l| *l == 0) => {
            e.required("data[ssh-privatekey]", "")
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    e.required(&format!("data[{key}]"), "");
                }
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        let (new_type, old_type) = (secret_type(obj), secret_type(old));
        if new_type != old_type {
            e.invalid("type", Bad::Str(new_type), IMMUTABLE);
        }
        if old.get("immutable").and_then(Value::as_bool) == Some(true) {
            if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
                e.forbidden("immutable", IMMUTABLE_WHEN_SET);
            }
            if !same(get(obj, "data"), get(old, "data")) {
                e.forbidden("data", IMMUTABLE_WHEN_SET);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pod
// ---------------------------------------------------------------------------------------------

const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn validate_pod(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    validate_pod_spec(e, spec, "spec");
    match old {
        None => {
            if !list(spec, "ephemeralContainers").is_empty() {
                e.forbidden("spec.ephemeralContainers", "cannot be set on create");
            }
        }
        Some(old) => {
            let old_spec = get(old, "spec").unwrap_or(&null);
            if !same(
                Some(&pod_spec_without_mutable(spec, old_spec)),
                Some(old_spec),
            ) {
                e.forbidden("spec", POD_UPDATE_FORBIDDEN);
            }
        }
    }
}

/// The new spec with every field a plain pod update may change copied from the old one.
fn pod_spec_without_mutable(spec: &Value, old: &Value) -> Value {
    let mut munged = spec.clone();
    let Some(m) = munged.as_object_mut() else {
        return munged;
    };
    for list_name in ["containers", "initContainers"] {
        let old_list = list(old, list_name);
        if let Some(containers) = m.get_mut(list_name).and_then(Value::as_array_mut) {
            for (i, c) in containers.iter_mut().enumerate() {
                if let (Some(c), Some(old_c)) = (c.as_object_mut(), old_list.get(i)) {
                    match old_c.get("image") {
                        Some(image) => c.insert("image".into(), image.clone()),
                        None => c.remove("image"),
                    };
                }
            }
        }
    }
    for key in ["activeDeadlineSeconds", "terminationGracePeriodSeconds"] {
        match old.get(key) {
            Some(v) => m.insert(key.into(), v.clone()),
            None => m.remove(key),
        };
    }
    // Tolerations may only grow; scheduling gates may only shrink.
    let grows = |key: &str, new_has_old: bool| {
        let (new_list, old_list) = (list(spec, key), list(old, key));
        if new_has_old {
            old_list.iter().all(|t| new_list.contains(t))
        } else {
            new_list.iter().all(|t| old_list.contains(t))
        }
    };
    for (key, ok) in [
        ("tolerations", grows("tolerations", true)),
        ("schedulingGates", grows("schedulingGates", false)),
    ] {
        if ok {
            match old.get(key) {
                Some(v) => m.insert(key.into(), v.clone()),
                None => m.remove(key),
            };
        }
    }
    munged
}

#[derive(Clone, Copy, PartialEq)]
enum ContainerKind {
    Regular,
    Init,
    Ephemeral,
}

fn validate_pod_spec(e: &mut Errs, spec: &Value, p: &str) {
    let volumes = validate_volumes(e, list(spec, "volumes"), &format!("{p}.volumes"));
    let containers = list(spec, "containers");
    if containers.is_empty() {
        e.required(&format!("{p}.containers"), "");
    }
    let mut names = BTreeSet::new();
    for (list_name, kind) in [
        ("containers", ContainerKind::Regular),
        ("initContainers", ContainerKind::Init),
        ("ephemeralContainers", ContainerKind::Ephemeral),
    ] {
        for (i, c) in list(spec, list_name).iter().enumerate() {
            let cp = format!("{p}.{list_name}[{i}]");
            validate_container(e, c, &cp, kind, &volumes, &mut names);
        }
    }
    if get(spec, "restartPolicy").is_some() {
        let policy = string(spec, "restartPolicy");
        check_enum(
            e,
            &format!("{p}.restartPolicy"),
            policy,
            &["Always", "OnFailure", "Never"],
        );
    }
    if get(spec, "dnsPolicy").is_some() {
        let policy = string(spec, "dnsPolicy");
        let supported = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        check_enum(e, &format!("{p}.dnsPolicy"), policy, &supported);
    }
    validate_labels(e, map(spec, "nodeSelector"), &format!("{p}.nodeSelector"));
    for (key, rule) in [
        (
            "serviceAccountName",
            is_dns1123_subdomain as fn(&str) -> Vec<String>,
        ),
        ("nodeName", is_dns1123_subdomain),
        ("hostname", is_dns1123_label),
        ("subdomain", is_dns1123_label),
        ("priorityClassName", is_dns1123_subdomain),
    ] {
        let value = string(spec, key);
        if !value.is_empty() {
            e.invalid_each(&format!("{p}.{key}"), value, rule(value));
        }
    }
    if let Some(n) = int(spec, "activeDeadlineSeconds")
        && !(1..=i64::from(i32::MAX)).contains(&n)
    {
        let field = format!("{p}.activeDeadlineSeconds");
        e.invalid(
            &field,
            Bad::Int(n),
            "must be between 1 and 2147483647, inclusive",
        );
    }
    e.nonnegative(
        &format!("{p}.terminationGracePeriodSeconds"),
        int(spec, "terminationGracePeriodSeconds"),
    );
    for (i, t) in list(spec, "tolerations").iter().enumerate() {
        validate_toleration(e, t, &format!("{p}.tolerations[{i}]"));
    }
}

/// Required when empty, NotSupported when unknown: the shape of the real enum checks.
fn check_enum(e: &mut Errs, field: &str, value: &str, supported: &[&str]) {
    if value.is_empty() {
        e.required(field, "");
    } else if !supported.contains(&value) {
        e.not_supported(field, value, supported);
    }
}

const VOLUME_SOURCES: [&str; 30] = [
    "hostPath",
    "emptyDir",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flexVolume",
    "persistentVolumeClaim",
    "rbd",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "configMap",
    "projected",
    "csi",
    "ephemeral",
    "image",
];

/// Returns the valid volume names, which volume mounts must refer to.
fn validate_volumes(e: &mut Errs, volumes: &[Value], p: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let vp = format!("{p}[{i}]");
        let before = e.0.len();
        let name = string(v, "name");
        let name_field = format!("{vp}.name");
        if name.is_empty() {
            e.required(&name_field, "");
        } else {
            e.invalid_each(&name_field, name, is_dns1123_label(name));
        }
        if names.contains(name) {
            e.duplicate(&name_field, name);
        }
        let mut sources = 0;
        for source in VOLUME_SOURCES {
            if get(v, source).is_none() {
                continue;
            }
            sources += 1;
            if sources > 1 {
                e.forbidden(
                    &format!("{vp}.{source}"),
                    "may not specify more than 1 volume type",
                );
            }
        }
        if sources == 0 {
            e.required(&vp, "must specify a volume type");
        }
        validate_volume_source(e, v, &vp);
        if e.0.len() == before {
            names.insert(name.to_string());
        }
    }
    names
}

fn validate_volume_source(e: &mut Errs, v: &Value, vp: &str) {
    let required_strings = [
        ("configMap", "name"),
        ("secret", "secretName"),
        ("hostPath", "path"),
        ("persistentVolumeClaim", "claimName"),
        ("nfs", "server"),
        ("nfs", "path"),
        ("csi", "driver"),
    ];
    for (source, key) in required_strings {
        if let Some(s) = get(v, source)
            && string(s, key).is_empty()
        {
            e.required(&format!("{vp}.{source}.{key}"), "");
        }
    }
    for source in ["configMap", "secret"] {
        if let Some(s) = get(v, source) {
            for (i, item) in list(s, "items").iter().enumerate() {
                let ip = format!("{vp}.{source}.items[{i}]");
                if string(item, "key").is_empty() {
                    e.required(&format!("{ip}.key"), "");
                }
                let path = string(item, "path");
                let path_field = format!("{ip}.path");
                if path.is_empty() {
                    e.required(&path_field, "");
                }
                validate_local_non_reserved_path(e, path, &path_field);
            }
        }
    }
    if let Some(limit) = get(v, "emptyDir").and_then(|d| get(d, "sizeLimit"))
        && let Some(text) = quantity_text(limit)
    {
        validate_nonnegative_quantity(e, &text, &format!("{vp}.emptyDir.sizeLimit"));
    }
}

fn validate_local_descending_path(e: &mut Errs, path: &str, field: &str) {
    if path.starts_with('/') {
        e.invalid(field, Bad::Str(path), "must be a relative path");
    }
    if path.split('/').any(|part| part == "..") {
        e.invalid(field, Bad::Str(path), "must not contain '..'");
    }
}

fn validate_local_non_reserved_path(e: &mut Errs, path: &str, field: &str) {
    validate_local_descending_path(e, path, field);
    if path.starts_with("..") && !path.starts_with("../") {
        e.invalid(field, Bad::Str(path), "must not start with '..'");
    }
}

fn validate_container(
    e: &mut Errs,
    c: &Value,
    cp: &str,
    kind: ContainerKind,
    volumes: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
) {
    let name = string(c, "name");
    let name_field = format!("{cp}.name");
    if name.is_empty() {
        e.required(&name_field, "");
    } else {
        e.invalid_each(&name_field, name, is_dns1123_label(name));
    }
    if !names.insert(name.to_string()) {
        e.duplicate(&name_field, name);
    }
    let image = string(c, "image");
    if image.is_empty() {
        e.required(&format!("{cp}.image"), "");
    } else if image.trim() != image {
        e.invalid(
            &format!("{cp}.image"),
            Bad::Str(image),
            "must not have leading or trailing whitespace",
        );
    }
    if get(c, "imagePullPolicy").is_some() {
        let policy = string(c, "imagePullPolicy");
        let supported = ["Always", "IfNotPresent", "Never"];
        check_enum(e, &format!("{cp}.imagePullPolicy"), policy, &supported);
    }
    if get(c, "terminationMessagePolicy").is_some() {
        let policy = string(c, "terminationMessagePolicy");
        let supported = ["File", "FallbackToLogsOnError"];
        check_enum(
            e,
            &format!("{cp}.terminationMessagePolicy"),
            policy,
            &supported,
        );
    }
    if get(c, "restartPolicy").is_some() {
        let field = format!("{cp}.restartPolicy");
        let policy = string(c, "restartPolicy");
        match kind {
            ContainerKind::Init if policy != "Always" => {
                e.not_supported(&field, policy, &["Always"])
            }
            ContainerKind::Init => {}
            _ => e.forbidden(&field, "may not be set for non-init containers"),
        }
    }
    validate_ports(e, list(c, "ports"), &format!("{cp}.ports"));
    validate_env(e, list(c, "env"), &format!("{cp}.env"));
    validate_env_from(e, list(c, "envFrom"), &format!("{cp}.envFrom"));
    validate_volume_mounts(
        e,
        list(c, "volumeMounts"),
        &format!("{cp}.volumeMounts"),
        volumes,
    );
    if let Some(resources) = get(c, "resources") {
        validate_resources(e, resources, &format!("{cp}.resources"));
    }
}

fn validate_ports(e: &mut Errs, ports: &[Value], p: &str) {
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = format!("{p}[{i}]");
        let name = string(port, "name");
        if !name.is_empty() {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                e.invalid_each(&format!("{pp}.name"), name, msgs);
            } else if !names.insert(name) {
                e.duplicate(&format!("{pp}.name"), name);
            }
        }
        match int(port, "containerPort").unwrap_or(0) {
            0 => e.required(&format!("{pp}.containerPort"), ""),
            n if !(1..=65535).contains(&n) => e.invalid(
                &format!("{pp}.containerPort"),
                Bad::Int(n),
                "must be between 1 and 65535, inclusive",
            ),
            _ => {}
        }
        if let Some(n) = int(port, "hostPort")
            && n != 0
            && !(1..=65535).contains(&n)
        {
            let field = format!("{pp}.hostPort");
            e.invalid(
                &field,
                Bad::Int(n),
                "must be between 1 and 65535, inclusive",
            );
        }
        if get(port, "protocol").is_some() {
            let protocol = string(port, "protocol");
            check_enum(
                e,
                &format!("{pp}.protocol"),
                protocol,
                &["SCTP", "TCP", "UDP"],
            );
        }
    }
}

/// `IsValidPortName` (IANA service names).
fn is_valid_port_name(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > 15 {
        errs.push(max_len_error(15));
    }
    let b = name.as_bytes();
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if !b.iter().any(u8::is_ascii_lowercase) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

const ENV_FIELD_PATHS: [&str; 9] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

const ENV_RESOURCE_FIELDS: [&str; 6] = [
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

fn validate_env(e: &mut Errs, env: &[Value], p: &str) {
    for (i, ev) in env.iter().enumerate() {
        let ep = format!("{p}[{i}]");
        let name = string(ev, "name");
        if name.is_empty() {
            e.required(&format!("{ep}.name"), "");
        } else {
            e.invalid_each(&format!("{ep}.name"), name, is_env_var_name(name));
        }
        let Some(from) = get(ev, "valueFrom") else {
            continue;
        };
        let fp = format!("{ep}.valueFrom");
        let mut sources = 0;
        if let Some(r) = get(from, "fieldRef") {
            sources += 1;
            let path = string(r, "fieldPath");
            let field = format!("{fp}.fieldRef.fieldPath");
            let subscript = ["metadata.labels['", "metadata.annotations['"]
                .iter()
                .any(|pre| path.starts_with(pre) && path.ends_with("']"));
            if path.is_empty() {
                e.required(&field, "");
            } else if !subscript && !ENV_FIELD_PATHS.contains(&path) {
                e.not_supported(&field, path, &ENV_FIELD_PATHS);
            }
        }
        if let Some(r) = get(from, "resourceFieldRef") {
            sources += 1;
            let resource = string(r, "resource");
            let field = format!("{fp}.resourceFieldRef.resource");
            let hugepages = resource.starts_with("limits.hugepages-")
                || resource.starts_with("requests.hugepages-");
            if resource.is_empty() {
                e.required(&field, "");
            } else if !hugepages && !ENV_RESOURCE_FIELDS.contains(&resource) {
                e.not_supported(&field, resource, &ENV_RESOURCE_FIELDS);
            }
        }
        for source in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(r) = get(from, source) {
                sources += 1;
                let sp = format!("{fp}.{source}");
                let name = string(r, "name");
                let msgs = name_check(is_dns1123_subdomain, name, false);
                e.invalid_each(&format!("{sp}.name"), name, msgs);
                let key = string(r, "key");
                if key.is_empty() {
                    e.required(&format!("{sp}.key"), "");
                } else {
                    e.invalid_each(&format!("{sp}.key"), key, is_config_map_key(key));
                }
            }
        }
        if get(from, "fileKeyRef").is_some() {
            sources += 1;
        }
        if sources == 0 {
            let detail = "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`";
            e.invalid(&fp, Bad::Str(""), detail);
        } else if !string(ev, "value").is_empty() {
            e.invalid(
                &fp,
                Bad::Str(""),
                "may not be specified when `value` is not empty",
            );
        } else if sources > 1 {
            e.invalid(
                &fp,
                Bad::Str(""),
                "may not have more than one field specified at a time",
            );
        }
    }
}

fn validate_env_from(e: &mut Errs, env_from: &[Value], p: &str) {
    for (i, ev) in env_from.iter().enumerate() {
        let ep = format!("{p}[{i}]");
        let prefix = string(ev, "prefix");
        if !prefix.is_empty() {
            e.invalid_each(&format!("{ep}.prefix"), prefix, is_env_var_name(prefix));
        }
        let mut sources = 0;
        for source in ["configMapRef", "secretRef"] {
            if let Some(r) = get(ev, source) {
                sources += 1;
                let name = string(r, "name");
                let field = format!("{ep}.{source}.name");
                if name.is_empty() {
                    e.required(&field, "");
                } else {
                    e.invalid_each(&field, name, name_check(is_dns1123_subdomain, name, true));
                }
            }
        }
        // The real code reports these on the list, not the item.
        if sources == 0 {
            e.invalid(
                p,
                Bad::Str(""),
                "must specify one of: `configMapRef` or `secretRef`",
            );
        } else if sources > 1 {
            e.invalid(
                p,
                Bad::Str(""),
                "may not have more than one field specified at a time",
            );
        }
    }
}

fn validate_volume_mounts(e: &mut Errs, mounts: &[Value], p: &str, volumes: &BTreeSet<String>) {
    let mut mount_points = BTreeSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let mp = format!("{p}[{i}]");
        let name = string(m, "name");
        if name.is_empty() {
            e.required(&format!("{mp}.name"), "");
        }
        if !volumes.contains(name) {
            e.not_found(&format!("{mp}.name"), name);
        }
        let path = string(m, "mountPath");
        if path.is_empty() {
            e.required(&format!("{mp}.mountPath"), "");
        }
        if !mount_points.insert(path) {
            e.invalid(&format!("{mp}.mountPath"), Bad::Str(path), "must be unique");
        }
        let sub_path = string(m, "subPath");
        if !sub_path.is_empty() {
            validate_local_descending_path(e, sub_path, &format!("{mp}.subPath"));
        }
    }
}

fn is_standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

fn validate_nonnegative_quantity(e: &mut Errs, text: &str, field: &str) -> Option<i128> {
    match quantity_milli_value(text) {
        None => {
            e.invalid(field, Bad::Str(text), QUANTITY_FORMAT_ERROR);
            None
        }
        Some(v) if v < 0 => {
            e.invalid(field, Bad::Str(text), "must be greater than or equal to 0");
            None
        }
        Some(v) => Some(v),
    }
}

fn validate_resources(e: &mut Errs, resources: &Value, p: &str) {
    let mut parsed: [BTreeMap<&str, (String, i128)>; 2] = Default::default();
    for (slot, which) in ["limits", "requests"].iter().enumerate() {
        for (name, q) in map(resources, which).into_iter().flatten() {
            let field = format!("{p}.{which}[{name}]");
            e.invalid_each(&field, name, is_qualified_name(name));
            if !name.contains('/') && !is_standard_container_resource(name) {
                e.invalid(
                    &field,
                    Bad::Str(name),
                    "must be a standard resource for containers",
                );
            }
            let Some(text) = quantity_text(q) else {
                continue;
            };
            if let Some(v) = validate_nonnegative_quantity(e, &text, &field) {
                parsed[slot].insert(name, (text, v));
            }
        }
    }
    let [limits, requests] = &parsed;
    for (name, (text, request)) in requests {
        if let Some((limit_text, limit)) = limits.get(name)
            && request > limit
        {
            let detail = format!("must be less than or equal to {name} limit of {limit_text}");
            e.invalid(&format!("{p}.requests"), Bad::Str(text), &detail);
        }
    }
}

fn validate_toleration(e: &mut Errs, t: &Value, tp: &str) {
    let key = string(t, "key");
    let operator = string(t, "operator");
    let effect = string(t, "effect");
    let value = string(t, "value");
    let operator_field = format!("{tp}.operator");
    if !key.is_empty() {
        e.invalid_each(&format!("{tp}.key"), key, is_qualified_name(key));
    } else if operator != "Exists" {
        e.invalid(
            &operator_field,
            Bad::Str(operator),
            "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
        );
    }
    if get(t, "tolerationSeconds").is_some() && effect != "NoExecute" {
        e.invalid(
            &format!("{tp}.effect"),
            Bad::Str(effect),
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        );
    }
    match operator {
        "Equal" | "" => e.invalid_each(&operator_field, value, is_valid_label_value(value)),
        "Exists" => {
            if !value.is_empty() {
                e.invalid(
                    &operator_field,
                    Bad::Json(t),
                    "value must be empty when `operator` is 'Exists'",
                );
            }
        }
        other => e.not_supported(&operator_field, other, &["Equal", "Exists"]),
    }
    if !effect.is_empty() && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        let supported = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
        e.not_supported(&format!("{tp}.effect"), effect, &supported);
    }
}

// ---------------------------------------------------------------------------------------------
// Job
// ---------------------------------------------------------------------------------------------

fn validate_job(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let null = Value::Null;
    let meta = get(obj, "metadata").unwrap_or(&null);
    let name = string(meta, "name");
    // The job name becomes the value of the pods' job-name label, so it must fit in one.
    if name.len() > DNS1123_LABEL_MAX && name.len() <= DNS1123_SUBDOMAIN_MAX {
        e.invalid(
            "metadata.name",
            Bad::Str(name),
            &max_len_error(DNS1123_LABEL_MAX),
        );
    }
    let spec = get(obj, "spec").unwrap_or(&null);
    for key in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        e.nonnegative(&format!("spec.{key}"), int(spec, key));
    }
    let mode = string(spec, "completionMode");
    if get(spec, "completionMode").is_some() {
        if !["NonIndexed", "Indexed"].contains(&mode) {
            e.not_supported("spec.completionMode", mode, &["NonIndexed", "Indexed"]);
        }
        if mode == "Indexed" {
            if int(spec, "completions").is_none() {
                e.required("spec.completions", "when completion mode is Indexed");
            }
            if let Some(n) = int(spec, "parallelism")
                && n > 100_000
            {
                let detail = "must be less than or equal to 100000 when completion mode is Indexed";
                e.invalid("spec.parallelism", Bad::Int(n), detail);
            }
        }
    }
    if mode == "Indexed"
        && let Some(completions) = int(spec, "completions")
        && completions > 0
    {
        let hostname = format!("{name}-{}", completions - 1);
        if !is_dns1123_label(&hostname).is_empty() {
            let detail = format!("will not able to create pod with invalid DNS label: {hostname}");
            e.invalid("metadata.name", Bad::Str(name), &detail);
        }
    }
    if get(spec, "podReplacementPolicy").is_some() {
        let policy = string(spec, "podReplacementPolicy");
        let supported = ["Failed", "TerminatingOrFailed"];
        if !supported.contains(&policy) {
            e.not_supported("spec.podReplacementPolicy", policy, &supported);
        }
    }
    let template = get(spec, "template").unwrap_or(&null);
    let template_meta = get(template, "metadata").unwrap_or(&null);
    let template_labels = map(template_meta, "labels");
    validate_labels(e, template_labels, "spec.template.labels");
    validate_annotations(
        e,
        map(template_meta, "annotations"),
        "spec.template.annotations",
    );
    let pod_spec = get(template, "spec").unwrap_or(&null);
    validate_pod_spec(e, pod_spec, "spec.template.spec");
    let restart = string(pod_spec, "restartPolicy");
    if restart != "OnFailure" && restart != "Never" {
        e.not_supported(
            "spec.template.spec.restartPolicy",
            restart,
            &["OnFailure", "Never"],
        );
    }
    match get(spec, "selector") {
        None => e.required("spec.selector", ""),
        Some(selector) => {
            validate_label_selector(e, selector, "spec.selector");
            let empty = Map::new();
            if selector_matches(selector, template_labels.unwrap_or(&empty)) == Some(false) {
                let labels = get(template_meta, "labels").unwrap_or(&null);
                e.invalid(
                    "spec.template.metadata.labels",
                    Bad::Json(labels),
                    "`selector` does not match template `labels`",
                );
            }
        }
    }
    if let Some(old) = old {
        validate_job_spec_update(e, obj, old);
    }
}

fn validate_label_selector(e: &mut Errs, selector: &Value, p: &str) {
    validate_labels(e, map(selector, "matchLabels"), &format!("{p}.matchLabels"));
    for (i, req) in list(selector, "matchExpressions").iter().enumerate() {
        let rp = format!("{p}.matchExpressions[{i}]");
        let values = list(req, "values");
        match string(req, "operator") {
            "In" | "NotIn" if values.is_empty() => e.required(
                &format!("{rp}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            ),
            "Exists" | "DoesNotExist" if !values.is_empty() => e.forbidden(
                &format!("{rp}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => e.invalid(
                &format!("{rp}.operator"),
                Bad::Str(other),
                "not a valid selector operator",
            ),
        }
        let key = string(req, "key");
        e.invalid_each(&format!("{rp}.key"), key, is_qualified_name(key));
        for (j, value) in values.iter().enumerate() {
            let value = value.as_str().unwrap_or("");
            e.invalid_each(
                &format!("{rp}.values[{j}]"),
                value,
                is_valid_label_value(value),
            );
        }
    }
}

/// `metav1.LabelSelectorAsSelector(...).Matches(labels)`; None when the selector is unusable.
fn selector_matches(selector: &Value, labels: &Map<String, Value>) -> Option<bool> {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    for (key, value) in map(selector, "matchLabels").into_iter().flatten() {
        if label(key) != Some(value.as_str()?) {
            return Some(false);
        }
    }
    for req in list(selector, "matchExpressions") {
        let key = string(req, "key");
        let values: Vec<&str> = list(req, "values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let ok = match string(req, "operator") {
            "In" => label(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => label(key).is_some(),
            "DoesNotExist" => label(key).is_none(),
            _ => return None,
        };
        if !ok {
            return Some(false);
        }
    }
    Some(true)
}

/// `ValidateJobSpecUpdate`: only metadata, status, and a few spec fields may change.
fn validate_job_spec_update(e: &mut Errs, obj: &Value, old: &Value) {
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    let old_spec = get(old, "spec").unwrap_or(&null);
    let mode = string(spec, "completionMode");
    if !same(get(spec, "completions"), get(old_spec, "completions")) {
        // Elastic Indexed Jobs may scale completions together with parallelism.
        let elastic = mode == "Indexed" && int(spec, "completions").is_some();
        if !elastic {
            let value = get(spec, "completions").unwrap_or(&null);
            e.invalid("spec.completions", Bad::Json(value), IMMUTABLE);
        } else if int(spec, "completions") != int(spec, "parallelism") {
            let value = get(spec, "completions").unwrap_or(&null);
            let detail = "can only be modified in tandem with spec.parallelism";
            e.invalid("spec.completions", Bad::Json(value), detail);
        }
    }
    if !same(get(spec, "selector"), get(old_spec, "selector")) {
        let value = get(spec, "selector").unwrap_or(&null);
        e.invalid("spec.selector", Bad::Json(value), IMMUTABLE);
    }
    let template = get(spec, "template").unwrap_or(&null);
    let old_template = get(old_spec, "template").unwrap_or(&null);
    // A suspended Job that never started may have its scheduling directives changed.
    let suspended = spec.get("suspend").and_then(Value::as_bool) == Some(true);
    let started = get(old, "status").is_some_and(|s| get(s, "startTime").is_some());
    let mut comparable_old = old_template.clone();
    if suspended && !started {
        copy_scheduling_directives(template, &mut comparable_old);
    }
    if !same(Some(template), Some(&comparable_old)) {
        e.invalid("spec.template", Bad::Json(template), IMMUTABLE);
    }
    for key in [
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "managedBy",
        "successPolicy",
    ] {
        if !same(get(spec, key), get(old_spec, key)) {
            let value = get(spec, key).unwrap_or(&null);
            e.invalid(&format!("spec.{key}"), Bad::Json(value), IMMUTABLE);
        }
    }
}

fn copy_scheduling_directives(from: &Value, to: &mut Value) {
    let set = |to: &mut Value, outer: &str, key: &str, value: Option<&Value>| {
        if !to.get(outer).is_some_and(Value::is_object) {
            to[outer] = Value::Object(Map::new());
        }
        let Some(m) = to[outer].as_object_mut() else {
            return;
        };
        match value {
            Some(v) => m.insert(key.to_string(), v.clone()),
            None => m.remove(key),
        };
    };
    let meta = from.get("metadata");
    let spec = from.get("spec");
    for key in ["labels", "annotations"] {
        set(to, "metadata", key, meta.and_then(|m| m.get(key)));
    }
    for key in ["nodeSelector", "tolerations", "schedulingGates"] {
        set(to, "spec", key, spec.and_then(|s| s.get(key)));
    }
    let node_affinity = spec
        .and_then(|s| s.get("affinity"))
        .and_then(|a| a.get("nodeAffinity"));
    if node_affinity.is_some() || to.pointer("/spec/affinity").is_some() {
        if !to.pointer("/spec/affinity").is_some_and(Value::is_object) {
            to["spec"]["affinity"] = Value::Object(Map::new());
        }
        set(&mut to["spec"], "affinity", "nodeAffinity", node_affinity);
    }
}

// ---------------------------------------------------------------------------------------------
// Quantities
// ---------------------------------------------------------------------------------------------

/// A parsed quantity: `sign * digits * 10^-fraction_digits * base^exponent`.
struct Quantity {
    negative: bool,
    digits: String,
    fraction_digits: usize,
    binary: bool,
    exponent: i32,
}

/// `resource.ParseQuantity`'s grammar: sign, digits, optional fraction, then a suffix that is
/// a binary SI (`Ki`..`Ei`), decimal SI (`n`..`E`) or decimal exponent (`e3`, `E-2`).
fn parse_quantity(s: &str) -> Option<Quantity> {
    if s.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    let mut pos = 0;
    let mut negative = false;
    match b[0] {
        b'-' => {
            negative = true;
            pos = 1;
        }
        b'+' => pos = 1,
        _ => {}
    }
    let digits_end =
        |from: usize| from + b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let int_end = digits_end(pos);
    let mut digits = s[pos..int_end].to_string();
    pos = int_end;
    let mut fraction_digits = 0;
    if pos < b.len() && b[pos] == b'.' {
        let frac_end = digits_end(pos + 1);
        digits.push_str(&s[pos + 1..frac_end]);
        fraction_digits = frac_end - pos - 1;
        pos = frac_end;
    }
    let suffix_start = pos;
    pos += b[pos..]
        .iter()
        .take_while(|c| b"eEinumkKMGTP".contains(c))
        .count();
    if pos < b.len() && matches!(b[pos], b'+' | b'-') {
        pos += 1;
    }
    if digits_end(pos) != b.len() {
        return None;
    }
    let (binary, exponent) = match &s[suffix_start..] {
        "" => (false, 0),
        "Ki" => (true, 10),
        "Mi" => (true, 20),
        "Gi" => (true, 30),
        "Ti" => (true, 40),
        "Pi" => (true, 50),
        "Ei" => (true, 60),
        "n" => (false, -9),
        "u" => (false, -6),
        "m" => (false, -3),
        "k" => (false, 3),
        "M" => (false, 6),
        "G" => (false, 9),
        "T" => (false, 12),
        "P" => (false, 15),
        "E" => (false, 18),
        other if other.starts_with(['e', 'E']) => (false, other[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(Quantity {
        negative,
        digits,
        fraction_digits,
        binary,
        exponent,
    })
}

/// Divides rounding away from zero, as `Quantity.MilliValue` rounds up.
fn div_round_up(n: i128, d: i128) -> i128 {
    n / d + i128::from(n % d != 0)
}

/// A Kubernetes quantity in thousandths of a unit ("500m" -> 500, "2" -> 2000, "1Gi" -> 1073741824000, "1e3" -> 1000000); None if it does not parse.
pub fn quantity_milli_value(quantity: &str) -> Option<i128> {
    let q = parse_quantity(quantity)?;
    let trimmed = q.digits.trim_start_matches('0');
    let mantissa: i128 = if trimmed.is_empty() {
        0
    } else {
        trimmed.parse().ok()?
    };
    let pow10 = |n: i64| -> Option<i128> { 10i128.checked_pow(u32::try_from(n).ok()?) };
    let fraction = i64::try_from(q.fraction_digits).ok()?;
    let magnitude = if q.binary {
        let scaled = mantissa
            .checked_mul(1i128.checked_shl(u32::try_from(q.exponent).ok()?)?)?
            .checked_mul(1000)?;
        match pow10(fraction) {
            Some(d) => div_round_up(scaled, d),
            None => i128::from(scaled != 0),
        }
    } else {
        let shift = i64::from(q.exponent) + 3 - fraction;
        if shift >= 0 {
            if mantissa == 0 {
                0
            } else {
                mantissa.checked_mul(pow10(shift)?)?
            }
        } else {
            match pow10(-shift) {
                Some(d) => div_round_up(mantissa, d),
                None => i128::from(mantissa != 0),
            }
        }
    };
    Some(if q.negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UID: &str = "8c5f2a9e-1d4b-4c7e-9a31-2f6b0d7e4c11";

    /// A Job as the server stores it after defaulting: everything a realistic CI job uses.
    fn job() -> Value {
        let mut job = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "build-1",
                "namespace": "ci",
                "uid": UID,
                "creationTimestamp": null,
                "labels": {"app.kubernetes.io/name": "ferry", "ferry.dev/run": "run-42"},
                "annotations": {"ferry.dev/commit": "abc123", "Description": "Nightly build"},
                "ownerReferences": [{
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "pipeline",
                    "uid": "0a6e6f0e-3c55-4b8e-8f3e-5a8c1c2d9b70",
                    "controller": true,
                    "blockOwnerDeletion": true
                }],
                "finalizers": ["batch.kubernetes.io/job-tracking"]
            },
            "spec": {
                "parallelism": 1,
                "completions": 1,
                "backoffLimit": 6,
                "completionMode": "NonIndexed",
                "suspend": false,
                "podReplacementPolicy": "TerminatingOrFailed",
                "activeDeadlineSeconds": 3600,
                "ttlSecondsAfterFinished": 600,
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": UID}},
                "template": {
                    "metadata": {
                        "creationTimestamp": null,
                        "labels": {
                            "batch.kubernetes.io/controller-uid": UID,
                            "batch.kubernetes.io/job-name": "build-1",
                            "controller-uid": UID,
                            "job-name": "build-1"
                        }
                    },
                    "spec": {
                        "restartPolicy": "Never",
                        "terminationGracePeriodSeconds": 30,
                        "dnsPolicy": "ClusterFirst",
                        "serviceAccountName": "default",
                        "schedulerName": "default-scheduler",
                        "securityContext": {},
                        "nodeSelector": {"kubernetes.io/os": "linux", "node.ferry.dev/pool": "builders"},
                        "tolerations": [
                            {"key": "dedicated", "operator": "Equal", "value": "builders", "effect": "NoSchedule"},
                            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                        ],
                        "volumes": [
                            {"name": "workspace", "emptyDir": {"sizeLimit": "2Gi"}},
                            {"name": "config", "configMap": {"name": "build-config", "items": [{"key": "settings.toml", "path": "settings.toml"}], "defaultMode": 420}},
                            {"name": "creds", "secret": {"secretName": "registry-creds", "defaultMode": 256}}
                        ],
                        "initContainers": [{
                            "name": "fetch",
                            "image": "alpine/git:2.45",
                            "args": ["clone", "https://example.com/ferry.git", "/workspace/src"],
                            "imagePullPolicy": "IfNotPresent",
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File",
                            "resources": {},
                            "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}]
                        }],
                        "containers": []
                    }
                }
            },
            "status": {}
        });
        job["spec"]["template"]["spec"]["containers"] = build_container();
        job
    }

    /// The main container of [`job`] (split out: one `json!` would hit the macro recursion limit).
    fn build_container() -> Value {
        json!([{
            "name": "build",
            "image": "registry.example.com/ferry/builder:1.2.3",
            "command": ["/bin/sh", "-c"],
            "args": ["make all"],
            "workingDir": "/workspace/src",
            "env": [
                {"name": "RUST_LOG", "value": "info"},
                {"name": "REGISTRY_TOKEN", "valueFrom": {"secretKeyRef": {"name": "registry-creds", "key": "token"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"containerName": "build", "resource": "limits.cpu", "divisor": "1m"}}}
            ],
            "envFrom": [
                {"configMapRef": {"name": "build-env"}},
                {"prefix": "SECRET_", "secretRef": {"name": "build-secrets", "optional": true}}
            ],
            "resources": {
                "requests": {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
                "limits": {"cpu": "2", "memory": "2Gi"}
            },
            "ports": [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
            "volumeMounts": [
                {"name": "workspace", "mountPath": "/workspace"},
                {"name": "config", "mountPath": "/etc/ferry", "readOnly": true},
                {"name": "creds", "mountPath": "/var/run/secrets/registry", "readOnly": true}
            ],
            "livenessProbe": {
                "httpGet": {"path": "/healthz", "port": "metrics", "scheme": "HTTP"},
                "periodSeconds": 10,
                "timeoutSeconds": 1,
                "successThreshold": 1,
                "failureThreshold": 3
            },
            "imagePullPolicy": "IfNotPresent",
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File"
        }])
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "default", "labels": {}, "annotations": {}, "creationTimestamp": null},
            "spec": {
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "serviceAccountName": "default",
                "volumes": [],
                "containers": [{
                    "name": "web",
                    "image": "nginx:1.27",
                    "env": [],
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
                    "livenessProbe": {"tcpSocket": {"port": "http"}},
                    "resources": {"requests": {"cpu": 1, "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                    "imagePullPolicy": "IfNotPresent",
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File"
                }]
            },
            "status": {"phase": "Pending", "qosClass": "Burstable"}
        })
    }

    fn config_map() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "build-config", "namespace": "ci"},
            "data": {"settings.toml": "level = 3\n", "KEY_NAME": "x", "key-name": ""},
            "binaryData": {"logo.png": "iVBORw0KGgo="}
        })
    }

    fn secret() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "registry-creds", "namespace": "ci"},
            "type": "Opaque",
            "data": {"token": "c2VjcmV0", "multi-line": "c2Vj\ncmV0"},
            "stringData": {"username": "ferry"}
        })
    }

    fn event() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "build-1.17f0a", "namespace": "ci"},
            "involvedObject": {"kind": "Job", "namespace": "ci", "name": "build-1", "uid": UID, "apiVersion": "batch/v1"},
            "reason": "SuccessfulCreate",
            "message": "Created pod: build-1-x7k2p",
            "source": {"component": "job-controller"},
            "firstTimestamp": "2026-01-02T03:04:05Z",
            "lastTimestamp": "2026-01-02T03:04:05Z",
            "count": 1,
            "type": "Normal",
            "eventTime": null,
            "reportingComponent": "job-controller",
            "reportingInstance": ""
        })
    }

    /// Sets the value at a JSON pointer, creating object members as needed.
    fn set(v: &mut Value, pointer: &str, value: Value) {
        let (parent, last) = pointer.rsplit_once('/').unwrap();
        let parent = if parent.is_empty() {
            &mut *v
        } else {
            v.pointer_mut(parent)
                .unwrap_or_else(|| panic!("no {parent}"))
        };
        match parent {
            Value::Array(a) => a[last.parse::<usize>().unwrap()] = value,
            Value::Object(m) => {
                m.insert(last.to_string(), value);
            }
            other => panic!("cannot set {last} in {other}"),
        }
    }

    fn with(mut v: Value, changes: &[(&str, Value)]) -> Value {
        for (pointer, value) in changes {
            set(&mut v, pointer, value.clone());
        }
        v
    }

    fn without(mut v: Value, pointer: &str) -> Value {
        let (parent, last) = pointer.rsplit_once('/').unwrap();
        v.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap()
            .remove(last);
        v
    }

    fn triples(causes: &[Cause]) -> Vec<(String, &'static str, String)> {
        causes
            .iter()
            .map(|c| (c.field.clone(), c.reason, c.message.clone()))
            .collect()
    }

    fn expect(label: &str, kind: Kind, obj: &Value, expected: &[(&str, &str, &str)]) {
        let got = validate(kind, obj, None);
        let want: Vec<(String, &str, String)> = expected
            .iter()
            .map(|(f, r, m)| (f.to_string(), *r, m.to_string()))
            .collect();
        assert_eq!(triples(&got), want, "case {label}");
    }

    const C0: &str = "/spec/template/spec/containers/0";

    /// An invalid-object case: label, kind, object, expected (field, reason, message) causes.
    type Case = (
        &'static str,
        Kind,
        Value,
        Vec<(String, &'static str, String)>,
    );

    #[test]
    fn valid_defaulted_objects_have_no_causes_and_no_unknown_fields() {
        let cases = [
            (Kind::Job, job()),
            (Kind::Pod, pod()),
            (Kind::ConfigMap, config_map()),
            (Kind::Secret, secret()),
            (Kind::Event, event()),
            (
                Kind::Namespace,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ci"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
            ),
            (
                Kind::ServiceAccount,
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "ci"}, "secrets": [], "imagePullSecrets": [{"name": "registry"}], "automountServiceAccountToken": false}),
            ),
        ];
        for (kind, obj) in cases {
            assert_eq!(validate(kind, &obj, None), vec![], "{kind:?}");
            assert_eq!(unknown_fields(kind, &obj), Ok(vec![]), "{kind:?}");
        }
    }

    #[test]
    fn generate_name_alone_is_enough_and_is_checked_as_a_prefix() {
        let pod = without(
            with(pod(), &[("/metadata/generateName", json!("build-1-"))]),
            "/metadata/name",
        );
        assert_eq!(validate(Kind::Pod, &pod, None), vec![]);
        let job = without(
            with(job(), &[("/metadata/generateName", json!("Build_"))]),
            "/metadata/name",
        );
        expect(
            "generateName",
            Kind::Job,
            &job,
            &[(
                "metadata.generateName",
                "FieldValueInvalid",
                &format!("Invalid value: \"Build_\": {DNS1123_SUBDOMAIN_ERR}"),
            )],
        );
    }

    #[test]
    fn invalid_objects_give_the_real_causes() {
        let inv = |v: &str, msg: &str| format!("Invalid value: {v}: {msg}");
        let label_err = |v: &str| inv(&format!("\"{v}\""), DNS1123_LABEL_ERR);
        let sub_err = |v: &str| inv(&format!("\"{v}\""), DNS1123_SUBDOMAIN_ERR);
        let long = "a".repeat(64);
        let big = "x".repeat(MAX_SECRET_SIZE + 1);
        let huge_annotation = "y".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let pod_c0 = "/spec/containers/0";
        let cases: Vec<Case> = vec![
            ("job name", Kind::Job, with(job(), &[("/metadata/name", json!("Build_1"))]),
                vec![("metadata.name".into(), "FieldValueInvalid", sub_err("Build_1"))]),
            ("job name too long", Kind::Job, with(job(), &[("/metadata/name", json!(long))]),
                vec![("metadata.name".into(), "FieldValueInvalid", inv(&format!("\"{long}\""), "must be no more than 63 characters"))]),
            ("no name", Kind::ConfigMap, without(config_map(), "/metadata/name"),
                vec![("metadata.name".into(), "FieldValueRequired", "Required value: name or generateName is required".into())]),
            ("configmap name", Kind::ConfigMap, with(config_map(), &[("/metadata/name", json!("Bad_Name"))]),
                vec![("metadata.name".into(), "FieldValueInvalid", sub_err("Bad_Name"))]),
            ("namespace name", Kind::Namespace, json!({"metadata": {"name": "team.a"}}),
                vec![("metadata.name".into(), "FieldValueInvalid", label_err("team.a"))]),
            ("service account name", Kind::ServiceAccount, json!({"metadata": {"name": "sa_1"}}),
                vec![("metadata.name".into(), "FieldValueInvalid", sub_err("sa_1"))]),
            ("label value", Kind::Pod, with(pod(), &[("/metadata/labels", json!({"app": "bad value!"}))]),
                vec![("metadata.labels".into(), "FieldValueInvalid", inv("\"bad value!\"", LABEL_VALUE_ERR))]),
            ("label key", Kind::Pod, with(pod(), &[("/metadata/labels", json!({"-app": "x"}))]),
                vec![("metadata.labels".into(), "FieldValueInvalid", inv("\"-app\"", &format!("name part {QUALIFIED_NAME_ERR}")))]),
            ("annotation key", Kind::Secret, with(secret(), &[("/metadata/annotations", json!({"a/b/c": "x"}))]),
                vec![("metadata.annotations".into(), "FieldValueInvalid", inv("\"a/b/c\"", &format!("a qualified name {QUALIFIED_NAME_ERR} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")))]),
            ("annotations too big", Kind::ConfigMap, with(config_map(), &[("/metadata/annotations", json!({"big": huge_annotation}))]),
                vec![("metadata.annotations".into(), "FieldValueTooLong", "Too long: may not be more than 262144 bytes".into())]),
            ("owner reference", Kind::Job, with(job(), &[("/metadata/ownerReferences/0/uid", json!("")), ("/metadata/ownerReferences/0/apiVersion", json!(""))]),
                vec![
                    ("metadata.ownerReferences.apiVersion".into(), "FieldValueInvalid", "Invalid value: \"\": version must not be empty".into()),
                    ("metadata.ownerReferences.uid".into(), "FieldValueInvalid", "Invalid value: \"\": uid must not be empty".into()),
                ]),
            ("finalizer", Kind::ConfigMap, with(config_map(), &[("/metadata/finalizers", json!(["custom"]))]),
                vec![("metadata.finalizers".into(), "FieldValueInvalid", "Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified".into())]),
            ("no containers", Kind::Pod, with(pod(), &[("/spec/containers", json!([]))]),
                vec![("spec.containers".into(), "FieldValueRequired", "Required value".into())]),
            ("container name", Kind::Job, with(job(), &[(&format!("{C0}/name"), json!("Build"))]),
                vec![("spec.template.spec.containers[0].name".into(), "FieldValueInvalid", label_err("Build"))]),
            ("duplicate container", Kind::Job, with(job(), &[(&format!("{C0}/name"), json!("fetch"))]),
                vec![("spec.template.spec.initContainers[0].name".into(), "FieldValueDuplicate", "Duplicate value: \"fetch\"".into())]),
            ("no image", Kind::Pod, without(pod(), &format!("{pod_c0}/image")),
                vec![("spec.containers[0].image".into(), "FieldValueRequired", "Required value".into())]),
            ("pull policy", Kind::Job, with(job(), &[(&format!("{C0}/imagePullPolicy"), json!("Sometimes"))]),
                vec![("spec.template.spec.containers[0].imagePullPolicy".into(), "FieldValueNotSupported", "Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"".into())]),
            ("pod restart policy", Kind::Pod, with(pod(), &[("/spec/restartPolicy", json!("Sometimes"))]),
                vec![("spec.restartPolicy".into(), "FieldValueNotSupported", "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"".into())]),
            ("job restart policy", Kind::Job, with(job(), &[("/spec/template/spec/restartPolicy", json!("Always"))]),
                vec![("spec.template.spec.restartPolicy".into(), "FieldValueNotSupported", "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"".into())]),
            ("env name", Kind::Job, with(job(), &[(&format!("{C0}/env/0/name"), json!("A=B"))]),
                vec![("spec.template.spec.containers[0].env[0].name".into(), "FieldValueInvalid", inv("\"A=B\"", ENV_VAR_NAME_ERR))]),
            ("env value and valueFrom", Kind::Job, with(job(), &[(&format!("{C0}/env/1/value"), json!("literal"))]),
                vec![("spec.template.spec.containers[0].env[1].valueFrom".into(), "FieldValueInvalid", "Invalid value: \"\": may not be specified when `value` is not empty".into())]),
            ("env two sources", Kind::Job, with(job(), &[(&format!("{C0}/env/1/valueFrom/configMapKeyRef"), json!({"name": "cm", "key": "k"}))]),
                vec![("spec.template.spec.containers[0].env[1].valueFrom".into(), "FieldValueInvalid", "Invalid value: \"\": may not have more than one field specified at a time".into())]),
            ("env no source", Kind::Pod, with(pod(), &[(&format!("{pod_c0}/env"), json!([{"name": "X", "valueFrom": {}}]))]),
                vec![("spec.containers[0].env[0].valueFrom".into(), "FieldValueInvalid", "Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`".into())]),
            ("secretKeyRef without key", Kind::Job, with(job(), &[(&format!("{C0}/env/1/valueFrom/secretKeyRef/key"), json!(""))]),
                vec![("spec.template.spec.containers[0].env[1].valueFrom.secretKeyRef.key".into(), "FieldValueRequired", "Required value".into())]),
            ("envFrom no source", Kind::Pod, with(pod(), &[(&format!("{pod_c0}/envFrom"), json!([{"prefix": "P_"}]))]),
                vec![("spec.containers[0].envFrom".into(), "FieldValueInvalid", "Invalid value: \"\": must specify one of: `configMapRef` or `secretRef`".into())]),
            ("volume name", Kind::Pod, with(pod(), &[("/spec/volumes", json!([{"name": "Data", "emptyDir": {}}]))]),
                vec![("spec.volumes[0].name".into(), "FieldValueInvalid", label_err("Data"))]),
            ("duplicate volume", Kind::Job, with(job(), &[("/spec/template/spec/volumes/2/name", json!("config"))]),
                vec![
                    ("spec.template.spec.volumes[2].name".into(), "FieldValueDuplicate", "Duplicate value: \"config\"".into()),
                    ("spec.template.spec.containers[0].volumeMounts[2].name".into(), "FieldValueNotFound", "Not found: \"creds\"".into()),
                ]),
            ("volume without source", Kind::Pod, with(pod(), &[("/spec/volumes", json!([{"name": "data"}]))]),
                vec![("spec.volumes[0]".into(), "FieldValueRequired", "Required value: must specify a volume type".into())]),
            ("mount of missing volume", Kind::Pod, with(pod(), &[(&format!("{pod_c0}/volumeMounts"), json!([{"name": "cache", "mountPath": "/cache"}]))]),
                vec![("spec.containers[0].volumeMounts[0].name".into(), "FieldValueNotFound", "Not found: \"cache\"".into())]),
            ("mount without path", Kind::Job, without(job(), &format!("{C0}/volumeMounts/1/mountPath")),
                vec![("spec.template.spec.containers[0].volumeMounts[1].mountPath".into(), "FieldValueRequired", "Required value".into())]),
            ("bad quantity", Kind::Pod, with(pod(), &[(&format!("{pod_c0}/resources/limits/cpu"), json!("lots"))]),
                vec![("spec.containers[0].resources.limits[cpu]".into(), "FieldValueInvalid", inv("\"lots\"", QUANTITY_FORMAT_ERROR))]),
            ("request above limit", Kind::Job, with(job(), &[(&format!("{C0}/resources/requests/cpu"), json!("2500m"))]),
                vec![("spec.template.spec.containers[0].resources.requests".into(), "FieldValueInvalid", "Invalid value: \"2500m\": must be less than or equal to cpu limit of 2".into())]),
            ("negative quantity", Kind::Pod, with(pod(), &[(&format!("{pod_c0}/resources/requests/memory"), json!("-1Mi"))]),
                vec![("spec.containers[0].resources.requests[memory]".into(), "FieldValueInvalid", "Invalid value: \"-1Mi\": must be greater than or equal to 0".into())]),
            ("unknown resource", Kind::Pod, with(pod(), &[(&format!("{pod_c0}/resources/limits/gpu"), json!("1"))]),
                vec![("spec.containers[0].resources.limits[gpu]".into(), "FieldValueInvalid", "Invalid value: \"gpu\": must be a standard resource for containers".into())]),
            ("node selector", Kind::Job, with(job(), &[("/spec/template/spec/nodeSelector/pool", json!("a b"))]),
                vec![("spec.template.spec.nodeSelector".into(), "FieldValueInvalid", inv("\"a b\"", LABEL_VALUE_ERR))]),
            ("toleration operator", Kind::Job, with(job(), &[("/spec/template/spec/tolerations/0/operator", json!("Maybe"))]),
                vec![("spec.template.spec.tolerations[0].operator".into(), "FieldValueNotSupported", "Unsupported value: \"Maybe\": supported values: \"Equal\", \"Exists\"".into())]),
            ("grace period", Kind::Pod, with(pod(), &[("/spec/terminationGracePeriodSeconds", json!(-1))]),
                vec![("spec.terminationGracePeriodSeconds".into(), "FieldValueInvalid", "Invalid value: -1: must be greater than or equal to 0".into())]),
            ("pod deadline", Kind::Pod, with(pod(), &[("/spec/activeDeadlineSeconds", json!(0))]),
                vec![("spec.activeDeadlineSeconds".into(), "FieldValueInvalid", "Invalid value: 0: must be between 1 and 2147483647, inclusive".into())]),
            ("job counts", Kind::Job, with(job(), &[("/spec/parallelism", json!(-2)), ("/spec/backoffLimit", json!(-1)), ("/spec/ttlSecondsAfterFinished", json!(-5))]),
                vec![
                    ("spec.parallelism".into(), "FieldValueInvalid", "Invalid value: -2: must be greater than or equal to 0".into()),
                    ("spec.backoffLimit".into(), "FieldValueInvalid", "Invalid value: -1: must be greater than or equal to 0".into()),
                    ("spec.ttlSecondsAfterFinished".into(), "FieldValueInvalid", "Invalid value: -5: must be greater than or equal to 0".into()),
                ]),
            ("job deadline", Kind::Job, with(job(), &[("/spec/activeDeadlineSeconds", json!(-1))]),
                vec![("spec.activeDeadlineSeconds".into(), "FieldValueInvalid", "Invalid value: -1: must be greater than or equal to 0".into())]),
            ("completion mode", Kind::Job, with(job(), &[("/spec/completionMode", json!("Sometimes"))]),
                vec![("spec.completionMode".into(), "FieldValueNotSupported", "Unsupported value: \"Sometimes\": supported values: \"NonIndexed\", \"Indexed\"".into())]),
            ("selector mismatch", Kind::Job, with(job(), &[("/spec/selector/matchLabels", json!({"app": "other"}))]),
                vec![("spec.template.metadata.labels".into(), "FieldValueInvalid", format!("Invalid value: {{\"batch.kubernetes.io/controller-uid\":\"{UID}\",\"batch.kubernetes.io/job-name\":\"build-1\",\"controller-uid\":\"{UID}\",\"job-name\":\"build-1\"}}: `selector` does not match template `labels`"))]),
            ("no selector", Kind::Job, without(job(), "/spec/selector"),
                vec![("spec.selector".into(), "FieldValueRequired", "Required value".into())]),
            ("selector operator", Kind::Job, with(job(), &[("/spec/selector/matchExpressions", json!([{"key": "job-name", "operator": "Like", "values": ["build-1"]}]))]),
                vec![("spec.selector.matchExpressions[0].operator".into(), "FieldValueInvalid", "Invalid value: \"Like\": not a valid selector operator".into())]),
            ("template label", Kind::Job, with(job(), &[("/spec/template/metadata/labels/team", json!("-x"))]),
                vec![("spec.template.labels".into(), "FieldValueInvalid", inv("\"-x\"", LABEL_VALUE_ERR))]),
            ("config key", Kind::ConfigMap, with(config_map(), &[("/data/bad key", json!("v"))]),
                vec![("data[bad key]".into(), "FieldValueInvalid", inv("\"bad key\"", CONFIG_KEY_ERR))]),
            ("config key dotdot", Kind::ConfigMap, with(config_map(), &[("/data/..", json!("v"))]),
                vec![("data[..]".into(), "FieldValueInvalid", "Invalid value: \"..\": must not be '..'".into())]),
            ("config key in both", Kind::ConfigMap, with(config_map(), &[("/data/logo.png", json!("v"))]),
                vec![
                    ("data[logo.png]".into(), "FieldValueInvalid", "Invalid value: \"logo.png\": duplicate of key present in binaryData".into()),
                    ("binaryData[logo.png]".into(), "FieldValueInvalid", "Invalid value: \"logo.png\": duplicate of key present in data".into()),
                ]),
            ("config map too big", Kind::ConfigMap, with(config_map(), &[("/data/big", json!(big))]),
                vec![("".into(), "FieldValueTooLong", "Too long: may not be more than 1048576 bytes".into())]),
            ("secret key", Kind::Secret, with(secret(), &[("/stringData/a b", json!("v"))]),
                vec![("data[a b]".into(), "FieldValueInvalid", inv("\"a b\"", CONFIG_KEY_ERR))]),
            ("secret base64", Kind::Secret, with(secret(), &[("/data/token", json!("c2V*cmV0"))]),
                vec![("data[token]".into(), "FieldValueInvalid", "Invalid value: \"<secret contents redacted>\": illegal base64 data at input byte 3".into())]),
            ("tls secret", Kind::Secret, with(secret(), &[("/type", json!("kubernetes.io/tls"))]),
                vec![
                    ("data[tls.crt]".into(), "FieldValueRequired", "Required value".into()),
                    ("data[tls.key]".into(), "FieldValueRequired", "Required value".into()),
                ]),
            ("event namespace", Kind::Event, with(event(), &[("/involvedObject/namespace", json!("other"))]),
                vec![("involvedObject.namespace".into(), "FieldValueInvalid", "Invalid value: \"other\": does not match event.namespace".into())]),
            ("new-style event", Kind::Event, with(event(), &[("/eventTime", json!("2026-01-02T03:04:05.000000Z")), ("/reportingComponent", json!(""))]),
                vec![
                    ("reportingComponent".into(), "FieldValueRequired", "Required value".into()),
                    ("reportingComponent".into(), "FieldValueInvalid", "Invalid value: \"\": name part must be non-empty".into()),
                    ("reportingComponent".into(), "FieldValueInvalid", inv("\"\"", &format!("name part {QUALIFIED_NAME_ERR}"))),
                    ("reportingInstance".into(), "FieldValueRequired", "Required value".into()),
                    ("action".into(), "FieldValueRequired", "Required value".into()),
                ]),
            ("ephemeral on create", Kind::Pod, with(pod(), &[("/spec/ephemeralContainers", json!([{"name": "debug", "image": "busybox"}]))]),
                vec![("spec.ephemeralContainers".into(), "FieldValueForbidden", "Forbidden: cannot be set on create".into())]),
        ];
        assert!(cases.len() >= 25);
        for (label, kind, obj, want) in cases {
            assert_eq!(triples(&validate(kind, &obj, None)), want, "case {label}");
        }
    }

    #[test]
    fn invalid_message_matches_the_real_format() {
        let one = validate(
            Kind::Job,
            &with(job(), &[("/metadata/name", json!("Build_1"))]),
            None,
        );
        assert_eq!(
            invalid_message(Kind::Job, "Build_1", &one),
            "Job.batch \"Build_1\" is invalid: metadata.name: Invalid value: \"Build_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        let two = validate(
            Kind::ConfigMap,
            &json!({"metadata": {"name": "cm"}, "data": {"..": "", "a b": ""}}),
            None,
        );
        assert_eq!(
            invalid_message(Kind::ConfigMap, "cm", &two),
            format!(
                "ConfigMap \"cm\" is invalid: [data[..]: Invalid value: \"..\": must not be '..', data[a b]: Invalid value: \"a b\": {CONFIG_KEY_ERR}]"
            )
        );
        // Identical lines are reported once, like ErrorList.ToAggregate.
        let dup = [one[0].clone(), one[0].clone()];
        assert_eq!(
            invalid_message(Kind::Job, "Build_1", &dup),
            invalid_message(Kind::Job, "Build_1", &one)
        );
    }

    #[test]
    fn strict_detection_reports_and_strips_misspelled_fields() {
        let mut obj = with(
            job(),
            &[
                (&format!("{C0}/imagePulPolicy"), json!("Always")),
                ("/spec/template/spec/tolerations/1/tolerationSecs", json!(5)),
                ("/metadata/creationTimestamp", Value::Null),
                ("/spec/bogusNull", Value::Null),
            ],
        );
        // Sorted: the real server reports in body order, which serde_json keeps only with
        // its `preserve_order` feature.
        let mut unknown = unknown_fields(Kind::Job, &obj).unwrap();
        unknown.sort();
        assert_eq!(
            unknown,
            vec![
                "spec.template.spec.containers[0].imagePulPolicy".to_string(),
                "spec.template.spec.tolerations[1].tolerationSecs".to_string(),
            ]
        );
        assert_eq!(
            strict_error_message(&unknown),
            "strict decoding error: unknown field \"spec.template.spec.containers[0].imagePulPolicy\", unknown field \"spec.template.spec.tolerations[1].tolerationSecs\""
        );
        strip_unknown(Kind::Job, &mut obj);
        assert_eq!(unknown_fields(Kind::Job, &obj), Ok(vec![]));
        assert!(obj.pointer(&format!("{C0}/imagePulPolicy")).is_none());
        assert_eq!(
            obj.pointer(&format!("{C0}/imagePullPolicy")),
            Some(&json!("IfNotPresent"))
        );
        assert_eq!(
            obj.pointer("/spec/template/spec/tolerations/1/tolerationSeconds"),
            Some(&json!(300))
        );
        assert_eq!(validate(Kind::Job, &obj, None), vec![]);
    }

    #[test]
    fn unknown_field_edge_cases() {
        // Empty maps and lists, numeric quantities, int-or-string ports, status on create.
        let pod = with(
            pod(),
            &[
                ("/spec/containers/0/ports/0/nomPort", json!(1)),
                ("/statusx", json!({})),
            ],
        );
        assert_eq!(
            unknown_fields(Kind::Pod, &pod),
            Ok(vec![
                "spec.containers[0].ports[0].nomPort".to_string(),
                "statusx".to_string()
            ])
        );
        let secret = with(
            secret(),
            &[("/immutable", json!(true)), ("/stringDta", json!({}))],
        );
        assert_eq!(
            unknown_fields(Kind::Secret, &secret),
            Ok(vec!["stringDta".to_string()])
        );
        let event = with(
            event(),
            &[
                ("/series", Value::Null),
                ("/related", json!({"kind": "Pod", "nam": "x"})),
            ],
        );
        assert_eq!(
            unknown_fields(Kind::Event, &event),
            Ok(vec!["related.nam".to_string()])
        );
        let ns = json!({"metadata": {"name": "ci", "labels": {}, "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:metadata": {}}}]}, "spec": {}});
        assert_eq!(unknown_fields(Kind::Namespace, &ns), Ok(vec![]));
    }

    #[test]
    fn undecodable_bodies_are_rejected_like_the_real_decoder() {
        let err = unknown_fields(
            Kind::Job,
            &with(job(), &[("/spec/parallelism", json!("two"))]),
        )
        .unwrap_err();
        assert!(
            err.starts_with("Job in version \"v1\" cannot be handled as a Job: "),
            "{err}"
        );
        assert!(err.contains("invalid type: string \"two\""), "{err}");
        let err = unknown_fields(
            Kind::Pod,
            &with(
                pod(),
                &[("/spec/containers/0/resources/limits/cpu", json!("1.5.5"))],
            ),
        )
        .unwrap_err();
        assert_eq!(
            err,
            format!("Pod in version \"v1\" cannot be handled as a Pod: {QUANTITY_FORMAT_ERROR}")
        );
        let err = unknown_fields(
            Kind::Secret,
            &with(secret(), &[("/data/token", json!("abc"))]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 0"
        );
        let err = unknown_fields(
            Kind::ConfigMap,
            &json!({"metadata": {"name": "x"}, "data": {"k": 1}}),
        )
        .unwrap_err();
        assert!(err.starts_with("ConfigMap in version \"v1\" cannot be handled as a ConfigMap: invalid type: integer `1`"), "{err}");
        // A body that does not decode is left untouched by strip_unknown.
        let mut bad = json!({"metadata": {"name": 5}, "extra": 1});
        strip_unknown(Kind::ServiceAccount, &mut bad);
        assert_eq!(bad, json!({"metadata": {"name": 5}, "extra": 1}));
    }

    #[test]
    fn job_updates_allow_status_and_metadata_but_not_selector_or_template() {
        let old = job();
        let status_only = with(
            job(),
            &[(
                "/status",
                json!({"active": 1, "startTime": "2026-01-02T03:04:05Z"}),
            )],
        );
        assert_eq!(validate(Kind::Job, &status_only, Some(&old)), vec![]);
        let metadata = with(
            job(),
            &[
                ("/metadata/labels/extra", json!("yes")),
                ("/metadata/annotations/note", json!("x")),
            ],
        );
        assert_eq!(validate(Kind::Job, &metadata, Some(&old)), vec![]);
        let parallelism = with(
            job(),
            &[
                ("/spec/parallelism", json!(3)),
                ("/spec/suspend", json!(true)),
            ],
        );
        assert_eq!(validate(Kind::Job, &parallelism, Some(&old)), vec![]);

        let selector = with(
            job(),
            &[("/spec/selector/matchLabels/job-name", json!("build-1"))],
        );
        let got = validate(Kind::Job, &selector, Some(&old));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].field.as_str(), got[0].reason),
            ("spec.selector", "FieldValueInvalid")
        );
        assert!(
            got[0].message.ends_with(": field is immutable"),
            "{}",
            got[0].message
        );

        let template = with(job(), &[(&format!("{C0}/image"), json!("builder:2"))]);
        let got = validate(Kind::Job, &template, Some(&old));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].field.as_str(), got[0].reason),
            ("spec.template", "FieldValueInvalid")
        );
        assert!(
            got[0].message.contains("builder:2")
                && got[0].message.ends_with(": field is immutable")
        );

        let completions = with(job(), &[("/spec/completions", json!(5))]);
        let got = triples(&validate(Kind::Job, &completions, Some(&old)));
        assert_eq!(
            got,
            vec![(
                "spec.completions".to_string(),
                "FieldValueInvalid",
                "Invalid value: 5: field is immutable".to_string()
            )]
        );
    }

    #[test]
    fn suspended_unstarted_job_may_change_scheduling_directives() {
        let old = with(job(), &[("/spec/suspend", json!(true))]);
        let moved = with(
            old.clone(),
            &[("/spec/template/spec/nodeSelector", json!({"pool": "fast"}))],
        );
        assert_eq!(validate(Kind::Job, &moved, Some(&old)), vec![]);
        let started = with(
            old.clone(),
            &[("/status", json!({"startTime": "2026-01-02T03:04:05Z"}))],
        );
        let got = validate(Kind::Job, &moved, Some(&started));
        assert_eq!(
            got.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(),
            vec!["spec.template"]
        );
    }

    #[test]
    fn other_updates() {
        let old = secret();
        let retyped = with(secret(), &[("/type", json!("kubernetes.io/basic-auth"))]);
        assert_eq!(
            triples(&validate(Kind::Secret, &retyped, Some(&old))),
            vec![(
                "type".to_string(),
                "FieldValueInvalid",
                "Invalid value: \"kubernetes.io/basic-auth\": field is immutable".to_string()
            )]
        );
        let untyped = without(secret(), "/type");
        assert_eq!(validate(Kind::Secret, &untyped, Some(&old)), vec![]);

        let frozen = with(config_map(), &[("/immutable", json!(true))]);
        let changed = with(frozen.clone(), &[("/data/KEY_NAME", json!("y"))]);
        assert_eq!(
            triples(&validate(Kind::ConfigMap, &changed, Some(&frozen))),
            vec![(
                "data".to_string(),
                "FieldValueForbidden",
                "Forbidden: field is immutable when `immutable` is set".to_string()
            )]
        );
        assert_eq!(validate(Kind::ConfigMap, &frozen, Some(&frozen)), vec![]);

        let old_pod = pod();
        let new_image = with(
            pod(),
            &[
                ("/spec/containers/0/image", json!("nginx:1.28")),
                ("/status", json!({"phase": "Running"})),
            ],
        );
        assert_eq!(validate(Kind::Pod, &new_image, Some(&old_pod)), vec![]);
        let new_policy = with(pod(), &[("/spec/restartPolicy", json!("Never"))]);
        assert_eq!(
            triples(&validate(Kind::Pod, &new_policy, Some(&old_pod))),
            vec![(
                "spec".to_string(),
                "FieldValueForbidden",
                format!("Forbidden: {POD_UPDATE_FORBIDDEN}")
            )]
        );
        let renamed_uid = with(pod(), &[("/metadata/uid", json!("b"))]);
        let old_uid = with(pod(), &[("/metadata/uid", json!("a"))]);
        assert_eq!(
            triples(&validate(Kind::Pod, &renamed_uid, Some(&old_uid))),
            vec![(
                "metadata.uid".to_string(),
                "FieldValueInvalid",
                "Invalid value: \"b\": field is immutable".to_string()
            )]
        );
    }

    #[test]
    fn field_validation_parse() {
        assert_eq!(
            FieldValidation::parse("Strict"),
            Ok(FieldValidation::Strict)
        );
        assert_eq!(FieldValidation::parse("Warn"), Ok(FieldValidation::Warn));
        assert_eq!(
            FieldValidation::parse("Ignore"),
            Ok(FieldValidation::Ignore)
        );
        assert_eq!(FieldValidation::parse(""), Ok(FieldValidation::Warn));
        assert_eq!(
            FieldValidation::parse("strict"),
            Err("fieldValidation: Unsupported value: \"strict\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\"".to_string())
        );
    }

    #[test]
    fn quantity_milli_values() {
        let cases: [(&str, Option<i128>); 26] = [
            ("500m", Some(500)),
            ("2", Some(2000)),
            ("1Gi", Some(1_073_741_824_000)),
            ("1e3", Some(1_000_000)),
            ("0.5", Some(500)),
            (".5", Some(500)),
            ("1.5Gi", Some(1_610_612_736_000)),
            ("128Mi", Some(134_217_728_000)),
            ("1k", Some(1_000_000)),
            ("1M", Some(1_000_000_000)),
            ("100n", Some(1)),
            ("1u", Some(1)),
            ("1E", Some(1_000_000_000_000_000_000_000)),
            ("1E-3", Some(1)),
            ("+2", Some(2000)),
            ("-1", Some(-1000)),
            ("0", Some(0)),
            ("007", Some(7000)),
            ("", None),
            ("abc", None),
            ("1.5.5", None),
            ("1K", None),
            ("1e", None),
            ("1Gb", None),
            ("--1", None),
            ("1 ", None),
        ];
        for (text, want) in cases {
            assert_eq!(quantity_milli_value(text), want, "{text:?}");
        }
    }

    #[test]
    fn base64_follows_go_std_encoding() {
        assert_eq!(go_base64_decoded_len("c2VjcmV0"), Ok(6));
        assert_eq!(go_base64_decoded_len("aQ=="), Ok(1));
        assert_eq!(go_base64_decoded_len("aWk="), Ok(2));
        assert_eq!(go_base64_decoded_len("c2Vj\r\ncmV0"), Ok(6));
        assert_eq!(go_base64_decoded_len(""), Ok(0));
        assert_eq!(go_base64_decoded_len("aQ"), Err(0));
        assert_eq!(go_base64_decoded_len("aQ==aQ=="), Err(2));
        assert_eq!(go_base64_decoded_len("a!=="), Err(1));
    }
}
