//! ferry's layered configuration: which stack a run uses, where plugins live, the default pipeline.
//!
//! Layers, lowest to highest precedence:
//! 1. built-in defaults (a `local` stack, so ferry works with no file at all);
//! 2. the user config file (missing is fine);
//! 3. the project `ferry.toml`, found by walking up from the current directory;
//! 4. `FERRY_STACK`, `FERRY_PIPELINE` and `FERRY_`-prefixed variables containing `__`
//!    (`FERRY_STACKS__S3__STORE__SETTINGS__BUCKET=b`); other `FERRY_` variables are ignored;
//! 5. `--set key=value` arguments, later ones winning.
//!
//! Layers deep-merge key by key, with one exception: a stack defined in a *file* replaces any
//! lower definition of that stack, so redefining `local` does not inherit the built-in
//! artifact path. Environment variables and `--set` patch single keys of a stack instead.
//!
//! Keys keep their case everywhere (plugin settings such as `accessKeyId` or `AWS_REGION` reach
//! the plugin as written). Environment names cannot carry case, so for them the structural
//! segments are lowercased, and stack names and settings keys reuse the spelling of a matching
//! lower-layer key ignoring case; a new settings key is kept exactly as written after the prefix
//! (`..__SETTINGS__AWS_REGION` gives `AWS_REGION`, `..__SETTINGS__region` gives `region`).
//!
//! Relative `pipeline` and `plugin_dirs` are resolved against the project root, whichever layer
//! set them, because the same files must work from any subdirectory.

mod error;
mod layer;
mod template;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::{ConfigError, Origin, Result};
pub use template::init_template;

use error::suggest;
use layer::{Layer, RawComponent};

/// The project file name, looked up from the current directory towards the root.
pub const PROJECT_FILE: &str = "ferry.toml";
/// The stack ferry uses when nothing selects another.
pub const DEFAULT_STACK: &str = "local";
/// The pipeline file ferry runs when none is named.
pub const DEFAULT_PIPELINE: &str = "pipeline.yaml";
/// Where the built-in `local` store keeps artifacts, relative to the project root.
pub const DEFAULT_ARTIFACT_DIR: &str = ".ferry/artifacts";
/// Prefix of the environment variables that take part in configuration.
pub const ENV_PREFIX: &str = "FERRY_";

/// A loaded configuration with every path made absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The directory holding the `ferry.toml` used, else the current directory.
    pub project_root: PathBuf,
    /// The `ferry.toml` used, if any.
    pub project_file: Option<PathBuf>,
    /// The user config used, if it existed.
    pub user_file: Option<PathBuf>,
    /// The stack used when `--stack` is not given.
    pub default_stack: String,
    /// The default pipeline file, joined to `project_root`.
    pub pipeline: PathBuf,
    /// Extra plugin directories, joined to `project_root`.
    pub plugin_dirs: Vec<PathBuf>,
    /// `[package]`: how code packages for remote stacks are built.
    pub package: PackageConfig,
    /// Every defined stack, each complete.
    pub stacks: BTreeMap<String, StackConfig>,
}

impl Config {
    /// The stack to use: `name` (from `--stack`) or `default_stack`.
    ///
    /// The selection is checked here rather than at load time so that a user config naming a
    /// stack one project lacks does not break `--stack other` in that project.
    pub fn stack(&self, name: Option<&str>) -> Result<(&str, &StackConfig), ConfigError> {
        let name = name.unwrap_or(&self.default_stack);
        self.stacks
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| ConfigError::UnknownStack {
                name: name.to_owned(),
                suggestion: suggest(name, self.stacks.keys().map(String::as_str)),
                defined: self.stacks.keys().cloned().collect(),
            })
    }
}

/// The two plugins a run needs: one to execute steps, one to keep their artifacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackConfig {
    pub orchestrator: ComponentConfig,
    pub store: ComponentConfig,
}

/// A plugin and its settings; the settings are free-form because only the plugin can check them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentConfig {
    pub plugin: String,
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// What loading does to the text of a `ferry.toml`: parse it, check every key and type, and
/// merge it over the defaults. For fuzzing and for tools that check config files; it never
/// panics, whatever the text.
pub fn check_project_file(text: &str) -> Result<()> {
    let file = Layer::from_text(Path::new("ferry.toml"), text)?;
    layer::merge(&[Layer::defaults(), file]).map(|_| ())
}

/// Collects the inputs of a load so tests can supply them without touching the process.
#[derive(Debug, Clone, Default)]
pub struct ConfigLoader {
    cwd: PathBuf,
    user_config: Option<PathBuf>,
    env: Vec<(String, String)>,
    overrides: Vec<(String, String)>,
}

impl ConfigLoader {
    /// Starts a load from `cwd`; an empty path means the process's current directory.
    pub fn new(cwd: impl Into<PathBuf>) -> Self {
        Self {
            cwd: cwd.into(),
            ..Self::default()
        }
    }

    /// The user config file to read; the CLI passes [`default_user_config_path`].
    #[must_use]
    pub fn user_config(mut self, path: Option<PathBuf>) -> Self {
        self.user_config = path;
        self
    }

    /// Environment variables, in order; may be called repeatedly (later pairs win).
    #[must_use]
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(vars);
        self
    }

    /// `--set key=value` overrides as (dotted key, value), in order; they are checked by
    /// [`ConfigLoader::load`].
    #[must_use]
    pub fn set(mut self, overrides: impl IntoIterator<Item = (String, String)>) -> Self {
        self.overrides.extend(overrides);
        self
    }

    /// Reads, checks and merges every layer.
    pub fn load(self) -> Result<Config> {
        let cwd = if self.cwd.as_os_str().is_empty() {
            std::env::current_dir().map_err(ConfigError::CurrentDir)?
        } else {
            std::path::absolute(&self.cwd).map_err(ConfigError::CurrentDir)?
        };
        let project_file = find_project_file(&cwd);
        let project_root = project_file
            .as_deref()
            .and_then(Path::parent)
            .map_or_else(|| cwd.clone(), Path::to_path_buf);

        let mut layers = vec![Layer::defaults()];
        let mut user_file = None;
        if let Some(path) = self.user_config.filter(|p| !p.as_os_str().is_empty())
            && let Some(layer) = Layer::from_file(&path)?
        {
            push_file_layer(&mut layers, layer);
            user_file = Some(path);
        }
        if let Some(path) = &project_file {
            let layer = Layer::from_file(path)?.ok_or_else(|| ConfigError::Read {
                path: path.clone(),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
            push_file_layer(&mut layers, layer);
        }
        for (name, value) in &self.env {
            if let Some(layer) = Layer::from_env(name, value, &layers)? {
                layers.push(layer);
            }
        }
        for (key, value) in &self.overrides {
            layers.push(Layer::from_set(key, value)?);
        }

        let raw = layer::merge(&layers)?;
        let stacks = raw
            .stacks
            .into_iter()
            .map(|(name, stack)| {
                let orchestrator = component(&name, "orchestrator", stack.orchestrator)?;
                let store = component(&name, "store", stack.store)?;
                Ok((
                    name,
                    StackConfig {
                        orchestrator,
                        store,
                    },
                ))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;

        Ok(Config {
            pipeline: project_root.join(raw.pipeline),
            plugin_dirs: raw
                .plugin_dirs
                .iter()
                .map(|dir| project_root.join(dir))
                .collect(),
            package: PackageConfig::from_raw(raw.package)?,
            default_stack: raw.stack,
            project_root,
            project_file,
            user_file,
            stacks,
        })
    }
}

/// How code packages are built (`[package]` in ferry.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageConfig {
    /// Gitignored paths (or globs) to ship anyway, relative to the project root.
    pub include: Vec<String>,
    /// zstd level, 1 (fast) to 19 (small); default 3.
    pub compression_level: i32,
    /// Warn (and list the largest files) above this compressed size.
    pub warn_bytes: u64,
    /// Refuse to build a package above this compressed size.
    pub max_bytes: u64,
}

impl Default for PackageConfig {
    fn default() -> Self {
        Self {
            include: Vec::new(),
            compression_level: 3,
            warn_bytes: 20 * MIB,
            max_bytes: 512 * MIB,
        }
    }
}

const MIB: u64 = 1024 * 1024;

impl PackageConfig {
    fn from_raw(raw: layer::RawPackage) -> Result<Self> {
        let defaults = Self::default();
        let level = match raw.compression_level {
            None => defaults.compression_level,
            Some(level @ 1..=19) => level as i32,
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "package.compression_level must be from 1 to 19, found {other}"
                )));
            }
        };
        let size = |value: Option<i64>, key: &str, default: u64| match value {
            None => Ok(default),
            Some(mib @ 1..) => Ok(mib as u64 * MIB),
            Some(other) => Err(ConfigError::Invalid(format!(
                "package.{key} must be a positive number of MiB, found {other}"
            ))),
        };
        let max_bytes = size(raw.max_size_mib, "max_size_mib", defaults.max_bytes)?;
        // Lowering only the limit lowers the warning threshold with it.
        let warn_default = defaults.warn_bytes.min(max_bytes);
        let config = Self {
            include: raw.include,
            compression_level: level,
            warn_bytes: size(raw.warn_size_mib, "warn_size_mib", warn_default)?,
            max_bytes,
        };
        if config.warn_bytes > config.max_bytes {
            return Err(ConfigError::Invalid(
                "package.warn_size_mib is larger than package.max_size_mib".to_string(),
            ));
        }
        Ok(config)
    }
}

/// A file's stacks replace lower definitions whole, so leftovers cannot leak into them.
fn push_file_layer(layers: &mut Vec<Layer>, layer: Layer) {
    let names = layer.stack_names();
    for lower in layers.iter_mut() {
        lower.remove_stacks(&names);
    }
    layers.push(layer);
}

fn component(
    stack: &str,
    part: &'static str,
    raw: Option<RawComponent>,
) -> Result<ComponentConfig> {
    let raw = raw.ok_or_else(|| ConfigError::MissingComponent {
        stack: stack.to_owned(),
        component: part,
    })?;
    match raw.plugin {
        Some(plugin) if !plugin.trim().is_empty() => Ok(ComponentConfig {
            plugin,
            settings: raw.settings,
        }),
        _ => Err(ConfigError::MissingPlugin {
            stack: stack.to_owned(),
            component: part,
        }),
    }
}

/// Walk up from `start` to find ferry.toml, so ferry works from any subdirectory of a project.
pub fn find_project_file(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(PROJECT_FILE))
        .find(|candidate| candidate.is_file())
}

/// The user config path the CLI should use: `$FERRY_CONFIG` when set and non-empty, else
/// `<config dir>/ferry/config.toml`; `None` only where the platform has no config directory.
pub fn default_user_config_path(ferry_config: Option<OsString>) -> Option<PathBuf> {
    match ferry_config.filter(|v| !v.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None => dirs::config_dir().map(|dir| dir.join("ferry").join("config.toml")),
    }
}
