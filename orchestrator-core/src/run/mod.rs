//! Runs: ids, the plan handed to an orchestrator, the record kept in the store, and events.

mod event;
mod id;
mod plan;
mod record;

pub use event::{Event, LogStream};
pub use id::{is_valid_run_id, new_run_id};
pub use plan::{CodeInfo, RunPlan};
pub use record::{OutputFile, RunRecord, RunStatus, StepRecord, StepRef, StepStatus};
