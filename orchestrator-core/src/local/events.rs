//! A live run's shared state: its record, its event log and its cancel switch.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use chrono::Utc;

use crate::abi::PluginError;
use crate::run::{Event, LogStream, RunRecord, StepStatus};
use crate::store::{Store, layout};

/// Events kept in memory per run for late subscribers. Beyond this the oldest are dropped
/// (the full logs are in the store), so a chatty step cannot exhaust memory.
const EVENT_BUFFER: usize = 100_000;
/// ... and at most this many bytes of event text.
const EVENT_BUFFER_BYTES: usize = 32 * 1024 * 1024;

#[derive(Default)]
struct EventLog {
    events: VecDeque<Event>,
    /// Text bytes held in `events`.
    bytes: usize,
    /// Events dropped from the front so far.
    dropped: usize,
    finished: bool,
}

pub(super) struct RunState {
    record: Mutex<RunRecord>,
    log: Mutex<EventLog>,
    changed: Condvar,
    /// Serialises record writes so an older snapshot never overwrites a newer one.
    write_lock: Mutex<()>,
    cancel: tokio::sync::watch::Sender<bool>,
    /// Process groups of running steps, for a last-resort kill on a forced exit.
    process_groups: Mutex<HashSet<i32>>,
    /// Set when the run is one step of a run coordinated elsewhere: the record written is
    /// that step's result, never the run's record (which the coordinator owns).
    only_step: Option<String>,
}

fn event_bytes(event: &Event) -> usize {
    match event {
        Event::Log { line, .. } => line.len(),
        Event::Notice { text, .. } => text.len(),
        _ => 0,
    }
}

impl RunState {
    pub fn new(record: RunRecord, only_step: Option<String>) -> Self {
        Self {
            only_step,
            record: Mutex::new(record),
            log: Mutex::new(EventLog::default()),
            changed: Condvar::new(),
            write_lock: Mutex::new(()),
            cancel: tokio::sync::watch::channel(false).0,
            process_groups: Mutex::new(HashSet::new()),
        }
    }

    pub fn record(&self) -> RunRecord {
        self.record.lock().expect("record lock").clone()
    }

    pub fn update<T>(&self, f: impl FnOnce(&mut RunRecord) -> T) -> T {
        f(&mut self.record.lock().expect("record lock"))
    }

    /// Write the current record to the store (blocking).
    pub fn write_record(&self, store: &Store) -> Result<(), PluginError> {
        let _serial = self.write_lock.lock().expect("write lock");
        let record = self.record();
        match &self.only_step {
            None => {
                store.put_json(&layout::run_record(&record.run_id), &record)?;
            }
            Some(step) => {
                let key = layout::step_result(&record.run_id, step);
                if let Some(result) = record.steps.get(step) {
                    store.put_json(&key, result)?;
                }
            }
        }
        Ok(())
    }

    pub fn emit(&self, event: Event) {
        let mut log = self.log.lock().expect("event log lock");
        log.bytes += event_bytes(&event);
        log.events.push_back(event);
        while log.events.len() > EVENT_BUFFER || log.bytes > EVENT_BUFFER_BYTES {
            let Some(dropped) = log.events.pop_front() else {
                break;
            };
            log.bytes -= event_bytes(&dropped);
            log.dropped += 1;
        }
        drop(log);
        self.changed.notify_all();
    }

    pub fn finish(&self) {
        self.log.lock().expect("event log lock").finished = true;
        self.changed.notify_all();
    }

    pub fn add_process_group(&self, pgid: i32) {
        self.process_groups.lock().expect("pgid lock").insert(pgid);
    }

    pub fn remove_process_group(&self, pgid: i32) {
        self.process_groups.lock().expect("pgid lock").remove(&pgid);
    }

    pub fn process_groups(&self) -> Vec<i32> {
        self.process_groups
            .lock()
            .expect("pgid lock")
            .iter()
            .copied()
            .collect()
    }

    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    pub fn cancelled(&self) -> tokio::sync::watch::Receiver<bool> {
        self.cancel.subscribe()
    }

    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Replay events so far and, with `follow`, wait for more until the run (or the step)
    /// ends or the sink asks to stop.
    pub fn stream(&self, step: Option<&str>, follow: bool, sink: &mut dyn FnMut(Event) -> bool) {
        let mut cursor = 0usize;
        loop {
            let (batch, skipped, finished) = {
                let mut log = self.log.lock().expect("event log lock");
                while follow && !log.finished && cursor >= log.dropped + log.events.len() {
                    log = self
                        .changed
                        .wait_timeout(log, Duration::from_millis(500))
                        .expect("event log lock")
                        .0;
                }
                let skipped = log.dropped.saturating_sub(cursor);
                cursor = cursor.max(log.dropped);
                let batch: Vec<Event> = log
                    .events
                    .iter()
                    .skip(cursor - log.dropped)
                    .filter(|e| step.is_none() || e.step() == step)
                    .cloned()
                    .collect();
                cursor = log.dropped + log.events.len();
                (batch, skipped, log.finished)
            };
            if skipped > 0 {
                let notice = Event::Notice {
                    step: step.map(str::to_string),
                    text: format!(
                        "{skipped} earlier events were not kept in memory; the full logs are in the store (`ferry logs`)"
                    ),
                    time: Utc::now(),
                };
                if !sink(notice) {
                    return;
                }
            }
            let mut step_done = false;
            for event in batch {
                if let (Some(_), Event::StepStatus { status, .. }) = (step, &event) {
                    step_done |= status.is_finished();
                }
                if !sink(event) {
                    return;
                }
            }
            if !follow || finished || step_done {
                return;
            }
        }
    }
}

/// Emit the complete lines of `bytes` as log events of `step`.
fn emit_lines(step: &str, bytes: &[u8], sink: &mut dyn FnMut(Event) -> bool) -> bool {
    for line in String::from_utf8_lossy(bytes).lines() {
        let event = Event::Log {
            step: step.to_string(),
            stream: LogStream::Stdout,
            line: line.to_string(),
            time: Utc::now(),
        };
        if !sink(event) {
            return false;
        }
    }
    true
}

/// Events of a run this process does not run: logs and statuses from the store. With
/// `follow`, polls the record; a running step's log is tailed from `live_log` (the step's log
/// file, when the run is on this machine), else delivered from the store once the step ends.
pub(super) fn stream_stored(
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
                if follow
                    && step_record.status == StepStatus::Running
                    && let Some(path) = live_log(&record, name)
                    && let Ok(bytes) = std::fs::read(&path)
                {
                    let offset = tailed.entry(name.to_string()).or_default();
                    // Only whole lines; the rest comes with the next poll.
                    let end = bytes[*offset..]
                        .iter()
                        .rposition(|b| *b == b'\n')
                        .map_or(*offset, |i| *offset + i + 1);
                    let fresh = &bytes[*offset..end];
                    *offset = end;
                    if !emit_lines(name, fresh, sink) {
                        return Ok(());
                    }
                }
                continue;
            }
            delivered.insert(name.to_string());
            if step_record.status != StepStatus::Cached && step_record.status != StepStatus::Skipped
            {
                match store.get_bytes(&layout::step_log(run_id, name)) {
                    Ok(bytes) => {
                        let skip = tailed.get(name).copied().unwrap_or(0).min(bytes.len());
                        if !emit_lines(name, &bytes[skip..], sink) {
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind == crate::abi::ErrorKind::NOT_FOUND => {}
                    Err(e) => return Err(e),
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
