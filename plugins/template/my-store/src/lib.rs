//! `my-store`: a ferry artifact store that keeps objects under a local folder.
//!
//! The whole plugin is this file: a type describing the plugin and building an `ObjectStore`
//! from its settings; orchestrator-core's object_store bridge does the rest (multipart uploads,
//! digests, atomic writes, listing) and the export macro makes it a plugin. To store somewhere
//! else, build a different `ObjectStore` in `build`, or implement
//! `orchestrator_core::sdk::StorePlugin` yourself for full control.
//!
//! ```toml
//! [stacks.mine]
//! orchestrator = { plugin = "my-orchestrator" }
//! store = { plugin = "my-store", settings = { root = "/var/tmp/ferry-artifacts" } }
//! ```

use std::sync::Arc;

use orchestrator_core::PluginError;
use orchestrator_core::sdk::{PluginConfig, PluginInfo};
use orchestrator_core::store::object_store_backend::object_store::local::LocalFileSystem;
use orchestrator_core::store::object_store_backend::{
    ObjectStoreBackend, ObjectStoreConfig, ObjectStorePlugin,
};

/// The settings this plugin accepts, with the help `ferry plugins inspect my-store` shows. Any
/// other key is refused when the stack opens, with a did-you-mean.
const KEYS: &[(&str, &str)] = &[(
    "root",
    "folder holding the objects, relative to the project root (default .ferry/my-store)",
)];

pub struct MyStore;

impl ObjectStoreConfig for MyStore {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "my-store",
            version: env!("CARGO_PKG_VERSION"),
            description: "objects under a local folder",
            config_keys: KEYS,
        }
    }

    fn build(config: &PluginConfig) -> Result<ObjectStoreBackend, PluginError> {
        let root = match config.settings.get("root") {
            Some(value) => value
                .as_str()
                .ok_or_else(|| PluginError::invalid_input("my-store: `root` must be a string"))?,
            None => ".ferry/my-store",
        };
        // Relative paths are relative to the project, not to wherever ferry was started.
        let root = config.resolve_path(root);
        std::fs::create_dir_all(&root).map_err(|e| {
            PluginError::invalid_input(format!("my-store: cannot create {}: {e}", root.display()))
        })?;
        let store = LocalFileSystem::new_with_prefix(&root).map_err(|e| {
            PluginError::invalid_input(format!("my-store: cannot use {}: {e}", root.display()))
        })?;
        ObjectStoreBackend::new(
            Arc::new(store),
            "",
            format!("my-store://{}", root.display()),
        )
    }
}

orchestrator_core::export_store_plugin!(ObjectStorePlugin<MyStore>);

#[cfg(test)]
mod tests {
    /// Every artifact store must pass ferry's conformance suite. It runs against the built
    /// library, loaded the way ferry loads it (`cargo build` first: tests do not build cdylibs).
    #[test]
    fn passes_the_conformance_suite() {
        let dir = std::env::temp_dir().join(format!("my-store-conformance-{}", std::process::id()));
        let settings = orchestrator_core::sdk::serde_json::json!({ "root": dir.to_str().unwrap() });
        let store = orchestrator_core::store::conformance::open_built_plugin("my-store", settings);
        orchestrator_core::store::conformance::run_all(&store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
