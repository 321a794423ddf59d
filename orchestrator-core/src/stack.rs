//! Stacks: turning a stack's configuration into a live artifact store and orchestrator.
//!
//! Built-in plugins (`local`, `memory`) and plugin files go through the same stable interface;
//! a built-in name always means the built-in. Each plugin is handed only its own settings.

use std::fmt;
use std::path::{Path, PathBuf};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RStr};
use thiserror::Error;

use crate::abi::{
    EventSink, EventSink_TO, OrchestratorBox, PluginError, PluginKind, PluginModuleRef, RunEvent,
};
use crate::config::{ComponentConfig, StackConfig};
use crate::loader::{self, FindError, SearchPath};
use crate::run::{Event, RunPlan, RunRecord};
use crate::sdk::{self, PluginConfig};
use crate::store::Store;
use crate::store::local::LocalStore;
use crate::store::memory::MemoryStore;

/// Names that always mean a built-in plugin.
pub const BUILTIN_STORES: &[&str] = &["local", "memory"];
pub const BUILTIN_ORCHESTRATORS: &[&str] = &["local"];

/// Metadata of the built-in plugins, for `ferry plugins list`.
pub fn builtin_plugins() -> Vec<loader::PluginDescription> {
    [
        sdk::orchestrator_module::<crate::local::LocalOrchestrator>(),
        sdk::store_module::<LocalStore>(),
        sdk::store_module::<MemoryStore>(),
    ]
    .into_iter()
    .filter_map(|module| loader::describe_module(module).ok())
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
    #[error("{component} `{plugin}`: {source}")]
    Find {
        component: &'static str,
        plugin: String,
        #[source]
        source: Box<FindError>,
    },
    #[error("{component} `{plugin}` could not be created: {source}")]
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
) -> Result<(PluginModuleRef, Origin)> {
    let builtin = if kind == PluginKind::ARTIFACT_STORE {
        match config.plugin.as_str() {
            "local" => Some(sdk::store_module::<LocalStore>()),
            "memory" => Some(sdk::store_module::<MemoryStore>()),
            _ => None,
        }
    } else {
        match config.plugin.as_str() {
            "local" => Some(sdk::orchestrator_module::<crate::local::LocalOrchestrator>()),
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

fn plugin_config(config: &ComponentConfig, project_root: &Path) -> String {
    PluginConfig::new(config.settings.clone())
        .with_project_root(project_root)
        .to_json()
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
    let json = plugin_config(config, project_root);
    let store = (module.new_store())(RStr::from(json.as_str()))
        .into_result()
        .map_err(|source| Error::Settings {
            component: "artifact store",
            plugin: config.plugin.clone(),
            source,
        })?;
    Ok((Store::new(store), origin))
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
    let mut plugin_config =
        PluginConfig::new(config.settings.clone()).with_project_root(project_root);
    plugin_config.store = store_connection;
    let json = plugin_config.to_json();
    let inner = (module.new_orchestrator())(RStr::from(json.as_str()), store.as_abi())
        .into_result()
        .map_err(|source| Error::Settings {
            component: "orchestrator",
            plugin: config.plugin.clone(),
            source,
        })?;
    Ok((
        OrchestratorHandle {
            inner,
            name: config.plugin.clone(),
        },
        origin,
    ))
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
            .field("orchestrator", &self.orchestrator.name)
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

/// Host-side handle on an orchestrator, with plain Rust types.
pub struct OrchestratorHandle {
    inner: OrchestratorBox,
    name: String,
}

impl fmt::Debug for OrchestratorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrchestratorHandle")
            .field("name", &self.name)
            .finish()
    }
}

/// Adapts a host closure to the stable sink. The plugin calls it through an `extern "C"`
/// shim where a panic would abort the process, so a panic is caught here, streaming stops,
/// and the panic resumes on the host's side once the plugin has returned.
struct ClosureSink<'a> {
    sink: &'a mut dyn FnMut(Event) -> bool,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

impl EventSink for ClosureSink<'_> {
    fn send(&mut self, event: RunEvent) -> bool {
        if self.panic.is_some() {
            return false;
        }
        let sink = &mut self.sink;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink(Event::from(event)))) {
            Ok(go_on) => go_on,
            Err(panic) => {
                self.panic = Some(panic);
                false
            }
        }
    }
}

impl OrchestratorHandle {
    /// The plugin name from the stack (`local`, `kubernetes`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn describe(&self) -> String {
        self.inner.describe().into_string()
    }

    pub fn wants_code_package(&self) -> bool {
        self.inner.wants_code_package()
    }

    pub fn render(&self, plan: &RunPlan) -> Result<String, PluginError> {
        let json = plan.to_json();
        self.inner
            .render(RStr::from(json.as_str()))
            .into_result()
            .map(|s| s.into_string())
    }

    pub fn submit(&self, plan: &RunPlan) -> Result<String, PluginError> {
        let json = plan.to_json();
        self.inner
            .submit(RStr::from(json.as_str()))
            .into_result()
            .map(|s| s.into_string())
    }

    pub fn status(&self, run_id: &str) -> Result<RunRecord, PluginError> {
        let json = self
            .inner
            .status(RStr::from(run_id))
            .into_result()?
            .into_string();
        serde_json::from_str(&json).map_err(|e| {
            PluginError::other(format!(
                "orchestrator `{}` returned a malformed run record: {e}",
                self.name
            ))
        })
    }

    /// Stream events into `sink` until the run ends (with `follow`) or `sink` returns false.
    pub fn stream_events(
        &self,
        run_id: &str,
        step: Option<&str>,
        follow: bool,
        mut sink: impl FnMut(Event) -> bool,
    ) -> Result<(), PluginError> {
        let mut closure = ClosureSink {
            sink: &mut sink,
            panic: None,
        };
        let step: ROption<RStr<'_>> = step.map(RStr::from).into();
        let result = self
            .inner
            .stream_events(
                RStr::from(run_id),
                step,
                follow,
                EventSink_TO::from_ptr(&mut closure, TD_Opaque),
            )
            .into_result();
        if let Some(panic) = closure.panic {
            std::panic::resume_unwind(panic);
        }
        result
    }

    pub fn cancel(&self, run_id: &str) -> Result<(), PluginError> {
        self.inner.cancel(RStr::from(run_id)).into_result()
    }
}
