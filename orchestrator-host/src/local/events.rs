//! A live run's shared state: its record, its event log and its cancel switch.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use chrono::Utc;

use orchestrator_core::PluginError;
use orchestrator_core::run::RunRecords;
use orchestrator_core::run::{Event, RunRecord};
use orchestrator_core::store::Store;

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
                RunRecords::new(store.clone()).put(&record)?;
            }
            Some(step) => {
                if let Some(result) = record.steps.get(step) {
                    RunRecords::new(store.clone()).put_step_result(&record.run_id, step, result)?;
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
