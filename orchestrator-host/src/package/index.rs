//! The local package index: which package a tree fingerprint produced, so an unchanged
//! project is not read and compressed again. Kept in the project's `.ferry/packages/`.
//!
//! The fingerprint covers each file's path, kind, size, mode, modification and change times
//! and inode: any write changes the change time, so content edits are seen even when the size
//! and modification time are restored. The index is a cache: anything odd about it is a miss.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::archive::Archive;
use super::files::{FileKind, Selection, Stamp};
use crate::config::PackageConfig;

const INDEX_FILE: &str = "index.json";
/// Packages kept in the cache folder; older ones are removed.
const KEEP: usize = 3;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// Fingerprint → package, newest last.
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    fingerprint: String,
    digest: String,
    compressed_size: u64,
    uncompressed_size: u64,
    files: usize,
}

/// Files changed this recently are not trusted to the index: a rewrite within the same
/// timestamp tick after they were read would go unnoticed (git's "racy clean" problem).
const RACY_NANOS: i128 = 2_000_000_000;

/// The tree's fingerprint, and whether it may be recorded (no file changed in the last
/// moments).
pub(super) fn fingerprint(selection: &Selection, config: &PackageConfig) -> (String, bool) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let mut settled = true;
    let mut hasher = blake3::Hasher::new();
    hasher.update(
        format!(
            "v1 level={} include={:?}\n",
            config.compression_level, config.include
        )
        .as_bytes(),
    );
    for file in &selection.files {
        hasher.update(file.relative.as_bytes());
        match &file.kind {
            FileKind::Symlink { target } => {
                hasher.update(b"\0l");
                hasher.update(target.to_string_lossy().as_bytes());
            }
            FileKind::File { size, executable } => {
                // The walk's own `lstat`, not a second one: the times are those the walk saw
                // just before the files are read.
                let stamp = file.stamp;
                if stamp.is_none_or(|s| changed_at(s) > now - RACY_NANOS) {
                    settled = false;
                }
                hasher.update(format!("\0f{size} {executable} {stamp:?}").as_bytes());
            }
        }
        hasher.update(b"\n");
    }
    (hasher.finalize().to_hex().to_string(), settled)
}

/// The later of a file's modification and change times, in nanoseconds since the epoch.
fn changed_at((mtime, mtime_nsec, ctime, ctime_nsec, _): Stamp) -> i128 {
    let ctime = ctime as i128 * 1_000_000_000 + ctime_nsec as i128;
    let mtime = mtime as i128 * 1_000_000_000 + mtime_nsec as i128;
    ctime.max(mtime)
}

fn read(cache_dir: &Path) -> Index {
    std::fs::read(cache_dir.join(INDEX_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The cached archive for `fingerprint`, if it is still on disk with the recorded size.
pub(super) fn lookup(cache_dir: &Path, fingerprint: &str) -> Option<Archive> {
    let index = read(cache_dir);
    let entry = index
        .entries
        .iter()
        .rev()
        .find(|e| e.fingerprint == fingerprint)?;
    let path = cache_dir.join(format!("{}.tar.zst", entry.digest));
    let size = std::fs::metadata(&path).ok()?.len();
    (size == entry.compressed_size).then(|| Archive {
        path,
        digest: entry.digest.clone(),
        compressed_size: entry.compressed_size,
        uncompressed_size: entry.uncompressed_size,
        files: entry.files,
    })
}

/// Remember `archive` for `fingerprint` and drop packages beyond the last few. Failures are
/// ignored: the index only saves time.
pub(super) fn record(cache_dir: &Path, fingerprint: &str, archive: &Archive) {
    let mut index = read(cache_dir);
    index.entries.retain(|e| e.fingerprint != fingerprint);
    index.entries.push(Entry {
        fingerprint: fingerprint.to_string(),
        digest: archive.digest.clone(),
        compressed_size: archive.compressed_size,
        uncompressed_size: archive.uncompressed_size,
        files: archive.files,
    });
    let mut keep: BTreeMap<String, ()> = BTreeMap::new();
    for entry in index.entries.iter().rev() {
        if keep.len() < KEEP {
            keep.insert(entry.digest.clone(), ());
        }
    }
    index.entries.retain(|e| keep.contains_key(&e.digest));
    if let Ok(dir) = std::fs::read_dir(cache_dir) {
        for file in dir.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if let Some(digest) = name.strip_suffix(".tar.zst")
                && !keep.contains_key(digest)
            {
                let _ = std::fs::remove_file(file.path());
            }
        }
    }
    if let Ok(json) = serde_json::to_vec_pretty(&index) {
        let temp = cache_dir.join(format!(".{INDEX_FILE}.{}", std::process::id()));
        if std::fs::write(&temp, json).is_ok() {
            let _ = std::fs::rename(&temp, cache_dir.join(INDEX_FILE));
        }
    }
}
