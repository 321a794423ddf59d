//! The project's code as ferry sees it: which files belong to it and their digest.
//!
//! The walk honours `.gitignore`, `.ignore` and `.ferryignore` and always leaves out `.git/` and
//! ferry's own `.ferry/` folder, so the digest changes when code changes and not when outputs
//! or artifacts do. Step caching keys include it, so editing a script re-runs its step.

use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The per-project ignore file, same syntax as `.gitignore`.
pub const FERRY_IGNORE_FILE: &str = ".ferryignore";
/// ferry's own folder in a project (local artifacts, step scratch space).
pub const FERRY_DIR: &str = ".ferry";

#[non_exhaustive]
#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot walk the project at {root}: {source}")]
    Walk {
        root: PathBuf,
        #[source]
        source: ignore::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A file of the project, relative to its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectFile {
    pub relative: PathBuf,
    pub absolute: PathBuf,
    pub size: u64,
    pub executable: bool,
}

/// The files of the project under `root`, sorted by path.
pub fn project_files(root: &Path) -> Result<Vec<ProjectFile>> {
    let mut files = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .add_custom_ignore_filename(FERRY_IGNORE_FILE)
        .filter_entry(|entry| {
            let name = entry.file_name();
            !(entry.depth() > 0
                && entry.file_type().is_some_and(|t| t.is_dir())
                && (name == ".git" || name == FERRY_DIR))
        })
        .build();
    for entry in walker {
        let entry = entry.map_err(|source| Error::Walk {
            root: root.to_path_buf(),
            source,
        })?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let absolute = entry.path().to_path_buf();
        let metadata = entry.metadata().map_err(|source| Error::Walk {
            root: root.to_path_buf(),
            source,
        })?;
        let relative = absolute
            .strip_prefix(root)
            .unwrap_or(&absolute)
            .to_path_buf();
        files.push(ProjectFile {
            relative,
            absolute,
            size: metadata.len(),
            executable: is_executable(&metadata),
        });
    }
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(files)
}

#[cfg(unix)]
fn is_executable(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_metadata: &std::fs::Metadata) -> bool {
    false
}

/// blake3 over every project file's path, executable bit and content: equal trees give equal
/// digests whatever their timestamps.
pub fn tree_digest(root: &Path) -> Result<String> {
    let mut tree = blake3::Hasher::new();
    let mut buffer = vec![0u8; 64 * 1024];
    for file in project_files(root)? {
        let path = file.relative.to_string_lossy();
        tree.update(&(path.len() as u64).to_le_bytes());
        tree.update(path.as_bytes());
        tree.update(&[u8::from(file.executable)]);
        let mut content = blake3::Hasher::new();
        let mut reader = std::fs::File::open(&file.absolute).map_err(|source| Error::Read {
            path: file.absolute.clone(),
            source,
        })?;
        loop {
            let read = reader.read(&mut buffer).map_err(|source| Error::Read {
                path: file.absolute.clone(),
                source,
            })?;
            if read == 0 {
                break;
            }
            content.update(&buffer[..read]);
        }
        tree.update(content.finalize().as_bytes());
    }
    Ok(tree.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_follows_content_and_ignores_ignored_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.py"), "print(1)").unwrap();
        std::fs::write(root.join(".gitignore"), "*.log\n").unwrap();
        std::fs::create_dir_all(root.join(".ferry/artifacts")).unwrap();
        let first = tree_digest(root).unwrap();
        std::fs::write(root.join("noise.log"), "x").unwrap();
        std::fs::write(root.join(".ferry/artifacts/out"), "x").unwrap();
        assert_eq!(
            tree_digest(root).unwrap(),
            first,
            "ignored files changed the digest"
        );
        std::fs::write(root.join("a.py"), "print(2)").unwrap();
        assert_ne!(
            tree_digest(root).unwrap(),
            first,
            "a code change must change it"
        );
        let names: Vec<_> = project_files(root)
            .unwrap()
            .into_iter()
            .map(|f| f.relative.display().to_string())
            .collect();
        assert_eq!(names, [".gitignore", "a.py"]);
    }
}
