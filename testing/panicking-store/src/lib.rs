//! Test fixture: a store plugin that loads fine and panics in every operation, to prove the
//! SDK turns plugin panics into errors instead of aborting ferry.

use std::path::Path;

use orchestrator_core::PluginError;
use orchestrator_core::sdk::{PluginConfig, PluginInfo, StorePlugin};
use orchestrator_core::store::{ListResult, ObjectInfo};

pub struct PanickingStore;

impl StorePlugin for PanickingStore {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "panicking-store",
            version: env!("CARGO_PKG_VERSION"),
            description: "test fixture: panics in every operation",
            config_keys: &[],
        }
    }

    fn new(_config: PluginConfig) -> Result<Self, PluginError> {
        Ok(Self)
    }

    fn url(&self) -> String {
        "panic://".into()
    }

    fn put_file(&self, _key: &str, _path: &Path) -> Result<ObjectInfo, PluginError> {
        panic!("put_file exploded on purpose")
    }

    fn get_file(&self, _key: &str, _path: &Path) -> Result<ObjectInfo, PluginError> {
        panic!("get_file exploded on purpose")
    }

    fn put_bytes(&self, _key: &str, _data: &[u8]) -> Result<ObjectInfo, PluginError> {
        panic!("put_bytes exploded on purpose")
    }

    fn get_bytes(&self, _key: &str) -> Result<Vec<u8>, PluginError> {
        panic!("get_bytes exploded on purpose")
    }

    fn head(&self, _key: &str) -> Result<ObjectInfo, PluginError> {
        panic!("head exploded on purpose")
    }

    fn list(&self, _prefix: &str, _recursive: bool) -> Result<ListResult, PluginError> {
        panic!("list exploded on purpose")
    }

    fn delete(&self, _key: &str) -> Result<(), PluginError> {
        panic!("delete exploded on purpose")
    }
}

orchestrator_core::export_store_plugin!(PanickingStore);
