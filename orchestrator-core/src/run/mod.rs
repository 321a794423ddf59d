//! Runs: ids, the plan handed to an orchestrator, the record kept in the store, events, and
//! what every orchestrator needs to run a plan: the DAG [`Frontier`], the store's
//! [`RunRecords`], the [`replay`] of a stored run, the [`retry`] policy and the
//! [`step_log`] as it reaches the store.

mod event;
mod frontier;
mod id;
mod plan;
mod record;
mod records;
pub mod replay;
pub mod retry;
pub mod step_log;

pub use event::{Event, LogStream};
pub use frontier::{Decision, Frontier};
pub use id::{is_valid_run_id, new_run_id};
pub use plan::{CodeInfo, ReusedOutputs, RunPlan};
pub use record::{
    AttemptRecord, CacheBasis, OutputFile, RunRecord, RunStatus, StepRecord, StepRef, StepStatus,
    StepTimings,
};
pub use records::RunRecords;
