//! Arguments → resolved options → command. clap parses ([`crate::args`]); this module says
//! what the arguments mean in this project (the pipeline file and its validated contents, the
//! parameters against what the pipeline declares, the stack, the run a reference names), so
//! that every command starts from resolved values and none reaches into another's module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use orchestrator_core::pipeline::Pipeline;
use orchestrator_core::run::{RunPlan, RunRecord, RunRecords};
use orchestrator_core::schedule::{Concurrency, ScheduleSpec};
use orchestrator_host::lifecycle::plan::PlanRequest;
use orchestrator_host::package::Package;
use orchestrator_host::stack::Stack;

use crate::args::{ConcurrencyArg, PipelineArgs, RunRefArgs, ScheduleOptions};
use crate::context::Context;
use crate::output::hint;

/// A pipeline file, read and validated.
pub struct PipelineFile {
    pub path: PathBuf,
    pub pipeline: Pipeline,
}

impl PipelineFile {
    /// An explicit path (a directory means its pipeline.yaml), else the configured default.
    pub fn path(ctx: &Context, arg: Option<&Path>) -> PathBuf {
        match arg {
            Some(path) => {
                let path = ctx.cwd.join(path);
                if path.is_dir() {
                    path.join(orchestrator_host::config::DEFAULT_PIPELINE)
                } else {
                    path
                }
            }
            None => ctx.config.pipeline.clone(),
        }
    }

    /// Reads and validates the pipeline file [`PipelineFile::path`] names; `-` reads it from
    /// stdin (a pipeline compiled by the Python SDK, in the same schema, YAML or JSON), and
    /// its steps run in the working directory.
    pub fn resolve(ctx: &Context, arg: Option<&Path>) -> Result<Self> {
        if arg == Some(Path::new("-")) {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("cannot read the pipeline from stdin")?;
            let path = ctx.cwd.join("<stdin>");
            let pipeline =
                Pipeline::from_yaml_str(&text, Some(Path::new("<stdin>"))).map_err(|e| {
                    let count = e.diagnostics.len();
                    let noun = if count == 1 { "problem" } else { "problems" };
                    hint(
                        format!("{e}"),
                        format!("fix the {count} {noun} above in the pipeline read from stdin"),
                    )
                })?;
            return Ok(Self { path, pipeline });
        }
        let path = Self::path(ctx, arg);
        if !path.exists() {
            return Err(hint(
                format!("no pipeline file at {}", path.display()),
                "pass a pipeline file or directory (`ferry run examples/hello`), or create one with `ferry init`",
            ));
        }
        let pipeline = Pipeline::from_file(&path).map_err(|e| {
            let count = e.diagnostics.len();
            let noun = if count == 1 { "problem" } else { "problems" };
            hint(
                format!("{e}"),
                format!("fix the {count} {noun} above in {}", path.display()),
            )
        })?;
        Ok(Self { path, pipeline })
    }
}

/// What `ferry run` and `ferry render` act on: a valid pipeline, every parameter resolved,
/// an open stack.
pub struct RunOptions {
    pub file: PipelineFile,
    pub params: BTreeMap<String, String>,
    pub stack: Stack,
}

impl RunOptions {
    pub fn resolve(ctx: &Context, args: &PipelineArgs) -> Result<Self> {
        let file = PipelineFile::resolve(ctx, args.pipeline.as_deref())?;
        let overrides: BTreeMap<String, String> = args.params.iter().cloned().collect();
        let params = file.pipeline.resolve_params(&overrides).map_err(|e| {
            hint(
                e.to_string(),
                format!(
                    "set parameters with --param NAME=VALUE; `{}` declares them under `params:`",
                    file.path.display()
                ),
            )
        })?;
        let stack = ctx.open_stack(args.stack.as_deref())?;
        Ok(Self {
            file,
            params,
            stack,
        })
    }

    /// The plan of a new run of these options, shipping `package` when the stack's
    /// orchestrator wants one, and the stack to submit it to.
    pub fn into_plan(
        self,
        ctx: &Context,
        no_cache: bool,
        package: Option<&Package>,
    ) -> Result<(RunPlan, Stack)> {
        let project_root = &ctx.config.project_root;
        let plan = PlanRequest {
            project_root,
            include: &ctx.config.package.include,
            pipeline_file: &self.file.path,
            pipeline: self.file.pipeline,
            params: self.params,
            stack: &self.stack.name,
            no_cache,
            package,
        }
        .build()
        .with_context(|| format!("cannot read the project at {}", project_root.display()))?;
        Ok((plan, self.stack))
    }
}

/// A schedule's spec from `--cron` and the options beside it.
pub fn schedule_spec(name: &str, cron: &str, options: &ScheduleOptions) -> ScheduleSpec {
    ScheduleSpec {
        name: name.to_string(),
        cron: cron.to_string(),
        timezone: options.timezone.clone(),
        concurrency: match options.concurrency {
            ConcurrencyArg::Allow => Concurrency::Allow,
            ConcurrencyArg::Forbid => Concurrency::Forbid,
            ConcurrencyArg::Replace => Concurrency::Replace,
        },
        starting_deadline_seconds: options.starting_deadline,
        successful_history: options.keep_succeeded,
        failed_history: options.keep_failed,
        suspend: options.suspended,
    }
}

/// A run plan made a schedule's template: no run id (each firing mints one), the schedule
/// named for the records of its runs.
pub fn into_template(mut plan: RunPlan, schedule: &str) -> RunPlan {
    plan.run_id = String::new();
    plan.schedule = Some(schedule.to_string());
    plan
}

/// The steps a retry of `record` runs again: those that did not succeed, and with `from`,
/// that step and every step downstream of it.
pub fn steps_to_run_again(
    pipeline: &Pipeline,
    record: &RunRecord,
    from: Option<&str>,
) -> Result<std::collections::BTreeSet<String>> {
    if let Some(from) = from
        && pipeline.step(from).is_none()
    {
        let names: Vec<&str> = pipeline.steps.iter().map(|s| s.name.as_str()).collect();
        let mut message = format!("run {} has no step `{from}`", record.run_id);
        if let Some(close) = orchestrator_core::suggest::did_you_mean(from, names.iter().copied()) {
            message.push_str(&format!(" (did you mean `{close}`?)"));
        }
        return Err(hint(message, format!("its steps: {}", names.join(", "))));
    }
    let mut again = std::collections::BTreeSet::new();
    for step in pipeline.topological_order() {
        let succeeded = record
            .steps
            .get(&step.name)
            .is_some_and(|s| s.status.is_success());
        let after_rerun = pipeline.dependencies(step).any(|d| again.contains(d));
        if !succeeded || from == Some(step.name.as_str()) || after_rerun {
            again.insert(step.name.clone());
        }
    }
    Ok(again)
}

/// A run named on the command line (an id, or `latest`/`last`), found in its stack's store.
pub struct RunTarget {
    pub stack: Stack,
    pub record: RunRecord,
}

impl RunTarget {
    pub fn resolve(ctx: &Context, args: &RunRefArgs) -> Result<Self> {
        let stack = ctx.open_stack(args.stack.stack.as_deref())?;
        let run_id = if args.run == "latest" || args.run == "last" {
            RunRecords::new(stack.store.clone())
                .latest()
                .with_context(|| format!("cannot list runs in {}", stack.store.url()))?
                .ok_or_else(|| {
                    hint(
                        format!("no runs in {}", stack.store.url()),
                        "start one with `ferry run`",
                    )
                })?
        } else {
            args.run.clone()
        };
        let record = stack
            .orchestrator
            .status(&run_id)
            .with_context(|| format!("cannot read run `{run_id}`"))?;
        Ok(Self { stack, record })
    }
}

/// clap's parser for `NAME=VALUE` arguments (`--param`).
pub fn key_value(arg: &str) -> Result<(String, String), String> {
    split_at_equals(
        arg,
        "write parameters as NAME=VALUE, e.g. --param epochs=10",
    )
}

/// clap's value parser for `--set KEY=VALUE`; the key is checked with the config it overrides.
pub fn config_override(arg: &str) -> Result<(String, String), String> {
    split_at_equals(
        arg,
        "write it as `--set key=value`, e.g. `--set stack=local`",
    )
}

fn split_at_equals(arg: &str, advice: &str) -> Result<(String, String), String> {
    arg.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| advice.to_string())
}

#[cfg(test)]
mod tests {
    use super::{config_override, key_value};

    #[test]
    fn key_value_splits_at_the_first_equals_sign() {
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(key_value(" a =x"), Ok(("a".into(), "x".into())));
        assert_eq!(key_value("a="), Ok(("a".into(), String::new())));
        assert!(key_value("a").unwrap_err().contains("NAME=VALUE"));
        assert_eq!(config_override("stack=x"), Ok(("stack".into(), "x".into())));
        assert!(
            config_override("stack")
                .unwrap_err()
                .contains("--set key=value")
        );
    }
}
