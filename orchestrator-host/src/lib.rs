//! ferry's host: everything the `ferry` binary does around the plugin contract
//! (`orchestrator-core`), which plugins never compile.
//!
//! - [`loader`] finds plugin files on the search path; [`config`] reads `ferry.toml` and its
//!   layers; [`stack`] turns a stack's configuration into a live store and orchestrator
//!   (built-ins or plugins alike).
//! - [`package`] builds, uploads and unpacks the deterministic code package.
//! - [`lifecycle`] plans a run, says what its outcome means as an exit status, and is the
//!   runtime of `ferry agent` in a remote orchestrator's pod.
//! - [`local`] is the built-in orchestrator; [`stores`] the built-in artifact stores.
//! - [`errors`] is how errors read: the chain on one line, advice as a hint.
//! - [`fuzz`] holds the entry points the fuzz targets and their corpus tests share.

pub mod config;
pub mod errors;
pub mod fuzz;
pub mod lifecycle;
pub mod loader;
pub mod local;
pub mod package;
pub mod retention;
pub mod stack;
pub mod stores;
