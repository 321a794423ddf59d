//! Code packaging: the project as a deterministic, content-addressed `tar.zst`.
//!
//! Remote stacks ship code this way: [`build`] selects the files ([`files`]), writes the
//! archive ([`archive`]) and checks its size; [`upload`] stores it under
//! `packages/<blake3>.tar.zst` unless that key already exists; [`unpack`] verifies and
//! unpacks it on the other side, refusing anything that could escape the target directory.

pub mod archive;
pub mod files;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::abi::PluginError;
use crate::config::PackageConfig;
use crate::pipeline::{Action, Pipeline};
use crate::store::{Store, layout};

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
        "the code package is {size}, over the limit of {limit} (package.max_size_mib in ferry.toml); largest files: {largest}. Exclude what steps do not need in .ferryignore (same syntax as .gitignore) and check with `ferry package --list`"
    )]
    TooLarge {
        size: String,
        limit: String,
        largest: String,
    },
    #[error("cannot upload the code package to {url}: {source}")]
    Upload {
        url: String,
        #[source]
        source: PluginError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    let compression = Compression {
        level: config.compression_level,
        threads: 0,
    };
    let archive = archive::write(&selection, compression, out)?;
    if archive.compressed_size > config.max_bytes {
        let _ = std::fs::remove_file(out);
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
        warnings.push(format!(
            "left out {special}: sockets, FIFOs and devices cannot be packaged"
        ));
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
