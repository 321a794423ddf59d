//! An example artifact-store plugin: a plain directory, written with `std` only on top of
//! ferry's plugin SDK. It is what a third-party plugin looks like: a plain Rust type, the
//! [`StorePlugin`] trait, and one export macro.
//!
//! ```toml
//! [stacks.example]
//! orchestrator = { plugin = "local" }
//! store = { plugin = "example-store", settings = { root = "/tmp/ferry-example-store" } }
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use orchestrator_core::sdk::{PluginConfig, PluginInfo, StorePlugin};
use orchestrator_core::store::{ListResult, ObjectInfo, validate_key, validate_prefix};
use orchestrator_core::{ErrorKind, PluginError};

pub struct DirectoryStore {
    root: PathBuf,
}

impl DirectoryStore {
    fn path(&self, key: &str) -> Result<PathBuf, PluginError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn info(&self, key: &str, path: &Path) -> Result<ObjectInfo, PluginError> {
        let metadata = std::fs::metadata(path).map_err(|e| io_error("read", key, e))?;
        if !metadata.is_file() {
            return Err(PluginError::not_found(format!("no object `{key}`")));
        }
        let modified = metadata.modified().map(chrono_from).unwrap_or_default();
        Ok(ObjectInfo {
            key: key.to_string(),
            size: metadata.len(),
            digest: None,
            modified,
        })
    }

    /// Write through a temporary file and rename, so readers never see half an object.
    fn write_atomically(
        &self,
        key: &str,
        write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<ObjectInfo, PluginError> {
        let path = self.path(key)?;
        let dir = path.parent().expect("keys have a parent");
        std::fs::create_dir_all(dir).map_err(|e| io_error("write", key, e))?;
        let temp = dir.join(format!(
            ".{}.partial-{}",
            path.file_name().unwrap().to_string_lossy(),
            std::process::id()
        ));
        let result = std::fs::File::create(&temp).and_then(|mut file| {
            write(&mut file)?;
            file.sync_all()
        });
        if let Err(e) = result.and_then(|()| std::fs::rename(&temp, &path)) {
            let _ = std::fs::remove_file(&temp);
            return Err(io_error("write", key, e));
        }
        self.info(key, &path)
    }

    fn walk(&self, dir: &Path, found: &mut Vec<ObjectInfo>) -> Result<(), PluginError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("list", &dir.display().to_string(), e)),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                self.walk(&path, found)?;
            } else if !entry.file_name().to_string_lossy().starts_with('.') {
                let key = self.key_of(&path);
                found.push(self.info(&key, &path)?);
            }
        }
        Ok(())
    }

    fn key_of(&self, path: &Path) -> String {
        let relative = path.strip_prefix(&self.root).unwrap_or(path);
        relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/")
    }
}

fn chrono_from(time: std::time::SystemTime) -> chrono::DateTime<chrono::Utc> {
    time.into()
}

fn io_error(op: &str, key: &str, error: std::io::Error) -> PluginError {
    let kind = match error.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NOT_FOUND,
        std::io::ErrorKind::PermissionDenied => ErrorKind::PERMISSION_DENIED,
        _ => ErrorKind::OTHER,
    };
    PluginError::new(kind, format!("cannot {op} `{key}`: {error}"))
}

impl StorePlugin for DirectoryStore {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "example-store",
            version: env!("CARGO_PKG_VERSION"),
            description: "example plugin: artifacts in a plain directory (std only)",
            config_keys: &[("root", "directory holding the artifacts (required)")],
        }
    }

    fn new(config: PluginConfig) -> Result<Self, PluginError> {
        let root = config.str_setting("root")?.ok_or_else(|| {
            PluginError::invalid_input(
                "example-store needs a `root` setting: the directory to keep artifacts in",
            )
        })?;
        let root = config.resolve_path(root);
        std::fs::create_dir_all(&root)
            .map_err(|e| PluginError::other(format!("cannot create {}: {e}", root.display())))?;
        Ok(Self { root })
    }

    fn url(&self) -> String {
        format!("example-store://{}", self.root.display())
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<ObjectInfo, PluginError> {
        let mut source = std::fs::File::open(path)
            .map_err(|e| io_error("read the upload source for", key, e))?;
        self.write_atomically(key, |file| std::io::copy(&mut source, file).map(|_| ()))
    }

    fn get_file(&self, key: &str, path: &Path) -> Result<ObjectInfo, PluginError> {
        let source = self.path(key)?;
        let info = self.info(key, &source)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| io_error("download", key, e))?;
        let temp = dir.join(format!(".ferry-download-{}", std::process::id()));
        if let Err(e) = std::fs::copy(&source, &temp).and_then(|_| std::fs::rename(&temp, path)) {
            let _ = std::fs::remove_file(&temp);
            return Err(io_error("download", key, e));
        }
        Ok(info)
    }

    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<ObjectInfo, PluginError> {
        self.write_atomically(key, |file| file.write_all(data))
    }

    fn get_bytes(&self, key: &str) -> Result<Vec<u8>, PluginError> {
        std::fs::read(self.path(key)?).map_err(|e| io_error("read", key, e))
    }

    fn head(&self, key: &str) -> Result<ObjectInfo, PluginError> {
        self.info(key, &self.path(key)?)
    }

    fn list(&self, prefix: &str, recursive: bool) -> Result<ListResult, PluginError> {
        validate_prefix(prefix)?;
        let dir = self.root.join(prefix.trim_end_matches('/'));
        let mut listing = ListResult::default();
        if recursive {
            self.walk(&dir, &mut listing.objects)?;
        } else if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if path.is_dir() {
                    listing.prefixes.push(self.key_of(&path));
                } else {
                    let key = self.key_of(&path);
                    listing.objects.push(self.info(&key, &path)?);
                }
            }
        }
        listing.objects.sort_by(|a, b| a.key.cmp(&b.key));
        listing.prefixes.sort();
        Ok(listing)
    }

    fn delete(&self, key: &str) -> Result<(), PluginError> {
        match std::fs::remove_file(self.path(key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("delete", key, e)),
        }
    }
}

orchestrator_core::export_store_plugin!(DirectoryStore);
