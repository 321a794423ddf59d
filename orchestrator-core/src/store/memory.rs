//! The built-in `memory` artifact store: gone when the process ends; for tests.

use std::sync::Arc;

use object_store::memory::InMemory;

use super::Result;
use super::object_store_backend::{ObjectStoreBackend, ObjectStoreConfig, ObjectStorePlugin};
use crate::sdk::{PluginConfig, PluginInfo};

pub struct Memory;

/// The `memory` store plugin.
pub type MemoryStore = ObjectStorePlugin<Memory>;

impl ObjectStoreConfig for Memory {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "memory",
            version: env!("CARGO_PKG_VERSION"),
            description: "artifacts in memory, lost when ferry exits (for tests)",
            config_keys: &[],
        }
    }

    fn build(_config: &PluginConfig) -> Result<ObjectStoreBackend> {
        ObjectStoreBackend::new(Arc::new(InMemory::new()), "", "memory://")
    }
}
