//! Which files belong to the project's code, and their digest.
//!
//! The walk honours `.gitignore` (with negations, nested files too), `.ignore` and
//! `.ferryignore`, and always leaves out `.git/` and ferry's own `.ferry/` folder. Paths listed
//! under `[package] include` in ferry.toml are shipped even when ignored. Symbolic links are
//! kept when they point inside the project; others are reported and left out, as are sockets,
//! FIFOs and devices.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// The per-project ignore file, same syntax as `.gitignore`.
pub const FERRY_IGNORE_FILE: &str = ".ferryignore";
/// ferry's own folder in a project (local artifacts, step scratch space).
pub const FERRY_DIR: &str = ".ferry";

#[non_exhaustive]
#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot walk the project at {root}")]
    Walk {
        root: PathBuf,
        #[source]
        source: ignore::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid include pattern `{pattern}` in ferry.toml")]
    Include {
        pattern: String,
        #[source]
        source: ignore::Error,
    },
    #[error("include pattern `{pattern}` in ferry.toml leaves the project")]
    IncludeOutside { pattern: String },
    #[error("{path}: file names must be valid UTF-8 to be packaged")]
    NotUtf8 { path: PathBuf },
    #[error("invalid code glob `{pattern}` in step `{step}`")]
    CodeGlob {
        step: String,
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("code glob `{pattern}` of step `{step}` matches no file of the project")]
    CodeGlobUnmatched { step: String, pattern: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What to do about it, printed on its own line after the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::IncludeOutside { .. } => {
                Some("use paths relative to the project root, without `..`".into())
            }
            Self::NotUtf8 { .. } => Some("rename it or add it to .ferryignore".into()),
            Self::CodeGlob { .. } => {
                Some("globs are relative to the project root: `src/**/*.py`, `common.py`".into())
            }
            Self::CodeGlobUnmatched { .. } => Some(
                "globs are relative to the project root (not the pipeline's folder) and match the files ferry packages; `ferry package --list` shows them".into(),
            ),
            Self::Walk { .. } | Self::Read { .. } | Self::Include { .. } => None,
        }
    }
}

/// What a project entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    File {
        size: u64,
        executable: bool,
    },
    /// A symbolic link whose target stays inside the project.
    Symlink {
        target: PathBuf,
    },
}

/// A file of the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectFile {
    /// Relative to the root, `/`-separated.
    pub relative: String,
    pub absolute: PathBuf,
    pub kind: FileKind,
    /// When and where the file last changed, as the walk saw it: modification and change
    /// times (seconds, nanoseconds) and inode. The package index fingerprints these; `None`
    /// for symbolic links and where the platform has no such fields.
    pub stamp: Option<Stamp>,
}

/// `(mtime, mtime_nsec, ctime, ctime_nsec, inode)` of a file.
pub type Stamp = (i64, i64, i64, i64, u64);

impl ProjectFile {
    pub fn size(&self) -> u64 {
        match self.kind {
            FileKind::File { size, .. } => size,
            FileKind::Symlink { .. } => 0,
        }
    }
}

/// The project's files, sorted by path, and what was left out and why.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub files: Vec<ProjectFile>,
    /// Links pointing outside the project (or absolute), left out: `(link, target)`.
    pub outside_links: Vec<(String, PathBuf)>,
    /// Sockets, FIFOs and devices, left out.
    pub special: Vec<String>,
}

impl Selection {
    pub fn contains(&self, relative: &str) -> bool {
        self.files
            .binary_search_by(|f| f.relative.as_str().cmp(relative))
            .is_ok()
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(ProjectFile::size).sum()
    }

    /// The `n` largest files, largest first.
    pub fn largest(&self, n: usize) -> Vec<&ProjectFile> {
        let mut files: Vec<&ProjectFile> = self.files.iter().collect();
        files.sort_by(|a, b| b.size().cmp(&a.size()).then(a.relative.cmp(&b.relative)));
        files.truncate(n);
        files
    }
}

fn walker(root: &Path, start: &Path, ignore_rules: bool) -> ignore::WalkBuilder {
    let mut builder = ignore::WalkBuilder::new(start);
    builder
        .standard_filters(ignore_rules)
        .hidden(false)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .follow_links(false)
        .parents(ignore_rules);
    if ignore_rules {
        builder.add_custom_ignore_filename(FERRY_IGNORE_FILE);
    }
    let root = root.to_path_buf();
    builder.filter_entry(move |entry| {
        let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
        let at_root = entry.path().parent() == Some(root.as_path());
        !(is_dir && at_root && (entry.file_name() == ".git" || entry.file_name() == FERRY_DIR))
            && !(is_dir && entry.file_name() == ".git")
    });
    builder
}

/// The project's files under `root`: the ignore-aware walk plus `include` patterns.
pub fn select(root: &Path, include: &[String]) -> Result<Selection> {
    let mut found: BTreeMap<String, ProjectFile> = BTreeMap::new();
    let mut selection = Selection::default();
    let walk = walker(root, root, true).build().map(|entry| {
        let entry = entry?;
        let metadata = with_metadata(&entry)?;
        Ok((entry, metadata))
    });
    collect(root, walk, &mut found, &mut selection, |_| true)?;
    if !include.is_empty() {
        // Patterns name paths inside the project; anything else could ship files from
        // elsewhere on the machine.
        for pattern in include {
            let escapes = pattern.starts_with('/')
                || Path::new(pattern).components().any(|c| {
                    matches!(
                        c,
                        Component::ParentDir | Component::RootDir | Component::Prefix(_)
                    )
                });
            if escapes {
                return Err(Error::IncludeOutside {
                    pattern: pattern.clone(),
                });
            }
        }
        // A directory (`data` or `data/`) means everything below it.
        let include: Vec<String> = include
            .iter()
            .map(|p| {
                let trimmed = p.trim_end_matches('/');
                if root.join(trimmed).is_dir() {
                    format!("{trimmed}/**")
                } else {
                    p.clone()
                }
            })
            .collect();
        let include = include.as_slice();
        let mut overrides = ignore::overrides::OverrideBuilder::new(root);
        for pattern in include {
            overrides.add(pattern).map_err(|source| Error::Include {
                pattern: pattern.clone(),
                source,
            })?;
        }
        let overrides = overrides.build().map_err(|source| Error::Include {
            pattern: include.join(", "),
            source,
        })?;
        // Start each walk at the pattern's literal directory, so that including
        // `data/*.csv` does not walk every ignored tree of the project.
        let mut starts: Vec<PathBuf> = include
            .iter()
            .map(|p| root.join(literal_prefix(p)))
            .collect();
        starts.sort();
        starts.dedup();
        for start in starts.iter().filter(|s| s.exists()) {
            let walk = walker(root, start, false).build().map(|entry| {
                let entry = entry?;
                let metadata = with_metadata(&entry)?;
                Ok((entry, metadata))
            });
            collect(root, walk, &mut found, &mut selection, |path| {
                overrides.matched(path, false).is_whitelist()
            })?;
        }
    }
    selection.files = found.into_values().collect();
    selection.outside_links.sort();
    selection.outside_links.dedup();
    selection.special.sort();
    selection.special.dedup();
    Ok(selection)
}

/// The directory part of an include pattern before its first glob character.
fn literal_prefix(pattern: &str) -> PathBuf {
    let pattern = pattern.trim_start_matches('/');
    let mut prefix = PathBuf::new();
    let parts: Vec<&str> = pattern.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        if part.contains(['*', '?', '[', '{']) {
            break;
        }
        prefix.push(part);
    }
    prefix
}

/// A walked entry with the metadata of a regular file (the one `lstat` the walk needs).
type Walked = (ignore::DirEntry, Option<std::fs::Metadata>);

fn with_metadata(entry: &ignore::DirEntry) -> Result<Option<std::fs::Metadata>, ignore::Error> {
    match entry.file_type() {
        Some(kind) if kind.is_file() => entry.metadata().map(Some),
        _ => Ok(None),
    }
}

fn collect(
    root: &Path,
    walk: impl IntoIterator<Item = Result<Walked, ignore::Error>>,
    found: &mut BTreeMap<String, ProjectFile>,
    selection: &mut Selection,
    wanted: impl Fn(&Path) -> bool,
) -> Result<()> {
    for walked in walk {
        let (entry, metadata) = walked.map_err(|source| Error::Walk {
            root: root.to_path_buf(),
            source,
        })?;
        let Some(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() || !wanted(entry.path()) {
            continue;
        }
        let absolute = entry.path().to_path_buf();
        let Ok(relative_path) = absolute.strip_prefix(root) else {
            continue;
        };
        let relative = relative_string(relative_path)?;
        if found.contains_key(&relative) {
            continue;
        }
        // The unpacker refuses backslashes (they are separators elsewhere): leave such files
        // out with a warning here rather than fail on the remote machine.
        if relative.contains('\\') {
            selection.special.push(relative);
            continue;
        }
        if file_type.is_symlink() {
            let target = std::fs::read_link(&absolute).map_err(|source| Error::Read {
                path: absolute.clone(),
                source,
            })?;
            if stays_inside(relative_path, &target) {
                found.insert(
                    relative.clone(),
                    ProjectFile {
                        relative,
                        absolute,
                        kind: FileKind::Symlink { target },
                        stamp: None,
                    },
                );
            } else {
                selection.outside_links.push((relative, target));
            }
        } else if let Some(metadata) = metadata {
            let kind = FileKind::File {
                size: metadata.len(),
                executable: is_executable(&metadata),
            };
            found.insert(
                relative.clone(),
                ProjectFile {
                    relative,
                    absolute,
                    kind,
                    stamp: stamp(&metadata),
                },
            );
        } else {
            selection.special.push(relative);
        }
    }
    Ok(())
}

fn relative_string(path: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component.as_os_str().to_str() {
            Some(part) => parts.push(part),
            None => {
                return Err(Error::NotUtf8 {
                    path: path.to_path_buf(),
                });
            }
        }
    }
    Ok(parts.join("/"))
}

/// Whether a link at `link` (relative to the root) pointing at `target` resolves, lexically,
/// to a path inside the root.
pub fn stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = 0;
    let parent = link.parent().unwrap_or(Path::new(""));
    for component in parent.components().chain(target.components()) {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(unix)]
fn is_executable(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o111 != 0
}

#[cfg(unix)]
fn stamp(metadata: &std::fs::Metadata) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    Some((
        metadata.mtime(),
        metadata.mtime_nsec(),
        metadata.ctime(),
        metadata.ctime_nsec(),
        metadata.ino(),
    ))
}

#[cfg(not(unix))]
fn stamp(_metadata: &std::fs::Metadata) -> Option<Stamp> {
    None
}

#[cfg(not(unix))]
fn is_executable(_metadata: &std::fs::Metadata) -> bool {
    false
}

/// The files of `selection` a step's `code` globs match (relative to the project root, `*`
/// within a folder, `**` across folders), each with the blake3 of its content. A glob that
/// matches nothing is an error: a misspelt one would silently leave the step's code out of
/// its cache key.
pub fn step_code_digests(
    selection: &Selection,
    step: &str,
    globs: &[String],
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut digests = std::collections::BTreeMap::new();
    let mut buffer = vec![0u8; 64 * 1024];
    for pattern in globs {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|source| Error::CodeGlob {
                step: step.to_string(),
                pattern: pattern.clone(),
                source,
            })?
            .compile_matcher();
        let mut matched = false;
        for file in selection
            .files
            .iter()
            .filter(|f| glob.is_match(&f.relative))
        {
            matched = true;
            if digests.contains_key(&file.relative) {
                continue;
            }
            let digest = match &file.kind {
                FileKind::Symlink { target } => blake3::hash(target.to_string_lossy().as_bytes()),
                FileKind::File { .. } => content_digest(&file.absolute, &mut buffer)?,
            };
            digests.insert(file.relative.clone(), digest.to_hex().to_string());
        }
        if !matched {
            return Err(Error::CodeGlobUnmatched {
                step: step.to_string(),
                pattern: pattern.clone(),
            });
        }
    }
    Ok(digests)
}

fn content_digest(path: &Path, buffer: &mut [u8]) -> Result<blake3::Hash> {
    let mut content = blake3::Hasher::new();
    let mut reader = std::fs::File::open(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    loop {
        let read = reader.read(buffer).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if read == 0 {
            break;
        }
        content.update(&buffer[..read]);
    }
    Ok(content.finalize())
}

/// blake3 over every project file's path, executable bit and content: equal trees give equal
/// digests whatever their timestamps. Cheaper than building a package; used by local runs.
pub fn tree_digest(root: &Path, include: &[String]) -> Result<String> {
    let mut tree = blake3::Hasher::new();
    let mut buffer = vec![0u8; 64 * 1024];
    for file in select(root, include)?.files {
        tree.update(&(file.relative.len() as u64).to_le_bytes());
        tree.update(file.relative.as_bytes());
        match &file.kind {
            FileKind::Symlink { target } => {
                tree.update(b"l");
                tree.update(target.to_string_lossy().as_bytes());
            }
            FileKind::File { executable, .. } => {
                tree.update(if *executable { b"x" } else { b"f" });
                tree.update(content_digest(&file.absolute, &mut buffer)?.as_bytes());
            }
        }
    }
    Ok(tree.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, content: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn names(selection: &Selection) -> Vec<&str> {
        selection
            .files
            .iter()
            .map(|f| f.relative.as_str())
            .collect()
    }

    #[test]
    fn digest_follows_content_and_ignores_ignored_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "a.py", "print(1)");
        write(root, ".gitignore", "*.log\n");
        std::fs::create_dir_all(root.join(".ferry/artifacts")).unwrap();
        let first = tree_digest(root, &[]).unwrap();
        write(root, "noise.log", "x");
        write(root, ".ferry/artifacts/out", "x");
        assert_eq!(
            tree_digest(root, &[]).unwrap(),
            first,
            "ignored files changed the digest"
        );
        write(root, "a.py", "print(2)");
        assert_ne!(
            tree_digest(root, &[]).unwrap(),
            first,
            "a code change must change it"
        );
    }

    #[test]
    fn ignore_rules_nested_negations_ferryignore_and_include() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, ".gitignore", "*.csv\n!keep.csv\nbuild/\n");
        write(root, "data/.gitignore", "big/\n");
        write(root, "data/big/huge.bin", "x");
        write(root, "data/keep.csv", "k");
        write(root, "data/drop.csv", "d");
        write(root, "data/small.csv", "s");
        write(root, "build/out.o", "o");
        write(root, ".ferryignore", "secrets.txt\n");
        write(root, "secrets.txt", "s");
        write(root, "src/main.py", "m");
        write(root, ".git/config", "g");
        write(root, "sub/.git/HEAD", "nested repo metadata");
        let plain = select(root, &[]).unwrap();
        assert_eq!(
            names(&plain),
            [
                ".ferryignore",
                ".gitignore",
                "data/.gitignore",
                "data/keep.csv",
                "src/main.py"
            ]
        );
        let with_include = select(root, &["data/small.csv".into(), "build/*.o".into()]).unwrap();
        assert_eq!(
            names(&with_include),
            [
                ".ferryignore",
                ".gitignore",
                "build/out.o",
                "data/.gitignore",
                "data/keep.csv",
                "data/small.csv",
                "src/main.py"
            ]
        );
    }

    #[test]
    fn include_patterns_cannot_leave_the_project() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        write(&root, "a.txt", "a");
        write(dir.path(), "secret.txt", "s");
        for pattern in ["../secret.txt", "/etc/passwd", "data/../../secret.txt"] {
            let error = select(&root, &[pattern.to_string()])
                .unwrap_err()
                .to_string();
            assert!(error.contains("leaves the project"), "{pattern}: {error}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn links_inside_are_kept_and_others_reported() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "real/file.txt", "x");
        std::os::unix::fs::symlink("real/file.txt", root.join("inside")).unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", root.join("real/outside")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("absolute")).unwrap();
        let selection = select(root, &[]).unwrap();
        assert_eq!(names(&selection), ["inside", "real/file.txt"]);
        let outside: Vec<&str> = selection
            .outside_links
            .iter()
            .map(|(l, _)| l.as_str())
            .collect();
        assert_eq!(outside, ["absolute", "real/outside"]);
    }

    #[test]
    fn lexical_containment() {
        assert!(stays_inside(Path::new("a/b/link"), Path::new("../c")));
        assert!(stays_inside(Path::new("link"), Path::new("a/../b")));
        assert!(!stays_inside(Path::new("link"), Path::new("../x")));
        assert!(!stays_inside(Path::new("a/link"), Path::new("../../x")));
        assert!(!stays_inside(Path::new("link"), Path::new("/abs")));
    }
}
