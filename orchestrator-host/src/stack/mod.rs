//! Stacks: turning a stack's configuration into a live artifact store and orchestrator.
//!
//! Built-in plugins (`local`, `memory`) and plugin files go through the same stable interface;
//! a built-in name always means the built-in. Each plugin is handed only its own settings.

use std::fmt;
use std::path::{Path, PathBuf};

pub mod check;

use orchestrator_core::host::{PluginDescription, PluginModule};
use orchestrator_core::sdk::{self, PluginConfig};
use orchestrator_core::store::Store;
use orchestrator_core::{PluginError, PluginKind};
use thiserror::Error;

pub use orchestrator_core::host::OrchestratorHandle;

use crate::config::{ComponentConfig, StackConfig};
use crate::loader::{self, FindError, SearchPath};
use crate::local::LocalOrchestrator;
use crate::stores::{LocalStore, MemoryStore};

/// Metadata of the built-in plugins, for `ferry plugins list`.
pub fn builtin_plugins() -> Vec<PluginDescription> {
    [
        PluginModule::builtin_orchestrator::<LocalOrchestrator>(),
        PluginModule::builtin_store::<LocalStore>(),
        PluginModule::builtin_store::<MemoryStore>(),
    ]
    .into_iter()
    .filter_map(|module| module.describe().ok())
    .collect()
}

/// Where a stack component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Builtin,
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in"),
            Origin::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[non_exhaustive]
#[derive(Debug, Error)]
pub enum Error {
    #[error("{component} `{plugin}`")]
    Find {
        component: &'static str,
        plugin: String,
        #[source]
        source: Box<FindError>,
    },
    #[error("{component} `{plugin}` could not be created")]
    Settings {
        component: &'static str,
        plugin: String,
        #[source]
        source: PluginError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The module for a component: built-in or found on the search path.
fn module_for(
    component: &'static str,
    config: &ComponentConfig,
    kind: PluginKind,
    search: &SearchPath,
) -> Result<(PluginModule, Origin)> {
    let builtin = if kind == PluginKind::ARTIFACT_STORE {
        match config.plugin.as_str() {
            "local" => Some(PluginModule::builtin_store::<LocalStore>()),
            "memory" => Some(PluginModule::builtin_store::<MemoryStore>()),
            _ => None,
        }
    } else {
        match config.plugin.as_str() {
            "local" => Some(PluginModule::builtin_orchestrator::<LocalOrchestrator>()),
            _ => None,
        }
    };
    if let Some(module) = builtin {
        return Ok((module, Origin::Builtin));
    }
    let plugin = loader::find(search, &config.plugin, kind).map_err(|source| Error::Find {
        component,
        plugin: config.plugin.clone(),
        source: Box::new(source),
    })?;
    Ok((plugin.module, Origin::File(plugin.path)))
}

fn plugin_config(config: &ComponentConfig, project_root: &Path) -> PluginConfig {
    PluginConfig::new(config.settings.clone()).with_project_root(project_root)
}

/// What an orchestrator's remote agents need to open the same store.
pub fn store_connection(config: &ComponentConfig, project_root: &Path) -> sdk::StoreConnection {
    sdk::StoreConnection {
        plugin: config.plugin.clone(),
        settings: config.settings.clone(),
        project_root: Some(project_root.to_path_buf()),
    }
}

/// Open the artifact store a component describes.
pub fn open_store(
    config: &ComponentConfig,
    project_root: &Path,
    search: &SearchPath,
) -> Result<(Store, Origin)> {
    let (module, origin) =
        module_for("artifact store", config, PluginKind::ARTIFACT_STORE, search)?;
    let store = module
        .new_store(&plugin_config(config, project_root))
        .map_err(|source| Error::Settings {
            component: "artifact store",
            plugin: config.plugin.clone(),
            source,
        })?;
    Ok((store, origin))
}

/// Open the orchestrator a component describes, handing it the stack's store.
pub fn open_orchestrator(
    config: &ComponentConfig,
    project_root: &Path,
    store: &Store,
    store_connection: Option<sdk::StoreConnection>,
    search: &SearchPath,
) -> Result<(OrchestratorHandle, Origin)> {
    let (module, origin) = module_for("orchestrator", config, PluginKind::ORCHESTRATOR, search)?;
    let mut plugin_config = plugin_config(config, project_root);
    plugin_config.store = store_connection;
    let orchestrator = module
        .new_orchestrator(&config.plugin, &plugin_config, store)
        .map_err(|source| Error::Settings {
            component: "orchestrator",
            plugin: config.plugin.clone(),
            source,
        })?;
    Ok((orchestrator, origin))
}

/// A live stack.
pub struct Stack {
    pub name: String,
    pub store: Store,
    pub store_origin: Origin,
    pub orchestrator: OrchestratorHandle,
    pub orchestrator_origin: Origin,
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("name", &self.name)
            .field("store", &self.store.url())
            .field("orchestrator", &self.orchestrator.name())
            .finish()
    }
}

impl Stack {
    pub fn open(
        name: &str,
        config: &StackConfig,
        project_root: &Path,
        search: &SearchPath,
    ) -> Result<Self> {
        let (store, store_origin) = open_store(&config.store, project_root, search)?;
        let (orchestrator, orchestrator_origin) = open_orchestrator(
            &config.orchestrator,
            project_root,
            &store,
            Some(store_connection(&config.store, project_root)),
            search,
        )?;
        Ok(Self {
            name: name.to_string(),
            store,
            store_origin,
            orchestrator,
            orchestrator_origin,
        })
    }
}
