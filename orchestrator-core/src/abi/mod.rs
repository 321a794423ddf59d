//! The stable binary interface between ferry and its plugins.
//!
//! Everything here crosses a `cdylib` boundary, so every type is `#[repr(C)]` or
//! `#[repr(transparent)]` and derives [`StableAbi`]: abi_stable checks the whole layout when a
//! plugin is loaded and refuses a mismatch instead of crashing. Shapes that are expected to grow
//! (plugin settings, run plans, run records) cross as JSON text with a schema version, so they can
//! change without touching this module.
//!
//! # Versioning
//! The interface version is this crate's version. abi_stable refuses a plugin whose interface
//! version is incompatible (a different `0.x` minor); additive changes (a new method appended
//! after the `#[sabi(last_prefix_field)]` marker of a trait or module) only bump the patch
//! version, so an older ferry keeps loading newer plugins.
#![allow(non_local_definitions)] // emitted by `#[sabi_trait]` on current rustc

use std::fmt;

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::RMut,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
};

/// The interface version plugins are built against: this crate's package version.
pub const INTERFACE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Version of the JSON envelopes (settings, run plans) handed to plugins.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// What went wrong inside a plugin, coarse enough for the host to react to.
///
/// A transparent `u8` rather than an enum: a newer plugin may report a kind this ferry does not
/// know, which must read as [`ErrorKind::OTHER`] instead of being undefined behaviour.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorKind(u8);

impl ErrorKind {
    pub const OTHER: Self = Self(0);
    pub const NOT_FOUND: Self = Self(1);
    pub const ALREADY_EXISTS: Self = Self(2);
    pub const INVALID_INPUT: Self = Self(3);
    pub const UNAUTHENTICATED: Self = Self(4);
    pub const PERMISSION_DENIED: Self = Self(5);
    pub const UNAVAILABLE: Self = Self(6);
    pub const TIMEOUT: Self = Self(7);
    pub const CANCELLED: Self = Self(8);
    pub const UNSUPPORTED: Self = Self(9);
    /// The plugin panicked; the SDK turned the panic into this error.
    pub const PANICKED: Self = Self(10);

    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "not found",
            2 => "already exists",
            3 => "invalid input",
            4 => "unauthenticated",
            5 => "permission denied",
            6 => "unavailable",
            7 => "timeout",
            8 => "cancelled",
            9 => "unsupported",
            10 => "panicked",
            _ => "other",
        }
    }
}

impl fmt::Debug for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The one error type that crosses the plugin boundary: a kind and a message that says what
/// failed and, where the plugin knows, what to do about it.
#[repr(C)]
#[derive(StableAbi, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub kind: ErrorKind,
    pub message: RString,
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: RString::from(message.into()),
        }
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OTHER, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NOT_FOUND, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::INVALID_INPUT, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UNSUPPORTED, message)
    }

    pub fn message(&self) -> &str {
        self.message.as_str()
    }
}

impl fmt::Debug for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PluginError({}: {})", self.kind, self.message)
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

/// Which role a plugin fills in a stack.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PluginKind(u8);

impl PluginKind {
    pub const ARTIFACT_STORE: Self = Self(1);
    pub const ORCHESTRATOR: Self = Self(2);

    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "artifact-store",
            2 => "orchestrator",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A settings key a plugin accepts, with a one-line description for `ferry plugins inspect`.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct ConfigKeyDoc {
    pub key: RString,
    pub doc: RString,
}

/// What a plugin says about itself; read before any instance is created.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PluginMetadata {
    pub name: RString,
    pub kind: PluginKind,
    /// The plugin's own version.
    pub version: RString,
    /// The [`INTERFACE_VERSION`] the plugin was built against.
    pub interface_version: RString,
    pub description: RString,
    pub config_keys: RVec<ConfigKeyDoc>,
}

/// Size, digest and modification time of a stored object.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: RString,
    pub size: u64,
    /// A content digest or entity tag, when the store has one; opaque to ferry.
    pub digest: ROption<RString>,
    /// Milliseconds since the Unix epoch.
    pub modified_ms: i64,
}

/// The result of listing a prefix: objects directly under it (or all below it, when listing
/// recursively) and, when listing by level, the "directories" one level down.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default)]
pub struct Listing {
    pub objects: RVec<ObjectMeta>,
    pub prefixes: RVec<RString>,
}

/// Kinds of [`RunEvent`]; transparent for the same reason as [`ErrorKind`].
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct EventKind(u8);

impl EventKind {
    /// A line a step wrote to stdout.
    pub const STDOUT: Self = Self(1);
    /// A line a step wrote to stderr.
    pub const STDERR: Self = Self(2);
    /// A step changed state; `text` is the new status (see `run::StepStatus`).
    pub const STEP_STATUS: Self = Self(3);
    /// The run changed state; `text` is the new status (see `run::RunStatus`).
    pub const RUN_STATUS: Self = Self(4);
    /// Something the orchestrator wants the user to know (retries, cache hits, skipped lines).
    pub const NOTICE: Self = Self(5);
}

/// One thing that happened in a run: a log line or a status change.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct RunEvent {
    pub kind: EventKind,
    /// The step it belongs to; empty for run-level events.
    pub step: RString,
    pub text: RString,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
}

/// Hears how far an upload has got; implemented by the host (progress bars).
#[sabi_trait]
pub trait ProgressSink {
    #[sabi(last_prefix_field)]
    fn progress(&mut self, done: u64, total: u64);
}

/// A borrowed progress sink, as passed to [`ArtifactStore::put_file_with_progress`].
pub type ProgressSinkMut<'a> = ProgressSink_TO<'a, RMut<'a, ()>>;

/// Where an orchestrator delivers run events; implemented by the host.
#[sabi_trait]
pub trait EventSink {
    /// Deliver one event. Returning `false` asks the orchestrator to stop streaming (the run
    /// itself goes on).
    #[sabi(last_prefix_field)]
    fn send(&mut self, event: RunEvent) -> bool;
}

/// A borrowed event sink, as passed to [`Orchestrator::stream_events`].
pub type EventSinkMut<'a> = EventSink_TO<'a, RMut<'a, ()>>;

/// Where a run's code, outputs, logs and records live.
///
/// # Contract
/// - Keys are `/`-separated relative paths (`runs/<id>/run.json`); no leading `/`, no `..`.
/// - Every put is atomic: readers see the old object, or the whole new one, never a part.
/// - Large data moves as local file paths, never as whole files in memory.
/// - `get_*` and `head` on a missing key fail with [`ErrorKind::NOT_FOUND`].
/// - Calls block; implementations run their own async runtime if they need one.
#[sabi_trait]
pub trait ArtifactStore: Clone + Send + Sync {
    /// Where the store lives, e.g. `file:///home/me/proj/.ferry/artifacts` or `s3://b/prefix`.
    /// Never contains credentials.
    fn url(&self) -> RString;

    /// Upload the local file at `path` under `key`.
    fn put_file(&self, key: RStr<'_>, path: RStr<'_>) -> RResult<ObjectMeta, PluginError>;

    /// Download `key` to the local file `path` (created or replaced atomically).
    fn get_file(&self, key: RStr<'_>, path: RStr<'_>) -> RResult<ObjectMeta, PluginError>;

    /// Store a small blob (records, cache entries) under `key`.
    fn put_bytes(&self, key: RStr<'_>, data: RSlice<'_, u8>) -> RResult<ObjectMeta, PluginError>;

    /// Read a small blob.
    fn get_bytes(&self, key: RStr<'_>) -> RResult<RVec<u8>, PluginError>;

    fn head(&self, key: RStr<'_>) -> RResult<ObjectMeta, PluginError>;

    /// List under `prefix`: every object below it when `recursive`, else one level (objects and
    /// sub-prefixes). `prefix` is a directory-like prefix; `""` is the root.
    fn list(&self, prefix: RStr<'_>, recursive: bool) -> RResult<Listing, PluginError>;

    /// [`put_file`](Self::put_file), reporting `(bytes sent, total)` to `progress` as it goes.
    fn put_file_with_progress(
        &self,
        key: RStr<'_>,
        path: RStr<'_>,
        progress: ProgressSinkMut<'_>,
    ) -> RResult<ObjectMeta, PluginError>;

    /// Delete `key`; deleting a missing key is not an error.
    #[sabi(last_prefix_field)]
    fn delete(&self, key: RStr<'_>) -> RResult<(), PluginError>;
}

/// An artifact store behind the stable interface. Cloning is cheap (implementations share
/// their state), so one store can be handed to the orchestrator and kept by the host.
pub type ArtifactStoreBox = ArtifactStore_TO<'static, RBox<()>>;

/// Runs pipelines somewhere: local processes, Kubernetes Jobs, ...
///
/// # Contract
/// - Plans, statuses and records cross as JSON (`run::RunPlan`, `run::RunRecord`).
/// - `submit` returns as soon as the run is started; the run goes on without the caller.
/// - `stream_events` replays what happened so far and, with `follow`, blocks until the run (or
///   the step) ends or the sink returns `false`.
/// - Every run ends Succeeded, Failed or Cancelled in its run record; none stays "running".
#[sabi_trait]
pub trait Orchestrator: Send + Sync {
    /// A one-line description of where runs go, e.g. `local processes (parallelism 2)`.
    fn describe(&self) -> RString;

    /// Whether runs need the project's code package in the store (remote orchestrators run
    /// steps on machines without the project). The host builds and uploads it before `submit`
    /// and names it in the plan's `code.package_key`.
    fn wants_code_package(&self) -> bool;

    /// What `submit` would create for this plan, human-readable (YAML for Kubernetes).
    fn render(&self, plan_json: RStr<'_>) -> RResult<RString, PluginError>;

    /// Start a run; returns the run id.
    fn submit(&self, plan_json: RStr<'_>) -> RResult<RString, PluginError>;

    /// The run record (JSON) as the orchestrator currently knows it.
    fn status(&self, run_id: RStr<'_>) -> RResult<RString, PluginError>;

    /// Stream the events of a run (or of one step) into `sink`.
    fn stream_events(
        &self,
        run_id: RStr<'_>,
        step: ROption<RStr<'_>>,
        follow: bool,
        sink: EventSinkMut<'_>,
    ) -> RResult<(), PluginError>;

    /// Stop a run: running steps are terminated, the run is recorded as cancelled.
    #[sabi(last_prefix_field)]
    fn cancel(&self, run_id: RStr<'_>) -> RResult<(), PluginError>;

    /// Schedules (interface 0.1.4): a `schedule::ScheduleRequest` as JSON in, a
    /// `schedule::ScheduleReply` as JSON out. The default, which is also what a host gets from
    /// a plugin built before 0.1.4, is [`ErrorKind::UNSUPPORTED`].
    fn schedules(&self, request_json: RStr<'_>) -> RResult<RString, PluginError> {
        let _ = request_json;
        RResult::RErr(PluginError::unsupported(
            "this orchestrator cannot keep schedules",
        ))
    }
}

/// An orchestrator behind the stable interface.
pub type OrchestratorBox = Orchestrator_TO<'static, RBox<()>>;

/// The root module every plugin exports: its metadata and constructors.
///
/// A plugin of one kind answers the other kind's constructor with
/// [`ErrorKind::UNSUPPORTED`]; the loader checks the kind before calling either.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    pub metadata: extern "C" fn() -> RResult<PluginMetadata, PluginError>,

    /// Check settings without creating anything (no connections, no files).
    pub validate_settings: extern "C" fn(config_json: RStr<'_>) -> RResult<(), PluginError>,

    /// Create an artifact store from its settings (a `PluginConfig` as JSON).
    pub new_store: extern "C" fn(config_json: RStr<'_>) -> RResult<ArtifactStoreBox, PluginError>,

    /// Create an orchestrator from its settings; it keeps `store` for run records, logs and
    /// outputs.
    #[sabi(last_prefix_field)]
    pub new_orchestrator: extern "C" fn(
        config_json: RStr<'_>,
        store: ArtifactStoreBox,
    ) -> RResult<OrchestratorBox, PluginError>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "ferry_plugin";
    const NAME: &'static str = "ferry_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
