//! Loading `pipeline.yaml` into the model, with a source location on every diagnostic.
//!
//! The file is first read into a small span-carrying tree (via
//! `serde_saphyr::Spanned`) instead of deriving `Deserialize` on the model:
//! serde derives stop at the first problem and cannot offer did-you-mean
//! suggestions, whereas walking the tree lets us report every problem at once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Location, MessageFormatter, Spanned};

use super::model::{
    Action, Diagnostic, ParamSpec, Pipeline, PipelineError, Resources, Step, quoted_list,
};
use super::validate::{self, Loc, Spans, StepSpans};

const TOP_KEYS: &[&str] = &["name", "description", "params", "steps"];
const STEP_KEYS: &[&str] = &[
    "run",
    "command",
    "needs",
    "inputs",
    "outputs",
    "env",
    "params",
    "code",
    "uses_params",
    "retries",
    "retry_delay",
    "timeout",
    "cache",
    "resources",
    "image",
    "profile",
    "kubernetes",
];
const PARAM_KEYS: &[&str] = &["default", "description"];
const RESOURCE_KEYS: &[&str] = &["cpu", "memory", "gpu"];

pub(crate) fn from_yaml_str(text: &str, file: Option<&Path>) -> Result<Pipeline, PipelineError> {
    let mut diagnostics = Vec::new();
    let result = match load(text) {
        Ok(root) => {
            let mut ctx = Ctx::default();
            let (pipeline, spans) = ctx.pipeline(&root);
            diagnostics = ctx.diagnostics;
            diagnostics.extend(validate::check(&pipeline, &spans));
            diagnostics.extend(collapsed_duplicate(text, &root, &diagnostics));
            Some(pipeline)
        }
        Err(diagnostic) => {
            diagnostics.push(diagnostic);
            None
        }
    };
    match result {
        Some(pipeline) if diagnostics.is_empty() => Ok(pipeline),
        _ => {
            diagnostics.sort_by_key(|d| (d.line.is_none(), d.line, d.column));
            let file = file.map(Path::to_path_buf);
            Err(PipelineError {
                diagnostics: diagnostics
                    .into_iter()
                    .map(|d| d.in_file(file.clone()))
                    .collect(),
            })
        }
    }
}

fn options(duplicates: DuplicateKeyPolicy) -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = duplicates;
    options.with_snippet = false;
    options
}

/// Parses with `LastWins` because under that policy serde-saphyr streams
/// duplicate (non-integer) keys to our visitor, which lets us report them with
/// context ("duplicate step `x`") instead of a generic parser error.
fn load(text: &str) -> Result<Node, Diagnostic> {
    serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options(DuplicateKeyPolicy::LastWins))
        .map(|raw| Node::from_raw(raw, text))
        .map_err(|err| {
            let loc = err.location().as_ref().and_then(to_loc);
            let inner = err.without_snippet();
            if let serde_saphyr::Error::MultipleDocuments { .. } = inner {
                // The library's own message points at its API, not at the file.
                return Diagnostic::new("pipeline file contains more than one yaml document")
                    .at(loc)
                    .with_hint("remove the `---` separator; one file holds one pipeline");
            }
            let message = serde_saphyr::DefaultMessageFormatter.format_message(inner);
            Diagnostic::new(format!("invalid yaml: {message}")).at(loc)
        })
}

/// serde-saphyr collapses duplicate keys that look like integers (`1:` twice,
/// or `1:` and `01:`) before our visitor sees them, even under `LastWins`.
/// A second, strict pass catches the first such duplicate.
fn collapsed_duplicate(text: &str, root: &Node, seen: &[Diagnostic]) -> Option<Diagnostic> {
    let err =
        serde_saphyr::from_str_with_options::<IgnoredAny>(text, options(DuplicateKeyPolicy::Error))
            .err()?;
    let serde_saphyr::Error::DuplicateMappingKey { key, location } = err.without_snippet() else {
        return None;
    };
    let loc = to_loc(location)?;
    if seen
        .iter()
        .any(|d| d.line == Some(loc.0) && d.column == Some(loc.1))
    {
        return None;
    }
    let key = key.clone().unwrap_or_default();
    let holds = |section: &str| {
        root.entries()
            .and_then(|e| e.iter().find(|e| e.key == section))
            .and_then(|e| e.value.entries())
            .is_some_and(|entries| entries.iter().any(|e| e.key_loc == Some(loc)))
    };
    let message = if holds("steps") {
        format!("duplicate step `{key}`")
    } else if holds("params") {
        format!("duplicate param `{key}`")
    } else {
        format!("duplicate key `{key}`")
    };
    let hint = "keys must be unique; note that YAML treats `1` and `01` as the same number";
    Some(Diagnostic::new(message).at(Some(loc)).with_hint(hint))
}

fn to_loc(location: &Location) -> Option<Loc> {
    let line = usize::try_from(location.line()).ok()?;
    let column = usize::try_from(location.column()).ok()?;
    (line > 0).then_some((line, column))
}

/// What serde-saphyr hands us: any YAML value with spans on values and keys.
enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Raw, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any yaml value")
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Raw, D::Error> {
                Raw::deserialize(de)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                Ok(Raw::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
                Ok(i128::try_from(v).map_or(Raw::Float(v as f64), Raw::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Raw::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Raw::Map(entries))
            }
        }
        de.deserialize_any(RawVisitor)
    }
}

/// A YAML value with its location, independent of serde-saphyr's types.
#[derive(Debug)]
struct Node {
    kind: Kind,
    loc: Option<Loc>,
    /// Source text of non-string scalars, so `1.10` or `yes` reach the model as
    /// written rather than as `1.1` or `true`.
    source: Option<String>,
}

#[derive(Debug)]
enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug)]
struct Entry {
    key: String,
    key_loc: Option<Loc>,
    value: Node,
}

impl Node {
    fn from_raw(raw: Spanned<Raw>, text: &str) -> Node {
        let loc = to_loc(&raw.referenced);
        let defined = raw.defined;
        let kind = match raw.value {
            Raw::Null => Kind::Null,
            Raw::Bool(b) => Kind::Bool(b),
            Raw::Int(i) => Kind::Int(i),
            Raw::Float(f) => Kind::Float(f),
            Raw::Str(s) => Kind::Str(s),
            Raw::Seq(items) => {
                Kind::Seq(items.into_iter().map(|i| Node::from_raw(i, text)).collect())
            }
            Raw::Map(entries) => Kind::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| Entry {
                        key_loc: to_loc(&k.referenced),
                        key: k.value,
                        value: Node::from_raw(v, text),
                    })
                    .collect(),
            ),
        };
        let source = match kind {
            Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) => source_text(text, &defined),
            _ => None,
        };
        Node { kind, loc, source }
    }

    fn entries(&self) -> Option<&[Entry]> {
        match &self.kind {
            Kind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }

    /// The value as JSON, for blocks the pipeline keeps as written for an orchestrator to
    /// check (`kubernetes:`). Integers beyond 64 bits become strings.
    fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => i64::try_from(*i)
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(i.to_string())),
            Kind::Float(f) => serde_json::Number::from_f64(*f)
                .map_or_else(|| Value::String(f.to_string()), Value::Number),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// Any scalar as the text the user wrote; containers and null are not strings.
    fn as_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Bool(b) => Some(self.source.clone().unwrap_or_else(|| b.to_string())),
            Kind::Int(i) => Some(self.source.clone().unwrap_or_else(|| i.to_string())),
            Kind::Float(f) => Some(self.source.clone().unwrap_or_else(|| f.to_string())),
            _ => None,
        }
    }

    /// How the value reads in an error message: "string `many`", "a list", ...
    fn describe(&self) -> String {
        let text = self.as_text().unwrap_or_default();
        match &self.kind {
            Kind::Null => "null".to_string(),
            Kind::Bool(_) => format!("boolean `{text}`"),
            Kind::Int(_) => format!("integer `{text}`"),
            Kind::Float(_) => format!("number `{text}`"),
            Kind::Str(_) => format!("string `{text}`"),
            Kind::Seq(_) => "a list".to_string(),
            Kind::Map(_) => "a mapping".to_string(),
        }
    }
}

/// Slices a scalar's original spelling out of the file using its span.
fn source_text(text: &str, location: &Location) -> Option<String> {
    let span = location.span();
    let (start, len) = match (span.byte_offset(), span.byte_len()) {
        (Some(start), Some(len)) => (start, len),
        _ if text.is_ascii() => (span.offset(), span.len()),
        _ => return None,
    };
    let start = usize::try_from(start).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    let slice = text.get(start..end)?.trim();
    (!slice.is_empty()).then(|| slice.to_string())
}

/// The keys of one mapping after unknown and duplicate keys were reported.
struct Fields<'a> {
    entries: Vec<&'a Entry>,
    /// Valid keys offered as did-you-mean; a "missing key" report for them would be noise.
    suggested: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a Entry> {
        self.entries.iter().copied().find(|e| e.key == key)
    }

    fn was_suggested(&self, key: &str) -> bool {
        self.suggested.contains(&key)
    }
}

#[derive(Default)]
struct Ctx {
    diagnostics: Vec<Diagnostic>,
}

impl Ctx {
    fn report(&mut self, loc: Option<Loc>, message: impl Into<String>) -> &mut Diagnostic {
        self.diagnostics.push(Diagnostic::new(message).at(loc));
        self.diagnostics.last_mut().expect("just pushed")
    }

    fn report_no_action(&mut self, loc: Option<Loc>, step: &str) {
        self.report(
            loc,
            format!("step `{step}` has neither `run` nor `command`"),
        )
        .hint = Some("add `run: <shell script>` or `command: [program, args...]`".to_string());
    }

    fn type_error(&mut self, entry: &Entry, context: &str, expected: &str) {
        let loc = entry.value.loc.or(entry.key_loc);
        self.report(
            loc,
            format!(
                "`{}`{context} must be {expected}, found {}",
                entry.key,
                entry.value.describe()
            ),
        );
    }

    /// Reports unknown keys (with did-you-mean) and repeated keys; keeps the first of each.
    fn fields<'a>(
        &mut self,
        entries: &'a [Entry],
        valid: &[&'static str],
        context: &str,
    ) -> Fields<'a> {
        let mut kept: Vec<&Entry> = Vec::new();
        let mut suggested = Vec::new();
        for entry in entries {
            if !valid.contains(&entry.key.as_str()) {
                let hint = match validate::did_you_mean(&entry.key, valid.iter().copied()) {
                    Some(s) => {
                        suggested.extend(valid.iter().find(|v| **v == s));
                        format!("did you mean `{s}`?")
                    }
                    None => format!("valid keys are {}", quoted_list(valid.iter().copied())),
                };
                self.report(
                    entry.key_loc,
                    format!("unknown key `{}` {context}", entry.key),
                )
                .hint = Some(hint);
            } else if kept.iter().any(|k| k.key == entry.key) {
                self.report(
                    entry.key_loc,
                    format!("duplicate key `{}` {context}", entry.key),
                );
            } else {
                kept.push(entry);
            }
        }
        Fields {
            entries: kept,
            suggested,
        }
    }

    fn text(&mut self, entry: &Entry, context: &str) -> Option<String> {
        let text = entry.value.as_text();
        if text.is_none() && !entry.value.is_null() {
            self.type_error(entry, context, "a string");
        }
        text
    }

    /// A list of scalars; returns the items and their locations.
    fn list(
        &mut self,
        entry: &Entry,
        context: &str,
        what: &str,
    ) -> (Vec<String>, Vec<Option<Loc>>) {
        let mut items = Vec::new();
        let mut locs = Vec::new();
        match &entry.value.kind {
            Kind::Null => {}
            Kind::Seq(nodes) => {
                for node in nodes {
                    match node.as_text() {
                        Some(text) => {
                            items.push(text);
                            locs.push(node.loc.or(entry.key_loc));
                        }
                        None => {
                            self.report(
                                node.loc,
                                format!(
                                    "items of `{}`{context} must be {what}s, found {}",
                                    entry.key,
                                    node.describe()
                                ),
                            );
                        }
                    }
                }
            }
            _ => self.type_error(entry, context, &format!("a list of {what}s")),
        }
        (items, locs)
    }

    /// A mapping of scalar values; repeated keys are reported.
    fn string_map(
        &mut self,
        entry: &Entry,
        context: &str,
        what: &str,
    ) -> (BTreeMap<String, String>, HashMap<String, Loc>) {
        let mut values = BTreeMap::new();
        let mut locs = HashMap::new();
        match &entry.value.kind {
            Kind::Null => {}
            Kind::Map(entries) => {
                for e in entries {
                    if values.contains_key(&e.key) {
                        self.report(e.key_loc, format!("duplicate {what} `{}`{context}", e.key));
                        continue;
                    }
                    match e.value.as_text() {
                        Some(text) => {
                            values.insert(e.key.clone(), text);
                            if let Some(loc) = e.key_loc {
                                locs.insert(e.key.clone(), loc);
                            }
                        }
                        None => {
                            self.report(
                                e.value.loc.or(e.key_loc),
                                format!(
                                    "{what} `{}`{context} must be a string, found {}",
                                    e.key,
                                    e.value.describe()
                                ),
                            )
                            .hint = e
                                .value
                                .is_null()
                                .then(|| format!("write `{}: \"\"` for an empty value", e.key));
                        }
                    }
                }
            }
            _ => self.type_error(
                entry,
                context,
                &format!("a mapping of {what} names to values"),
            ),
        }
        (values, locs)
    }

    fn pipeline(&mut self, root: &Node) -> (Pipeline, Spans) {
        let mut spans = Spans::default();
        let mut pipeline = Pipeline {
            name: String::new(),
            description: None,
            params: Vec::new(),
            steps: Vec::new(),
        };
        let entries = match &root.kind {
            Kind::Map(entries) => entries,
            Kind::Null => {
                self.report(Some((1, 1)), "pipeline file is empty").hint =
                    Some("a pipeline needs at least `name` and `steps`".to_string());
                spans.name_missing = true;
                spans.steps_missing = true;
                return (pipeline, spans);
            }
            _ => {
                self.report(
                    root.loc,
                    format!(
                        "pipeline file must be a mapping with `name` and `steps`, found {}",
                        root.describe()
                    ),
                );
                spans.name_missing = true;
                spans.steps_missing = true;
                return (pipeline, spans);
            }
        };
        let fields = self.fields(entries, TOP_KEYS, "at top level");
        let start = root.loc.or(Some((1, 1)));

        match fields.get("name") {
            Some(entry) => match self.text(entry, "") {
                Some(name) => {
                    pipeline.name = name;
                    spans.name = entry.value.loc;
                }
                None => {
                    if entry.value.is_null() {
                        self.report(entry.key_loc, "`name` is empty");
                    }
                    spans.name_missing = true;
                }
            },
            None if fields.was_suggested("name") => spans.name_missing = true,
            None => {
                self.report(start, "missing required key `name`").hint =
                    Some("add `name: my-pipeline` at the top of the file".to_string());
                spans.name_missing = true;
            }
        }
        if let Some(entry) = fields.get("description") {
            pipeline.description = self.text(entry, "");
        }
        if let Some(entry) = fields.get("params") {
            match &entry.value.kind {
                Kind::Null => {}
                Kind::Map(params) => {
                    for param in params {
                        spans.params.push(param.key_loc);
                        pipeline.params.push(self.param(param));
                    }
                }
                _ => self.type_error(entry, "", "a mapping of param names to defaults"),
            }
        }
        match fields.get("steps") {
            None if fields.was_suggested("steps") => spans.steps_missing = true,
            None => {
                self.report(start, "missing required key `steps`").hint =
                    Some("add `steps:` with at least one step".to_string());
                spans.steps_missing = true;
            }
            Some(entry) => {
                spans.steps = entry.value.loc.or(entry.key_loc);
                match &entry.value.kind {
                    Kind::Null => spans.steps = entry.key_loc,
                    Kind::Map(steps) => {
                        for step in steps {
                            let (step, step_spans) = self.step(step);
                            pipeline.steps.push(step);
                            spans.step.push(step_spans);
                        }
                    }
                    _ => {
                        self.type_error(entry, "", "a mapping from step name to step");
                        if let Some(d) = self.diagnostics.last_mut() {
                            d.hint = Some("write each step as `name:` followed by its keys, e.g. `fetch: { run: ./fetch.sh }`".to_string());
                        }
                        spans.steps_missing = true;
                    }
                }
            }
        }
        (pipeline, spans)
    }

    fn param(&mut self, entry: &Entry) -> ParamSpec {
        let mut spec = ParamSpec::new(entry.key.clone());
        let context = format!(" of param `{}`", entry.key);
        match &entry.value.kind {
            Kind::Null => {}
            Kind::Map(entries) => {
                let fields = self.fields(entries, PARAM_KEYS, &format!("in param `{}`", entry.key));
                if let Some(e) = fields.get("default") {
                    spec.default = self.text(e, &context);
                }
                if let Some(e) = fields.get("description") {
                    spec.description = self.text(e, &context);
                }
            }
            Kind::Seq(_) => {
                self.report(
                    entry.value.loc,
                    format!("param `{}` must be a default value or a mapping with `default` and `description`, found a list", entry.key),
                );
            }
            _ => spec.default = entry.value.as_text(),
        }
        spec
    }

    fn step(&mut self, entry: &Entry) -> (Step, StepSpans) {
        let name = entry.key.clone();
        let mut spans = StepSpans {
            key: entry.key_loc,
            ..StepSpans::default()
        };
        let mut step = Step::shell(name.clone(), "");
        let entries = match &entry.value.kind {
            Kind::Map(entries) => entries,
            Kind::Null => {
                self.report_no_action(entry.key_loc, &name);
                spans.action_reported = true;
                return (step, spans);
            }
            _ => {
                let d = self.report(
                    entry.value.loc,
                    format!(
                        "step `{name}` must be a mapping, found {}",
                        entry.value.describe()
                    ),
                );
                if let Kind::Str(script) = &entry.value.kind {
                    d.hint = Some(format!("did you mean `{name}: {{ run: {script} }}`?"));
                }
                spans.action_reported = true;
                return (step, spans);
            }
        };
        let fields = self.fields(entries, STEP_KEYS, &format!("in step `{name}`"));
        let context = format!(" in step `{name}`");
        for e in &fields.entries {
            if let Some(key) = STEP_KEYS.iter().find(|k| **k == e.key)
                && let Some(loc) = e.value.loc.filter(|_| !e.value.is_null()).or(e.key_loc)
            {
                spans.fields.insert(key, loc);
            }
        }

        let run = fields.get("run");
        let command = fields.get("command");
        match (run, command) {
            (Some(r), Some(c)) => {
                let later = if r.key_loc > c.key_loc { r } else { c };
                self.report(
                    later.key_loc,
                    format!("step `{name}` has both `run` and `command`"),
                )
                .hint = Some(
                    "keep one: `run` for a shell script, `command` for an argument list"
                        .to_string(),
                );
                spans.action_reported = true;
            }
            (None, None) => {
                self.report_no_action(entry.key_loc, &name);
                spans.action_reported = true;
            }
            (Some(r), None) => match self.text(r, &context) {
                Some(script) => step.action = Action::Shell(script),
                None => spans.action_reported = !r.value.is_null(),
            },
            (None, Some(c)) => {
                if let Kind::Str(script) = &c.value.kind {
                    self.type_error(c, &context, "a list of arguments");
                    if let Some(d) = self.diagnostics.last_mut() {
                        d.hint = Some(format!(
                            "use `run: {script}` for a shell string, or split it into `command: [program, args...]`"
                        ));
                    }
                    spans.action_reported = true;
                } else {
                    let errors = self.diagnostics.len();
                    let (argv, locs) = self.list(c, &context, "string");
                    spans.action_reported = self.diagnostics.len() > errors;
                    spans.items.insert("command", locs);
                    step.action = Action::Command(argv);
                }
            }
        }

        for (key, target) in [
            ("needs", &mut step.needs),
            ("inputs", &mut step.inputs),
            ("outputs", &mut step.outputs),
            ("code", &mut step.code),
        ] {
            if let Some(e) = fields.get(key) {
                let what = match key {
                    "outputs" => "path",
                    "code" => "glob",
                    _ => "step name",
                };
                let (items, locs) = self.list(e, &context, what);
                *target = items;
                spans.items.insert(key, locs);
            }
        }
        if let Some(e) = fields.get("uses_params") {
            let (items, locs) = self.list(e, &context, "parameter name");
            step.uses_params = Some(items);
            spans.items.insert("uses_params", locs);
        }
        if let Some(e) = fields.get("env") {
            (step.env, spans.env_keys) = self.string_map(e, &context, "env var");
        }
        if let Some(e) = fields.get("params") {
            (step.params, spans.param_keys) = self.string_map(e, &context, "param");
        }
        if let Some(e) = fields.get("retries") {
            match &e.value.kind {
                Kind::Null => {}
                Kind::Int(n) if let Ok(n) = u32::try_from(*n) => step.retries = n,
                _ => {
                    self.type_error(
                        e,
                        &context,
                        &format!("a non-negative integer (at most {})", validate::MAX_RETRIES),
                    );
                }
            }
        }
        if let Some(e) = fields.get("timeout") {
            step.timeout = self.duration(e, "timeout", &context);
        }
        if let Some(e) = fields.get("retry_delay") {
            step.retry_delay = self.duration(e, "retry_delay", &context);
        }
        if let Some(e) = fields.get("cache") {
            match e.value.kind {
                Kind::Null => {}
                Kind::Bool(b) => step.cache = b,
                _ => self.type_error(e, &context, "`true` or `false`"),
            }
        }
        if let Some(e) = fields.get("resources") {
            step.resources = self.resources(e, &name, &mut spans);
        }
        if let Some(e) = fields.get("image") {
            step.image = self.text(e, &context);
            if step
                .image
                .as_deref()
                .is_some_and(|i| i.trim().is_empty() || i.chars().any(char::is_whitespace))
            {
                self.report(e.value.loc, format!("invalid `image`{context}: an image reference has no spaces and is not empty"));
            }
        }
        if let Some(e) = fields.get("profile") {
            step.profile = self.text(e, &context);
            if step
                .profile
                .as_deref()
                .is_some_and(|p| p.trim().is_empty() || p.chars().any(char::is_whitespace))
            {
                self.report(
                    e.value.loc,
                    format!(
                        "invalid `profile`{context}: a profile name has no spaces and is not empty"
                    ),
                );
            }
        }
        if let Some(e) = fields.get("kubernetes") {
            match &e.value.kind {
                Kind::Null => {}
                Kind::Map(_) => step.kubernetes = e.value.to_json().as_object().cloned(),
                _ => self.type_error(
                    e,
                    &context,
                    "a mapping of Kubernetes settings, e.g. `{ node_selector: { pool: gpu } }`",
                ),
            }
        }
        (step, spans)
    }

    /// A duration such as `30s` or `1h 30m`; `None` (reported) if it is not one.
    fn duration(&mut self, e: &Entry, key: &str, context: &str) -> Option<Duration> {
        match (&e.value.kind, e.value.as_text()) {
            (Kind::Null, _) => None,
            (Kind::Str(_) | Kind::Int(_) | Kind::Float(_), Some(text)) => {
                match humantime::parse_duration(&text) {
                    Ok(d) => Some(d),
                    Err(err) => {
                        self.report(
                            e.value.loc,
                            format!("invalid `{key}` `{text}`{context}: {err}"),
                        )
                        .hint = Some("use a duration like `30s`, `10m` or `1h 30m`".to_string());
                        None
                    }
                }
            }
            _ => {
                self.type_error(e, context, "a duration like `10m`");
                None
            }
        }
    }

    fn resources(&mut self, entry: &Entry, step: &str, spans: &mut StepSpans) -> Resources {
        let mut resources = Resources::default();
        let entries = match &entry.value.kind {
            Kind::Map(entries) => entries,
            Kind::Null => return resources,
            _ => {
                self.type_error(
                    entry,
                    &format!(" in step `{step}`"),
                    "a mapping with `cpu`, `memory` or `gpu`",
                );
                return resources;
            }
        };
        let context = format!(" in resources of step `{step}`");
        let fields = self.fields(entries, RESOURCE_KEYS, context.trim_start());
        for e in &fields.entries {
            if let (Some(key), Some(loc)) =
                (RESOURCE_KEYS.iter().find(|k| **k == e.key), e.value.loc)
            {
                spans.resources.insert(key, loc);
            }
        }
        if let Some(e) = fields.get("cpu") {
            resources.cpu = self.text(e, &context);
        }
        if let Some(e) = fields.get("memory") {
            resources.memory = self.text(e, &context);
        }
        if let Some(e) = fields.get("gpu") {
            match e.value.kind {
                Kind::Null => {}
                Kind::Int(n) if (0..=i128::from(u32::MAX)).contains(&n) => {
                    resources.gpu = Some(u32::try_from(n).expect("range checked"));
                }
                _ => self.type_error(e, &context, "a non-negative integer, e.g. `1`"),
            }
        }
        resources
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const FULL: &str = r#"name: hello
description: optional text
params:
  greeting: hello
  epochs: 10
  ratio: 1.10
  flag: yes
  seed: { default: 42, description: "random seed" }
  dataset: { description: "required, no default" }
steps:
  fetch:
    run: echo fetching > "$FERRY_OUTPUT_DIR/data.txt"
    outputs: [data.txt]
  count:
    command: [python3, count.py, --lines, 5]
    inputs: [fetch]
    needs: [other]
    env: { MODE: fast, LEVEL: 3 }
    params: { epochs: 3 }
    retries: 2
    timeout: 10m
    cache: false
    resources: { cpu: "500m", memory: "1Gi", gpu: 1 }
  other:
    run: "true"
    resources: { cpu: 0.5, memory: 1000 }
"#;

    #[test]
    fn parses_full_example() {
        let p = Pipeline::from_yaml_str(FULL, None).unwrap();
        assert_eq!(p.name, "hello");
        assert_eq!(p.description.as_deref(), Some("optional text"));
        let params: Vec<(&str, Option<&str>)> = p
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.default.as_deref()))
            .collect();
        assert_eq!(
            params,
            [
                ("greeting", Some("hello")),
                ("epochs", Some("10")),
                ("ratio", Some("1.10")),
                ("flag", Some("yes")),
                ("seed", Some("42")),
                ("dataset", None)
            ]
        );
        assert_eq!(p.params[4].description.as_deref(), Some("random seed"));
        let names: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["fetch", "count", "other"]);
        let count = p.step("count").unwrap();
        assert_eq!(
            count.action,
            Action::Command(vec![
                "python3".into(),
                "count.py".into(),
                "--lines".into(),
                "5".into()
            ])
        );
        assert_eq!(count.env.get("LEVEL").map(String::as_str), Some("3"));
        assert_eq!(count.retries, 2);
        assert_eq!(count.timeout, Some(Duration::from_secs(600)));
        assert!(!count.cache);
        assert_eq!(
            count.resources,
            Resources::new().cpu("500m").memory("1Gi").gpu(1)
        );
        assert_eq!(
            p.step("other").unwrap().resources,
            Resources::new().cpu("0.5").memory("1000")
        );
        assert!(p.step("fetch").unwrap().cache);
        let order: Vec<&str> = p
            .topological_order()
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(order, ["fetch", "other", "count"]);
        assert_eq!(
            p.dependencies(count).collect::<Vec<_>>(),
            ["other", "fetch"]
        );
    }

    #[test]
    fn builder_matches_yaml() {
        let yaml = Pipeline::from_yaml_str(FULL, None).unwrap();
        let built = Pipeline::builder("hello")
            .description("optional text")
            .param("greeting", Some("hello"))
            .param("epochs", Some("10"))
            .param("ratio", Some("1.10"))
            .param("flag", Some("yes"))
            .param_spec(
                ParamSpec::new("seed")
                    .default_value("42")
                    .description("random seed"),
            )
            .param_spec(ParamSpec::new("dataset").description("required, no default"))
            .step(
                Step::shell("fetch", r#"echo fetching > "$FERRY_OUTPUT_DIR/data.txt""#)
                    .outputs(["data.txt"]),
            )
            .step(
                Step::command("count", ["python3", "count.py", "--lines", "5"])
                    .inputs(["fetch"])
                    .needs(["other"])
                    .env("MODE", "fast")
                    .env("LEVEL", "3")
                    .param("epochs", "3")
                    .retries(2)
                    .timeout(Duration::from_secs(600))
                    .cache(false)
                    .resources(Resources::new().cpu("500m").memory("1Gi").gpu(1)),
            )
            .step(
                Step::shell("other", "true").resources(Resources::new().cpu("0.5").memory("1000")),
            )
            .build()
            .unwrap();
        assert_eq!(built, yaml);
    }

    #[test]
    fn non_ascii_source_keeps_number_spelling() {
        let p = Pipeline::from_yaml_str(
            "name: ünï\nparams:\n  ratio: 1.50\nsteps:\n  a: { run: \"é\" }\n",
            None,
        );
        // The name is invalid, but the number after non-ASCII text must still be sliced correctly.
        let err = p.unwrap_err();
        assert_eq!(err.diagnostics.len(), 1, "{err}");
        let p = Pipeline::from_yaml_str(
            "description: ü\nname: x\nparams:\n  ratio: 1.50\nsteps:\n  a: { run: \"é\" }\n",
            None,
        )
        .unwrap();
        assert_eq!(p.params[0].default.as_deref(), Some("1.50"));
    }

    #[test]
    fn diagnostics_carry_file_and_sort_by_position() {
        let text = "name: x\nsteps:\n  b:\n    run: hi\n    needs: [zz]\n  a:\n    rn: hi\n";
        let err = Pipeline::from_yaml_str(text, Some(Path::new("pipeline.yaml"))).unwrap_err();
        let rendered = err.to_string();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(
            lines,
            [
                "pipeline.yaml:5:13: step `b` needs unknown step `zz` (steps are: `b`, `a`)",
                "pipeline.yaml:6:3: step `a` has neither `run` nor `command` (add `run: <shell script>` or `command: [program, args...]`)",
                "pipeline.yaml:7:5: unknown key `rn` in step `a` (did you mean `run`?)",
            ]
        );
    }

    /// (name, yaml, line, column, message fragment, hint fragment)
    #[rustfmt::skip]
    const BAD: &[(&str, &str, usize, usize, &str, &str)] = &[
        ("syntax error", "name: x\nsteps: [a\n", 2, 8, "invalid yaml: unclosed bracket", ""),
        ("two documents", "name: x\nsteps:\n  a: { run: hi }\n---\nname: y\n", 5, 1, "more than one yaml document", "`---`"),
        ("bad indentation", "name: x\nsteps:\n  a:\n    run: x\n   needs: [b]\n", 5, 4, "invalid yaml", ""),
        ("empty file", "", 1, 1, "pipeline file is empty", "needs at least"),
        ("not a mapping", "- a\n- b\n", 1, 1, "must be a mapping with `name` and `steps`, found a list", ""),
        ("type error retries", "name: x\nsteps:\n  a:\n    run: hi\n    retries: many\n", 5, 14, "`retries` in step `a` must be a non-negative integer (at most 10), found string `many`", ""),
        ("negative retries", "name: x\nsteps:\n  a:\n    run: hi\n    retries: -1\n", 5, 14, "found integer `-1`", ""),
        ("too many retries", "name: x\nsteps:\n  a:\n    run: hi\n    retries: 11\n", 5, 14, "step `a` has `retries: 11`, the maximum is 10", ""),
        ("cache not bool", "name: x\nsteps:\n  a:\n    run: hi\n    cache: maybe\n", 5, 12, "`cache` in step `a` must be `true` or `false`", ""),
        ("unknown step key", "name: x\nsteps:\n  train:\n    run: hi\n    nedds: [a]\n", 5, 5, "unknown key `nedds` in step `train`", "did you mean `needs`?"),
        ("unknown top key", "nam: x\nstpes:\n  a: { run: hi }\n", 2, 1, "unknown key `stpes` at top level", "did you mean `steps`?"),
        ("unknown top key no match", "name: x\nversion: 2\nsteps:\n  a: { run: hi }\n", 2, 1, "unknown key `version` at top level", "valid keys are `name`, `description`, `params`, `steps`"),
        ("unknown param key", "name: x\nparams:\n  seed: { default: 1, descripton: d }\nsteps:\n  a: { run: hi }\n", 3, 23, "unknown key `descripton` in param `seed`", "did you mean `description`?"),
        ("unknown resources key", "name: x\nsteps:\n  a:\n    run: hi\n    resources: { cpus: 2 }\n", 5, 18, "unknown key `cpus` in resources of step `a`", "did you mean `cpu`?"),
        ("missing name", "steps:\n  a: { run: hi }\n", 1, 1, "missing required key `name`", "name: my-pipeline"),
        ("missing steps", "name: x\n", 1, 1, "missing required key `steps`", ""),
        ("empty steps", "name: x\nsteps: {}\n", 2, 8, "pipeline has no steps", "at least one step"),
        ("steps as list", "name: x\nsteps:\n  - run: hi\n", 3, 3, "`steps` must be a mapping from step name to step, found a list", "fetch:"),
        ("invalid pipeline name", "name: Hello\nsteps:\n  a: { run: hi }\n", 1, 7, "invalid pipeline name `Hello`: it must start with a lowercase letter or digit, not `H`", ""),
        ("long pipeline name", "name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nsteps:\n  a: { run: hi }\n", 1, 7, "it is 64 characters long, the maximum is 63", ""),
        ("invalid step name", "name: x\nsteps:\n  fetch data:\n    run: hi\n", 3, 3, "invalid step name `fetch data`: ` ` is not allowed", ""),
        ("duplicate step", "name: x\nsteps:\n  a:\n    run: one\n  b:\n    run: two\n  a:\n    run: three\n", 7, 3, "duplicate step `a`", "unique"),
        ("duplicate integer step", "name: x\nsteps:\n  1:\n    run: one\n  2:\n    run: two\n  1:\n    run: three\n", 7, 3, "duplicate step `1`", ""),
        ("duplicate param", "name: x\nparams:\n  seed: 1\n  seed: 2\nsteps:\n  a: { run: hi }\n", 4, 3, "duplicate param `seed`", ""),
        ("duplicate step key", "name: x\nsteps:\n  a:\n    run: hi\n    retries: 1\n    retries: 2\n", 6, 5, "duplicate key `retries` in step `a`", ""),
        ("run and command", "name: x\nsteps:\n  a:\n    run: hi\n    command: [echo, hi]\n", 5, 5, "step `a` has both `run` and `command`", "keep one"),
        ("neither run nor command", "name: x\nsteps:\n  a:\n    needs: []\n", 3, 3, "step `a` has neither `run` nor `command`", ""),
        ("empty run", "name: x\nsteps:\n  a:\n    run: \"\"\n", 4, 10, "step `a` has an empty `run` script", ""),
        ("empty command", "name: x\nsteps:\n  a:\n    command: []\n", 4, 14, "step `a` has an empty `command`", "command: [python3, train.py]"),
        ("command as string", "name: x\nsteps:\n  a:\n    command: python3 x.py\n", 4, 14, "`command` in step `a` must be a list of arguments, found string `python3 x.py`", "use `run: python3 x.py`"),
        ("step as string", "name: x\nsteps:\n  a: echo hi\n", 3, 6, "step `a` must be a mapping, found string `echo hi`", "a: { run: echo hi }"),
        ("unknown need", "name: x\nsteps:\n  fetch: { run: hi }\n  count:\n    run: hi\n    needs: [fetc]\n", 6, 13, "step `count` needs unknown step `fetc`", "did you mean `fetch`?"),
        ("unknown input", "name: x\nsteps:\n  fetch: { run: hi }\n  count:\n    run: hi\n    inputs: [fetch, zzz]\n", 6, 21, "step `count` reads inputs from unknown step `zzz`", "steps are: `fetch`, `count`"),
        ("self dependency", "name: x\nsteps:\n  a:\n    run: hi\n    needs: [a]\n", 5, 13, "step `a` depends on itself", ""),
        ("cycle", "name: x\nsteps:\n  a:\n    run: hi\n    needs: [c]\n  b:\n    run: hi\n    needs: [a]\n  c:\n    run: hi\n    inputs: [b]\n", 8, 13, "dependency cycle: a -> c -> b -> a", "remove one"),
        ("invalid param name", "name: x\nparams:\n  my-param: 1\nsteps:\n  a: { run: hi }\n", 3, 3, "invalid param name `my-param`", "try `my_param`"),
        ("invalid step param name", "name: x\nsteps:\n  a:\n    run: hi\n    params: { 2x: 1 }\n", 5, 15, "invalid param name `2x`", ""),
        ("reserved env", "name: x\nsteps:\n  a:\n    run: hi\n    env:\n      FERRY_RUN: 1\n", 6, 7, "env var `FERRY_RUN` in step `a` uses the reserved `FERRY_` prefix", ""),
        ("invalid env name", "name: x\nsteps:\n  a:\n    run: hi\n    env:\n      MY-VAR: 1\n", 6, 7, "invalid env var name `MY-VAR`", "try `MY_VAR`"),
        ("env value list", "name: x\nsteps:\n  a:\n    run: hi\n    env:\n      A: [1]\n", 6, 10, "env var `A` in step `a` must be a string, found a list", ""),
        ("duplicate env", "name: x\nsteps:\n  a:\n    run: hi\n    env:\n      A: 1\n      A: 2\n", 7, 7, "duplicate env var `A` in step `a`", ""),
        ("absolute output", "name: x\nsteps:\n  a:\n    run: hi\n    outputs: [ok.txt, /etc/passwd]\n", 5, 23, "output `/etc/passwd` of step `a` is absolute", ""),
        ("parent output", "name: x\nsteps:\n  a:\n    run: hi\n    outputs:\n      - ../x\n", 6, 9, "output `../x` of step `a` contains `..`", ""),
        ("empty output", "name: x\nsteps:\n  a:\n    run: hi\n    outputs: [\"\"]\n", 5, 15, "an output of step `a` is an empty string", ""),
        ("duplicate output", "name: x\nsteps:\n  a:\n    run: hi\n    outputs: [a/b, ./a/b]\n", 5, 20, "duplicate output `./a/b` in step `a`", ""),
        ("outputs not a list", "name: x\nsteps:\n  a:\n    run: hi\n    outputs: data.txt\n", 5, 14, "`outputs` in step `a` must be a list of paths, found string `data.txt`", ""),
        ("bad timeout", "name: x\nsteps:\n  a:\n    run: hi\n    timeout: soon\n", 5, 14, "invalid `timeout` `soon` in step `a`", "`30s`, `10m`"),
        ("timeout without unit", "name: x\nsteps:\n  a:\n    run: hi\n    timeout: 10\n", 5, 14, "invalid `timeout` `10` in step `a`", ""),
        ("zero timeout", "name: x\nsteps:\n  a:\n    run: hi\n    timeout: 0s\n", 5, 14, "step `a` has a zero `timeout`", ""),
        ("bad cpu", "name: x\nsteps:\n  a:\n    run: hi\n    resources:\n      cpu: 2 cores\n", 6, 12, "invalid cpu `2 cores` in step `a`", "`500m`"),
        ("bad memory", "name: x\nsteps:\n  a:\n    run: hi\n    resources:\n      memory: 1gb\n", 6, 15, "invalid memory `1gb` in step `a`", "`512Mi`"),
        ("negative gpu", "name: x\nsteps:\n  a:\n    run: hi\n    resources:\n      gpu: -1\n", 6, 12, "`gpu` in resources of step `a` must be a non-negative integer", ""),
        ("params as list", "name: x\nparams: [a, b]\nsteps:\n  a: { run: hi }\n", 2, 9, "`params` must be a mapping of param names to defaults, found a list", ""),
        ("bad retry_delay", "name: x\nsteps:\n  a: { run: hi, retries: 2, retry_delay: later }\n", 3, 42, "invalid `retry_delay` `later` in step `a`", "use a duration"),
        ("kubernetes as text", "name: x\nsteps:\n  a: { run: hi, kubernetes: gpu }\n", 3, 29, "`kubernetes` in step `a`", ""),
        ("profile with space", "name: x\nsteps:\n  a: { run: hi, profile: big gpu }\n", 3, 26, "invalid `profile` in step `a`", ""),
    ];

    #[test]
    fn bad_pipelines_report_exact_locations() {
        let mut failures = Vec::new();
        for (case, yaml, line, column, message, hint) in BAD {
            let err = match Pipeline::from_yaml_str(yaml, Some(Path::new("pipeline.yaml"))) {
                Ok(_) => {
                    failures.push(format!("{case}: parsed without error"));
                    continue;
                }
                Err(err) => err,
            };
            let found = err.diagnostics.iter().any(|d| {
                d.line == Some(*line)
                    && d.column == Some(*column)
                    && d.message.contains(message)
                    && d.hint.as_deref().unwrap_or("").contains(hint)
                    && d.file.as_deref() == Some(Path::new("pipeline.yaml"))
            });
            if !found {
                failures.push(format!(
                    "{case}: want {line}:{column} {message:?} / {hint:?}, got:\n{err}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    #[test]
    fn misspelled_required_key_is_not_also_reported_missing() {
        let err = Pipeline::from_yaml_str("nam: x\nstpes:\n  a: { run: hi }\n", None).unwrap_err();
        let messages: Vec<&str> = err.diagnostics.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "unknown key `nam` at top level",
                "unknown key `stpes` at top level"
            ]
        );
    }

    #[test]
    fn profiles_kubernetes_blocks_and_retry_delays_are_kept_for_the_orchestrator() {
        let text = "name: x\nsteps:\n  train:\n    run: python train.py\n    retries: 3\n    retry_delay: 30s\n    profile: gpu\n    kubernetes:\n      node_selector: { pool: a100 }\n      gpus: 2\n      volumes: [{ name: data, claim: datasets, mount: /data, read_only: true }]\n";
        let pipeline = Pipeline::from_yaml_str(text, None).unwrap();
        let step = &pipeline.steps[0];
        assert_eq!(step.retry_delay, Some(Duration::from_secs(30)));
        assert_eq!(step.profile.as_deref(), Some("gpu"));
        let kubernetes = serde_json::Value::Object(step.kubernetes.clone().unwrap());
        assert_eq!(
            kubernetes,
            serde_json::json!({
                "node_selector": {"pool": "a100"},
                "gpus": 2,
                "volumes": [{"name": "data", "claim": "datasets", "mount": "/data", "read_only": true}],
            })
        );
        // The plan carries them as they were written.
        let back: Step = serde_json::from_str(&serde_json::to_string(step).unwrap()).unwrap();
        assert_eq!(&back, step);
    }

    #[test]
    fn collects_many_errors_at_once() {
        let text = "name: x\nsteps:\n  a:\n    run: hi\n    retries: many\n    timeout: soon\n    nedds: [b]\n  b:\n    run: \"\"\n    needs: [zz]\n";
        let err = Pipeline::from_yaml_str(text, None).unwrap_err();
        assert_eq!(err.diagnostics.len(), 5, "{err}");
        let lines: Vec<usize> = err.diagnostics.iter().map(|d| d.line.unwrap()).collect();
        assert_eq!(lines, [5, 6, 7, 9, 10]);
    }
}
