//! Replaying a run from the store alone (its record and step logs), for whoever does not hold
//! the run in memory: `ferry logs` of a finished run, and orchestrators whose runs happen
//! elsewhere.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;

use crate::PluginError;
use crate::run::step_log::{self, PartsTail, emit_lines};
use crate::run::{Event, RunRecord, StepStatus};
use crate::store::Store;

/// Streams the events of a run from the store: each step's status and log. With `follow`,
/// polls the record (through `read_record`, so that an orchestrator can first bring it up to
/// date) until the run or `step` ends; a running step's log is tailed from `live_log` (the
/// step's log file, when the run is on this machine; `|_, _| None` elsewhere), else from the
/// parts its orchestrator stores while it runs ([`step_log`]), and completed from the store
/// once the step has ended.
pub fn stream(
    store: &Store,
    run_id: &str,
    step: Option<&str>,
    follow: bool,
    sink: &mut dyn FnMut(Event) -> bool,
    read_record: impl Fn() -> Result<RunRecord, PluginError>,
    live_log: impl Fn(&RunRecord, &str) -> Option<std::path::PathBuf>,
) -> Result<(), PluginError> {
    let mut delivered: HashSet<String> = HashSet::new();
    // Bytes of each step's log already delivered from its live file.
    let mut tailed: std::collections::HashMap<String, usize> = Default::default();
    // Steps tailed from their stored parts: where each is, and a trailing partial line.
    let mut parts: std::collections::HashMap<String, PartsTail> = Default::default();
    let mut pending: std::collections::HashMap<String, Vec<u8>> = Default::default();
    loop {
        let record = read_record()?;
        if let Some(step) = step
            && !record.steps.contains_key(step)
        {
            let known: Vec<&str> = record.step_order.iter().map(String::as_str).collect();
            let hint = crate::suggest::did_you_mean(step, known.iter().copied())
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("its steps are: {}", known.join(", ")));
            return Err(PluginError::not_found(format!(
                "run `{run_id}` has no step `{step}`; {hint}"
            )));
        }
        for (name, step_record) in record.ordered_steps() {
            if step.is_some_and(|s| s != name) || delivered.contains(name) {
                continue;
            }
            if !step_record.status.is_finished() {
                if follow && step_record.status == StepStatus::Running {
                    let offset = tailed.entry(name.to_string()).or_default();
                    let live = live_log(&record, name);
                    let fresh = match &live {
                        Some(path) => std::fs::read(path)
                            .ok()
                            .map(|bytes| bytes[(*offset).min(bytes.len())..].to_vec())
                            .unwrap_or_default(),
                        None => {
                            let mut bytes =
                                std::mem::take(pending.entry(name.to_string()).or_default());
                            parts
                                .entry(name.to_string())
                                .or_default()
                                .read_new(store, run_id, name, &mut bytes)?;
                            bytes
                        }
                    };
                    // Only whole lines; the rest comes with the next poll.
                    let whole = fresh.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                    if !emit_lines(name, &fresh[..whole], sink) {
                        return Ok(());
                    }
                    *offset += whole;
                    if live.is_none() {
                        pending.insert(name.to_string(), fresh[whole..].to_vec());
                    }
                }
                continue;
            }
            delivered.insert(name.to_string());
            if step_record.status != StepStatus::Cached
                && step_record.status != StepStatus::Skipped
                && let Some(bytes) = step_log::read(store, run_id, name)?
            {
                let skip = tailed.get(name).copied().unwrap_or(0).min(bytes.len());
                if !emit_lines(name, &bytes[skip..], sink) {
                    return Ok(());
                }
            }
            let status = Event::StepStatus {
                step: name.to_string(),
                status: step_record.status,
                time: step_record.finished_at.unwrap_or_else(Utc::now),
            };
            if !sink(status) {
                return Ok(());
            }
        }
        let step_finished = step
            .and_then(|s| record.steps.get(s))
            .is_some_and(|r| r.status.is_finished());
        if !follow || record.status.is_finished() || step_finished {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
