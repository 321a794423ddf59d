//! Artifact stores: the handle both sides use, the key layout, the settings helpers drivers
//! share, and (behind features) the object_store adapter and the conformance suite.
//!
//! [`Store`] wraps whatever [`ArtifactStoreBox`] a stack uses (built-in or loaded from a plugin)
//! behind plain Rust types, so the rest of ferry never sees the stable-ABI types.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod layout;
#[cfg(feature = "object-store")]
pub mod object_store_backend;
pub mod settings;

use std::path::Path;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RSlice, RStr};
use chrono::{DateTime, Utc};

use crate::abi::{
    ArtifactStoreBox, ErrorKind, Listing, ObjectMeta, PluginError, ProgressSink, ProgressSink_TO,
};

/// Errors from a store are the plugin error: a kind the caller can react to and a message.
pub type Result<T, E = PluginError> = std::result::Result<T, E>;

/// Size, digest and modification time of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// A content digest or entity tag when the store has one; opaque.
    pub digest: Option<String>,
    pub modified: DateTime<Utc>,
}

/// What a listing found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListResult {
    pub objects: Vec<ObjectInfo>,
    /// Sub-prefixes one level down, without a trailing `/` (only for non-recursive listings).
    pub prefixes: Vec<String>,
}

impl From<ObjectMeta> for ObjectInfo {
    fn from(meta: ObjectMeta) -> Self {
        Self {
            key: meta.key.into_string(),
            size: meta.size,
            digest: meta.digest.map(|d| d.into_string()).into_option(),
            modified: DateTime::from_timestamp_millis(meta.modified_ms).unwrap_or_default(),
        }
    }
}

impl From<ObjectInfo> for ObjectMeta {
    fn from(info: ObjectInfo) -> Self {
        Self {
            key: info.key.into(),
            size: info.size,
            digest: info.digest.map(Into::into).into(),
            modified_ms: info.modified.timestamp_millis(),
        }
    }
}

impl From<Listing> for ListResult {
    fn from(listing: Listing) -> Self {
        Self {
            objects: listing.objects.into_iter().map(Into::into).collect(),
            prefixes: listing
                .prefixes
                .into_iter()
                .map(|p| p.into_string())
                .collect(),
        }
    }
}

impl From<ListResult> for Listing {
    fn from(list: ListResult) -> Self {
        Self {
            objects: list.objects.into_iter().map(Into::into).collect(),
            prefixes: list.prefixes.into_iter().map(Into::into).collect(),
        }
    }
}

/// A handle on the artifact store of a stack. Cheap to clone; calls block.
#[derive(Clone)]
pub struct Store {
    inner: ArtifactStoreBox,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url()).finish()
    }
}

impl Store {
    /// Wraps the stable-ABI object a plugin module created.
    pub(crate) fn new(inner: ArtifactStoreBox) -> Self {
        Self { inner }
    }

    /// A store implemented in this process (a built-in, or a plugin's own tests), behind the
    /// same adapters a plugin file's store goes through.
    pub fn from_plugin<T: crate::sdk::StorePlugin>(plugin: T) -> Self {
        Self::new(crate::sdk::store_box(plugin))
    }

    /// The stable-ABI object, to hand to an orchestrator plugin.
    pub fn as_abi(&self) -> ArtifactStoreBox {
        self.inner.clone()
    }

    pub fn url(&self) -> String {
        self.inner.url().into_string()
    }

    pub fn put_file(&self, key: &str, path: &Path) -> Result<ObjectInfo> {
        let path = path_str(path)?;
        self.inner
            .put_file(RStr::from(key), RStr::from(path))
            .into_result()
            .map(Into::into)
    }

    /// Upload with `(bytes sent, total)` reports. A panic in `progress` stops the upload's
    /// reporting (it would abort the process if it crossed into the plugin) and is resumed
    /// here once the plugin has returned.
    pub fn put_file_with_progress(
        &self,
        key: &str,
        path: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ObjectInfo> {
        struct Sink<'a> {
            report: &'a mut dyn FnMut(u64, u64),
            panic: Option<Box<dyn std::any::Any + Send>>,
        }
        impl ProgressSink for Sink<'_> {
            fn progress(&mut self, done: u64, total: u64) {
                if self.panic.is_none() {
                    let report = &mut self.report;
                    let call = std::panic::AssertUnwindSafe(|| report(done, total));
                    self.panic = std::panic::catch_unwind(call).err();
                }
            }
        }
        let path = path_str(path)?;
        let mut sink = Sink {
            report: progress,
            panic: None,
        };
        let result = self
            .inner
            .put_file_with_progress(
                RStr::from(key),
                RStr::from(path),
                ProgressSink_TO::from_ptr(&mut sink, TD_Opaque),
            )
            .into_result()
            .map(Into::into);
        if let Some(panic) = sink.panic {
            std::panic::resume_unwind(panic);
        }
        result
    }

    pub fn get_file(&self, key: &str, path: &Path) -> Result<ObjectInfo> {
        let path = path_str(path)?;
        self.inner
            .get_file(RStr::from(key), RStr::from(path))
            .into_result()
            .map(Into::into)
    }

    pub fn put_bytes(&self, key: &str, data: &[u8]) -> Result<ObjectInfo> {
        self.inner
            .put_bytes(RStr::from(key), RSlice::from_slice(data))
            .into_result()
            .map(Into::into)
    }

    pub fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        self.inner
            .get_bytes(RStr::from(key))
            .into_result()
            .map(|v| v.into_vec())
    }

    /// `Ok(None)` when the key does not exist.
    pub fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        match self.inner.head(RStr::from(key)).into_result() {
            Ok(meta) => Ok(Some(meta.into())),
            Err(e) if e.kind == ErrorKind::NOT_FOUND => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn list(&self, prefix: &str, recursive: bool) -> Result<ListResult> {
        self.inner
            .list(RStr::from(prefix), recursive)
            .into_result()
            .map(Into::into)
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(RStr::from(key)).into_result()
    }

    /// Read and parse a JSON object; `Ok(None)` when it does not exist.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let bytes = match self.get_bytes(key) {
            Ok(bytes) => bytes,
            Err(e) if e.kind == ErrorKind::NOT_FOUND => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            PluginError::new(
                ErrorKind::INVALID_INPUT,
                format!("`{key}` in {} is not valid JSON: {e}", self.url()),
            )
        })
    }

    pub fn put_json<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<ObjectInfo> {
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| PluginError::other(format!("cannot serialise `{key}`: {e}")))?;
        self.put_bytes(key, &bytes)
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| {
        PluginError::invalid_input(format!(
            "path {} is not valid UTF-8; ferry moves files by UTF-8 paths",
            path.display()
        ))
    })
}

/// Check that a key is a clean relative `/`-separated path; every store calls this first so
/// no key can name a file outside the store.
pub fn validate_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.ends_with('/')
        || key.contains('\\')
        || key.contains('\0')
        || key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(PluginError::invalid_input(format!(
            "invalid object key `{key}`: keys are relative `/`-separated paths without empty, `.` or `..` parts"
        )));
    }
    Ok(())
}

/// Check a listing prefix: empty (the root) or a valid key.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_key(prefix.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_could_escape_are_refused() {
        for bad in ["", "/abs", "a/../b", "..", "a//b", "a/./b", "a\\b", "dir/"] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "runs/x/run.json", "packages/abc.tar.zst", "a b/ü"] {
            validate_key(good).unwrap();
        }
        validate_prefix("").unwrap();
        validate_prefix("runs/").unwrap();
        assert!(validate_prefix("../").is_err());
    }
}
