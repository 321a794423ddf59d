//! The run records of one artifact store: the one place that reads and writes
//! `runs/<run-id>/run.json` and the per-step results of runs whose steps ran on their own.

use crate::PluginError;
use crate::run::{RunRecord, StepRecord};
use crate::store::{Store, layout};

/// Run records in a store. Cheap to clone; calls block.
#[derive(Debug, Clone)]
pub struct RunRecords {
    store: Store,
}

impl RunRecords {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The store the records live in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The record of `run_id`, if the store has one.
    pub fn get(&self, run_id: &str) -> Result<Option<RunRecord>, PluginError> {
        self.store.get_json(&layout::run_record(run_id))
    }

    /// The record of `run_id`; a missing one is a not-found error naming the store.
    pub fn require(&self, run_id: &str) -> Result<RunRecord, PluginError> {
        self.get(run_id)?.ok_or_else(|| {
            PluginError::not_found(format!("no run `{run_id}` in {}", self.store.url()))
        })
    }

    /// Writes (or replaces) a record.
    pub fn put(&self, record: &RunRecord) -> Result<(), PluginError> {
        self.store
            .put_json(&layout::run_record(&record.run_id), record)?;
        Ok(())
    }

    /// Reads the record of `run_id`, lets `change` edit it and writes it back; `None` when the
    /// store has no such run. `change` returning `false` leaves the stored record as it is.
    pub fn update(
        &self,
        run_id: &str,
        change: impl FnOnce(&mut RunRecord) -> bool,
    ) -> Result<Option<RunRecord>, PluginError> {
        let Some(mut record) = self.get(run_id)? else {
            return Ok(None);
        };
        if change(&mut record) {
            self.put(&record)?;
        }
        Ok(Some(record))
    }

    /// Run ids in the store, newest first (run ids sort by their start time).
    pub fn ids(&self) -> Result<Vec<String>, PluginError> {
        let listing = self.store.list(layout::RUNS_PREFIX, false)?;
        let mut ids: Vec<String> = listing
            .prefixes
            .iter()
            .filter_map(|p| p.strip_prefix(layout::RUNS_PREFIX))
            .map(|p| p.trim_end_matches('/').to_string())
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// The newest run id, if any.
    pub fn latest(&self) -> Result<Option<String>, PluginError> {
        Ok(self.ids()?.into_iter().next())
    }

    /// What the agent that ran one step of `run_id` on its own recorded for it.
    pub fn step_result(&self, run_id: &str, step: &str) -> Result<Option<StepRecord>, PluginError> {
        self.store.get_json(&layout::step_result(run_id, step))
    }

    /// Records the result of one step run on its own; whoever coordinates the run merges it
    /// into the run's record.
    pub fn put_step_result(
        &self,
        run_id: &str,
        step: &str,
        result: &StepRecord,
    ) -> Result<(), PluginError> {
        self.store
            .put_json(&layout::step_result(run_id, step), result)?;
        Ok(())
    }
}
