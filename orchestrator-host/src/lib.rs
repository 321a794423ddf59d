//! ferry's host: everything the `ferry` binary does around the plugin contract
//! (`orchestrator-core`), which plugins never compile.
//!
//! - [`loader`] finds plugin files on the search path; [`config`] reads `ferry.toml` and its
//!   layers; [`stack`] turns a stack's configuration into a live store and orchestrator
//!   (built-ins or plugins alike).
//! - [`package`] builds, uploads and unpacks the deterministic code package.
//! - [`local`] is the built-in orchestrator; [`stores`] the built-in artifact stores.
//! - [`fuzz`] holds the entry points the fuzz targets and their corpus tests share.

pub mod config;
pub mod fuzz;
pub mod loader;
pub mod local;
pub mod package;
pub mod stack;
pub mod stores;
