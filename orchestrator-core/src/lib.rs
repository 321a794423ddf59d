//! ferry's core: the stable plugin interface and SDK, the plugin loader, the pipeline model,
//! configuration and stacks, run records, step caching, and the built-in local stack.
//!
//! Layering: [`abi`] is the binary contract; [`sdk`] turns plain Rust traits into it;
//! [`loader`] finds and loads plugin files; [`stack`] builds a stack's store and orchestrator
//! from configuration (built-ins or plugins); [`local`] is the built-in orchestrator.

pub mod abi;
pub mod config;
pub mod env_vars;
pub mod fuzz;
pub mod loader;
pub mod local;
pub mod package;
pub mod pipeline;
pub mod run;
pub mod sdk;
pub mod stack;
pub mod store;
pub mod suggest;

#[doc(hidden)]
pub mod __private {
    //! Re-exports the export macros expand to; not part of the public API.
    pub use abi_stable;
}
