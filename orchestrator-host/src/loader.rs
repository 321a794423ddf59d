//! Finding and loading plugin files.
//!
//! Plugins are shared libraries exporting a ferry plugin module (opened with
//! [`PluginModule::open`], which checks the interface). They are searched in, in order: `--plugin-dir`, `$FERRY_PLUGIN_PATH`, `plugin_dirs` from the
//! config, the directory of the `ferry` executable, `../lib/ferry/plugins` beside it, and the
//! user data directory. The first file to claim a name wins; later ones are reported as
//! shadowed by `ferry plugins list`.
//!
//! Each file is opened on its own, so two files never share one module.

use std::fmt;
use std::path::{Path, PathBuf};

use orchestrator_core::PluginKind;
pub use orchestrator_core::host::{LIBRARY_EXTENSION, PluginDescription, library_file_name};
use orchestrator_core::host::{OpenError, PluginModule};
use thiserror::Error;

/// Why a directory is searched; shown by `ferry plugins list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchSource {
    CommandLine,
    Environment,
    Config,
    Executable,
    UserData,
}

impl fmt::Display for SearchSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SearchSource::CommandLine => "--plugin-dir",
            SearchSource::Environment => orchestrator_core::env_vars::FERRY_PLUGIN_PATH,
            SearchSource::Config => "config plugin_dirs",
            SearchSource::Executable => "beside ferry",
            SearchSource::UserData => "user plugins",
        })
    }
}

/// Where `ferry plugins install` puts plugins: `$XDG_DATA_HOME/ferry/plugins`, by default
/// `~/.local/share/ferry/plugins`. Last on the search path.
pub fn user_plugin_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|data| data.join("ferry/plugins"))
}

/// The ordered list of plugin directories.
#[derive(Debug, Clone, Default)]
pub struct SearchPath {
    pub dirs: Vec<(PathBuf, SearchSource)>,
}

impl SearchPath {
    /// The standard search path. `env_path` is the value of `$FERRY_PLUGIN_PATH`.
    pub fn standard(cli_dirs: &[PathBuf], env_path: Option<&str>, config_dirs: &[PathBuf]) -> Self {
        let mut path = SearchPath::default();
        for dir in cli_dirs {
            path.push(dir.clone(), SearchSource::CommandLine);
        }
        for dir in env_path.map(std::env::split_paths).into_iter().flatten() {
            if !dir.as_os_str().is_empty() {
                path.push(dir, SearchSource::Environment);
            }
        }
        for dir in config_dirs {
            path.push(dir.clone(), SearchSource::Config);
        }
        if let Some(exe_dir) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
        {
            path.push(
                exe_dir.join("../lib/ferry/plugins"),
                SearchSource::Executable,
            );
            // The executable's own directory goes first of the two: that is where cargo puts
            // workspace plugins next to a freshly built `ferry`.
            let lib_dir = path.dirs.pop().expect("just pushed");
            path.push(exe_dir, SearchSource::Executable);
            path.dirs.push(lib_dir);
        }
        if let Some(dir) = user_plugin_dir() {
            path.push(dir, SearchSource::UserData);
        }
        path
    }

    fn push(&mut self, dir: PathBuf, source: SearchSource) {
        if !self.dirs.iter().any(|(d, _)| d == &dir) {
            self.dirs.push((dir, source));
        }
    }

    /// Every plugin-looking file on the path, in search order. Missing directories are skipped.
    pub fn candidates(&self) -> Vec<(PathBuf, SearchSource)> {
        let mut found = Vec::new();
        for (dir, source) in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_library(p))
                .collect();
            files.sort();
            found.extend(files.into_iter().map(|f| (f, *source)));
        }
        found
    }

    /// Files whose name follows the convention for plugin `name` (`storage-s3` →
    /// `libstorage_s3.so`), in search order; tried before loading every candidate.
    pub fn conventional_files(&self, name: &str) -> Vec<PathBuf> {
        let file = library_file_name(name);
        self.dirs
            .iter()
            .map(|(dir, _)| dir.join(&file))
            .filter(|p| p.is_file())
            .collect()
    }
}

fn is_library(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e == LIBRARY_EXTENSION)
}

/// A plugin file that loaded.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub description: PluginDescription,
    pub module: PluginModule,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("description", &self.description)
            .finish()
    }
}

/// Why a file could not be used as a plugin. `Display` is one line naming the file, what was
/// expected, what was found and what to do; [`LoadError::details`] has the full report.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("{}: not a ferry plugin ({reason}); remove it from the plugin directory or rebuild it with orchestrator-core's export macro", path.display())]
    NotAPlugin {
        path: PathBuf,
        reason: String,
        details: String,
    },
    #[error("plugin file {}: built for plugin interface {found}, but this ferry speaks {expected}; rebuild the plugin against orchestrator-core {expected} (see PLUGINS.md), or use a ferry whose interface is {found}", path.display())]
    IncompatibleVersion {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{}: its plugin interface does not match this ferry's ({summary}); rebuild the plugin against orchestrator-core {expected} (run with -v for the full layout report)", path.display())]
    LayoutMismatch {
        path: PathBuf,
        expected: String,
        summary: String,
        details: String,
    },
    #[error("{}: cannot read the plugin file ({reason})", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{}: the plugin failed while describing itself: {message}; report this to the plugin's authors", path.display())]
    Broken { path: PathBuf, message: String },
    #[error("{}: plugin `{name}` is an {found} plugin, but an {expected} plugin is needed here; use it in the stack's `{}` entry instead", path.display(), component_for(*found))]
    WrongKind {
        path: PathBuf,
        name: String,
        expected: PluginKind,
        found: PluginKind,
    },
}

fn component_for(kind: PluginKind) -> &'static str {
    if kind == PluginKind::ORCHESTRATOR {
        "orchestrator"
    } else {
        "store"
    }
}

impl LoadError {
    /// The full report (abi_stable's layout comparison, the loader's error), for `-v`.
    pub fn details(&self) -> Option<&str> {
        match self {
            LoadError::NotAPlugin { details, .. } | LoadError::LayoutMismatch { details, .. } => {
                Some(details)
            }
            _ => None,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            LoadError::NotAPlugin { path, .. }
            | LoadError::Unreadable { path, .. }
            | LoadError::IncompatibleVersion { path, .. }
            | LoadError::LayoutMismatch { path, .. }
            | LoadError::Broken { path, .. }
            | LoadError::WrongKind { path, .. } => path,
        }
    }
}

/// Load one plugin file and read its metadata (no instance is created).
pub fn load(path: &Path) -> Result<LoadedPlugin, LoadError> {
    let path = path.to_path_buf();
    let module = PluginModule::open(&path).map_err(|error| load_error(&path, error))?;
    let description = module.describe().map_err(|e| LoadError::Broken {
        path: path.clone(),
        message: e.message().to_string(),
    })?;
    Ok(LoadedPlugin {
        path,
        description,
        module,
    })
}

/// Load a plugin and check that it is of the `expected` kind.
pub fn load_kind(path: &Path, expected: PluginKind) -> Result<LoadedPlugin, LoadError> {
    let plugin = load(path)?;
    if plugin.description.kind != expected {
        return Err(LoadError::WrongKind {
            path: plugin.path,
            name: plugin.description.name,
            expected,
            found: plugin.description.kind,
        });
    }
    Ok(plugin)
}

fn load_error(path: &Path, error: OpenError) -> LoadError {
    let path = path.to_path_buf();
    let expected = orchestrator_core::INTERFACE_VERSION.to_string();
    match error {
        OpenError::Unreadable { reason } => LoadError::Unreadable { path, reason },
        OpenError::IncompatibleVersion { found } => LoadError::IncompatibleVersion {
            path,
            expected,
            found,
        },
        OpenError::LayoutMismatch { summary, details } => LoadError::LayoutMismatch {
            path,
            expected,
            summary,
            details,
        },
        OpenError::Broken { message } => LoadError::Broken { path, message },
        OpenError::NotAPlugin { reason, details } => LoadError::NotAPlugin {
            path,
            reason,
            details,
        },
        other => LoadError::NotAPlugin {
            path,
            reason: format!("{other:?}"),
            details: String::new(),
        },
    }
}

/// Every plugin on the search path, with the files that failed and those shadowed by an
/// earlier plugin of the same name.
#[derive(Debug, Default)]
pub struct Discovery {
    pub plugins: Vec<(LoadedPlugin, SearchSource)>,
    pub shadowed: Vec<(LoadedPlugin, SearchSource)>,
    pub failed: Vec<(LoadError, SearchSource)>,
}

/// Load every candidate on the search path (for `ferry plugins list`).
pub fn discover(search: &SearchPath) -> Discovery {
    let mut discovery = Discovery::default();
    for (path, source) in search.candidates() {
        match load(&path) {
            Ok(plugin) => {
                let taken = discovery
                    .plugins
                    .iter()
                    .any(|(p, _)| p.description.name == plugin.description.name);
                if taken {
                    discovery.shadowed.push((plugin, source));
                } else {
                    discovery.plugins.push((plugin, source));
                }
            }
            Err(error) => discovery.failed.push((error, source)),
        }
    }
    discovery
}

/// Why a named plugin could not be found.
#[derive(Debug, Error)]
pub enum FindError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("no {kind} plugin named `{name}` in the plugin path ({searched}){hint}")]
    NotFound {
        name: String,
        kind: PluginKind,
        searched: String,
        hint: String,
    },
}

/// Find the plugin called `name` of `kind`: a path is loaded directly; otherwise the
/// conventional file name is tried first, then every file on the search path.
pub fn find(search: &SearchPath, name: &str, kind: PluginKind) -> Result<LoadedPlugin, FindError> {
    if name.contains(std::path::MAIN_SEPARATOR) || name.ends_with(LIBRARY_EXTENSION) {
        return Ok(load_kind(Path::new(name), kind)?);
    }
    for path in search.conventional_files(name) {
        let plugin = load(&path)?;
        if plugin.description.name == name {
            return check_kind(plugin, kind);
        }
    }
    let mut known = Vec::new();
    for (path, _) in search.candidates() {
        // Files that fail to load are not the one asked for; `plugins list` reports them.
        let Ok(plugin) = load(&path) else { continue };
        if plugin.description.name == name {
            return check_kind(plugin, kind);
        }
        known.push(plugin.description.name);
    }
    let hint = match orchestrator_core::suggest::did_you_mean(name, known.iter().map(String::as_str)) {
        Some(best) => format!("; did you mean `{best}`?"),
        None => "; build or install it, or add its directory with --plugin-dir or FERRY_PLUGIN_PATH (see `ferry plugins list`)".to_string(),
    };
    Err(FindError::NotFound {
        name: name.to_string(),
        kind,
        searched: search
            .dirs
            .iter()
            .map(|(d, _)| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        hint,
    })
}

fn check_kind(plugin: LoadedPlugin, kind: PluginKind) -> Result<LoadedPlugin, FindError> {
    if plugin.description.kind != kind {
        return Err(LoadError::WrongKind {
            path: plugin.path,
            name: plugin.description.name,
            expected: kind,
            found: plugin.description.kind,
        }
        .into());
    }
    Ok(plugin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_file_is_not_a_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("libfake.{LIBRARY_EXTENSION}"));
        std::fs::write(&path, "not a library").unwrap();
        let error = load(&path).unwrap_err();
        let line = error.to_string();
        assert!(line.contains("not a ferry plugin"), "{line}");
        assert!(line.contains("libfake"), "{line}");
        assert_eq!(line.lines().count(), 1, "{line}");
    }

    #[test]
    fn search_path_keeps_order_and_drops_duplicates() {
        let search = SearchPath::standard(
            &[PathBuf::from("/cli")],
            Some("/env1:/env2:/cli"),
            &[PathBuf::from("/cfg")],
        );
        let dirs: Vec<_> = search.dirs.iter().map(|(d, _)| d.clone()).collect();
        assert_eq!(
            &dirs[..4],
            [
                PathBuf::from("/cli"),
                PathBuf::from("/env1"),
                PathBuf::from("/env2"),
                PathBuf::from("/cfg")
            ]
        );
        assert_eq!(search.dirs[4].1, SearchSource::Executable);
    }
}
