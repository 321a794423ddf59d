//! The in-memory pipeline model shared by the YAML loader, the builder and plugins.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::builder::PipelineBuilder;
use super::validate;

/// A validated pipeline definition.
///
/// Spans are deliberately not kept here: the model crosses a plugin boundary as
/// JSON and must compare equal whether it came from YAML or from the builder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Kept in file order so that help output matches what the author wrote.
    #[serde(default)]
    pub params: Vec<ParamSpec>,
    /// Kept in file order because it is the tie-breaker of the topological order.
    pub steps: Vec<Step>,
}

/// A pipeline-level parameter; one without a default must be given at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

impl ParamSpec {
    pub fn new(name: impl Into<String>) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            default: None,
            description: None,
        }
    }

    #[must_use]
    pub fn default_value(mut self, value: impl Into<String>) -> ParamSpec {
        self.default = Some(value.into());
        self
    }

    #[must_use]
    pub fn description(mut self, text: impl Into<String>) -> ParamSpec {
        self.description = Some(text.into());
        self
    }
}

/// One unit of work in the pipeline graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub action: Action,
    /// Ordering-only dependencies.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Upstream steps whose outputs are read; these also order the step.
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The project files the step's code is (globs over the project's file list, relative to
    /// the project root): its cache key covers these files only, not the whole project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code: Vec<String>,
    /// The pipeline parameters the step reads: its cache key covers these (and its own
    /// `params`) only; `[]` reads none. Unset: every parameter, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_params: Option<Vec<String>>,
    #[serde(default)]
    pub retries: u32,
    /// The wait before the first retry; each further retry waits twice as long, up to
    /// [`crate::run::retry::MAX_DELAY`], with jitter (`None`: [`crate::run::retry::DEFAULT_DELAY`]).
    #[serde(
        default,
        with = "humantime_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_delay: Option<Duration>,
    #[serde(default, with = "humantime_opt")]
    pub timeout: Option<Duration>,
    #[serde(default = "default_cache")]
    pub cache: bool,
    #[serde(default)]
    pub resources: Resources,
    /// Container image for orchestrators that run each step in its own container (the
    /// Kubernetes backend in `steps` mode); the image must contain `ferry`. Others ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A pod profile the stack's orchestrator defines (Kubernetes:
    /// `settings.profiles.<name>`): where and how the step's container runs. Orchestrators
    /// without profiles ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Settings for the Kubernetes orchestrator that override the profile's for this step
    /// (the same keys as a profile), kept as written: the orchestrator checks them, and
    /// others ignore them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<serde_json::Map<String, serde_json::Value>>,
}

fn default_cache() -> bool {
    true
}

/// What a step executes.
///
/// Two forms exist because quoting argv through a shell is a classic source of
/// bugs; `Command` bypasses the shell entirely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Script run with `sh -c`.
    #[serde(rename = "run")]
    Shell(String),
    /// Program and arguments, executed directly.
    #[serde(rename = "command")]
    Command(Vec<String>),
}

/// Resource requests, kept as the strings the user wrote so schedulers can pass
/// them on verbatim (Kubernetes-style quantities).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default)]
    pub cpu: Option<String>,
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub gpu: Option<u32>,
}

impl Resources {
    pub fn new() -> Resources {
        Resources::default()
    }

    /// The cpu request in millicores (`500m` → 500, `2` → 2000), if set and well formed.
    pub fn cpu_millis(&self) -> Option<u64> {
        self.cpu
            .as_deref()
            .and_then(quantity)
            .map(|cores| (cores * 1000.0).ceil() as u64)
    }

    /// The memory request in bytes (`512Mi`, `1G`, `1000`), if set and well formed.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory
            .as_deref()
            .and_then(quantity)
            .map(|bytes| bytes.ceil() as u64)
    }

    #[must_use]
    pub fn cpu(mut self, cpu: impl Into<String>) -> Resources {
        self.cpu = Some(cpu.into());
        self
    }

    #[must_use]
    pub fn memory(mut self, memory: impl Into<String>) -> Resources {
        self.memory = Some(memory.into());
        self
    }

    #[must_use]
    pub fn gpu(mut self, gpu: u32) -> Resources {
        self.gpu = Some(gpu);
        self
    }
}

impl Step {
    fn with_action(name: impl Into<String>, action: Action) -> Step {
        Step {
            name: name.into(),
            action,
            needs: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            env: BTreeMap::new(),
            params: BTreeMap::new(),
            code: Vec::new(),
            uses_params: None,
            retries: 0,
            retry_delay: None,
            timeout: None,
            cache: true,
            resources: Resources::default(),
            image: None,
            profile: None,
            kubernetes: None,
        }
    }

    pub fn shell(name: impl Into<String>, script: impl Into<String>) -> Step {
        Step::with_action(name, Action::Shell(script.into()))
    }

    pub fn command<I, S>(name: impl Into<String>, argv: I) -> Step
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Step::with_action(
            name,
            Action::Command(argv.into_iter().map(Into::into).collect()),
        )
    }

    #[must_use]
    pub fn needs<I, S>(mut self, steps: I) -> Step
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.needs.extend(steps.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn inputs<I, S>(mut self, steps: I) -> Step
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inputs.extend(steps.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn outputs<I, S>(mut self, paths: I) -> Step
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.outputs.extend(paths.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Step {
        self.env.insert(key.into(), value.into());
        self
    }

    #[must_use]
    pub fn param(mut self, key: impl Into<String>, value: impl Into<String>) -> Step {
        self.params.insert(key.into(), value.into());
        self
    }

    #[must_use]
    pub fn retries(mut self, retries: u32) -> Step {
        self.retries = retries;
        self
    }

    #[must_use]
    pub fn retry_delay(mut self, delay: Duration) -> Step {
        self.retry_delay = Some(delay);
        self
    }

    #[must_use]
    pub fn profile(mut self, profile: impl Into<String>) -> Step {
        self.profile = Some(profile.into());
        self
    }

    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Step {
        self.timeout = Some(timeout);
        self
    }

    #[must_use]
    pub fn cache(mut self, cache: bool) -> Step {
        self.cache = cache;
        self
    }

    #[must_use]
    pub fn resources(mut self, resources: Resources) -> Step {
        self.resources = resources;
        self
    }

    #[must_use]
    pub fn image(mut self, image: impl Into<String>) -> Step {
        self.image = Some(image.into());
        self
    }
}

impl Pipeline {
    pub fn from_yaml_str(text: &str, file: Option<&Path>) -> Result<Pipeline, PipelineError> {
        super::parse::from_yaml_str(text, file)
    }

    /// Reads and parses a pipeline file; an unreadable file is reported as a
    /// diagnostic too so callers have a single error path.
    pub fn from_file(path: &Path) -> Result<Pipeline, PipelineError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Pipeline::from_yaml_str(&text, Some(path)),
            Err(err) => Err(PipelineError::single(
                Diagnostic::new(format!("cannot read pipeline file: {err}"))
                    .in_file(Some(path.to_path_buf())),
            )),
        }
    }

    pub fn builder(name: impl Into<String>) -> PipelineBuilder {
        PipelineBuilder::new(name)
    }

    /// Runs the semantic checks; needed after deserializing from JSON, which
    /// bypasses both the YAML loader and the builder.
    pub fn validate(&self) -> Result<(), PipelineError> {
        PipelineError::from_diagnostics(validate::check(self, &validate::Spans::default()))
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// All dependencies of a step: `needs` then `inputs`, deduplicated, in declared order.
    pub fn dependencies<'a>(&'a self, step: &'a Step) -> impl Iterator<Item = &'a str> + 'a {
        let mut seen = BTreeSet::new();
        step.needs
            .iter()
            .chain(step.inputs.iter())
            .map(String::as_str)
            .filter(move |name| seen.insert(*name))
    }

    /// Steps in a topological order, preferring file order among ready steps so
    /// that runs are reproducible. Only meaningful on a validated pipeline:
    /// unknown dependencies are ignored and steps caught in a cycle are appended
    /// in file order.
    pub fn topological_order(&self) -> Vec<&Step> {
        let index: HashMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .rev()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut pending = vec![0usize; self.steps.len()];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); self.steps.len()];
        for (i, step) in self.steps.iter().enumerate() {
            for dep in self.dependencies(step) {
                if let Some(&d) = index.get(dep)
                    && d != i
                {
                    pending[i] += 1;
                    dependents[d].push(i);
                }
            }
        }
        let mut ready: BTreeSet<usize> =
            (0..self.steps.len()).filter(|&i| pending[i] == 0).collect();
        let mut order = Vec::with_capacity(self.steps.len());
        let mut done = vec![false; self.steps.len()];
        while let Some(i) = ready.pop_first() {
            done[i] = true;
            order.push(&self.steps[i]);
            for &j in &dependents[i] {
                pending[j] -= 1;
                if pending[j] == 0 {
                    ready.insert(j);
                }
            }
        }
        order.extend(
            self.steps
                .iter()
                .enumerate()
                .filter(|(i, _)| !done[*i])
                .map(|(_, s)| s),
        );
        order
    }

    /// Merges `--param k=v` overrides with defaults.
    pub fn resolve_params(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, PipelineError> {
        let mut diagnostics = Vec::new();
        let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        for name in overrides.keys() {
            if !known.contains(&name.as_str()) {
                let hint = match validate::did_you_mean(name, known.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if known.is_empty() => "this pipeline declares no params".to_string(),
                    None => format!("declared params: {}", quoted_list(known.iter().copied())),
                };
                diagnostics
                    .push(Diagnostic::new(format!("unknown param `{name}`")).with_hint(hint));
            }
        }
        let mut resolved = BTreeMap::new();
        let mut missing = Vec::new();
        for param in &self.params {
            match overrides.get(&param.name).or(param.default.as_ref()) {
                Some(value) => {
                    resolved.insert(param.name.clone(), value.clone());
                }
                None => missing.push(param.name.as_str()),
            }
        }
        if !missing.is_empty() {
            let noun = if missing.len() == 1 {
                "param"
            } else {
                "params"
            };
            let example = missing
                .iter()
                .map(|m| format!("--param {m}=<value>"))
                .collect::<Vec<_>>();
            diagnostics.push(
                Diagnostic::new(format!(
                    "missing value for required {noun} {}",
                    quoted_list(missing.iter().copied())
                ))
                .with_hint(format!("pass {}", example.join(" "))),
            );
        }
        PipelineError::from_diagnostics(diagnostics).map(|()| resolved)
    }

    /// Values a step sees: resolved pipeline params overlaid by the step's own `params`.
    pub fn step_params(
        &self,
        step: &Step,
        resolved: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut values = resolved.clone();
        values.extend(step.params.iter().map(|(k, v)| (k.clone(), v.clone())));
        values
    }
}

pub(crate) fn quoted_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items
        .into_iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One problem found in a pipeline, with as much location as is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: None,
            line: None,
            column: None,
            message: message.into(),
            hint: None,
        }
    }

    #[must_use]
    pub fn at(mut self, location: Option<(usize, usize)>) -> Diagnostic {
        if let Some((line, column)) = location {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }

    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    #[must_use]
    pub fn in_file(mut self, file: Option<PathBuf>) -> Diagnostic {
        self.file = file;
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut prefix = Vec::new();
        if let Some(file) = &self.file {
            prefix.push(file.display().to_string());
        }
        if let Some(line) = self.line {
            prefix.push(line.to_string());
            if let Some(column) = self.column {
                prefix.push(column.to_string());
            }
        }
        if !prefix.is_empty() {
            write!(f, "{}: ", prefix.join(":"))?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Every problem found at once, so a user can fix a file in one round trip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.diagnostics))]
pub struct PipelineError {
    pub diagnostics: Vec<Diagnostic>,
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl PipelineError {
    pub fn single(diagnostic: Diagnostic) -> PipelineError {
        PipelineError {
            diagnostics: vec![diagnostic],
        }
    }

    /// `Ok` when there is nothing to report, so checks can simply collect.
    pub(crate) fn from_diagnostics(diagnostics: Vec<Diagnostic>) -> Result<(), PipelineError> {
        if diagnostics.is_empty() {
            Ok(())
        } else {
            Err(PipelineError { diagnostics })
        }
    }
}

/// Durations cross the JSON boundary as humantime strings (`"10m"`) so they stay
/// readable in plugin logs and match what users write in YAML.
mod humantime_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, ser: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => ser.serialize_some(&humantime::format_duration(*d).to_string()),
            None => ser.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(de)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A Kubernetes quantity (`500m`, `1.5`, `512Mi`, `1G`, `2e3`) in base units (cores, bytes);
/// `None` if malformed. The one parser of quantities: schedulers compare and add requests
/// with it.
pub fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => 10f64.powi(exponent.strip_prefix(['e', 'E'])?.parse().ok()?),
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fan() -> Pipeline {
        Pipeline::builder("fan")
            .step(Step::shell("join", "true").inputs(["left", "right"]))
            .step(Step::shell("right", "true").needs(["src"]))
            .step(Step::shell("left", "true").needs(["src"]))
            .step(Step::shell("src", "true"))
            .step(Step::shell("report", "true").needs(["join", "src"]))
            .build()
            .unwrap()
    }

    fn names<'a>(steps: &[&'a Step]) -> Vec<&'a str> {
        steps.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn topological_order_fan_out_fan_in_prefers_file_order() {
        let p = fan();
        assert_eq!(
            names(&p.topological_order()),
            ["src", "right", "left", "join", "report"]
        );
    }

    #[test]
    fn topological_order_keeps_file_order_for_independent_steps() {
        let p = Pipeline::builder("flat")
            .step(Step::shell("c", "true"))
            .step(Step::shell("a", "true"))
            .step(Step::shell("b", "true").needs(["c"]))
            .build()
            .unwrap();
        assert_eq!(names(&p.topological_order()), ["c", "a", "b"]);
    }

    #[test]
    fn dependencies_dedup_in_declared_order() {
        let p = Pipeline::builder("d")
            .step(Step::shell("a", "true"))
            .step(Step::shell("b", "true"))
            .step(
                Step::shell("c", "true")
                    .needs(["b", "a"])
                    .inputs(["a", "b"]),
            )
            .build()
            .unwrap();
        let c = p.step("c").unwrap();
        assert_eq!(p.dependencies(c).collect::<Vec<_>>(), ["b", "a"]);
        assert!(p.step("zzz").is_none());
    }

    fn with_params() -> Pipeline {
        Pipeline::builder("p")
            .param("epochs", Some("10"))
            .param("dataset", None)
            .param("seed", Some("42"))
            .step(
                Step::shell("train", "true")
                    .param("epochs", "3")
                    .param("extra", "x"),
            )
            .build()
            .unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn resolve_params_applies_overrides_and_defaults() {
        let p = with_params();
        let resolved = p
            .resolve_params(&map(&[("dataset", "mnist"), ("seed", "7")]))
            .unwrap();
        assert_eq!(
            resolved,
            map(&[("dataset", "mnist"), ("epochs", "10"), ("seed", "7")])
        );
        let step = p.step("train").unwrap();
        assert_eq!(
            p.step_params(step, &resolved),
            map(&[
                ("dataset", "mnist"),
                ("epochs", "3"),
                ("extra", "x"),
                ("seed", "7")
            ])
        );
    }

    #[test]
    fn resolve_params_unknown_suggests_and_missing_lists() {
        let err = with_params()
            .resolve_params(&map(&[("epoch", "1")]))
            .unwrap_err();
        assert_eq!(err.diagnostics.len(), 2, "{err}");
        assert_eq!(err.diagnostics[0].message, "unknown param `epoch`");
        assert_eq!(
            err.diagnostics[0].hint.as_deref(),
            Some("did you mean `epochs`?")
        );
        assert_eq!(
            err.diagnostics[1].message,
            "missing value for required param `dataset`"
        );
        assert_eq!(err.to_string().lines().count(), 2);

        let err = with_params()
            .resolve_params(&map(&[("zzzzzz", "1"), ("dataset", "d")]))
            .unwrap_err();
        assert_eq!(
            err.diagnostics[0].hint.as_deref(),
            Some("declared params: `epochs`, `dataset`, `seed`")
        );
    }

    #[test]
    fn json_round_trip() {
        let p = Pipeline::builder("json")
            .description("d")
            .param("a", Some("1"))
            .step(
                Step::command("s", ["python3", "x.py"])
                    .timeout(Duration::from_secs(600))
                    .cache(false)
                    .env("MODE", "fast")
                    .resources(Resources::new().cpu("500m").memory("1Gi").gpu(1)),
            )
            .step(
                Step::shell("t", "echo hi")
                    .inputs(["s"])
                    .outputs(["out.txt"])
                    .retries(2),
            )
            .build()
            .unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""timeout":"10m""#), "{json}");
        assert!(
            json.contains(r#""action":{"command":["python3","x.py"]}"#),
            "{json}"
        );
        assert!(json.contains(r#""action":{"run":"echo hi"}"#), "{json}");
        let back: Pipeline = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        back.validate().unwrap();
    }

    #[test]
    fn diagnostic_display_omits_unknown_parts() {
        let d = Diagnostic::new("boom").with_hint("fix it");
        assert_eq!(d.to_string(), "boom (fix it)");
        let d = Diagnostic::new("boom").at(Some((3, 4)));
        assert_eq!(d.to_string(), "3:4: boom");
        let d = d.in_file(Some("p.yaml".into()));
        assert_eq!(d.to_string(), "p.yaml:3:4: boom");
    }

    #[test]
    fn from_file_read_error_is_a_diagnostic() {
        let err = Pipeline::from_file(Path::new("/nonexistent/pipeline.yaml")).unwrap_err();
        assert_eq!(err.diagnostics.len(), 1);
        assert!(err.diagnostics[0].line.is_none());
        assert!(
            err.to_string()
                .starts_with("/nonexistent/pipeline.yaml: cannot read pipeline file")
        );
    }

    #[test]
    fn requests_read_as_millicores_and_bytes() {
        let r = Resources::new().cpu("500m").memory("1.5Gi");
        assert_eq!(r.cpu_millis(), Some(500));
        assert_eq!(r.memory_bytes(), Some(1610612736));
        assert_eq!(Resources::new().cpu("2").cpu_millis(), Some(2000));
        assert_eq!(
            Resources::new().memory("1G").memory_bytes(),
            Some(1_000_000_000)
        );
        assert_eq!(Resources::new().memory("lots").memory_bytes(), None);
        assert_eq!(Resources::new().cpu_millis(), None);
    }
}
