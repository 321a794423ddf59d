//! Artifact stores on top of the `object_store` crate: the local folder, memory, and (in their
//! own plugin crates) S3 and GCS all share this code and differ only in how they build the
//! `ObjectStore`.
//!
//! A plugin builds its `ObjectStore` with the `object_store` this module re-exports, so that
//! its version always matches the one the bridge was compiled with.

/// The `object_store` crate the bridge is built on (`orchestrator_core::store::object_store_backend::object_store`).
pub use object_store;

use std::io::Read;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{
    ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart, path::Path as ObjectPath,
};
use tokio::runtime::Runtime;

#[cfg(feature = "object-store-cloud")]
use super::settings::RetrySettings;
use super::{ListResult, ObjectInfo, Result, validate_key, validate_prefix};
use crate::abi::{ErrorKind, PluginError};
use crate::sdk::{PluginConfig, PluginInfo, StorePlugin};

/// Files up to this size go up in one request; larger ones as parallel multipart uploads.
const SINGLE_PUT_LIMIT: u64 = 16 * 1024 * 1024;
/// Multipart chunk size (S3's minimum part size is 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once per upload.
const MAX_CONCURRENT_PARTS: usize = 8;

/// How a particular backend builds its `ObjectStore` from settings.
pub trait ObjectStoreConfig: Send + Sync + 'static {
    fn info() -> PluginInfo;

    /// Check settings without connecting; by default only declared keys are accepted.
    fn validate(config: &PluginConfig) -> Result<()> {
        config.check_keys(&Self::info())
    }

    fn build(config: &PluginConfig) -> Result<ObjectStoreBackend>;
}

/// A [`StorePlugin`] for any [`ObjectStoreConfig`]: `export_store_plugin!(ObjectStorePlugin<S3>)`.
pub struct ObjectStorePlugin<C> {
    backend: ObjectStoreBackend,
    _config: PhantomData<fn() -> C>,
}

impl<C: ObjectStoreConfig> StorePlugin for ObjectStorePlugin<C> {
    fn info() -> PluginInfo {
        C::info()
    }

    fn validate(config: &PluginConfig) -> Result<()> {
        C::validate(config)
    }

    fn new(config: PluginConfig) -> Result<Self> {
        Ok(Self {
            backend: C::build(&config)?,
            _config: PhantomData,
        })
    }

    fn url(&self) -> String {
        self.backend.url.clone()
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<ObjectInfo> {
        self.backend.put_file(key, path, &mut |_, _| {})
    }

    fn put_file_with_progress(
        &self,
        key: &str,
        path: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ObjectInfo> {
        self.backend.put_file(key, path, progress)
    }

    fn get_file(&self, key: &str, path: &Path) -> Result<ObjectInfo> {
        self.backend.get_file(key, path)
    }

    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<ObjectInfo> {
        self.backend.put_bytes(key, data)
    }

    fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        self.backend.get_bytes(key)
    }

    fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.backend.head(key)
    }

    fn list(&self, prefix: &str, recursive: bool) -> Result<ListResult> {
        self.backend.list(prefix, recursive)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.backend.delete(key)
    }
}

/// An `ObjectStore` with a key prefix and the runtime that drives it.
pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    /// Prepended to every key, without a trailing `/`; empty for the root.
    prefix: String,
    /// Shown to users; must not contain credentials.
    url: String,
    /// Always `Some` until dropped; see the `Drop` impl.
    runtime: Option<Runtime>,
}

impl Drop for ObjectStoreBackend {
    fn drop(&mut self) {
        // The last handle may be dropped on an async thread of the host (a store handed to an
        // orchestrator); a blocking shutdown would panic there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl ObjectStoreBackend {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, url: impl Into<String>) -> Result<Self> {
        let runtime = crate::sdk::plugin_runtime("store")?;
        Ok(Self {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            url: url.into(),
            runtime: Some(runtime),
        })
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("runtime lives until drop")
    }

    fn path(&self, key: &str) -> Result<ObjectPath> {
        validate_key(key)?;
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        ObjectPath::parse(&full).map_err(|e| {
            PluginError::invalid_input(format!("object key `{key}` is not usable: {e}"))
        })
    }

    fn key_of(&self, path: &ObjectPath) -> String {
        let full = path.as_ref();
        if self.prefix.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(&self.prefix)
                .map(|rest| rest.trim_start_matches('/').to_string())
                .unwrap_or_else(|| full.to_string())
        }
    }

    fn error(&self, op: &str, key: &str, error: object_store::Error) -> PluginError {
        let kind = match &error {
            object_store::Error::NotFound { .. } => ErrorKind::NOT_FOUND,
            object_store::Error::AlreadyExists { .. } => ErrorKind::ALREADY_EXISTS,
            object_store::Error::PermissionDenied { .. } => ErrorKind::PERMISSION_DENIED,
            object_store::Error::Unauthenticated { .. } => ErrorKind::UNAUTHENTICATED,
            object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. } => ErrorKind::UNSUPPORTED,
            object_store::Error::InvalidPath { .. } => ErrorKind::INVALID_INPUT,
            _ => ErrorKind::OTHER,
        };
        // object_store's message stops at "error sending request"; the cause (connection
        // refused, DNS, TLS) is further down the chain and is what the user can act on.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        PluginError::new(
            kind,
            format!("cannot {op} `{key}` in {}: {message}", self.url),
        )
    }

    fn info(&self, key: &str, meta: object_store::ObjectMeta) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: meta.size,
            digest: meta.e_tag,
            modified: meta.last_modified,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn put_file(
        &self,
        key: &str,
        path: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ObjectInfo> {
        let location = self.path(key)?;
        let io_error = |e: std::io::Error| {
            PluginError::new(
                if e.kind() == std::io::ErrorKind::NotFound {
                    ErrorKind::NOT_FOUND
                } else {
                    ErrorKind::OTHER
                },
                format!(
                    "cannot read {} to upload it as `{key}`: {e}",
                    path.display()
                ),
            )
        };
        let mut file = std::fs::File::open(path).map_err(io_error)?;
        let size = file.metadata().map_err(io_error)?.len();
        if size <= SINGLE_PUT_LIMIT {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data).map_err(io_error)?;
            let info = self.put_bytes(key, &data)?;
            progress(size, size);
            return Ok(info);
        }
        self.runtime().block_on(async {
            let upload = self
                .store
                .put_multipart(&location)
                .await
                .map_err(|e| self.error("upload", key, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut buffer = vec![0u8; PART_SIZE];
            let mut sent = 0u64;
            let written: Result<(), PluginError> = async {
                loop {
                    let read = file.read(&mut buffer).map_err(io_error)?;
                    if read == 0 {
                        return Ok(());
                    }
                    writer
                        .wait_for_capacity(MAX_CONCURRENT_PARTS)
                        .await
                        .map_err(|e| self.error("upload", key, e))?;
                    writer.write(&buffer[..read]);
                    // Counted when handed to the uploader; parts in flight are at most
                    // MAX_CONCURRENT_PARTS × PART_SIZE ahead of the network.
                    sent += read as u64;
                    progress(sent, size);
                }
            }
            .await;
            if let Err(e) = written {
                // Remote stores keep (and bill) the parts of an upload that is not aborted.
                let _ = writer.abort().await;
                return Err(e);
            }
            writer
                .finish()
                .await
                .map_err(|e| self.error("upload", key, e))?;
            Ok::<_, PluginError>(())
        })?;
        self.head(key)
    }

    pub fn get_file(&self, key: &str, path: &Path) -> Result<ObjectInfo> {
        let location = self.path(key)?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let io_error = |e: std::io::Error| {
            PluginError::other(format!("cannot write `{key}` to {}: {e}", path.display()))
        };
        std::fs::create_dir_all(dir).map_err(io_error)?;
        // Download next to the destination and rename: a failed download never leaves a
        // partial file under the final name.
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io_error)?;
        let meta = self.runtime().block_on(async {
            let result = self
                .store
                .get(&location)
                .await
                .map_err(|e| self.error("download", key, e))?;
            let meta = result.meta.clone();
            let mut stream = result.into_stream();
            while let Some(chunk) = stream
                .try_next()
                .await
                .map_err(|e| self.error("download", key, e))?
            {
                std::io::Write::write_all(temp.as_file_mut(), &chunk).map_err(io_error)?;
            }
            Ok::<_, PluginError>(meta)
        })?;
        // Temporary files are private (0600); a downloaded artifact is an ordinary file.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = temp
                .as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644));
        }
        temp.persist(path).map_err(|e| io_error(e.error))?;
        Ok(self.info(key, meta))
    }

    pub fn put_bytes(&self, key: &str, data: &[u8]) -> Result<ObjectInfo> {
        let location = self.path(key)?;
        let payload = PutPayload::from(data.to_vec());
        let size = data.len() as u64;
        let result = self
            .runtime()
            .block_on(self.store.put(&location, payload))
            .map_err(|e| self.error("upload", key, e))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size,
            digest: result.e_tag,
            modified: chrono::Utc::now(),
        })
    }

    pub fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        let location = self.path(key)?;
        self.runtime()
            .block_on(async {
                self.store
                    .get(&location)
                    .await?
                    .bytes()
                    .await
                    .map(|b| b.to_vec())
            })
            .map_err(|e| self.error("read", key, e))
    }

    pub fn head(&self, key: &str) -> Result<ObjectInfo> {
        let location = self.path(key)?;
        let meta = self
            .runtime()
            .block_on(self.store.head(&location))
            .map_err(|e| self.error("look up", key, e))?;
        Ok(self.info(key, meta))
    }

    pub fn list(&self, prefix: &str, recursive: bool) -> Result<ListResult> {
        validate_prefix(prefix)?;
        let trimmed = prefix.trim_end_matches('/');
        let location = match (self.prefix.is_empty(), trimmed.is_empty()) {
            (true, true) => None,
            (true, false) => Some(trimmed.to_string()),
            (false, true) => Some(self.prefix.clone()),
            (false, false) => Some(format!("{}/{trimmed}", self.prefix)),
        };
        let location = location
            .map(|l| ObjectPath::parse(&l))
            .transpose()
            .map_err(|e| {
                PluginError::invalid_input(format!("prefix `{prefix}` is not usable: {e}"))
            })?;
        let mut listing = ListResult::default();
        if recursive {
            let metas: Vec<object_store::ObjectMeta> = self
                .runtime()
                .block_on(self.store.list(location.as_ref()).try_collect())
                .map_err(|e| self.error("list", prefix, e))?;
            for meta in metas {
                let key = self.key_of(&meta.location);
                listing.objects.push(self.info(&key, meta));
            }
        } else {
            let result = self
                .runtime()
                .block_on(self.store.list_with_delimiter(location.as_ref()))
                .map_err(|e| self.error("list", prefix, e))?;
            for meta in result.objects {
                let key = self.key_of(&meta.location);
                listing.objects.push(self.info(&key, meta));
            }
            listing.prefixes = result
                .common_prefixes
                .iter()
                .map(|p| self.key_of(p))
                .collect();
        }
        listing.objects.sort_by(|a, b| a.key.cmp(&b.key));
        listing.prefixes.sort();
        Ok(listing)
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        let location = self.path(key)?;
        match self.runtime().block_on(self.store.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", key, e)),
        }
    }
}

#[cfg(feature = "object-store-cloud")]
impl From<RetrySettings> for object_store::RetryConfig {
    fn from(retry: RetrySettings) -> Self {
        Self {
            max_retries: retry.max_retries,
            retry_timeout: retry.retry_timeout,
            ..Default::default()
        }
    }
}
