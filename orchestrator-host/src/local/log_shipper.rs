//! A running step's log, carried to the store while the step runs
//! (`orchestrator_core::run::step_log`): if the machine dies under the step (OOM, eviction,
//! a deadline), the log up to the last few seconds is in the store.
//!
//! The shipper reads what the step's log file gained every [`INTERVAL`] and stores it as the
//! next part; [`LogShipper::stop`] ends that and hands back a [`WholeLog`], whose `store`
//! stores the whole file and removes the parts.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchestrator_core::PluginError;
use orchestrator_core::run::step_log::PartsWriter;
use orchestrator_core::sdk::blocking;
use orchestrator_core::store::{Store, layout};

/// How often a running step's new log lines reach the store.
pub(super) const INTERVAL: Duration = Duration::from_secs(2);
/// A part never holds more than this; a chatty step sends several parts per interval.
const MAX_PART: u64 = 4 << 20;

struct Shipped {
    writer: PartsWriter,
    /// Bytes of the file stored so far.
    offset: u64,
}

pub(super) struct LogShipper {
    store: Store,
    run_id: String,
    step: String,
    path: PathBuf,
    shipped: Arc<Mutex<Shipped>>,
    task: tokio::task::JoinHandle<()>,
}

impl LogShipper {
    /// Starts shipping `path`, the log file of `step`.
    pub(super) fn start(store: &Store, run_id: &str, step: &str, path: &Path) -> LogShipper {
        let shipped = Arc::new(Mutex::new(Shipped {
            writer: PartsWriter::new(store.clone(), run_id, step),
            offset: 0,
        }));
        let task = {
            let shipped = Arc::clone(&shipped);
            let path = path.to_path_buf();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let shipped = Arc::clone(&shipped);
                    let path = path.clone();
                    // A store that fails now is tried again at the next tick; the whole log
                    // is stored at the end regardless.
                    let _ = blocking(move || ship_new(&shipped, &path)).await;
                }
            })
        };
        LogShipper {
            store: store.clone(),
            run_id: run_id.to_string(),
            step: step.to_string(),
            path: path.to_path_buf(),
            shipped,
            task,
        }
    }

    /// The step ended: stops shipping parts and returns the last thing to do, storing the
    /// whole log and removing the parts, for the caller to run on a blocking thread together
    /// with the step's other stores (one hand-off instead of one each).
    pub(super) async fn stop(mut self) -> WholeLog {
        self.task.abort();
        let _ = (&mut self.task).await;
        WholeLog {
            store: self.store.clone(),
            key: layout::step_log(&self.run_id, &self.step),
            path: self.path.clone(),
            shipped: Arc::clone(&self.shipped),
        }
    }
}

/// A finished step's log, still to be stored whole ([`LogShipper::stop`]).
pub(super) struct WholeLog {
    store: Store,
    key: String,
    path: PathBuf,
    shipped: Arc<Mutex<Shipped>>,
}

impl WholeLog {
    /// Stores the whole log and removes its parts. Blocks: call it off the async workers.
    pub(super) fn store(self) -> Result<(), PluginError> {
        self.store.put_file(&self.key, &self.path)?;
        self.shipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .writer
            .finish();
        Ok(())
    }
}

impl Drop for LogShipper {
    /// A step that ferry itself failed still stops its shipper.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Stores what the file gained since the last part.
fn ship_new(shipped: &Mutex<Shipped>, path: &Path) -> Result<(), PluginError> {
    let mut shipped = shipped.lock().unwrap_or_else(|e| e.into_inner());
    let io = |e: std::io::Error| PluginError::other(format!("reading {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    while shipped.offset < len {
        let take = (len - shipped.offset).min(MAX_PART);
        let mut bytes = Vec::with_capacity(take as usize);
        file.seek(SeekFrom::Start(shipped.offset)).map_err(io)?;
        (&mut file).take(take).read_to_end(&mut bytes).map_err(io)?;
        if bytes.is_empty() {
            break;
        }
        shipped.writer.put_part(&bytes)?;
        shipped.offset += bytes.len() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::run::step_log;
    use orchestrator_core::sdk::{PluginConfig, StorePlugin};
    use std::io::Write;

    fn store(dir: &Path) -> Store {
        let config = PluginConfig::default().with_project_root(dir);
        Store::from_plugin(crate::stores::LocalStore::new(config).unwrap())
    }

    #[test]
    fn parts_hold_the_log_while_it_grows_and_the_whole_log_replaces_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let log = dir.path().join("step.log");
        let shipped = Mutex::new(Shipped {
            writer: PartsWriter::new(store.clone(), "r1", "train"),
            offset: 0,
        });
        assert_eq!(step_log::read(&store, "r1", "train").unwrap(), None);

        let mut file = std::fs::File::create(&log).unwrap();
        writeln!(file, "epoch 1").unwrap();
        ship_new(&shipped, &log).unwrap();
        writeln!(file, "epoch 2").unwrap();
        ship_new(&shipped, &log).unwrap();
        ship_new(&shipped, &log).unwrap(); // nothing new: no empty part
        // The machine dies here: a reader gets the log up to the last part.
        assert_eq!(
            step_log::read(&store, "r1", "train").unwrap().unwrap(),
            b"epoch 1\nepoch 2\n"
        );
        assert!(
            store
                .head(&layout::step_log_part("r1", "train", 2))
                .unwrap()
                .is_none()
        );

        // A reader following the step sees each part once.
        let mut tail = step_log::PartsTail::default();
        let mut seen = Vec::new();
        tail.read_new(&store, "r1", "train", &mut seen).unwrap();
        writeln!(file, "epoch 3").unwrap();
        ship_new(&shipped, &log).unwrap();
        tail.read_new(&store, "r1", "train", &mut seen).unwrap();
        assert_eq!(seen, b"epoch 1\nepoch 2\nepoch 3\n");

        // The step ends: the whole log is stored and the parts go.
        store
            .put_file(&layout::step_log("r1", "train"), &log)
            .unwrap();
        shipped.lock().unwrap().writer.finish();
        assert!(
            store
                .head(&layout::step_log_part("r1", "train", 0))
                .unwrap()
                .is_none()
        );
        assert_eq!(
            tail.read_new(&store, "r1", "train", &mut seen).unwrap(),
            step_log::PartsRead::Gap
        );
        assert_eq!(
            step_log::read(&store, "r1", "train").unwrap().unwrap(),
            b"epoch 1\nepoch 2\nepoch 3\n"
        );
    }
}
