//! Configuration layers: turning each source into a key tree, checking it, and merging them.
//!
//! Every layer is checked on its own before merging so that an unknown key can be blamed on
//! the file, variable or `--set` it came from; the `config` crate then does the deep merge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::{Map, Value, ValueKind};
use serde::Deserialize;

use super::error::{ConfigError, Origin, Result, suggest};
use super::{DEFAULT_ARTIFACT_DIR, DEFAULT_PIPELINE, DEFAULT_STACK, ENV_PREFIX};

const TOP_KEYS: &[&str] = &["stack", "pipeline", "plugin_dirs", "stacks", "package"];
const PACKAGE_KEYS: &[&str] = &[
    "include",
    "compression_level",
    "warn_size_mib",
    "max_size_mib",
];
const STACK_KEYS: &[&str] = &["orchestrator", "store"];
const COMPONENT_KEYS: &[&str] = &["plugin", "settings"];

/// The merged configuration before paths are resolved and stacks are checked for completeness.
#[derive(Debug, Deserialize)]
pub(super) struct RawConfig {
    pub stack: String,
    pub pipeline: PathBuf,
    #[serde(default)]
    pub plugin_dirs: Vec<PathBuf>,
    #[serde(default)]
    pub stacks: BTreeMap<String, RawStack>,
    #[serde(default)]
    pub package: RawPackage,
}

/// `[package]`: what goes into code packages and how big they may get.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawPackage {
    #[serde(default)]
    pub include: Vec<String>,
    pub compression_level: Option<i64>,
    pub warn_size_mib: Option<i64>,
    pub max_size_mib: Option<i64>,
}

/// Both halves are optional here because env and `--set` may patch a stack piecemeal.
#[derive(Debug, Deserialize)]
pub(super) struct RawStack {
    pub orchestrator: Option<RawComponent>,
    pub store: Option<RawComponent>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawComponent {
    pub plugin: Option<String>,
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// One source of configuration, kept apart until merging so errors know their origin.
#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub origin: Origin,
    tree: Map<String, Value>,
}

impl config::Source for Layer {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> std::result::Result<Map<String, Value>, config::ConfigError> {
        Ok(self.tree.clone())
    }
}

impl Layer {
    /// The configuration that makes ferry usable with no file at all.
    pub fn defaults() -> Self {
        let origin = Origin::Defaults;
        let o = origin.to_string();
        let o = Some(&o);
        let table = |entries: Vec<(&str, Value)>| {
            let map: Map<String, Value> = entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            Value::new(o, map)
        };
        let local = table(vec![
            (
                "orchestrator",
                table(vec![("plugin", Value::new(o, "local"))]),
            ),
            (
                "store",
                table(vec![
                    ("plugin", Value::new(o, "local")),
                    (
                        "settings",
                        table(vec![("path", Value::new(o, DEFAULT_ARTIFACT_DIR))]),
                    ),
                ]),
            ),
        ]);
        let mut tree = Map::new();
        tree.insert("stack".into(), Value::new(o, DEFAULT_STACK));
        tree.insert("pipeline".into(), Value::new(o, DEFAULT_PIPELINE));
        tree.insert("plugin_dirs".into(), Value::new(o, Vec::<Value>::new()));
        tree.insert("stacks".into(), table(vec![(DEFAULT_STACK, local)]));
        Self { origin, tree }
    }

    /// Reads a TOML config file; `Ok(None)` when it does not exist, because both files are optional.
    pub fn from_file(path: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::from_text(path, &text).map(Some)
    }

    /// A config file's text, parsed and checked as if read from `path`.
    pub fn from_text(path: &Path, text: &str) -> Result<Self> {
        // Parsing from a string (not `File::from(path)`) keeps our absolute path in errors:
        // the crate rewrites file paths relative to the process's current directory.
        let parsed = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| config::Source::collect(&c));
        let tree = parsed.map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: match e {
                config::ConfigError::FileParse { cause, .. } => {
                    cause.to_string().trim_end().to_owned()
                }
                other => other.to_string(),
            },
        })?;
        let layer = Self {
            origin: Origin::File(path.to_owned()),
            tree,
        };
        layer.validate()?;
        Ok(layer)
    }

    /// Maps one environment variable to a layer, or `None` for variables that are not config.
    ///
    /// `lower` is every layer below this one: stack names and settings keys are matched against
    /// it ignoring case, because env names cannot carry the case a file or plugin uses.
    pub fn from_env(name: &str, value: &str, lower: &[Layer]) -> Result<Option<Self>> {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            return Ok(None);
        };
        let origin = Origin::Env(name.to_owned());
        let path = match rest {
            // Shells often export empty variables; treating them as set would select stack "".
            "STACK" | "PIPELINE" if value.is_empty() => return Ok(None),
            "STACK" => vec!["stack".to_owned()],
            "PIPELINE" => vec!["pipeline".to_owned()],
            _ if rest.contains("__") => {
                env_path(rest, lower).ok_or_else(|| ConfigError::InvalidOverride {
                    origin: origin.clone(),
                    reason: "it has an empty key segment; separate keys with exactly two \
                             underscores, e.g. FERRY_STACKS__LOCAL__STORE__PLUGIN=local"
                        .into(),
                })?
            }
            // FERRY_CONFIG, FERRY_PLUGIN_PATH, FERRY_LOG, ... belong to the CLI, not to config.
            _ => return Ok(None),
        };
        Self::from_path(origin, &path, value).map(Some)
    }

    /// Turns one `--set key=value` argument, already split at its `=`, into a layer.
    pub fn from_set(key: &str, value: &str) -> Result<Self> {
        let origin = Origin::Set(format!("{key}={value}"));
        let key = key.trim();
        let path = parse_dotted_key(key).ok_or_else(|| ConfigError::InvalidOverride {
            origin: origin.clone(),
            reason: format!(
                "`{key}` is not a dotted key; write e.g. `stacks.local.store.plugin`, quoting \
                 segments that contain dots: `settings.\"a.b\"`"
            ),
        })?;
        Self::from_path(origin, &path, value.trim())
    }

    fn from_path(origin: Origin, path: &[String], raw: &str) -> Result<Self> {
        let o = origin.to_string();
        let mut value = parse_value(raw, expects_string(path), &o);
        for segment in path[1..].iter().rev() {
            let mut map = Map::new();
            map.insert(segment.clone(), value);
            value = Value::new(Some(&o), map);
        }
        let mut tree = Map::new();
        tree.insert(path[0].clone(), value);
        let layer = Self { origin, tree };
        layer.validate()?;
        Ok(layer)
    }

    /// Names of the stacks this layer defines.
    pub fn stack_names(&self) -> Vec<String> {
        match self.tree.get("stacks").map(|v| &v.kind) {
            Some(ValueKind::Table(stacks)) => stacks.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Drops stacks that a higher file redefines, so a redefinition replaces rather than merges.
    pub fn remove_stacks(&mut self, names: &[String]) {
        if let Some(ValueKind::Table(stacks)) = self.tree.get_mut("stacks").map(|v| &mut v.kind) {
            for name in names {
                stacks.remove(name);
            }
        }
    }

    /// Checks key names and value kinds against ferry's schema; `settings` stays free-form.
    fn validate(&self) -> Result<()> {
        for (key, value) in sorted(&self.tree) {
            match key {
                "stack" | "pipeline" => self.expect_string(value, &[key])?,
                "plugin_dirs" => match &value.kind {
                    ValueKind::Array(items) if items.iter().all(is_string) => {}
                    other => return Err(self.invalid_type(&[key], "an array of strings", other)),
                },
                "stacks" => {
                    for (name, stack) in sorted(self.expect_table(value, &[key])?) {
                        self.validate_stack(name, stack)?;
                    }
                }
                "package" => {
                    for (field, value) in sorted(self.expect_table(value, &[key])?) {
                        let path = [key, field];
                        match field {
                            "include" => match &value.kind {
                                ValueKind::Array(items) if items.iter().all(is_string) => {}
                                other => {
                                    return Err(self.invalid_type(
                                        &path,
                                        "an array of strings",
                                        other,
                                    ));
                                }
                            },
                            "compression_level" | "warn_size_mib" | "max_size_mib" => {
                                match &value.kind {
                                    ValueKind::I64(_)
                                    | ValueKind::U64(_)
                                    | ValueKind::I128(_)
                                    | ValueKind::U128(_) => {}
                                    other => {
                                        return Err(self.invalid_type(
                                            &path,
                                            "a whole number",
                                            other,
                                        ));
                                    }
                                }
                            }
                            _ => return Err(self.unknown(&path, PACKAGE_KEYS)),
                        }
                    }
                }
                _ => return Err(self.unknown(&[key], TOP_KEYS)),
            }
        }
        Ok(())
    }

    fn validate_stack(&self, name: &str, stack: &Value) -> Result<()> {
        for (part, component) in sorted(self.expect_table(stack, &["stacks", name])?) {
            if !STACK_KEYS.contains(&part) {
                return Err(self.unknown(&["stacks", name, part], STACK_KEYS));
            }
            for (key, value) in sorted(self.expect_table(component, &["stacks", name, part])?) {
                let path = ["stacks", name, part, key];
                match key {
                    "plugin" => self.expect_string(value, &path)?,
                    "settings" => drop(self.expect_table(value, &path)?),
                    _ => return Err(self.unknown(&path, COMPONENT_KEYS)),
                }
            }
        }
        Ok(())
    }

    fn expect_string(&self, value: &Value, path: &[&str]) -> Result<()> {
        if is_string(value) {
            Ok(())
        } else {
            Err(self.invalid_type(path, "a string", &value.kind))
        }
    }

    fn expect_table<'v>(&self, value: &'v Value, path: &[&str]) -> Result<&'v Map<String, Value>> {
        match &value.kind {
            ValueKind::Table(map) => Ok(map),
            other => Err(self.invalid_type(path, "a table", other)),
        }
    }

    fn invalid_type(
        &self,
        path: &[&str],
        expected: &'static str,
        found: &ValueKind,
    ) -> ConfigError {
        ConfigError::InvalidType {
            origin: self.origin.clone(),
            key: key_path(path),
            expected,
            found: kind_name(found),
        }
    }

    fn unknown(&self, path: &[&str], valid: &'static [&'static str]) -> ConfigError {
        let last = path.last().copied().unwrap_or_default();
        ConfigError::UnknownKey {
            origin: self.origin.clone(),
            key: key_path(path),
            suggestion: suggest(last, valid.iter().copied()),
            valid,
        }
    }
}

/// Deep-merges the layers, lowest precedence first, and reads back the typed result.
pub(super) fn merge(layers: &[Layer]) -> Result<RawConfig> {
    let builder = layers.iter().fold(config::Config::builder(), |b, layer| {
        b.add_source(layer.clone())
    });
    builder
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// Maps `STACKS__S3__STORE__SETTINGS__BUCKET` to a key path; `None` on an empty segment.
///
/// Structural segments are lowercased. Stack names and keys under `settings` first take the
/// spelling of an existing key in a lower layer that matches ignoring case, so an env var
/// overrides the file's `accessKeyId` instead of adding `ACCESSKEYID`; failing that, stack
/// names are lowercased (they are typed on the command line) and settings keys are kept as
/// written (plugins may want `AWS_REGION`, and a lowercase env name gives a lowercase key).
fn env_path(rest: &str, lower: &[Layer]) -> Option<Vec<String>> {
    let mut path: Vec<String> = Vec::new();
    for (i, segment) in rest.split("__").enumerate() {
        if segment.is_empty() {
            return None;
        }
        let is_stacks = path.first().is_some_and(|p| p == "stacks");
        let stack_name = is_stacks && i == 1;
        let in_settings = is_stacks && i >= 4 && path[3] == "settings";
        let resolved = if stack_name || in_settings {
            existing_key(lower, &path, segment).unwrap_or_else(|| {
                if in_settings {
                    segment.to_owned()
                } else {
                    segment.to_lowercase()
                }
            })
        } else {
            segment.to_lowercase()
        };
        path.push(resolved);
    }
    Some(path)
}

/// The spelling that the nearest lower layer uses for `segment` under `prefix`, ignoring case.
fn existing_key(lower: &[Layer], prefix: &[String], segment: &str) -> Option<String> {
    lower.iter().rev().find_map(|layer| {
        let mut table = &layer.tree;
        for key in prefix {
            match &table.get(key)?.kind {
                ValueKind::Table(next) => table = next,
                _ => return None,
            }
        }
        if table.contains_key(segment) {
            return Some(segment.to_owned());
        }
        let mut matches: Vec<&String> = table
            .keys()
            .filter(|k| k.eq_ignore_ascii_case(segment))
            .collect();
        matches.sort();
        matches.first().map(|k| (*k).clone())
    })
}

/// Splits a dotted key with TOML's own rules, so quoted segments (`"a.b"`) and case survive.
fn parse_dotted_key(key: &str) -> Option<Vec<String>> {
    if key.is_empty() {
        return None;
    }
    let doc: toml::Table = toml::from_str(&format!("{key} = 0")).ok()?;
    let mut path = Vec::new();
    let mut table = &doc;
    loop {
        // More than one entry means the "key" smuggled in extra TOML; refuse it.
        if table.len() != 1 {
            return None;
        }
        let (k, v) = table.iter().next()?;
        path.push(k.clone());
        match v {
            toml::Value::Table(next) => table = next,
            toml::Value::Integer(0) => return Some(path),
            _ => return None,
        }
    }
}

/// Keys whose value is a name or a path: there `2` or `true` means the text, not a number.
fn expects_string(path: &[String]) -> bool {
    match path {
        [one] => one == "stack" || one == "pipeline",
        [stacks, _, _, plugin] => stacks == "stacks" && plugin == "plugin",
        _ => false,
    }
}

/// Reads a value as TOML when it parses (`2`, `true`, `[1, 2]`, `{ a = 1 }`), else as text.
fn parse_value(raw: &str, expects_string: bool, origin: &String) -> Value {
    match raw.parse::<toml::Value>() {
        Ok(toml::Value::String(s)) => Value::new(Some(origin), s),
        Ok(value) if !expects_string => from_toml(value, origin),
        _ => Value::new(Some(origin), raw),
    }
}

fn from_toml(value: toml::Value, origin: &String) -> Value {
    let o = Some(origin);
    match value {
        toml::Value::String(s) => Value::new(o, s),
        toml::Value::Integer(i) => Value::new(o, i),
        toml::Value::Float(f) => Value::new(o, f),
        toml::Value::Boolean(b) => Value::new(o, b),
        toml::Value::Datetime(d) => Value::new(o, d.to_string()),
        toml::Value::Array(items) => Value::new(
            o,
            items
                .into_iter()
                .map(|v| from_toml(v, origin))
                .collect::<Vec<_>>(),
        ),
        toml::Value::Table(table) => Value::new(
            o,
            table
                .into_iter()
                .map(|(k, v)| (k, from_toml(v, origin)))
                .collect::<Map<_, _>>(),
        ),
    }
}

/// The crate's maps are hash maps; sorting makes "first unknown key" errors deterministic.
fn sorted(map: &Map<String, Value>) -> Vec<(&str, &Value)> {
    let mut entries: Vec<_> = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
    entries.sort_by_key(|(k, _)| *k);
    entries
}

fn is_string(value: &Value) -> bool {
    matches!(value.kind, ValueKind::String(_))
}

fn kind_name(kind: &ValueKind) -> &'static str {
    match kind {
        ValueKind::Nil => "nothing",
        ValueKind::Boolean(_) => "a boolean",
        ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
            "an integer"
        }
        ValueKind::Float(_) => "a float",
        ValueKind::String(_) => "a string",
        ValueKind::Table(_) => "a table",
        ValueKind::Array(_) => "an array",
    }
}

/// Renders a key path as TOML would, quoting segments that are not bare keys.
fn key_path(path: &[&str]) -> String {
    path.iter()
        .map(|s| {
            let bare = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if bare {
                (*s).to_owned()
            } else {
                format!("{s:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}
