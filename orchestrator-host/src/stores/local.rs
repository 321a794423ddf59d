//! The built-in `local` artifact store: a folder on this machine (object_store's
//! `LocalFileSystem`), `.ferry/artifacts` in the project by default.

use std::sync::Arc;

use object_store::local::LocalFileSystem;

use orchestrator_core::PluginError;
use orchestrator_core::sdk::{PluginConfig, PluginInfo};
use orchestrator_core::store::Result;
use orchestrator_core::store::object_store_backend::{
    ObjectStoreBackend, ObjectStoreConfig, ObjectStorePlugin,
};

/// The default folder, relative to the project root.
pub const DEFAULT_PATH: &str = ".ferry/artifacts";

pub struct LocalFs;

/// The `local` store plugin.
pub type LocalStore = ObjectStorePlugin<LocalFs>;

impl ObjectStoreConfig for LocalFs {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "local",
            version: env!("CARGO_PKG_VERSION"),
            description: "artifacts in a folder on this machine",
            config_keys: &[(
                "path",
                "folder holding the artifacts, relative to the project root (default .ferry/artifacts)",
            )],
        }
    }

    fn build(config: &PluginConfig) -> Result<ObjectStoreBackend> {
        let path = config.resolve_path(config.str_setting("path")?.unwrap_or(DEFAULT_PATH));
        std::fs::create_dir_all(&path).map_err(|e| {
            PluginError::other(format!(
                "cannot create the artifact folder {}: {e}; check the `path` setting of the local store",
                path.display()
            ))
        })?;
        let path = path
            .canonicalize()
            .map_err(|e| PluginError::other(format!("cannot resolve {}: {e}", path.display())))?;
        let fs = LocalFileSystem::new_with_prefix(&path)
            .map_err(|e| PluginError::other(format!("cannot open {}: {e}", path.display())))?
            .with_automatic_cleanup(true);
        ObjectStoreBackend::new(Arc::new(fs), "", format!("file://{}", path.display()))
    }
}
