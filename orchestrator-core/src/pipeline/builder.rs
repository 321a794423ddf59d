//! Programmatic construction of pipelines, validated exactly like YAML files.

use super::model::{ParamSpec, Pipeline, PipelineError, Step};

/// Builds a [`Pipeline`] in code (tests, plugins, generated pipelines).
///
/// `build` runs the same checks as the YAML loader so that a pipeline is
/// equally trustworthy whichever way it was made; diagnostics only lack
/// file positions.
#[derive(Debug, Clone)]
#[must_use]
pub struct PipelineBuilder {
    pipeline: Pipeline,
}

impl PipelineBuilder {
    pub fn new(name: impl Into<String>) -> PipelineBuilder {
        PipelineBuilder {
            pipeline: Pipeline {
                name: name.into(),
                description: None,
                params: Vec::new(),
                steps: Vec::new(),
            },
        }
    }

    pub fn description(mut self, text: impl Into<String>) -> PipelineBuilder {
        self.pipeline.description = Some(text.into());
        self
    }

    /// Declares a param; `None` makes it required at run time.
    pub fn param(mut self, name: impl Into<String>, default: Option<&str>) -> PipelineBuilder {
        self.pipeline.params.push(ParamSpec {
            name: name.into(),
            default: default.map(str::to_owned),
            description: None,
        });
        self
    }

    /// Declares a param with a description.
    pub fn param_spec(mut self, spec: ParamSpec) -> PipelineBuilder {
        self.pipeline.params.push(spec);
        self
    }

    /// Appends a step; file order of the YAML form corresponds to call order here.
    pub fn step(mut self, step: impl Into<Step>) -> PipelineBuilder {
        self.pipeline.steps.push(step.into());
        self
    }

    pub fn build(self) -> Result<Pipeline, PipelineError> {
        self.pipeline.validate()?;
        Ok(self.pipeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Resources;
    use std::time::Duration;

    #[test]
    fn builder_collects_all_errors_without_locations() {
        let err = Pipeline::builder("Bad Name")
            .param("ok", None)
            .param("ok", Some("1"))
            .param("1bad", None)
            .step(Step::shell("a", "").needs(["b", "a"]).retries(11))
            .step(
                Step::command("b", Vec::<String>::new())
                    .needs(["a"])
                    .timeout(Duration::ZERO),
            )
            .step(
                Step::shell("c", "true")
                    .env("FERRY_X", "1")
                    .env("bad-env", "1")
                    .outputs(["/abs", "../up", "ok", "./ok", ""])
                    .resources(Resources::new().cpu("lots").memory("1gb")),
            )
            .step(Step::shell("c", "true").inputs(["nope"]))
            .build()
            .unwrap_err();
        let messages: Vec<&str> = err.diagnostics.iter().map(|d| d.message.as_str()).collect();
        let expected = [
            "invalid pipeline name `Bad Name`",
            "duplicate param `ok`",
            "invalid param name `1bad`",
            "step `a` has an empty `run` script",
            "step `a` has `retries: 11`, the maximum is 10",
            "step `b` has an empty `command`",
            "step `b` has a zero `timeout`",
            "env var `FERRY_X` in step `c` uses the reserved `FERRY_` prefix",
            "invalid env var name `bad-env`",
            "output `/abs` of step `c` is absolute",
            "output `../up` of step `c` contains `..`",
            "duplicate output `./ok` in step `c`",
            "an output of step `c` is an empty string",
            "invalid cpu `lots` in step `c`",
            "invalid memory `1gb` in step `c`",
            "duplicate step `c`",
            "step `a` depends on itself in `needs`",
            "step `c` reads inputs from unknown step `nope`",
            "dependency cycle: a -> b -> a",
        ];
        for want in expected {
            assert!(
                messages.iter().any(|m| m.starts_with(want)),
                "missing {want:?} in:\n{err}"
            );
        }
        assert_eq!(messages.len(), expected.len(), "{err}");
        assert!(
            err.diagnostics
                .iter()
                .all(|d| d.line.is_none() && d.file.is_none())
        );
    }

    #[test]
    fn builder_requires_steps() {
        let err = Pipeline::builder("empty").build().unwrap_err();
        assert_eq!(
            err.to_string(),
            "pipeline has no steps (add at least one step under `steps:`)"
        );
    }
}
