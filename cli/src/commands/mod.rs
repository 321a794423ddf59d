//! One module per subcommand.

pub mod agent;
pub mod artifacts;
pub mod completions;
pub mod gc;
pub mod init;
pub mod logs;
pub mod package;
pub mod plugins;
pub mod run;
pub mod runs;
pub mod schedule;
pub mod stack;
pub mod ui;
pub mod validate;
