//! Errors from loading ferry's configuration, each naming where the bad value came from.

use std::fmt;
use std::path::PathBuf;

/// Result type used by the configuration module.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Where a configuration layer came from, so an error can point at the thing the user must edit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// ferry's built-in defaults.
    Defaults,
    /// A config file: the user config or the project `ferry.toml`.
    File(PathBuf),
    /// One `FERRY_` environment variable, by name.
    Env(String),
    /// One `--set` argument, as given.
    Set(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Defaults => f.write_str("the built-in defaults"),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::Set(arg) => write!(f, "--set {arg}"),
        }
    }
}

/// Everything that can go wrong while loading or querying the configuration.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum ConfigError {
    /// The loader was given no directory and the process has none either.
    #[error("cannot determine the current directory")]
    CurrentDir(#[source] std::io::Error),

    /// A config file exists but could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A config file is not valid TOML; `message` carries the line and column.
    #[error("cannot parse config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },

    /// A key that ferry does not know, usually a typo.
    #[error(
        "unknown key `{key}` in {origin}{}; valid keys here: {}",
        did_you_mean(.suggestion),
        .valid.join(", ")
    )]
    UnknownKey {
        origin: Origin,
        key: String,
        suggestion: Option<String>,
        valid: &'static [&'static str],
    },

    /// A known key holding the wrong kind of value.
    #[error("`{key}` in {origin} must be {expected}, not {found}")]
    InvalidType {
        origin: Origin,
        key: String,
        expected: &'static str,
        found: &'static str,
    },

    /// A `--set` argument or `FERRY_` variable that cannot be turned into a key.
    #[error("invalid override {origin}: {reason}")]
    InvalidOverride { origin: Origin, reason: String },

    /// A stack without an orchestrator or a store cannot run anything.
    #[error("stack `{stack}` has no {component}")]
    MissingComponent {
        stack: String,
        component: &'static str,
    },

    /// A component must name the plugin that implements it.
    #[error("stack `{stack}` has no plugin for its {component}")]
    MissingPlugin {
        stack: String,
        component: &'static str,
    },

    /// The selected stack (from `--stack` or the `stack` key) is not defined.
    #[error(
        "unknown stack `{name}`{}; defined stacks: {}",
        did_you_mean(.suggestion),
        .defined.join(", ")
    )]
    UnknownStack {
        name: String,
        suggestion: Option<String>,
        defined: Vec<String>,
    },

    /// The merged layers could not be read back; the per-layer checks should make this rare.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ConfigError {
    /// What to do about it, printed on its own line after the error.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Self::CurrentDir(_) => "run ferry from an existing directory".into(),
            Self::Read { .. } => "check that it is a readable file".into(),
            Self::Parse { .. } => "fix the TOML syntax at the position shown".into(),
            Self::MissingComponent { stack, component } => {
                format!("add `{component} = {{ plugin = \"...\" }}` under [stacks.{stack}]")
            }
            Self::MissingPlugin { component, .. } => {
                format!("set `{component}.plugin` to a plugin name such as \"local\"")
            }
            Self::UnknownStack { name, .. } => {
                format!("pick one of those or define [stacks.{name}] in ferry.toml")
            }
            _ => return None,
        })
    }
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// The closest candidate to a mistyped name, if any is close enough to be a plausible typo.
pub(super) fn suggest<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    orchestrator_core::suggest::did_you_mean(input, candidates).map(str::to_owned)
}
