//! Pipeline definitions: loading `pipeline.yaml`, building in code, validating and ordering steps.
//!
//! The YAML loader and [`PipelineBuilder`] share one validation pass so that
//! both produce identical [`Pipeline`] values and identical messages; the
//! loader only adds file positions.

mod builder;
mod model;
mod parse;
mod validate;

pub use builder::PipelineBuilder;
pub use model::{
    Action, Diagnostic, ParamSpec, Pipeline, PipelineError, Resources, Step, quantity,
};
