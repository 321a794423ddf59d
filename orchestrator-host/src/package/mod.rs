//! Code packaging: the project as a deterministic, content-addressed `tar.zst`.
//!
//! Remote stacks ship code this way: [`build`] selects the files ([`files`]), writes the
//! archive ([`archive`]) and checks its size; [`upload`] stores it under
//! `packages/<blake3>.tar.zst` unless that key already exists; [`unpack`] verifies and
//! unpacks it on the other side, refusing anything that could escape the target directory.

pub mod archive;
pub mod files;
mod index;
pub mod unpack;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::PackageConfig;
use orchestrator_core::PluginError;
use orchestrator_core::pipeline::{Action, Pipeline};
use orchestrator_core::store::{Store, layout};

pub use archive::{Archive, Compression};
pub use files::{ProjectFile, Selection};

#[non_exhaustive]
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Files(#[from] files::Error),
    #[error(transparent)]
    Archive(#[from] archive::Error),
    #[error(
        "the code package is {size}, over the limit of {limit} (package.max_size_mib in ferry.toml); largest files: {largest}"
    )]
    TooLarge {
        size: String,
        limit: String,
        largest: String,
    },
    #[error("cannot upload the code package to {url}")]
    Upload {
        url: String,
        #[source]
        source: PluginError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What to do about it, printed on its own line after the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Files(e) => e.hint(),
            Self::Archive(e) => e.hint(),
            Self::TooLarge { .. } => Some(
                "exclude what steps do not need in .ferryignore (same syntax as .gitignore) and \
                 check with `ferry package --list`"
                    .into(),
            ),
            Self::Upload { .. } => None,
        }
    }
}

/// A package built from the project, with what the user should know about it.
#[derive(Debug, Clone)]
pub struct Package {
    pub archive: Archive,
    pub selection: Selection,
    /// Warnings for the user: size, left-out links and special files.
    pub warnings: Vec<String>,
}

impl Package {
    pub fn key(&self) -> String {
        layout::package(&self.archive.digest)
    }
}

/// `1.5 MiB`-style sizes for messages.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn largest_files(selection: &Selection) -> String {
    selection
        .largest(10)
        .iter()
        .map(|f| format!("{} ({})", f.relative, human_size(f.size())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Select the project's files under `root` and write the package to `out`.
pub fn build(root: &Path, config: &PackageConfig, out: &Path) -> Result<Package> {
    let selection = files::select(root, &config.include)?;
    let archive = archive::write(&selection, compression(config), out)?;
    finish(selection, archive, config)
}

fn compression(config: &PackageConfig) -> Compression {
    Compression {
        level: config.compression_level,
        threads: 0,
    }
}

/// Like [`build`], but reuses the package in `cache_dir` when no file changed since it was
/// built (same paths, sizes, modes, modification and change times): re-packaging an
/// unchanged project then costs a directory walk, not a re-read of every file.
pub fn build_cached(root: &Path, config: &PackageConfig, cache_dir: &Path) -> Result<Package> {
    let selection = files::select(root, &config.include)?;
    let (fingerprint, settled) = index::fingerprint(&selection, config);
    if let Some(archive) = index::lookup(cache_dir, &fingerprint) {
        return finish(selection, archive, config);
    }
    std::fs::create_dir_all(cache_dir).map_err(|source| archive::Error::Write {
        path: cache_dir.to_path_buf(),
        source,
    })?;
    let temp = tempfile::Builder::new()
        .prefix(".building-")
        .tempfile_in(cache_dir)
        .map_err(|source| archive::Error::Write {
            path: cache_dir.to_path_buf(),
            source,
        })?;
    let mut archive = archive::write(&selection, compression(config), temp.path())?;
    let path = cache_dir.join(format!("{}.tar.zst", archive.digest));
    temp.persist(&path).map_err(|e| archive::Error::Write {
        path: path.clone(),
        source: e.error,
    })?;
    archive.path = path;
    let package = finish(selection, archive, config)?;
    if settled {
        index::record(cache_dir, &fingerprint, &package.archive);
    }
    Ok(package)
}

/// The size guard and the warnings, for a freshly built or a cached archive.
fn finish(selection: Selection, archive: Archive, config: &PackageConfig) -> Result<Package> {
    if archive.compressed_size > config.max_bytes {
        let _ = std::fs::remove_file(&archive.path);
        return Err(Error::TooLarge {
            size: human_size(archive.compressed_size),
            limit: human_size(config.max_bytes),
            largest: largest_files(&selection),
        });
    }
    let mut warnings = Vec::new();
    if archive.compressed_size > config.warn_bytes {
        warnings.push(format!(
            "the code package is {} (over {}); the largest files are: {}. Exclude what steps do not need in .ferryignore",
            human_size(archive.compressed_size),
            human_size(config.warn_bytes),
            largest_files(&selection)
        ));
    }
    for (link, target) in &selection.outside_links {
        warnings.push(format!(
            "left out symbolic link {link} -> {}: it points outside the project",
            target.display()
        ));
    }
    for special in &selection.special {
        let why = if special.contains('\\') {
            "file names with a backslash cannot be unpacked safely everywhere"
        } else {
            "sockets, FIFOs and devices cannot be packaged"
        };
        warnings.push(format!("left out {special}: {why}"));
    }
    Ok(Package {
        archive,
        selection,
        warnings,
    })
}

/// What [`upload`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// The store already had this package: nothing was sent.
    Unchanged,
    Uploaded {
        bytes: u64,
    },
}

/// Store the package under its content address unless it is already there. `progress` hears
/// `(bytes sent, total)` as the upload goes.
pub fn upload(
    store: &Store,
    package: &Package,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Upload> {
    let key = package.key();
    let upload_error = |source| Error::Upload {
        url: store.url(),
        source,
    };
    // A package is immutable once stored: same key, same bytes.
    if store.head(&key).map_err(upload_error)?.is_some() {
        return Ok(Upload::Unchanged);
    }
    // What goes up under a content address stays there: make sure it is what its name says
    // (a cached package could have been damaged on disk since it was built).
    archive::verify(&package.archive.path, &package.archive.digest)?;
    let info = store
        .put_file_with_progress(&key, &package.archive.path, progress)
        .map_err(upload_error)?;
    Ok(Upload::Uploaded { bytes: info.size })
}

/// Files that steps name in their commands but that the package leaves out (ignored and not
/// in `include`): `(step, path)`. They would be missing on a remote machine.
pub fn missing_references(
    pipeline: &Pipeline,
    root: &Path,
    working_dir: &Path,
    selection: &Selection,
) -> Vec<(String, String)> {
    let mut missing = Vec::new();
    for step in &pipeline.steps {
        let words: Vec<String> = match &step.action {
            Action::Shell(script) => script
                .split(|c: char| c.is_whitespace() || "\"'`;|&()<>=".contains(c))
                .map(str::to_string)
                .collect(),
            Action::Command(argv) => argv
                .iter()
                .flat_map(|a| a.split('=').map(str::to_string).collect::<Vec<_>>())
                .collect(),
        };
        for word in words {
            if word.is_empty() || word.contains('$') || word.starts_with('-') {
                continue;
            }
            let candidate: PathBuf = root.join(working_dir).join(&word);
            let Ok(relative) = candidate.strip_prefix(root) else {
                continue;
            };
            let Ok(relative) = files_relative(relative) else {
                continue;
            };
            if candidate.is_file()
                && !selection.contains(&relative)
                && !missing
                    .iter()
                    .any(|(s, p)| s == &step.name && p == &relative)
            {
                missing.push((step.name.clone(), relative));
            }
        }
    }
    missing
}

fn files_relative(path: &Path) -> std::result::Result<String, ()> {
    let mut parts: Vec<&str> = Vec::new();
    for component in path.components() {
        match component {
            std::path::Component::Normal(part) => parts.push(part.to_str().ok_or(())?),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                parts.pop().ok_or(())?;
            }
            _ => return Err(()),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::MemoryStore;
    use orchestrator_core::sdk::{PluginConfig, StorePlugin};

    fn write(root: &Path, path: &str, content: &[u8]) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn sample_tree(root: &Path) {
        use std::os::unix::fs::PermissionsExt;
        write(root, "src/main.py", b"print('hi')\n");
        write(root, "run.sh", b"#!/bin/sh\necho run\n");
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o775))
            .unwrap();
        let long = format!("deep/{}/file.txt", "d".repeat(120));
        write(root, &long, b"long path");
        write(root, "a b/ünïcödé.txt", b"names");
        write(root, ".gitignore", b"*.log\n");
        write(root, "noise.log", b"ignored");
        std::os::unix::fs::symlink("src/main.py", root.join("main-link")).unwrap();
    }

    fn build_bytes(root: &Path, out_dir: &Path, name: &str) -> (Package, Vec<u8>) {
        let out = out_dir.join(name);
        let package = build(root, &PackageConfig::default(), &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        (package, bytes)
    }

    #[test]
    fn packages_are_byte_identical_across_clones_and_touches() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        sample_tree(a.path());
        sample_tree(b.path());
        let (first, first_bytes) = build_bytes(a.path(), out.path(), "1.tar.zst");
        let (again, again_bytes) = build_bytes(a.path(), out.path(), "2.tar.zst");
        let (clone, clone_bytes) = build_bytes(b.path(), out.path(), "3.tar.zst");
        // `touch` every file: a later modification time must change nothing.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        for file in &first.selection.files {
            if let FileKindRef::File = kind_ref(file) {
                std::fs::File::options()
                    .write(true)
                    .open(&file.absolute)
                    .unwrap()
                    .set_modified(later)
                    .unwrap();
            }
        }
        let (touched, touched_bytes) = build_bytes(a.path(), out.path(), "4.tar.zst");
        assert!(first_bytes == again_bytes, "two builds of one tree differ");
        assert!(first_bytes == clone_bytes, "two clones differ");
        assert!(
            first_bytes == touched_bytes,
            "touching files changed the package"
        );
        for other in [&again, &clone, &touched] {
            assert_eq!(other.archive.digest, first.archive.digest);
        }
        assert_eq!(first.archive.files, 6, "{:?}", first.selection.files);
        assert_eq!(
            first.key(),
            format!("packages/{}.tar.zst", first.archive.digest)
        );
    }

    enum FileKindRef {
        File,
        Link,
    }

    fn kind_ref(file: &ProjectFile) -> FileKindRef {
        match file.kind {
            files::FileKind::File { .. } => FileKindRef::File,
            files::FileKind::Symlink { .. } => FileKindRef::Link,
        }
    }

    #[test]
    fn package_then_unpack_gives_back_the_same_tree() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        sample_tree(root.path());
        let (package, _) = build_bytes(root.path(), out.path(), "p.tar.zst");
        let target = out.path().join("unpacked");
        let stats =
            unpack::unpack_file(&package.archive.path, &package.archive.digest, &target).unwrap();
        assert_eq!(
            stats.files + stats.symlinks,
            package.selection.files.len() as u64
        );
        let again = files::select(&target, &[]).unwrap();
        assert_eq!(
            again
                .files
                .iter()
                .map(|f| (&f.relative, &f.kind))
                .collect::<Vec<_>>(),
            package
                .selection
                .files
                .iter()
                .map(|f| (&f.relative, &f.kind))
                .collect::<Vec<_>>(),
            "same paths, sizes, executable bits and link targets"
        );
        for file in &package.selection.files {
            if let files::FileKind::File { .. } = file.kind {
                assert_eq!(
                    std::fs::read(&file.absolute).unwrap(),
                    std::fs::read(target.join(&file.relative)).unwrap(),
                    "{}",
                    file.relative
                );
            }
        }
        let mode = std::fs::metadata(target.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            files::tree_digest(&target, &[]).unwrap(),
            files::tree_digest(root.path(), &[]).unwrap()
        );
    }

    #[test]
    fn entries_are_sorted_and_normalised() {
        let root = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        sample_tree(root.path());
        let (package, bytes) = build_bytes(root.path(), out.path(), "p.tar.zst");
        let tar_bytes = zstd::decode_all(bytes.as_slice()).unwrap();
        assert_eq!(
            blake3::hash(&tar_bytes).to_hex().to_string(),
            package.archive.digest,
            "the digest is blake3 of the uncompressed tar"
        );
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut paths = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            let path = entry.path().unwrap().display().to_string();
            assert_eq!(header.mtime().unwrap(), 0, "{path}");
            assert_eq!(
                (header.uid().unwrap(), header.gid().unwrap()),
                (0, 0),
                "{path}"
            );
            assert_eq!(header.username().unwrap(), Some(""), "{path}");
            let mode = header.mode().unwrap();
            match path.as_str() {
                "run.sh" => assert_eq!(mode, 0o755),
                "main-link" => {
                    assert!(header.entry_type().is_symlink());
                    assert_eq!(
                        entry.link_name().unwrap().unwrap().to_str(),
                        Some("src/main.py")
                    );
                }
                _ => assert_eq!(mode, 0o644, "{path}"),
            }
            paths.push(path);
        }
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "entries sorted by path");
        assert!(
            !paths.iter().any(|p| p.ends_with(".log")),
            "gitignored files left out"
        );
    }

    #[test]
    fn unchanged_trees_reuse_the_cached_package_and_changes_rebuild_it() {
        let root = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        sample_tree(root.path());
        // Files changed in the last moments are not indexed (the racy-clean rule): let the
        // tree settle first.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let config = PackageConfig::default();
        let first = build_cached(root.path(), &config, cache.path()).unwrap();
        let built_at = std::fs::metadata(&first.archive.path)
            .unwrap()
            .modified()
            .unwrap();
        let second = build_cached(root.path(), &config, cache.path()).unwrap();
        assert_eq!(
            second.archive, first.archive,
            "same tree, same cached package"
        );
        assert_eq!(
            std::fs::metadata(&second.archive.path)
                .unwrap()
                .modified()
                .unwrap(),
            built_at,
            "not rewritten"
        );
        let fresh = build(root.path(), &config, &cache.path().join("fresh.tar.zst")).unwrap();
        assert_eq!(fresh.archive.digest, first.archive.digest);
        // Same size, different content: the change time still gives it away.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(root.path(), "src/main.py", b"print('ho')\n");
        let changed = build_cached(root.path(), &config, cache.path()).unwrap();
        assert_ne!(changed.archive.digest, first.archive.digest);
        let fresh = build(root.path(), &config, &cache.path().join("fresh2.tar.zst")).unwrap();
        assert_eq!(changed.archive.digest, fresh.archive.digest);
    }

    #[test]
    fn the_size_guard_warns_and_refuses() {
        let root = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        // Incompressible content, so the compressed size is the file size.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..3 * 1024 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        write(root.path(), "weights.bin", &noise);
        write(root.path(), "small.txt", b"x");
        let warn = PackageConfig {
            warn_bytes: 1024 * 1024,
            ..PackageConfig::default()
        };
        let package = build(root.path(), &warn, &out.path().join("w.tar.zst")).unwrap();
        assert!(
            package.warnings[0].contains("weights.bin (3.0 MiB)"),
            "{:?}",
            package.warnings
        );
        let refuse = PackageConfig {
            warn_bytes: 1024 * 1024,
            max_bytes: 2 * 1024 * 1024,
            ..PackageConfig::default()
        };
        let target = out.path().join("r.tar.zst");
        let error = build(root.path(), &refuse, &target).unwrap_err();
        let hint = error.hint().unwrap_or_default();
        let error = error.to_string();
        assert!(error.contains("over the limit of 2.0 MiB"), "{error}");
        assert!(error.contains("weights.bin"), "{error}");
        assert!(
            hint.contains(".ferryignore"),
            "says how to exclude files: {hint}"
        );
        assert!(!target.exists(), "a refused package is not left behind");
    }

    #[test]
    fn uploads_are_skipped_when_the_store_has_the_package() {
        let root = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        sample_tree(root.path());
        let (package, _) = build_bytes(root.path(), out.path(), "p.tar.zst");
        let store = Store::from_plugin(MemoryStore::new(PluginConfig::default()).unwrap());
        let mut last = (0, 0);
        let first = upload(&store, &package, &mut |done, total| last = (done, total)).unwrap();
        assert_eq!(
            first,
            Upload::Uploaded {
                bytes: package.archive.compressed_size
            }
        );
        assert_eq!(
            last,
            (
                package.archive.compressed_size,
                package.archive.compressed_size
            )
        );
        let second = upload(&store, &package, &mut |_, _| {
            panic!("no progress for a skip")
        })
        .unwrap();
        assert_eq!(second, Upload::Unchanged);
    }

    #[test]
    fn files_that_steps_use_but_the_package_leaves_out_are_reported() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), ".gitignore", b"data/\n");
        write(root.path(), "ml/train.py", b"");
        write(root.path(), "ml/data/train.csv", b"1,2");
        write(root.path(), "data/lookup.json", b"{}");
        let pipeline = Pipeline::from_yaml_str(
            "name: p\nsteps:\n  train:\n    run: python3 train.py --data=data/train.csv \"$FERRY_OUTPUT_DIR/x\"\n  look:\n    command: [cat, ../data/lookup.json]\n",
            None,
        )
        .unwrap();
        let selection = files::select(root.path(), &[]).unwrap();
        let missing = missing_references(&pipeline, root.path(), Path::new("ml"), &selection);
        assert_eq!(
            missing,
            [
                ("train".to_string(), "ml/data/train.csv".to_string()),
                ("look".to_string(), "data/lookup.json".to_string())
            ]
        );
        let included =
            files::select(root.path(), &["ml/data/*.csv".into(), "data/".into()]).unwrap();
        assert!(missing_references(&pipeline, root.path(), Path::new("ml"), &included).is_empty());
    }
}
