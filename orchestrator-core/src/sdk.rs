//! The plugin SDK: implement a plain Rust trait, call one export macro.
//!
//! ```text
//! use orchestrator_core::sdk::{PluginConfig, PluginInfo, StorePlugin};
//!
//! struct MyStore { /* ... */ }
//! impl StorePlugin for MyStore { /* info(), new(), put_file(), ... */ }
//!
//! orchestrator_core::export_store_plugin!(MyStore);
//! ```
//!
//! `plugins/example-store` is a complete, compiled example.
//!
//! The macro generates the root module and its metadata, and every entry point runs inside
//! [`guard`], so a panicking plugin returns an error instead of aborting ferry. The built-in
//! `local` stores and orchestrator are wrapped by the very same adapters.

/// The `serde_json` plugin settings and plans are made of (`PluginConfig::settings`), so that a
/// plugin's JSON types always match the SDK's.
pub use serde_json;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
};
use serde::{Deserialize, Serialize};

use crate::abi::{
    ArtifactStore, ArtifactStore_TO, ArtifactStoreBox, ConfigKeyDoc, ErrorKind, EventSinkMut,
    INTERFACE_VERSION, JSON_SCHEMA_VERSION, Listing, ObjectMeta, Orchestrator, Orchestrator_TO,
    OrchestratorBox, PluginError, PluginKind, PluginMetadata, PluginModule, PluginModuleRef,
    ProgressSinkMut, RunEvent,
};
use crate::run::{Event, RunPlan, RunRecord};
use crate::schedule::{ScheduleReply, ScheduleRequest};
use crate::store::{ListResult, ObjectInfo, Store};

/// What a plugin says about itself.
#[derive(Debug, Clone, Copy)]
pub struct PluginInfo {
    /// The name stacks use in `plugin = "..."`.
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
    /// `(key, one-line doc)` for every settings key the plugin accepts.
    pub config_keys: &'static [(&'static str, &'static str)],
}

impl PluginInfo {
    fn to_abi(self, kind: PluginKind) -> PluginMetadata {
        PluginMetadata {
            name: self.name.into(),
            kind,
            version: self.version.into(),
            interface_version: INTERFACE_VERSION.into(),
            description: self.description.into(),
            config_keys: self
                .config_keys
                .iter()
                .map(|(key, doc)| ConfigKeyDoc {
                    key: (*key).into(),
                    doc: (*doc).into(),
                })
                .collect(),
        }
    }
}

/// Runs blocking work (a [`Store`] call, which blocks) off the async workers of a plugin's
/// runtime, so that other tasks go on meanwhile.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PluginError> + Send + 'static,
) -> Result<T, PluginError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PluginError::other(format!("background task failed: {e}")))?
}

/// The tokio runtime a plugin instance owns (two workers, threads named `ferry-<name>`). A
/// plugin cannot use the host's runtime: the host's tokio is another copy of the library, and
/// calls arrive on arbitrary host threads.
pub fn plugin_runtime(name: &str) -> Result<tokio::runtime::Runtime, PluginError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("ferry-{name}"))
        .enable_all()
        .build()
        .map_err(|e| PluginError::other(format!("{name}: cannot start a runtime: {e}")))
}

/// The settings a plugin is created with, as they cross the boundary (JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginConfig {
    pub schema_version: u32,
    /// The plugin's own `settings` table from the stack, and nothing else.
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// The project's root directory, against which relative paths in settings resolve.
    #[serde(default)]
    pub project_root: Option<PathBuf>,
    /// Orchestrators only: how to open the stack's artifact store, for agents that run steps
    /// elsewhere and must reach the same store (credentials included, so an orchestrator must
    /// only ever ship it inside a secret). Stores never receive it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreConnection>,
}

/// How to open an artifact store somewhere else: the plugin name and its settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreConnection {
    /// Plugin name as in a stack (`local`, `storage-s3`, ...).
    pub plugin: String,
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// The submitting machine's project root, for settings with relative paths.
    #[serde(default)]
    pub project_root: Option<PathBuf>,
}

impl PluginConfig {
    pub fn new(settings: serde_json::Map<String, serde_json::Value>) -> Self {
        Self {
            schema_version: JSON_SCHEMA_VERSION,
            settings,
            project_root: None,
            store: None,
        }
    }

    #[must_use]
    pub fn with_project_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.project_root = Some(root.into());
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plugin config serialises")
    }

    pub fn from_json(text: &str) -> Result<Self, PluginError> {
        let config: Self = serde_json::from_str(text)
            .map_err(|e| PluginError::invalid_input(format!("malformed plugin settings: {e}")))?;
        if config.schema_version > JSON_SCHEMA_VERSION {
            return Err(PluginError::invalid_input(format!(
                "settings use schema version {} but this plugin understands up to {JSON_SCHEMA_VERSION}; upgrade the plugin",
                config.schema_version
            )));
        }
        Ok(config)
    }

    /// Refuse keys the plugin does not declare, with a did-you-mean.
    pub fn check_keys(&self, info: &PluginInfo) -> Result<(), PluginError> {
        for key in self.settings.keys() {
            if info.config_keys.iter().any(|(k, _)| k == key) {
                continue;
            }
            let valid: Vec<&str> = info.config_keys.iter().map(|(k, _)| *k).collect();
            let hint = match crate::suggest::did_you_mean(key, valid.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None if valid.is_empty() => "it takes no settings".to_string(),
                None => format!("valid keys: {}", valid.join(", ")),
            };
            return Err(PluginError::invalid_input(format!(
                "unknown setting `{key}` for plugin `{}`; {hint}",
                info.name
            )));
        }
        Ok(())
    }

    /// A string setting, or `None` when absent.
    pub fn str_setting(&self, key: &str) -> Result<Option<&str>, PluginError> {
        match self.settings.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(PluginError::invalid_input(format!(
                "setting `{key}` must be a string, found {other}"
            ))),
        }
    }

    /// Resolve a path setting against the project root.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        match &self.project_root {
            Some(root) if path.is_relative() => root.join(path),
            _ => path.to_path_buf(),
        }
    }
}

/// An artifact store, in plain Rust. See [`ArtifactStore`] for the contract.
pub trait StorePlugin: Send + Sync + 'static {
    fn info() -> PluginInfo
    where
        Self: Sized;

    /// Check settings without touching the network or the disk. By default: only declared
    /// keys are accepted.
    fn validate(config: &PluginConfig) -> Result<(), PluginError>
    where
        Self: Sized,
    {
        config.check_keys(&Self::info())
    }

    fn new(config: PluginConfig) -> Result<Self, PluginError>
    where
        Self: Sized;

    fn url(&self) -> String;
    fn put_file(&self, key: &str, path: &Path) -> Result<ObjectInfo, PluginError>;

    /// Upload with progress; by default one report at the end.
    fn put_file_with_progress(
        &self,
        key: &str,
        path: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ObjectInfo, PluginError> {
        let info = self.put_file(key, path)?;
        progress(info.size, info.size);
        Ok(info)
    }

    fn get_file(&self, key: &str, path: &Path) -> Result<ObjectInfo, PluginError>;
    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<ObjectInfo, PluginError>;
    fn get_bytes(&self, key: &str) -> Result<Vec<u8>, PluginError>;
    fn head(&self, key: &str) -> Result<ObjectInfo, PluginError>;
    fn list(&self, prefix: &str, recursive: bool) -> Result<ListResult, PluginError>;
    fn delete(&self, key: &str) -> Result<(), PluginError>;
}

/// An orchestrator, in plain Rust. See [`Orchestrator`] for the contract.
pub trait OrchestratorPlugin: Send + Sync + 'static {
    fn info() -> PluginInfo
    where
        Self: Sized;

    fn validate(config: &PluginConfig) -> Result<(), PluginError>
    where
        Self: Sized,
    {
        config.check_keys(&Self::info())
    }

    fn new(config: PluginConfig, store: Store) -> Result<Self, PluginError>
    where
        Self: Sized;

    fn describe(&self) -> String;

    /// Whether runs need the code package in the store; see [`Orchestrator::wants_code_package`].
    fn wants_code_package(&self) -> bool {
        false
    }

    fn render(&self, plan: &RunPlan) -> Result<String, PluginError>;
    fn submit(&self, plan: RunPlan) -> Result<String, PluginError>;
    fn status(&self, run_id: &str) -> Result<RunRecord, PluginError>;
    fn stream_events(
        &self,
        run_id: &str,
        step: Option<&str>,
        follow: bool,
        sink: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), PluginError>;
    fn cancel(&self, run_id: &str) -> Result<(), PluginError>;

    /// Create, list, change and trigger schedules (`ferry schedule`). Orchestrators that need
    /// the submitting machine to run steps keep none: the default refuses.
    fn schedules(&self, request: ScheduleRequest) -> Result<ScheduleReply, PluginError> {
        let _ = request;
        Err(PluginError::unsupported(
            "this orchestrator cannot keep schedules: a schedule fires with nobody's ferry running, so it needs a cluster (an orchestrator such as `kubernetes`)",
        ))
    }
}

thread_local! {
    /// Where the last panic on this thread happened, recorded by the plugin's panic hook.
    static PANIC_LOCATION: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Installed by the export macros in the plugin's own copy of the standard library: it keeps
/// the location of a panic for [`guard`]'s error and stays quiet, since the panic is reported
/// as an error (set `RUST_BACKTRACE=1` to have it printed too).
#[doc(hidden)]
pub fn __install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            PANIC_LOCATION.with(|cell| *cell.borrow_mut() = location);
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
                default(info);
            }
        }));
    });
}

/// Run `f`, turning a panic into a [`ErrorKind::PANICKED`] error that names the plugin.
pub fn guard<T>(
    plugin: &str,
    f: impl FnOnce() -> Result<T, PluginError>,
) -> RResult<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.into(),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_string());
            let at = PANIC_LOCATION
                .with(|cell| cell.borrow_mut().take())
                .map(|l| format!(" at {l}"))
                .unwrap_or_default();
            RResult::RErr(PluginError::new(
                ErrorKind::PANICKED,
                format!("plugin `{plugin}` panicked{at}: {what}; this is a bug in the plugin"),
            ))
        }
    }
}

/// Adapts a [`StorePlugin`] to the stable [`ArtifactStore`] trait.
pub struct StoreAdapter<T>(Arc<T>);

impl<T> Clone for StoreAdapter<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T: StorePlugin> ArtifactStore for StoreAdapter<T> {
    fn url(&self) -> RString {
        match catch_unwind(AssertUnwindSafe(|| self.0.url())) {
            Ok(url) => url.into(),
            Err(_) => "<the plugin panicked while describing its URL>".into(),
        }
    }

    fn put_file(&self, key: RStr<'_>, path: RStr<'_>) -> RResult<ObjectMeta, PluginError> {
        guard(T::info().name, || {
            self.0
                .put_file(key.as_str(), Path::new(path.as_str()))
                .map(Into::into)
        })
    }

    fn put_file_with_progress(
        &self,
        key: RStr<'_>,
        path: RStr<'_>,
        mut progress: ProgressSinkMut<'_>,
    ) -> RResult<ObjectMeta, PluginError> {
        guard(T::info().name, || {
            let mut report = |done, total| progress.progress(done, total);
            self.0
                .put_file_with_progress(key.as_str(), Path::new(path.as_str()), &mut report)
                .map(Into::into)
        })
    }

    fn get_file(&self, key: RStr<'_>, path: RStr<'_>) -> RResult<ObjectMeta, PluginError> {
        guard(T::info().name, || {
            self.0
                .get_file(key.as_str(), Path::new(path.as_str()))
                .map(Into::into)
        })
    }

    fn put_bytes(&self, key: RStr<'_>, data: RSlice<'_, u8>) -> RResult<ObjectMeta, PluginError> {
        guard(T::info().name, || {
            self.0
                .put_bytes(key.as_str(), data.as_slice())
                .map(Into::into)
        })
    }

    fn get_bytes(&self, key: RStr<'_>) -> RResult<RVec<u8>, PluginError> {
        guard(T::info().name, || {
            self.0.get_bytes(key.as_str()).map(RVec::from)
        })
    }

    fn head(&self, key: RStr<'_>) -> RResult<ObjectMeta, PluginError> {
        guard(T::info().name, || self.0.head(key.as_str()).map(Into::into))
    }

    fn list(&self, prefix: RStr<'_>, recursive: bool) -> RResult<Listing, PluginError> {
        guard(T::info().name, || {
            self.0.list(prefix.as_str(), recursive).map(Into::into)
        })
    }

    fn delete(&self, key: RStr<'_>) -> RResult<(), PluginError> {
        guard(T::info().name, || self.0.delete(key.as_str()))
    }
}

/// Put a [`StorePlugin`] behind the stable interface (what plugins and built-ins both use).
pub fn store_box<T: StorePlugin>(store: T) -> ArtifactStoreBox {
    ArtifactStore_TO::from_ptr(RBox::new(StoreAdapter(Arc::new(store))), TD_Opaque)
}

/// Adapts an [`OrchestratorPlugin`] to the stable [`Orchestrator`] trait.
pub struct OrchestratorAdapter<T>(T);

impl<T: OrchestratorPlugin> Orchestrator for OrchestratorAdapter<T> {
    fn describe(&self) -> RString {
        match catch_unwind(AssertUnwindSafe(|| self.0.describe())) {
            Ok(text) => text.into(),
            Err(_) => "<the plugin panicked while describing itself>".into(),
        }
    }

    fn wants_code_package(&self) -> bool {
        // A panic here means "no package": the run then fails in the plugin with its own error.
        catch_unwind(AssertUnwindSafe(|| self.0.wants_code_package())).unwrap_or(false)
    }

    fn render(&self, plan_json: RStr<'_>) -> RResult<RString, PluginError> {
        guard(T::info().name, || {
            let plan = RunPlan::from_json(plan_json.as_str())?;
            self.0.render(&plan).map(Into::into)
        })
    }

    fn submit(&self, plan_json: RStr<'_>) -> RResult<RString, PluginError> {
        guard(T::info().name, || {
            let plan = RunPlan::from_json(plan_json.as_str())?;
            self.0.submit(plan).map(Into::into)
        })
    }

    fn status(&self, run_id: RStr<'_>) -> RResult<RString, PluginError> {
        guard(T::info().name, || {
            let record = self.0.status(run_id.as_str())?;
            serde_json::to_string(&record)
                .map(Into::into)
                .map_err(|e| PluginError::other(format!("cannot serialise the run record: {e}")))
        })
    }

    fn stream_events(
        &self,
        run_id: RStr<'_>,
        step: ROption<RStr<'_>>,
        follow: bool,
        mut sink: EventSinkMut<'_>,
    ) -> RResult<(), PluginError> {
        guard(T::info().name, || {
            let step = step.map(|s| s.as_str()).into_option();
            let mut send = |event: Event| sink.send(RunEvent::from(event));
            self.0
                .stream_events(run_id.as_str(), step, follow, &mut send)
        })
    }

    fn cancel(&self, run_id: RStr<'_>) -> RResult<(), PluginError> {
        guard(T::info().name, || self.0.cancel(run_id.as_str()))
    }

    fn schedules(&self, request_json: RStr<'_>) -> RResult<RString, PluginError> {
        guard(T::info().name, || {
            let request = ScheduleRequest::from_json(request_json.as_str())?;
            self.0
                .schedules(request)
                .map(|reply| reply.to_json().into())
        })
    }
}

pub fn orchestrator_box<T: OrchestratorPlugin>(orchestrator: T) -> OrchestratorBox {
    Orchestrator_TO::from_ptr(RBox::new(OrchestratorAdapter(orchestrator)), TD_Opaque)
}

// ---- entry points, generic so that the export macros and the built-ins share them ----

fn unsupported<T>(what: &str, name: &str, kind: PluginKind) -> RResult<T, PluginError> {
    RResult::RErr(PluginError::unsupported(format!(
        "plugin `{name}` is an {kind} plugin and cannot be used as {what}"
    )))
}

pub extern "C" fn store_metadata<T: StorePlugin>() -> RResult<PluginMetadata, PluginError> {
    guard(T::info().name, || {
        Ok(T::info().to_abi(PluginKind::ARTIFACT_STORE))
    })
}

pub extern "C" fn store_validate<T: StorePlugin>(config: RStr<'_>) -> RResult<(), PluginError> {
    guard(T::info().name, || {
        T::validate(&PluginConfig::from_json(config.as_str())?)
    })
}

pub extern "C" fn store_new<T: StorePlugin>(
    config: RStr<'_>,
) -> RResult<ArtifactStoreBox, PluginError> {
    guard(T::info().name, || {
        let config = PluginConfig::from_json(config.as_str())?;
        T::validate(&config)?;
        T::new(config).map(store_box)
    })
}

pub extern "C" fn store_no_orchestrator<T: StorePlugin>(
    _config: RStr<'_>,
    _store: ArtifactStoreBox,
) -> RResult<OrchestratorBox, PluginError> {
    unsupported(
        "an orchestrator",
        T::info().name,
        PluginKind::ARTIFACT_STORE,
    )
}

pub extern "C" fn orchestrator_metadata<T: OrchestratorPlugin>()
-> RResult<PluginMetadata, PluginError> {
    guard(T::info().name, || {
        Ok(T::info().to_abi(PluginKind::ORCHESTRATOR))
    })
}

pub extern "C" fn orchestrator_validate<T: OrchestratorPlugin>(
    config: RStr<'_>,
) -> RResult<(), PluginError> {
    guard(T::info().name, || {
        T::validate(&PluginConfig::from_json(config.as_str())?)
    })
}

pub extern "C" fn orchestrator_no_store<T: OrchestratorPlugin>(
    _config: RStr<'_>,
) -> RResult<ArtifactStoreBox, PluginError> {
    unsupported(
        "an artifact store",
        T::info().name,
        PluginKind::ORCHESTRATOR,
    )
}

pub extern "C" fn orchestrator_new<T: OrchestratorPlugin>(
    config: RStr<'_>,
    store: ArtifactStoreBox,
) -> RResult<OrchestratorBox, PluginError> {
    guard(T::info().name, || {
        let config = PluginConfig::from_json(config.as_str())?;
        T::validate(&config)?;
        T::new(config, Store::new(store)).map(orchestrator_box)
    })
}

/// The root module of an artifact-store plugin.
pub fn store_module<T: StorePlugin>() -> PluginModuleRef {
    PluginModule {
        metadata: store_metadata::<T>,
        validate_settings: store_validate::<T>,
        new_store: store_new::<T>,
        new_orchestrator: store_no_orchestrator::<T>,
    }
    .leak_into_prefix()
}

/// The root module of an orchestrator plugin.
pub fn orchestrator_module<T: OrchestratorPlugin>() -> PluginModuleRef {
    PluginModule {
        metadata: orchestrator_metadata::<T>,
        validate_settings: orchestrator_validate::<T>,
        new_store: orchestrator_no_store::<T>,
        new_orchestrator: orchestrator_new::<T>,
    }
    .leak_into_prefix()
}

/// Export an artifact-store plugin from a `cdylib` crate.
#[macro_export]
macro_rules! export_store_plugin {
    ($plugin:ty) => {
        $crate::__export_root_module!($crate::sdk::store_module::<$plugin>);
    };
}

/// Export an orchestrator plugin from a `cdylib` crate.
#[macro_export]
macro_rules! export_orchestrator_plugin {
    ($plugin:ty) => {
        $crate::__export_root_module!($crate::sdk::orchestrator_module::<$plugin>);
    };
}

/// What abi_stable's `#[export_root_module]` generates, spelled with `$crate` paths so that
/// plugin crates depend on orchestrator-core alone. The static's name is abi_stable's
/// `ROOT_MODULE_LOADER_NAME` (a unit test keeps the two in step).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_root_module {
    ($root:expr) => {
        #[unsafe(no_mangle)]
        pub static _1as_0lib_1header_0root_bmodule_bloader:
            $crate::__private::abi_stable::library::LibHeader = {
            extern "C" fn erased_root_module()
            -> $crate::__private::abi_stable::library::RootModuleResult {
                fn root() -> $crate::abi::PluginModuleRef {
                    $crate::sdk::__install_panic_hook();
                    ($root)()
                }
                $crate::__private::abi_stable::library::__call_root_module_loader(root)
            }
            unsafe {
                $crate::__private::abi_stable::library::LibHeader::from_constructor::<
                    $crate::abi::PluginModuleRef,
                >(
                    erased_root_module,
                    $crate::__private::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}
