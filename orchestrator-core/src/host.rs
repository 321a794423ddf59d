//! The host's side of the plugin boundary: open a plugin file, read what it says about itself,
//! create its store or orchestrator, and call that orchestrator with plain Rust types.
//!
//! The host (ferry's loader and stacks) goes through this module so that it never names the
//! FFI types; searching for plugin files and explaining failures to users stay in the host.

use std::fmt;
use std::path::Path;

use abi_stable::library::{LibraryError, lib_header_from_path};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RStr};

use crate::abi::{
    EventSink, EventSink_TO, OrchestratorBox, PluginError, PluginKind, PluginModuleRef, RunEvent,
};
use crate::run::{Event, RunPlan, RunRecord};
use crate::schedule::{ScheduleReply, ScheduleRequest};
use crate::sdk::{self, OrchestratorPlugin, PluginConfig, StorePlugin};
use crate::store::Store;

/// The file extension of plugin libraries on this platform (`so`, `dylib`, `dll`).
pub const LIBRARY_EXTENSION: &str = std::env::consts::DLL_EXTENSION;

/// The library file cargo builds for package `name` (`my-store` → `libmy_store.so`).
pub fn library_file_name(name: &str) -> String {
    format!(
        "{}{}.{LIBRARY_EXTENSION}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_")
    )
}

/// Metadata of a plugin, in plain Rust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDescription {
    pub name: String,
    pub kind: PluginKind,
    pub version: String,
    pub interface_version: String,
    pub description: String,
    pub config_keys: Vec<(String, String)>,
}

/// Whether a plugin built against interface `plugin` loads in this host. The policy
/// (PLUGINS.md): the same major version (the same minor, while the major is 0); patch versions
/// may differ either way, because they only ever append after the last prefix field.
/// abi_stable on its own would accept a newer 0.x minor whose layout happens to match; ferry
/// does not.
pub fn is_compatible_interface(plugin: &str) -> bool {
    let major_minor = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split('.').map(|p| p.parse::<u64>().ok());
        Some((parts.next()??, parts.next()??))
    };
    match (major_minor(crate::INTERFACE_VERSION), major_minor(plugin)) {
        (Some((0, host_minor)), Some((0, minor))) => host_minor == minor,
        (Some((host_major, _)), Some((major, _))) => host_major == major,
        _ => false,
    }
}

/// Why a file could not be opened as a plugin, before the host adds which file and what to do.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The file could not be read at all.
    Unreadable { reason: String },
    /// A library that is not a ferry plugin; `details` is abi_stable's full report.
    NotAPlugin { reason: String, details: String },
    /// Built for another interface version.
    IncompatibleVersion { found: String },
    /// The same version but a different binary layout; `summary` is one line of `details`.
    LayoutMismatch { summary: String, details: String },
    /// The plugin failed while initialising or describing itself.
    Broken { message: String },
}

/// A plugin's root module: its metadata and constructors. Cheap to copy; a module opened from a
/// file stays loaded for the life of the process.
#[derive(Clone, Copy)]
pub struct PluginModule(PluginModuleRef);

impl fmt::Debug for PluginModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PluginModule")
    }
}

impl PluginModule {
    /// Opens a plugin file: checks its interface version and binary layout, then initialises
    /// it. Nothing is created yet.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        if let Err(error) = std::fs::metadata(path) {
            return Err(OpenError::Unreadable {
                reason: error.to_string(),
            });
        }
        let header = lib_header_from_path(path).map_err(classify)?;
        let found = header.version_strings().version;
        if !is_compatible_interface(&found) {
            return Err(OpenError::IncompatibleVersion {
                found: found.to_string(),
            });
        }
        let module = header
            .init_root_module::<PluginModuleRef>()
            .map_err(classify)?;
        Ok(Self(module))
    }

    /// A store compiled into the host, behind the same interface as a plugin file.
    pub fn builtin_store<T: StorePlugin>() -> Self {
        Self(sdk::store_module::<T>())
    }

    /// An orchestrator compiled into the host, behind the same interface as a plugin file.
    pub fn builtin_orchestrator<T: OrchestratorPlugin>() -> Self {
        Self(sdk::orchestrator_module::<T>())
    }

    /// What the plugin says about itself.
    pub fn describe(self) -> Result<PluginDescription, PluginError> {
        let metadata = (self.0.metadata())().into_result()?;
        Ok(PluginDescription {
            name: metadata.name.into_string(),
            kind: metadata.kind,
            version: metadata.version.into_string(),
            interface_version: metadata.interface_version.into_string(),
            description: metadata.description.into_string(),
            config_keys: metadata
                .config_keys
                .into_iter()
                .map(|k| (k.key.into_string(), k.doc.into_string()))
                .collect(),
        })
    }

    /// Creates the plugin's artifact store.
    pub fn new_store(self, config: &PluginConfig) -> Result<Store, PluginError> {
        let json = config.to_json();
        (self.0.new_store())(RStr::from(json.as_str()))
            .into_result()
            .map(Store::new)
    }

    /// Creates the plugin's orchestrator, handing it the stack's store. `name` is the plugin
    /// name the stack used, for messages.
    pub fn new_orchestrator(
        self,
        name: &str,
        config: &PluginConfig,
        store: &Store,
    ) -> Result<OrchestratorHandle, PluginError> {
        let json = config.to_json();
        let inner =
            (self.0.new_orchestrator())(RStr::from(json.as_str()), store.as_abi()).into_result()?;
        Ok(OrchestratorHandle {
            inner,
            name: name.to_string(),
        })
    }
}

fn classify(error: LibraryError) -> OpenError {
    let details = error.to_string();
    match error {
        LibraryError::OpenError { .. } => OpenError::NotAPlugin {
            reason: "the file is not a loadable shared library".to_string(),
            details,
        },
        LibraryError::GetSymbolError { .. } => OpenError::NotAPlugin {
            reason: "it exports no ferry plugin module".to_string(),
            details,
        },
        LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => {
            OpenError::NotAPlugin {
                reason: "it was built with an incompatible abi_stable".to_string(),
                details,
            }
        }
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
            OpenError::IncompatibleVersion {
                found: actual_version.to_string(),
            }
        }
        LibraryError::AbiInstability(_) => OpenError::LayoutMismatch {
            summary: layout_summary(&details),
            details,
        },
        LibraryError::RootModule { .. } => OpenError::Broken {
            message: first_line(&details, "its root module failed to initialise"),
        },
        _ => OpenError::NotAPlugin {
            reason: first_line(&details, "unknown loader error"),
            details,
        },
    }
}

fn first_line(text: &str, fallback: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(200).collect())
        .unwrap_or_else(|| fallback.to_string())
}

/// abi_stable's layout report runs to thousands of lines; its last `Error:` block says what
/// differs. Keep one line of it.
fn layout_summary(report: &str) -> String {
    report
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('-') && !l.starts_with('}'))
        .map(|l| l.chars().take(160).collect())
        .unwrap_or_else(|| "type layouts differ".to_string())
}

/// A live orchestrator, with plain Rust types.
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

    /// Manage the orchestrator's schedules; see [`crate::schedule`].
    pub fn schedules(&self, request: &ScheduleRequest) -> Result<ScheduleReply, PluginError> {
        let json = request.to_json();
        let reply = self
            .inner
            .schedules(RStr::from(json.as_str()))
            .into_result()?
            .into_string();
        ScheduleReply::from_json(&reply).map_err(|e| {
            PluginError::other(format!(
                "orchestrator `{}` returned a malformed schedule reply: {}",
                self.name,
                e.message()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_macro_uses_abi_stables_symbol_name() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader",
            "update the static's name in sdk::__export_root_module"
        );
    }

    #[test]
    fn interface_compatibility_follows_the_documented_policy() {
        let (major, minor) = {
            let mut parts = crate::INTERFACE_VERSION.split('.');
            let major: u64 = parts.next().unwrap().parse().unwrap();
            let minor: u64 = parts.next().unwrap().parse().unwrap();
            (major, minor)
        };
        assert!(is_compatible_interface(crate::INTERFACE_VERSION));
        assert!(is_compatible_interface(&format!("{major}.{minor}.999")));
        if major == 0 {
            assert!(!is_compatible_interface(&format!("0.{}.0", minor + 1)));
        }
        assert!(!is_compatible_interface(&format!("{}.0.0", major + 1)));
        assert!(!is_compatible_interface("not a version"));
    }

    #[test]
    fn a_text_file_is_not_a_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(library_file_name("fake"));
        std::fs::write(&path, "not a library").unwrap();
        match PluginModule::open(&path) {
            Err(OpenError::NotAPlugin { reason, .. }) => {
                assert!(reason.contains("not a loadable shared library"), "{reason}")
            }
            other => panic!("expected NotAPlugin, got {other:?}"),
        }
    }
}
