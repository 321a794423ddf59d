//! Semantic checks shared by the YAML loader and the builder.
//!
//! The checks run on the plain model; the YAML loader passes a side table of
//! source locations so the same code can point at the offending key or value.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path};

use super::model::{Action, Diagnostic, Pipeline, Step, quoted_list};

/// A 1-based `(line, column)` in the pipeline file.
pub(crate) type Loc = (usize, usize);

pub(crate) const MAX_RETRIES: u32 = 10;
const MAX_NAME_LEN: usize = 63;

/// Where things were in the source file; empty for builder-made pipelines.
#[derive(Debug, Default)]
pub(crate) struct Spans {
    pub name: Option<Loc>,
    /// The name key was absent (already reported), so do not check its value.
    pub name_missing: bool,
    /// Location of the `steps` value (or of the document when it is missing).
    pub steps: Option<Loc>,
    /// `steps` was absent or malformed (already reported).
    pub steps_missing: bool,
    /// Index-aligned with `Pipeline::params`: location of each param name.
    pub params: Vec<Option<Loc>>,
    /// Index-aligned with `Pipeline::steps`.
    pub step: Vec<StepSpans>,
}

#[derive(Debug, Default)]
pub(crate) struct StepSpans {
    pub key: Option<Loc>,
    /// Location of each field's value, keyed by YAML key.
    pub fields: HashMap<&'static str, Loc>,
    /// Location of each list item for `needs`, `inputs`, `outputs`, `command`.
    pub items: HashMap<&'static str, Vec<Option<Loc>>>,
    pub env_keys: HashMap<String, Loc>,
    pub param_keys: HashMap<String, Loc>,
    pub resources: HashMap<&'static str, Loc>,
    /// The action was malformed (already reported), so do not check it again.
    pub action_reported: bool,
}

impl Spans {
    fn step(&self, i: usize) -> Option<&StepSpans> {
        self.step.get(i)
    }
    fn step_key(&self, i: usize) -> Option<Loc> {
        self.step(i).and_then(|s| s.key)
    }
    fn field(&self, i: usize, field: &str) -> Option<Loc> {
        self.step(i)
            .and_then(|s| s.fields.get(field).copied())
            .or(self.step_key(i))
    }
    fn item(&self, i: usize, field: &str, j: usize) -> Option<Loc> {
        self.step(i)
            .and_then(|s| s.items.get(field))
            .and_then(|v| v.get(j).copied().flatten())
            .or_else(|| self.field(i, field))
    }
    fn env_key(&self, i: usize, key: &str) -> Option<Loc> {
        self.step(i)
            .and_then(|s| s.env_keys.get(key).copied())
            .or_else(|| self.field(i, "env"))
    }
    fn param_key(&self, i: usize, key: &str) -> Option<Loc> {
        self.step(i)
            .and_then(|s| s.param_keys.get(key).copied())
            .or_else(|| self.field(i, "params"))
    }
    fn resource(&self, i: usize, key: &str) -> Option<Loc> {
        self.step(i)
            .and_then(|s| s.resources.get(key).copied())
            .or_else(|| self.field(i, "resources"))
    }
}

pub(crate) use crate::suggest::did_you_mean;

/// Explains why a pipeline or step name is invalid, or `None` when it is fine.
fn name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let first = chars.next()?;
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "it is {} characters long, the maximum is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Some(format!(
            "it must start with a lowercase letter or digit, not `{first}`"
        ));
    }
    if let Some(bad) =
        chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Some(format!(
            "`{bad}` is not allowed; use lowercase letters, digits, `_` and `-`"
        ));
    }
    None
}

fn check_name(kind: &str, name: &str, loc: Option<Loc>, out: &mut Vec<Diagnostic>) {
    let problem = if name.is_empty() {
        Some("it is empty".to_string())
    } else {
        name_problem(name)
    };
    if let Some(why) = problem {
        out.push(
            Diagnostic::new(format!("invalid {kind} name `{name}`: {why}"))
                .at(loc)
                .with_hint(format!("{kind} names look like `train-model` or `step_2`")),
        );
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`, the shape of both param and env var names.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_param_name(name: &str, loc: Option<Loc>, out: &mut Vec<Diagnostic>) {
    if !is_identifier(name) {
        out.push(
            Diagnostic::new(format!(
                "invalid param name `{name}`: it must match [A-Za-z_][A-Za-z0-9_]*"
            ))
            .at(loc)
            .with_hint(format!("try `{}`", sanitize_identifier(name))),
        );
    }
}

fn sanitize_identifier(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// `2`, `0.5`, `500m`.
fn valid_cpu(cpu: &str) -> bool {
    let number = cpu.strip_suffix('m').unwrap_or(cpu);
    let is_millis = number.len() != cpu.len();
    let valid_number = if is_millis {
        !number.is_empty() && number.chars().all(|c| c.is_ascii_digit())
    } else {
        is_decimal(number)
    };
    valid_number && number.parse::<f64>().is_ok_and(|v| v > 0.0)
}

fn is_decimal(text: &str) -> bool {
    let (int, frac) = text.split_once('.').unwrap_or((text, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && int.chars().all(|c| c.is_ascii_digit())
        && frac.chars().all(|c| c.is_ascii_digit())
}

/// Kubernetes quantities: plain bytes or a decimal (`k`, `M`, `G`, ...) or binary (`Ki`, `Mi`, ...) suffix.
fn valid_memory(memory: &str) -> bool {
    const SUFFIXES: [&str; 12] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|s| memory.strip_suffix(s))
        .unwrap_or(memory);
    is_decimal(number) && number.parse::<f64>().is_ok_and(|v| v > 0.0)
}

/// Why an output path would escape or alias the step's output directory.
fn output_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("is empty");
    }
    let p = Path::new(path);
    if p.is_absolute() || path.starts_with('/') || path.starts_with('\\') {
        return Some("is absolute; outputs are relative to the step's output directory");
    }
    let mut normal = 0;
    for component in p.components() {
        match component {
            Component::ParentDir => {
                return Some("contains `..`; outputs must stay inside the step's output directory");
            }
            Component::RootDir | Component::Prefix(_) => {
                return Some("is absolute; outputs are relative to the step's output directory");
            }
            Component::CurDir => {}
            Component::Normal(_) => normal += 1,
        }
    }
    (normal == 0).then_some("names the output directory itself, not a file in it")
}

fn normalized(path: &str) -> Vec<&str> {
    path.split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// Runs every semantic check and returns all problems found.
pub(crate) fn check(pipeline: &Pipeline, spans: &Spans) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if !spans.name_missing {
        check_name("pipeline", &pipeline.name, spans.name, &mut out);
    }
    check_params(pipeline, spans, &mut out);
    if pipeline.steps.is_empty() && !spans.steps_missing {
        out.push(
            Diagnostic::new("pipeline has no steps")
                .at(spans.steps)
                .with_hint("add at least one step under `steps:`"),
        );
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, step) in pipeline.steps.iter().enumerate() {
        if index.contains_key(step.name.as_str()) {
            out.push(
                Diagnostic::new(format!("duplicate step `{}`", step.name))
                    .at(spans.step_key(i))
                    .with_hint("step names must be unique; rename one of them"),
            );
        } else {
            index.insert(&step.name, i);
        }
        check_step(i, step, spans, &mut out);
    }
    check_uses_params(pipeline, spans, &mut out);
    check_env_collisions(pipeline, spans, &mut out);
    check_dependencies(pipeline, &index, spans, &mut out);
    check_cycles(pipeline, &index, spans, &mut out);
    out
}

/// `uses_params` names parameters the pipeline declares.
fn check_uses_params(pipeline: &Pipeline, spans: &Spans, out: &mut Vec<Diagnostic>) {
    let declared: Vec<&str> = pipeline.params.iter().map(|p| p.name.as_str()).collect();
    for (i, step) in pipeline.steps.iter().enumerate() {
        for (j, used) in step.uses_params.iter().flatten().enumerate() {
            if declared.contains(&used.as_str()) {
                continue;
            }
            let mut d = Diagnostic::new(format!(
                "step `{}` uses parameter `{used}`, which the pipeline does not declare",
                step.name
            ))
            .at(spans.item(i, "uses_params", j));
            d.hint = Some(
                match crate::suggest::did_you_mean(used, declared.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => "declare it under `params:` at the top of the file".to_string(),
                },
            );
            out.push(d);
        }
    }
}

/// Steps and params reach commands as `FERRY_INPUT_<STEP>` and `FERRY_PARAM_<NAME>`
/// (upper-cased, `-` as `_`): two names with the same variable would silently shadow each
/// other, so they are refused.
fn check_env_collisions(pipeline: &Pipeline, spans: &Spans, out: &mut Vec<Diagnostic>) {
    let mut steps: HashMap<String, &str> = HashMap::new();
    for (i, step) in pipeline.steps.iter().enumerate() {
        let variable = crate::env_vars::env_suffix(&step.name);
        match steps.get(&variable) {
            Some(other) if *other != step.name => out.push(
                Diagnostic::new(format!(
                    "steps `{other}` and `{}` would share the variable FERRY_INPUT_{variable}",
                    step.name
                ))
                .at(spans.step_key(i))
                .with_hint("rename one so that the names differ in more than `-` and `_`"),
            ),
            _ => {
                steps.insert(variable, &step.name);
            }
        }
    }
    let mut params: HashMap<String, &str> = HashMap::new();
    for (i, param) in pipeline.params.iter().enumerate() {
        let variable = crate::env_vars::env_suffix(&param.name);
        match params.get(&variable) {
            Some(other) if *other != param.name => out.push(
                Diagnostic::new(format!(
                    "params `{other}` and `{}` would share the variable FERRY_PARAM_{variable}",
                    param.name
                ))
                .at(spans.params.get(i).copied().flatten())
                .with_hint("rename one so that the names differ in more than letter case"),
            ),
            _ => {
                params.insert(variable, &param.name);
            }
        }
    }
}

fn check_params(pipeline: &Pipeline, spans: &Spans, out: &mut Vec<Diagnostic>) {
    let mut seen = HashSet::new();
    for (i, param) in pipeline.params.iter().enumerate() {
        let loc = spans.params.get(i).copied().flatten();
        check_param_name(&param.name, loc, out);
        if !seen.insert(param.name.as_str()) {
            out.push(
                Diagnostic::new(format!("duplicate param `{}`", param.name))
                    .at(loc)
                    .with_hint("param names must be unique; remove or rename one"),
            );
        }
    }
}

fn check_step(i: usize, step: &Step, spans: &Spans, out: &mut Vec<Diagnostic>) {
    let name = &step.name;
    check_name("step", name, spans.step_key(i), out);
    let action_reported = spans.step(i).is_some_and(|s| s.action_reported);
    match &step.action {
        Action::Shell(script) if script.trim().is_empty() && !action_reported => out.push(
            Diagnostic::new(format!("step `{name}` has an empty `run` script"))
                .at(spans.field(i, "run"))
                .with_hint("give a shell command, e.g. `run: echo hello`"),
        ),
        Action::Command(argv) if argv.is_empty() && !action_reported => out.push(
            Diagnostic::new(format!("step `{name}` has an empty `command`"))
                .at(spans.field(i, "command"))
                .with_hint(
                    "give the program and its arguments, e.g. `command: [python3, train.py]`",
                ),
        ),
        Action::Command(argv) if argv.first().is_some_and(|p| p.trim().is_empty()) => out.push(
            Diagnostic::new(format!(
                "step `{name}` has an empty program name in `command`"
            ))
            .at(spans.item(i, "command", 0)),
        ),
        _ => {}
    }
    if step.retries > MAX_RETRIES {
        out.push(
            Diagnostic::new(format!(
                "step `{name}` has `retries: {}`, the maximum is {MAX_RETRIES}",
                step.retries
            ))
            .at(spans.field(i, "retries")),
        );
    }
    if step.timeout.is_some_and(|t| t.is_zero()) {
        out.push(
            Diagnostic::new(format!("step `{name}` has a zero `timeout`"))
                .at(spans.field(i, "timeout"))
                .with_hint("use a positive duration like `30s` or `10m`, or remove `timeout`"),
        );
    }
    for key in step.env.keys() {
        if !is_identifier(key) {
            out.push(
                Diagnostic::new(format!(
                    "invalid env var name `{key}` in step `{name}`: it must match [A-Za-z_][A-Za-z0-9_]*"
                ))
                .at(spans.env_key(i, key))
                .with_hint(format!("try `{}`", sanitize_identifier(key))),
            );
        } else if key.starts_with("FERRY_") {
            out.push(
                Diagnostic::new(format!(
                    "env var `{key}` in step `{name}` uses the reserved `FERRY_` prefix"
                ))
                .at(spans.env_key(i, key))
                .with_hint("ferry sets `FERRY_*` variables itself; pick another name"),
            );
        }
    }
    for key in step.params.keys() {
        check_param_name(key, spans.param_key(i, key), out);
    }
    for (j, glob) in step.code.iter().enumerate() {
        let problem = if glob.trim().is_empty() {
            Some("is empty")
        } else if glob.starts_with('/') {
            Some("is absolute; code globs are relative to the project root")
        } else if glob.split('/').any(|part| part == "..") {
            Some("leaves the project (`..`)")
        } else {
            None
        };
        if let Some(why) = problem {
            out.push(
                Diagnostic::new(format!("code glob `{glob}` of step `{name}` {why}"))
                    .at(spans.item(i, "code", j))
                    .with_hint("e.g. `code: [src/features/**, common.py]`"),
            );
        }
    }
    let mut seen_outputs: Vec<Vec<&str>> = Vec::new();
    for (j, output) in step.outputs.iter().enumerate() {
        let loc = spans.item(i, "outputs", j);
        if output.is_empty() {
            out.push(
                Diagnostic::new(format!("an output of step `{name}` is an empty string")).at(loc),
            );
            continue;
        }
        if let Some(why) = output_problem(output) {
            out.push(Diagnostic::new(format!("output `{output}` of step `{name}` {why}")).at(loc));
            continue;
        }
        let norm = normalized(output);
        if seen_outputs.contains(&norm) {
            out.push(
                Diagnostic::new(format!("duplicate output `{output}` in step `{name}`")).at(loc),
            );
        } else {
            seen_outputs.push(norm);
        }
    }
    if let Some(cpu) = &step.resources.cpu
        && !valid_cpu(cpu)
    {
        out.push(
            Diagnostic::new(format!("invalid cpu `{cpu}` in step `{name}`"))
                .at(spans.resource(i, "cpu"))
                .with_hint("use cores like `2` or `0.5`, or millicores like `500m`"),
        );
    }
    if let Some(memory) = &step.resources.memory
        && !valid_memory(memory)
    {
        out.push(
            Diagnostic::new(format!("invalid memory `{memory}` in step `{name}`"))
                .at(spans.resource(i, "memory"))
                .with_hint("use a quantity like `512Mi`, `1Gi`, `1G` or a byte count like `1000`"),
        );
    }
}

fn check_dependencies(
    pipeline: &Pipeline,
    index: &HashMap<&str, usize>,
    spans: &Spans,
    out: &mut Vec<Diagnostic>,
) {
    let names: Vec<&str> = pipeline.steps.iter().map(|s| s.name.as_str()).collect();
    for (i, step) in pipeline.steps.iter().enumerate() {
        for (field, list, verb) in [
            ("needs", &step.needs, "needs"),
            ("inputs", &step.inputs, "reads inputs from"),
        ] {
            for (j, dep) in list.iter().enumerate() {
                let loc = spans.item(i, field, j);
                if dep == &step.name {
                    out.push(
                        Diagnostic::new(format!(
                            "step `{}` depends on itself in `{field}`",
                            step.name
                        ))
                        .at(loc),
                    );
                } else if !index.contains_key(dep.as_str()) {
                    let others = names.iter().copied().filter(|n| *n != step.name);
                    let hint = match did_you_mean(dep, others) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("steps are: {}", quoted_list(names.iter().copied())),
                    };
                    out.push(
                        Diagnostic::new(format!(
                            "step `{}` {verb} unknown step `{dep}`",
                            step.name
                        ))
                        .at(loc)
                        .with_hint(hint),
                    );
                }
            }
        }
    }
}

/// Reports one cycle per strongly connected component, starting from the
/// component's first step in file order so the message is deterministic.
fn check_cycles(
    pipeline: &Pipeline,
    index: &HashMap<&str, usize>,
    spans: &Spans,
    out: &mut Vec<Diagnostic>,
) {
    let n = pipeline.steps.len();
    // Edges go from a step to its dependencies, so a cycle reads like the file: a needs b needs a.
    let edges: Vec<Vec<usize>> = pipeline
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            pipeline
                .dependencies(step)
                .filter_map(|d| index.get(d).copied())
                .filter(|&d| d != i)
                .collect()
        })
        .collect();
    let components = strongly_connected(&edges);
    let mut reported = vec![false; n];
    for comp in components.iter().filter(|c| c.len() > 1) {
        let start = *comp.iter().min().expect("non-empty component");
        if reported[start] {
            continue;
        }
        comp.iter().for_each(|&c| reported[c] = true);
        let in_comp: HashSet<usize> = comp.iter().copied().collect();
        let Some(path) = find_cycle(start, &edges, &in_comp) else {
            continue;
        };
        let mut chain: Vec<&str> = path
            .iter()
            .map(|&i| pipeline.steps[i].name.as_str())
            .collect();
        chain.push(&pipeline.steps[start].name);
        let last = *path.last().expect("cycle has steps");
        let closing = &pipeline.steps[start].name;
        let last_step = &pipeline.steps[last];
        let loc = ["needs", "inputs"].iter().find_map(|field| {
            let list = if *field == "needs" {
                &last_step.needs
            } else {
                &last_step.inputs
            };
            list.iter()
                .position(|d| d == closing)
                .map(|j| spans.item(last, field, j))
        });
        out.push(
            Diagnostic::new(format!("dependency cycle: {}", chain.join(" -> ")))
                .at(loc.flatten())
                .with_hint("remove one of these dependencies"),
        );
    }
}

/// Shortest cycle back to `start` within one component (breadth-first).
fn find_cycle(start: usize, edges: &[Vec<usize>], allowed: &HashSet<usize>) -> Option<Vec<usize>> {
    let mut parent: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in &edges[node] {
            if !allowed.contains(&next) {
                continue;
            }
            if next == start {
                let mut path = vec![node];
                let mut cur = node;
                while cur != start {
                    cur = parent[&cur];
                    path.push(cur);
                }
                path.reverse();
                return Some(path);
            }
            if next != start && !parent.contains_key(&next) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// Tarjan's algorithm, iterative so deep pipelines cannot overflow the stack.
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next_index = 0;
    let mut components = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        while let Some(&mut (v, ref mut edge)) = work.last_mut() {
            if *edge == 0 && index[v] == usize::MAX {
                index[v] = next_index;
                low[v] = next_index;
                next_index += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = edges[v].get(*edge) {
                *edge += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(comp);
            }
        }
    }
    components
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_share_an_environment_variable_are_refused() {
        let err = Pipeline::builder("p")
            .param("lr", Some("1"))
            .param("LR", Some("2"))
            .step(Step::shell("a-b", "true"))
            .step(Step::shell("a_b", "true"))
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("FERRY_INPUT_A_B"), "{err}");
        assert!(err.contains("FERRY_PARAM_LR"), "{err}");
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("nedds", ["run", "needs", "inputs"]),
            Some("needs")
        );
        assert_eq!(
            did_you_mean("timout", ["timeout", "retries"]),
            Some("timeout")
        );
        assert_eq!(did_you_mean("xyz", ["run", "needs"]), None);
    }

    #[test]
    fn quantities() {
        for ok in ["2", "0.5", "500m", "1.25"] {
            assert!(valid_cpu(ok), "{ok}");
        }
        for bad in ["", "m", "0", "two", "500mi", "-1", ".5", "1.", "0.5m"] {
            assert!(!valid_cpu(bad), "{bad}");
        }
        for ok in ["512Mi", "1Gi", "1G", "1000", "1.5Gi", "128k"] {
            assert!(valid_memory(ok), "{ok}");
        }
        for bad in ["", "1gb", "Gi", "512mi", "1 Gi", "-1Gi", "0"] {
            assert!(!valid_memory(bad), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(name_problem("train-2_x"), None);
        assert!(name_problem("Train").unwrap().contains("start with"));
        assert!(
            name_problem("tr ain")
                .unwrap()
                .contains("` ` is not allowed")
        );
        assert!(
            name_problem(&"a".repeat(64))
                .unwrap()
                .contains("maximum is 63")
        );
        assert!(is_identifier("_a1") && !is_identifier("1a") && !is_identifier("a-b"));
    }

    #[test]
    fn scc_handles_long_chains() {
        let n = 50_000;
        let mut edges: Vec<Vec<usize>> = (0..n).map(|i| vec![i + 1]).collect();
        edges[n - 1] = vec![0];
        let comps = strongly_connected(&edges);
        assert_eq!(comps.len(), 1);
        assert_eq!(comps[0].len(), n);
    }
}
