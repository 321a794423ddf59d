//! The built-in artifact stores, behind the same plugin interface as a plugin file: `local` (a
//! folder, the default stack's store) and `memory` (for tests and dry runs).

mod local;
mod memory;

pub use local::LocalStore;
pub use memory::MemoryStore;

#[cfg(test)]
mod tests {
    use orchestrator_core::sdk::{PluginConfig, StorePlugin};
    use orchestrator_core::store::{Store, conformance};

    use super::{LocalStore, MemoryStore};

    #[test]
    fn memory_store_conforms() {
        let store = MemoryStore::new(PluginConfig::default()).unwrap();
        conformance::run_all(&Store::from_plugin(store));
    }

    #[test]
    fn local_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let config = PluginConfig::default().with_project_root(dir.path());
        let store = Store::from_plugin(LocalStore::new(config).unwrap());
        assert!(store.url().starts_with("file://"), "{}", store.url());
        conformance::run_all(&store);
    }
}
