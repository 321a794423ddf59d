//! The built-in `memory` artifact store: gone when the process ends; for tests.

use std::sync::Arc;

use object_store::memory::InMemory;

use orchestrator_core::sdk::{PluginConfig, PluginInfo};
use orchestrator_core::store::Result;
use orchestrator_core::store::object_store_backend::{
    ObjectStoreBackend, ObjectStoreConfig, ObjectStorePlugin,
};

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
