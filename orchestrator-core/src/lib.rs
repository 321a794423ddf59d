//! ferry's plugin contract: what a plugin builds against, and nothing more.
//!
//! - [`sdk`]: the traits a plugin implements ([`sdk::StorePlugin`], [`sdk::OrchestratorPlugin`])
//!   and the export macros ([`export_store_plugin!`], [`export_orchestrator_plugin!`]).
//! - The types that cross the boundary: the [`pipeline`] model, the [`run`] plan, record and
//!   events (with the helpers every orchestrator needs: the DAG [`run::Frontier`], the
//!   store-backed [`run::RunRecords`], [`run::replay`]), the artifact [`store`] handle and its
//!   key [`store::layout`], and the one error type [`PluginError`].
//! - [`host`]: the host's side of the same boundary (opening a plugin file, calling a loaded
//!   orchestrator), so that the host never names the FFI types either.
//!
//! This crate is the only one that names abi_stable; [`abi`] is the binary layout itself. Its
//! version is the plugin interface version ([`INTERFACE_VERSION`]): host-only changes never move
//! it, so plugins built against it keep loading in newer ferry releases.
//!
//! Features: `object-store` (an adapter from an `object_store::ObjectStore`, for store plugins
//! built on object_store) and `conformance` (the artifact-store conformance suite, for a store
//! plugin's tests).

#[doc(hidden)]
pub mod abi;
pub mod env_vars;
pub mod host;
pub mod pipeline;
pub mod run;
pub mod schedule;
pub mod sdk;
pub mod store;
pub mod suggest;

pub use abi::{ErrorKind, INTERFACE_VERSION, JSON_SCHEMA_VERSION, PluginError, PluginKind};

#[doc(hidden)]
pub mod __private {
    //! Re-exports the export macros expand to; not part of the public API.
    pub use abi_stable;
}
