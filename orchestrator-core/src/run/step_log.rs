//! A step's log in the store: written in parts while the step runs, then whole.
//!
//! A step's machine can die under it (OOM, eviction, a deadline, a node that goes away); the
//! log up to that moment is what its user most needs. So the orchestrator running the step
//! stores what the log gained every few seconds as the next *part*
//! ([`layout::step_log_part`], numbered from 0 with no gaps), and when the step ends it stores
//! the whole log ([`layout::step_log`]) and removes the parts. A reader takes the whole log if
//! it is there, else the parts in order: the log up to the last part stored.

use crate::run::{Event, LogStream};
use crate::store::{Store, layout};
use crate::{ErrorKind, PluginError};

/// What a step's log holds in the store, whole or up to its last stored part; `None` if
/// nothing of it was ever stored.
pub fn read(store: &Store, run_id: &str, step: &str) -> Result<Option<Vec<u8>>, PluginError> {
    match store.get_bytes(&layout::step_log(run_id, step)) {
        Ok(bytes) => return Ok(Some(bytes)),
        Err(e) if e.kind == ErrorKind::NOT_FOUND => {}
        Err(e) => return Err(e),
    }
    let mut tail = PartsTail::default();
    let mut bytes = Vec::new();
    match tail.read_new(store, run_id, step, &mut bytes)? {
        // The step ended while its parts were read (they go once the whole log is there).
        PartsRead::Gap => match store.get_bytes(&layout::step_log(run_id, step)) {
            Ok(whole) => Ok(Some(whole)),
            Err(e) if e.kind == ErrorKind::NOT_FOUND => Ok(Some(bytes)),
            Err(e) => Err(e),
        },
        PartsRead::UpToDate if tail.next == 0 => Ok(None),
        PartsRead::UpToDate => Ok(Some(bytes)),
    }
}

/// How reading parts ended.
#[derive(Debug, PartialEq, Eq)]
pub enum PartsRead {
    /// Every part stored so far was read.
    UpToDate,
    /// A part that was there is gone: the whole log replaced the parts.
    Gap,
}

/// Reads a running step's parts as they appear (`ferry logs -f` from any machine).
#[derive(Debug, Default)]
pub struct PartsTail {
    /// The next part to read.
    next: u32,
}

impl PartsTail {
    /// Appends the parts stored since the last call to `out`.
    pub fn read_new(
        &mut self,
        store: &Store,
        run_id: &str,
        step: &str,
        out: &mut Vec<u8>,
    ) -> Result<PartsRead, PluginError> {
        loop {
            match store.get_bytes(&layout::step_log_part(run_id, step, self.next)) {
                Ok(bytes) => {
                    out.extend_from_slice(&bytes);
                    self.next += 1;
                }
                Err(e) if e.kind == ErrorKind::NOT_FOUND => {
                    // Part 0 missing while a later one exists cannot happen (parts are
                    // written in order); a missing next part is either not written yet or
                    // removed with the rest once the whole log was stored.
                    let removed =
                        self.next > 0 && store.head(&layout::step_log(run_id, step))?.is_some();
                    return Ok(if removed {
                        PartsRead::Gap
                    } else {
                        PartsRead::UpToDate
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes a running step's log to the store part by part, then whole.
#[derive(Debug)]
pub struct PartsWriter {
    store: Store,
    run_id: String,
    step: String,
    next: u32,
}

impl PartsWriter {
    pub fn new(store: Store, run_id: &str, step: &str) -> PartsWriter {
        PartsWriter {
            store,
            run_id: run_id.to_string(),
            step: step.to_string(),
            next: 0,
        }
    }

    /// Stores `bytes` (what the log gained) as the next part.
    pub fn put_part(&mut self, bytes: &[u8]) -> Result<(), PluginError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.store.put_bytes(
            &layout::step_log_part(&self.run_id, &self.step, self.next),
            bytes,
        )?;
        self.next += 1;
        Ok(())
    }

    /// The whole log is stored (by the caller, at [`layout::step_log`]): the parts go. A part
    /// that cannot be removed is only a duplicate, never read while the whole log exists.
    pub fn finish(&mut self) {
        for seq in 0..self.next {
            let _ = self
                .store
                .delete(&layout::step_log_part(&self.run_id, &self.step, seq));
        }
        self.next = 0;
    }
}

/// The complete lines of `bytes` as log events of `step`; `false` once the sink wants no more.
pub fn emit_lines(step: &str, bytes: &[u8], sink: &mut dyn FnMut(Event) -> bool) -> bool {
    for line in String::from_utf8_lossy(bytes).lines() {
        let event = Event::Log {
            step: step.to_string(),
            stream: LogStream::Stdout,
            line: line.to_string(),
            time: chrono::Utc::now(),
        };
        if !sink(event) {
            return false;
        }
    }
    true
}
