//! Safe unpacking of ferry's code packages (`packages/<blake3>.tar.zst`).
//!
//! A package comes from a store that other machines write to, so it is treated as hostile until
//! proven otherwise:
//!
//! 1. **Verify first.** A first pass decompresses the whole stream and hashes the uncompressed
//!    tar with blake3, into an unnamed temporary file; nothing touches the target unless the
//!    digest matches the content address. The second pass extracts from that file, which no
//!    other process can open, so it is not hashed again. `unpack_with` opens its source twice
//!    and does hash again, so a source swapped between the passes is caught (and what was
//!    extracted is removed).
//! 2. **Refuse, never sanitise.** An entry that could land outside the target (absolute path,
//!    `..`, NUL, Windows prefix, escaping symlink or hard link, writing through a symlink,
//!    overwriting, duplicates) or that a package never holds (devices, FIFOs, sparse files,
//!    unknown types) stops the whole unpack with an error naming the entry. Quietly skipping or
//!    rewriting entries, as `tar::Entry::unpack_in` does, would leave a tree that differs from
//!    what the digest promised.
//! 3. **Write everything ourselves.** Files are created with `create_new` (never following or
//!    replacing what is there), parents are created only after every existing component was
//!    checked with `symlink_metadata`, and modes are reduced to 0644/0755.
//! 4. **All or nothing.** On any error after extraction started the extracted tree is removed.
//! 5. **Bounded.** The uncompressed stream, each file and the entry count are capped
//!    ([`UnpackLimits`]) against zip bombs; zstd's default decoder window limit (128 MiB) bounds
//!    memory.
//!
//! Unix only: it relies on Unix symlinks and permission bits.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError, mpsc};

/// What was wrong with a path in an entry (its own path or a link target).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("is empty")]
    Empty,
    #[error("contains a NUL byte")]
    Nul,
    #[error("is not valid UTF-8")]
    NotUtf8,
    #[error("is absolute")]
    Absolute,
    #[error("leaves the target directory")]
    LeavesTarget,
    #[error("has a windows-style prefix or a backslash")]
    WindowsPrefix,
}

/// Why an entry was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("its path {0}")]
    Path(PathProblem),
    #[error("its link target `{target}` {problem}")]
    LinkTarget {
        target: String,
        problem: PathProblem,
    },
    #[error(
        "its symlink target `{target}` goes up (`..`) from `{through}`, which is not a real directory (it is missing or a symlink), so where the link lands cannot be checked"
    )]
    UncheckableLinkTarget { target: String, through: String },
    #[error(
        "its hard link target `{target}` is not a regular file extracted earlier from this package"
    )]
    HardLinkTarget { target: String },
    #[error("it is {0}, and a code package holds only files, directories and symlinks")]
    UnsupportedType(String),
    #[error("its parent `{0}` is a symlink, and nothing is written through a symlink")]
    ThroughSymlink(String),
    #[error("its parent `{0}` exists and is not a directory")]
    ParentNotDirectory(String),
    #[error("it would overwrite an existing symlink")]
    OverwritesSymlink,
    #[error("something already exists at its path")]
    AlreadyExists,
    #[error("the same path appears earlier in the package")]
    Duplicate,
    #[error("its size of {size} bytes would take the package past its limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("the package has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("its data ends after {got} of its {size} bytes")]
    Truncated { got: u64, size: u64 },
}

#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(
        "invalid expected package digest `{digest}`: it must be 64 lowercase hex characters (blake3)"
    )]
    InvalidDigest { digest: String },
    #[error("cannot open the package")]
    Open {
        #[source]
        source: io::Error,
    },
    #[error("the package is not a valid zstd stream (corrupt or truncated)")]
    Corrupt {
        #[source]
        source: io::Error,
    },
    #[error("package digest mismatch: expected {expected}, the package has {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error(
        "the package changed while it was being unpacked (expected {expected}, extracted {actual}); what was extracted has been removed"
    )]
    ChangedDuringExtraction { expected: String, actual: String },
    #[error("the package's uncompressed size exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("refused entry `{entry}`: {reason}")]
    Refused { entry: String, reason: Refusal },
    #[error("malformed tar stream ({position})")]
    Tar {
        position: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot unpack into `{}`: {reason}", path.display())]
    Target { path: PathBuf, reason: String },
    #[error("cannot extract entry `{entry}` to `{}`", path.display())]
    Io {
        entry: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = UnpackError> = std::result::Result<T, E>;

/// What an unpack wrote. Hard links count as files; `bytes` is file data written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub files: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// Caps against decompression bombs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Maximum size of the uncompressed tar stream (headers included), and so of all file data.
    pub max_bytes: u64,
    /// Maximum number of tar entries (files, directories, links, metadata entries).
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_bytes: 8 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// Small limits for fuzzing: a fuzzer should explore parsing, not spend its time inflating bombs.
const FUZZ_LIMITS: UnpackLimits = UnpackLimits {
    max_bytes: 16 << 20,
    max_entries: 4096,
};

/// Verify `archive` (a .tar.zst file) against `expected_digest` and unpack it into `target`,
/// which must not exist yet or be an empty directory.
pub fn unpack_file(archive: &Path, expected_digest: &str, target: &Path) -> Result<UnpackStats> {
    unpack_file_with_limits(archive, expected_digest, target, UnpackLimits::default())
}

/// [`unpack_file`] with explicit limits.
pub fn unpack_file_with_limits(
    archive: &Path,
    expected_digest: &str,
    target: &Path,
    limits: UnpackLimits,
) -> Result<UnpackStats> {
    if !is_digest(expected_digest) {
        return Err(UnpackError::InvalidDigest {
            digest: expected_digest.to_string(),
        });
    }
    // Pass 1 decompresses once, into a private temporary file beside the target, hashing as
    // it goes. Nothing from the archive is looked at before the digest matches.
    let scratch_dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tar = fs::create_dir_all(scratch_dir)
        .and_then(|()| tempfile::tempfile_in(scratch_dir))
        .map_err(|source| UnpackError::Target {
            path: scratch_dir.to_path_buf(),
            reason: format!(
                "cannot create a temporary file for the decompressed package: {source}"
            ),
        })?;
    let file = fs::File::open(archive).map_err(|source| UnpackError::Open { source })?;
    let actual = decompress_into(decoder(file)?, &mut tar, scratch_dir, limits)?;
    if actual != expected_digest {
        return Err(UnpackError::DigestMismatch {
            expected: expected_digest.to_string(),
            actual,
        });
    }
    // Pass 2 extracts from that file, mapped into memory, so file data goes from the page
    // cache to the new files with no copy in between and no second hash: the temporary file
    // has no name (it is unlinked, or O_TMPFILE), so nothing but this process can reach it
    // between the passes, unlike an archive that `unpack_with` opens twice.
    let map = if tar.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        None
    } else {
        // SAFETY: the mapping is read-only and the file is this process's own unnamed
        // temporary file, which nothing truncates or writes while the map lives.
        Some(
            unsafe { memmap2::Mmap::map(&tar) }.map_err(|source| UnpackError::Target {
                path: scratch_dir.to_path_buf(),
                reason: format!("cannot map the decompressed package: {source}"),
            })?,
        )
    };
    let data: &[u8] = map.as_deref().unwrap_or_default();
    let created = prepare_target(target)?;
    let result = extract_mapped(data, target, limits);
    if result.is_err() {
        clean(target, created);
    }
    result
}

/// Decompress `decoder` into `out` and return the blake3 of what was written. Decompressing
/// runs on this thread while another hashes and writes the previous chunk, so the two halves
/// of pass 1 overlap on two cores.
fn decompress_into<R: Read + Send>(
    mut decoder: R,
    out: &mut fs::File,
    dir: &Path,
    limits: UnpackLimits,
) -> Result<String> {
    const CHUNK: usize = 1 << 20;
    let write_error = |source: io::Error| UnpackError::Target {
        path: dir.to_path_buf(),
        reason: format!("cannot write the decompressed package: {source}"),
    };
    let (full, filled) = mpsc::sync_channel::<Vec<u8>>(4);
    let (give_back, spare) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let sink = scope.spawn(move || -> io::Result<blake3::Hasher> {
            let mut hasher = blake3::Hasher::new();
            for chunk in filled {
                hasher.update(&chunk);
                out.write_all(&chunk)?;
                // The reader may be gone already (it stops at an error); nothing to recycle then.
                let _ = give_back.send(chunk);
            }
            Ok(hasher)
        });
        let mut total = 0u64;
        let read = loop {
            let mut chunk = spare.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
            chunk.resize(CHUNK, 0);
            let mut len = 0;
            let ended = loop {
                match decoder.read(&mut chunk[len..]) {
                    Ok(0) => break Ok(true),
                    Ok(n) => {
                        len += n;
                        if len == CHUNK {
                            break Ok(false);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => break Err(UnpackError::Corrupt { source }),
                }
            };
            // No `return` in this loop: `full` must be dropped below, or the writer waits for
            // more chunks forever and the scope never ends.
            let ended = match ended {
                Ok(ended) => ended,
                Err(error) => break Err(error),
            };
            total += len as u64;
            if total > limits.max_bytes {
                break Err(UnpackError::TooLarge {
                    limit: limits.max_bytes,
                });
            }
            chunk.truncate(len);
            // A send fails only when the writer stopped at an error, which its join reports.
            if full.send(chunk).is_err() || ended {
                break Ok(());
            }
        };
        drop(full);
        let written = sink
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let hasher = written.map_err(write_error)?;
        read?;
        Ok(hasher.finalize().to_hex().to_string())
    })
}

/// The same from any reader factory (for tests/fuzzing): `open` is called once to verify the
/// digest, once to extract.
pub fn unpack_with(
    open: impl FnMut() -> io::Result<Box<dyn Read>>,
    expected_digest: &str,
    target: &Path,
) -> Result<UnpackStats> {
    unpack_with_limits(open, expected_digest, target, UnpackLimits::default())
}

/// [`unpack_with`] with explicit limits.
pub fn unpack_with_limits(
    mut open: impl FnMut() -> io::Result<Box<dyn Read>>,
    expected_digest: &str,
    target: &Path,
    limits: UnpackLimits,
) -> Result<UnpackStats> {
    if !is_digest(expected_digest) {
        return Err(UnpackError::InvalidDigest {
            digest: expected_digest.to_string(),
        });
    }
    // Pass 1: nothing in the archive is looked at, let alone written, before this passes.
    let reader = open().map_err(|source| UnpackError::Open { source })?;
    let actual = digest_stream(reader, limits)?;
    if actual != expected_digest {
        return Err(UnpackError::DigestMismatch {
            expected: expected_digest.to_string(),
            actual,
        });
    }
    // Pass 2: extract, hashing again (see `extract`).
    let reader = open().map_err(|source| UnpackError::Open { source })?;
    unpack_into(reader, Some(expected_digest), target, limits)
}

/// Fuzz entry point: never panics on any input; unpacks `data` (zstd-compressed tar) into a fresh
/// temp dir under `scratch` WITHOUT a digest check, returns Ok/Err. The temp dir is removed
/// afterwards so that a long fuzzing run does not fill the disk; small limits apply.
pub fn fuzz_unpack(data: &[u8], scratch: &Path) -> Result<UnpackStats> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let target = scratch.join(format!(
        "unpack-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    // A leftover from an earlier crashed run would make the target non-empty.
    let _ = fs::remove_dir_all(&target);
    let result = unpack_into(data, None, &target, FUZZ_LIMITS);
    let _ = fs::remove_dir_all(&target);
    result
}

fn is_digest(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The decompressed stream, hashed and counted as it is read, failing once past the limit.
struct Tap<R> {
    inner: R,
    hasher: blake3::Hasher,
    bytes: u64,
    limit: u64,
    over: bool,
}

impl<R: Read> Tap<R> {
    fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
            bytes: 0,
            limit,
            over: false,
        }
    }

    fn digest(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.over {
            return Err(io::Error::other("package exceeds its size limit"));
        }
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.bytes > self.limit {
            // Sticky, so that whoever sees the error later (the tar crate may wrap or swallow
            // it) can still be told it was the limit.
            self.over = true;
            return Err(io::Error::other("package exceeds its size limit"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn decoder<'a, R: Read + 'a>(reader: R) -> Result<zstd::stream::read::Decoder<'a, BufReader<R>>> {
    zstd::stream::read::Decoder::new(reader).map_err(|source| UnpackError::Corrupt { source })
}

/// Read the stream to its end (through the tap, so it is hashed and counted); a truncated or
/// corrupt zstd stream only shows here.
fn drain<R: Read>(tap: &mut Tap<R>) -> Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match tap.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) if tap.over => return Err(UnpackError::TooLarge { limit: tap.limit }),
            Err(source) => return Err(UnpackError::Corrupt { source }),
        }
    }
}

fn digest_stream<R: Read>(reader: R, limits: UnpackLimits) -> Result<String> {
    let mut tap = Tap::new(decoder(reader)?, limits.max_bytes);
    drain(&mut tap)?;
    Ok(tap.digest())
}

/// Prepare `target`, extract, and on failure remove what was extracted.
fn unpack_into<R: Read>(
    reader: R,
    expected: Option<&str>,
    target: &Path,
    limits: UnpackLimits,
) -> Result<UnpackStats> {
    let created = prepare_target(target)?;
    let result = extract(reader, expected, target, limits);
    if result.is_err() {
        clean(target, created);
    }
    result
}

/// Returns whether the target was created here (and so may be removed whole on failure).
fn prepare_target(target: &Path) -> Result<bool> {
    let bad = |reason: String| UnpackError::Target {
        path: target.to_path_buf(),
        reason,
    };
    // `metadata` follows a symlink at `target` itself: where the target lives is the caller's
    // choice; only what is inside it comes from the package.
    match fs::metadata(target) {
        Ok(meta) if meta.is_dir() => {
            let mut listing = fs::read_dir(target).map_err(|e| bad(e.to_string()))?;
            if listing.next().is_some() {
                return Err(bad("it is not empty".into()));
            }
            Ok(false)
        }
        Ok(_) => Err(bad("it exists and is not a directory".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(|e| bad(e.to_string()))?;
            }
            // `create_dir`, not `create_dir_all`: it fails if something appeared meanwhile, so
            // "created" really means we own it.
            fs::create_dir(target).map_err(|e| bad(e.to_string()))?;
            Ok(true)
        }
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Best effort: a half-unpacked tree must not be mistaken for a good one.
fn clean(target: &Path, created: bool) {
    if created {
        // `remove_dir_all` does not follow symlinks, so links we extracted are removed, not
        // their targets.
        let _ = fs::remove_dir_all(target);
        return;
    }
    let Ok(listing) = fs::read_dir(target) else {
        return;
    };
    for entry in listing.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => {
                let _ = fs::remove_dir_all(&path);
            }
            _ => {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

/// An entry name for messages: lossy UTF-8 with control characters (NUL...) escaped.
fn show(bytes: &[u8]) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(bytes).chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The checks shared by entry paths and link targets, before looking at components.
fn check_text(bytes: &[u8]) -> Result<&str, PathProblem> {
    if bytes.is_empty() {
        return Err(PathProblem::Empty);
    }
    if bytes.contains(&0) {
        return Err(PathProblem::Nul);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| PathProblem::NotUtf8)?;
    // Harmless on Unix, but such a tree means something else on Windows; a package never has
    // them.
    if text.contains('\\') {
        return Err(PathProblem::WindowsPrefix);
    }
    let first = text.split('/').next().unwrap_or("");
    if first.len() >= 2 && first.as_bytes()[0].is_ascii_alphabetic() && first.as_bytes()[1] == b':'
    {
        return Err(PathProblem::WindowsPrefix);
    }
    if text.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    Ok(text)
}

/// An archive-relative path (an entry's own path or a hard link target) as its normal
/// components; `.` and empty components are dropped, `..` is refused outright.
fn archive_path(bytes: &[u8]) -> Result<Vec<String>, PathProblem> {
    let text = check_text(bytes)?;
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(PathProblem::LeavesTarget),
            normal => parts.push(normal.to_string()),
        }
    }
    Ok(parts)
}

/// Everything needed while walking the entries.
struct Extraction<'a> {
    root: &'a Path,
    limits: UnpackLimits,
    /// Every entry path seen, to refuse duplicates.
    seen: HashSet<String>,
    /// Regular files extracted so far: the only allowed hard link targets.
    files: HashSet<String>,
    /// Symlinks whose target has a `..` after a name (`sub/../x`), created once every other
    /// entry is out: see [`Extraction::check_symlink_target`].
    deferred: Vec<Deferred>,
    /// Directories known to be real ones: checked or created by this unpack (see `prepare`).
    directories: HashSet<String>,
    /// Set when the package was decompressed whole ([`extract_mapped`]).
    mapped: Option<Mapped<'a>>,
    /// Hard links of a mapped extraction, created after the writers are done.
    hard_links: Vec<HardLink>,
    entries: u64,
    stats: UnpackStats,
}

/// The decompressed package, and the threads that write its files.
struct Mapped<'a> {
    data: &'a [u8],
    writers: Writers<'a>,
}

impl<'a> Extraction<'a> {
    fn new(root: &'a Path, limits: UnpackLimits) -> Self {
        Self {
            root,
            limits,
            seen: HashSet::new(),
            files: HashSet::new(),
            deferred: Vec::new(),
            directories: HashSet::new(),
            mapped: None,
            hard_links: Vec::new(),
            entries: 0,
            stats: UnpackStats::default(),
        }
    }
}

fn extract<R: Read>(
    reader: R,
    expected: Option<&str>,
    target: &Path,
    limits: UnpackLimits,
) -> Result<UnpackStats> {
    extract_tar(decoder(reader)?, expected, target, limits)
}

/// Extract from the decompressed tar stream.
fn extract_tar<R: Read>(
    tar: R,
    expected: Option<&str>,
    target: &Path,
    limits: UnpackLimits,
) -> Result<UnpackStats> {
    let mut tap = Tap::new(tar, limits.max_bytes);
    let mut state = Extraction::new(target, limits);
    let walked = tar::Archive::new(&mut tap)
        .entries()
        .map_err(|e| UnpackError::Tar {
            position: "before its first entry".to_string(),
            source: e,
        })
        .and_then(|entries| walk(entries, &mut state));
    if tap.over {
        // Whatever error the tar crate or a file write reported, the cause was the limit.
        return Err(UnpackError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    walked?;
    // The tar crate stops at the end-of-archive marker; what follows is part of the digest too,
    // and a truncated zstd stream only shows at its end.
    drain(&mut tap)?;
    if let Some(expected) = expected {
        let actual = tap.digest();
        if actual != expected {
            return Err(UnpackError::ChangedDuringExtraction {
                expected: expected.to_string(),
                actual,
            });
        }
    }
    Ok(state.stats)
}

/// A symlink entry waiting for the end of the archive.
struct Deferred {
    parts: Vec<String>,
    target: String,
    name: String,
}

fn walk<R: Read>(entries: tar::Entries<'_, R>, state: &mut Extraction<'_>) -> Result<()> {
    let mut last: Option<String> = None;
    let tar_error = |last: &Option<String>, source| UnpackError::Tar {
        position: match last {
            Some(entry) => format!("after entry `{entry}`"),
            None => "before its first entry".to_string(),
        },
        source,
    };
    for entry in entries {
        let mut entry = entry.map_err(|e| tar_error(&last, e))?;
        let name = show(&entry.path_bytes());
        state.entries += 1;
        if state.entries > state.limits.max_entries {
            return Err(refused(
                &name,
                Refusal::TooManyEntries {
                    limit: state.limits.max_entries,
                },
            ));
        }
        state.entry(&mut entry, &name)?;
        last = Some(name);
    }
    for link in std::mem::take(&mut state.deferred) {
        state.check_symlink_target(&link.parts, &link.target, &link.name, true)?;
        state.create_symlink(&link.parts, &link.target, &link.name)?;
    }
    Ok(())
}

fn refused(entry: &str, reason: Refusal) -> UnpackError {
    UnpackError::Refused {
        entry: entry.to_string(),
        reason,
    }
}

impl Extraction<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, name: &str) -> Result<()> {
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        // Global PAX headers carry metadata for the whole archive; the tar crate does not apply
        // them (so they cannot redirect paths) and neither do we.
        if kind == T::XGlobalHeader {
            return Ok(());
        }
        // `path_bytes` is what `entry.path()` converts: the GNU long name, else the PAX `path`,
        // else the header's (ustar prefix + name). That resolved path is the one checked.
        let parts =
            archive_path(&entry.path_bytes()).map_err(|p| refused(name, Refusal::Path(p)))?;
        if parts.is_empty() {
            // `./` as written by `tar -C dir .` is the target itself.
            if kind == T::Directory {
                return Ok(());
            }
            return Err(refused(name, Refusal::Path(PathProblem::Empty)));
        }
        let unsupported = |what: &str| Err(refused(name, Refusal::UnsupportedType(what.into())));
        match kind {
            T::Regular | T::Continuous | T::Directory | T::Symlink | T::Link => {}
            T::Char => return unsupported("a character device"),
            T::Block => return unsupported("a block device"),
            T::Fifo => return unsupported("a fifo"),
            T::GNUSparse => return unsupported("a sparse file"),
            other => {
                let byte = other.as_byte();
                return unsupported(&format!(
                    "an entry of unknown type `{}`",
                    show(std::slice::from_ref(&byte))
                ));
            }
        }
        let key = parts.join("/");
        if !self.seen.insert(key.clone()) {
            return Err(refused(name, Refusal::Duplicate));
        }
        match kind {
            T::Directory => self.directory(&parts, name),
            T::Symlink => self.symlink(entry, &parts, name),
            T::Link => self.hard_link(entry, &parts, &key, name),
            _ => self.file(entry, &parts, key, name),
        }
    }

    /// Check every existing parent component (none may be a symlink or a non-directory), then
    /// create the missing ones, then check the leaf. Returns the leaf's full path and whether
    /// it already exists as a directory.
    ///
    /// A parent this unpack already checked or created is not looked at again: nothing is
    /// ever removed or replaced while unpacking, so a real directory stays one, and in a
    /// target that started empty every directory is one of those. That saves a `stat` per
    /// path component of every file.
    fn prepare(&mut self, parts: &[String], name: &str) -> Result<(PathBuf, bool)> {
        let parent_key = parts[..parts.len() - 1].join("/");
        if parent_key.is_empty() || self.directories.contains(&parent_key) {
            let key = parts.join("/");
            let is_dir = self.directories.contains(&key);
            return Ok((self.root.join(key), is_dir));
        }
        let io_error = |path: &Path, source| UnpackError::Io {
            entry: name.to_string(),
            path: path.to_path_buf(),
            source,
        };
        let mut path = self.root.to_path_buf();
        for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
            path.push(part);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(refused(
                        name,
                        Refusal::ThroughSymlink(parts[..=i].join("/")),
                    ));
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(refused(
                        name,
                        Refusal::ParentNotDirectory(parts[..=i].join("/")),
                    ));
                }
                // Missing here means missing below too: `create_dir_all` makes real directories.
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(io_error(&path, e)),
            }
        }
        let parent = self.root.join(&parent_key);
        fs::create_dir_all(&parent).map_err(|e| io_error(&parent, e))?;
        for depth in 1..parts.len() {
            self.directories.insert(parts[..depth].join("/"));
        }
        let leaf = parent.join(&parts[parts.len() - 1]);
        match fs::symlink_metadata(&leaf) {
            Ok(meta) if meta.file_type().is_symlink() => {
                Err(refused(name, Refusal::OverwritesSymlink))
            }
            Ok(meta) => Ok((leaf, meta.is_dir())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((leaf, false)),
            Err(e) => Err(io_error(&leaf, e)),
        }
    }

    fn io_error(name: &str, path: &Path, source: io::Error) -> UnpackError {
        UnpackError::Io {
            entry: name.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }

    fn directory(&mut self, parts: &[String], name: &str) -> Result<()> {
        let (leaf, is_dir) = self.prepare(parts, name)?;
        if is_dir {
            // Already made as the parent of an earlier entry.
            return Ok(());
        }
        if leaf.symlink_metadata().is_ok() {
            return Err(refused(name, Refusal::AlreadyExists));
        }
        // The header's mode is ignored: a 0000 directory would make the rest unextractable.
        fs::create_dir(&leaf).map_err(|e| Self::io_error(name, &leaf, e))?;
        self.directories.insert(parts.join("/"));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parts: &[String],
        key: String,
        name: &str,
    ) -> Result<()> {
        let size = entry.size();
        let limit = self.limits.max_bytes;
        // Checked before writing so a header that claims terabytes fails fast, by name.
        if size > limit.saturating_sub(self.stats.bytes) {
            return Err(refused(name, Refusal::TooLarge { size, limit }));
        }
        let mode = entry.header().mode().map_err(|source| UnpackError::Tar {
            position: format!("in the header of entry `{name}`"),
            source,
        })?;
        let (leaf, is_dir) = self.prepare(parts, name)?;
        if is_dir {
            return Err(refused(name, Refusal::AlreadyExists));
        }
        // Only the exec bit is kept; setuid, sticky, group/other write never are.
        let perm = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        if let Some(mapped) = &self.mapped {
            // The data is a slice of the verified, decompressed package: hand it to a writer.
            let all = mapped.data;
            let start = entry.raw_file_position().min(all.len() as u64);
            let available = all.len() as u64 - start;
            if size > available {
                return Err(refused(
                    name,
                    Refusal::Truncated {
                        got: available,
                        size,
                    },
                ));
            }
            let data = &all[start as usize..(start + size) as usize];
            mapped.writers.write(FileWrite {
                leaf,
                data,
                perm,
                name: name.to_string(),
            })?;
        } else {
            let mut file = create_file(&leaf, perm, name)?;
            let got = io::copy(&mut Read::take(&mut *entry, size), &mut file)
                .map_err(|e| Self::io_error(name, &leaf, e))?;
            // The tar crate reads entry data through `Take`, which ends quietly at a short
            // stream.
            if got != size {
                return Err(refused(name, Refusal::Truncated { got, size }));
            }
            finish_file(&file, perm).map_err(|e| Self::io_error(name, &leaf, e))?;
        }
        self.stats.files += 1;
        self.stats.bytes += size;
        self.files.insert(key);
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        parts: &[String],
        name: &str,
    ) -> Result<()> {
        let raw = entry.link_name_bytes().unwrap_or_default();
        let shown = show(&raw);
        let bad_target = |problem| {
            refused(
                name,
                Refusal::LinkTarget {
                    target: shown.clone(),
                    problem,
                },
            )
        };
        let text = check_text(&raw).map_err(bad_target)?;
        let needs_real_dirs = self.check_symlink_target(parts, text, name, false)?;
        if needs_real_dirs {
            // Sorted packages put `a -> sub/../x` before `sub/`: wait until `sub` exists.
            // Anything written at or through `a` meanwhile makes a real directory there, and
            // creating the link then fails: deferral can refuse more, never allow more.
            self.deferred.push(Deferred {
                parts: parts.to_vec(),
                target: text.to_string(),
                name: name.to_string(),
            });
            return Ok(());
        }
        self.create_symlink(parts, text, name)
    }

    fn create_symlink(&mut self, parts: &[String], text: &str, name: &str) -> Result<()> {
        let (leaf, is_dir) = self.prepare(parts, name)?;
        if is_dir {
            return Err(refused(name, Refusal::AlreadyExists));
        }
        std::os::unix::fs::symlink(text, &leaf).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => refused(name, Refusal::AlreadyExists),
            _ => Self::io_error(name, &leaf, e),
        })?;
        self.stats.symlinks += 1;
        Ok(())
    }

    /// Resolve `target` lexically from the link's directory and refuse it if it leaves the root.
    ///
    /// Lexical resolution is only sound if every `..` undoes a real directory: with `x -> .`,
    /// `y -> x/..` resolves lexically to the root but really to its parent. So a `..` that
    /// follows names from the target itself is allowed only if those names are existing real
    /// directories (they can never become symlinks later: nothing is ever replaced). The link's
    /// own parents are real directories (checked by `prepare`). Names not followed by `..` may
    /// be other symlinks: each of those was itself checked to stay inside.
    ///
    /// With `check_fs` false only the lexical check runs, and the answer says whether the
    /// target has such a `..` (and so needs the check with `check_fs` later).
    fn check_symlink_target(
        &self,
        parts: &[String],
        target: &str,
        name: &str,
        check_fs: bool,
    ) -> Result<bool> {
        let shown = show(target.as_bytes());
        let mut needs_real_dirs = false;
        let mut stack: Vec<&str> = parts[..parts.len() - 1]
            .iter()
            .map(String::as_str)
            .collect();
        let mut verified = stack.len();
        for component in Path::new(target).components() {
            match component {
                Component::Normal(part) => stack.push(part.to_str().unwrap_or_default()),
                Component::CurDir => {}
                Component::ParentDir => {
                    if stack.is_empty() {
                        return Err(refused(
                            name,
                            Refusal::LinkTarget {
                                target: shown.to_string(),
                                problem: PathProblem::LeavesTarget,
                            },
                        ));
                    }
                    if !check_fs && verified < stack.len() {
                        needs_real_dirs = true;
                    }
                    let to_check = if check_fs {
                        verified..stack.len()
                    } else {
                        0..0
                    };
                    for depth in to_check {
                        let through = stack[..=depth].join("/");
                        let real_dir = fs::symlink_metadata(self.root.join(&through))
                            .is_ok_and(|m| m.is_dir() && !m.file_type().is_symlink());
                        if !real_dir {
                            return Err(refused(
                                name,
                                Refusal::UncheckableLinkTarget {
                                    target: shown.to_string(),
                                    through,
                                },
                            ));
                        }
                    }
                    stack.pop();
                    verified = stack.len();
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refused(
                        name,
                        Refusal::LinkTarget {
                            target: shown.to_string(),
                            problem: PathProblem::Absolute,
                        },
                    ));
                }
            }
        }
        Ok(needs_real_dirs)
    }

    fn hard_link<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        parts: &[String],
        key: &str,
        name: &str,
    ) -> Result<()> {
        let raw = entry.link_name_bytes().unwrap_or_default();
        let shown = show(&raw);
        // Hard link targets are archive paths (relative to the root, not to the link).
        let source = archive_path(&raw).map_err(|problem| {
            refused(
                name,
                Refusal::LinkTarget {
                    target: shown.clone(),
                    problem,
                },
            )
        })?;
        let source_key = source.join("/");
        if source_key == key || !self.files.contains(&source_key) {
            return Err(refused(name, Refusal::HardLinkTarget { target: shown }));
        }
        let (leaf, is_dir) = self.prepare(parts, name)?;
        if is_dir {
            return Err(refused(name, Refusal::AlreadyExists));
        }
        // The source is a regular file this unpack created, under real directories that cannot
        // have been replaced since; link(2) does not follow a symlink at the source anyway.
        let link = HardLink {
            from: self.root.join(&source_key),
            leaf,
            name: name.to_string(),
        };
        if self.mapped.is_some() {
            // The source may still be in a writer's queue: link once every file is out.
            self.hard_links.push(link);
        } else {
            link.create()?;
        }
        self.stats.files += 1;
        self.files.insert(key.to_string());
        Ok(())
    }
}

/// A hard link whose entry was checked, to create once its source exists.
struct HardLink {
    from: PathBuf,
    leaf: PathBuf,
    name: String,
}

impl HardLink {
    fn create(&self) -> Result<()> {
        fs::hard_link(&self.from, &self.leaf).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => refused(&self.name, Refusal::AlreadyExists),
            _ => Extraction::io_error(&self.name, &self.leaf, e),
        })
    }
}

/// Create a regular file that must not exist yet. `create_new` is O_CREAT|O_EXCL: it never
/// follows or truncates whatever is there, even a dangling symlink.
fn create_file(leaf: &Path, perm: u32, name: &str) -> Result<fs::File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(perm)
        .open(leaf)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => match fs::symlink_metadata(leaf) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    refused(name, Refusal::OverwritesSymlink)
                }
                _ => refused(name, Refusal::AlreadyExists),
            },
            _ => Extraction::io_error(name, leaf, e),
        })
}

/// Give a freshly written file its exact mode. `open` applied the process umask to `perm`;
/// only when that took bits away is a `fchmod` (on the handle, so no path is followed) needed.
fn finish_file(file: &fs::File, perm: u32) -> io::Result<()> {
    match process_umask() {
        Some(mask) if mask & perm == 0 => Ok(()),
        _ => file.set_permissions(fs::Permissions::from_mode(perm)),
    }
}

/// The process umask, from /proc (reading it with umask(2) means setting it, which races with
/// other threads creating files); `None` where /proc does not say.
fn process_umask() -> Option<u32> {
    static UMASK: OnceLock<Option<u32>> = OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// One regular file for a writer thread: its data is a slice of the mapped package.
struct FileWrite<'d> {
    leaf: PathBuf,
    data: &'d [u8],
    perm: u32,
    name: String,
}

impl FileWrite<'_> {
    fn write(&self) -> Result<()> {
        let mut file = create_file(&self.leaf, self.perm, &self.name)?;
        file.write_all(self.data)
            .and_then(|()| finish_file(&file, self.perm))
            .map_err(|e| Extraction::io_error(&self.name, &self.leaf, e))
    }
}

/// The first error a writer thread met; the walk stops at its next file.
#[derive(Default)]
struct WriteFailure {
    failed: AtomicBool,
    error: Mutex<Option<UnpackError>>,
}

impl WriteFailure {
    fn set(&self, error: UnpackError) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(error);
        self.failed.store(true, Ordering::Release);
    }

    fn take(&self) -> Option<UnpackError> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Where a mapped extraction's regular files go: a few threads that create and write them
/// while the walk goes on. Creating thousands of small files is bound by system calls, which
/// spread over cores; the walk itself (checks, directories, links) stays on one thread, so
/// every check sees the tree as the archive's order left it.
struct Writers<'d> {
    jobs: mpsc::SyncSender<FileWrite<'d>>,
    failure: &'d WriteFailure,
}

impl<'d> Writers<'d> {
    fn write(&self, job: FileWrite<'d>) -> Result<()> {
        if let Some(error) = self.failure.take() {
            return Err(error);
        }
        // A failed send hands the job back, so the error can name it without a copy per file.
        self.jobs.send(job).map_err(|mpsc::SendError(job)| {
            Extraction::io_error(
                &job.name,
                &job.leaf,
                io::Error::other("the writer threads stopped"),
            )
        })
    }
}

/// How many threads write files: one per core, at most 8 (past that the file system's own
/// locks, not the cores, are the limit).
fn writer_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Extract the decompressed, verified tar in `data` into `target`.
fn extract_mapped(data: &[u8], target: &Path, limits: UnpackLimits) -> Result<UnpackStats> {
    let failure = WriteFailure::default();
    let (jobs, queue) = mpsc::sync_channel::<FileWrite<'_>>(1024);
    let queue = Mutex::new(queue);
    let (walked, hard_links, stats) = std::thread::scope(|scope| {
        for _ in 0..writer_threads() {
            scope.spawn(|| {
                loop {
                    // The guard is dropped before the write, so writers only queue for the
                    // next job, never behind another's write.
                    let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok(job) = next else { break };
                    if failure.failed.load(Ordering::Acquire) {
                        continue;
                    }
                    if let Err(error) = job.write() {
                        failure.set(error);
                    }
                }
            });
        }
        let mut state = Extraction::new(target, limits);
        state.mapped = Some(Mapped {
            data,
            writers: Writers {
                jobs,
                failure: &failure,
            },
        });
        let mut archive = tar::Archive::new(io::Cursor::new(data));
        let walked = archive
            .entries_with_seek()
            .map_err(|e| UnpackError::Tar {
                position: "before its first entry".to_string(),
                source: e,
            })
            .and_then(|entries| walk(entries, &mut state));
        let Extraction {
            mapped,
            hard_links,
            stats,
            ..
        } = state;
        // A refused entry fails the unpack: the writers skip what is still queued (it would
        // only be cleaned up) instead of writing it. The flag alone carries no error, so the
        // walk's error is the one reported.
        if walked.is_err() {
            failure.failed.store(true, Ordering::Release);
        }
        // Closing the queue lets the writers finish what is queued and stop; the scope then
        // waits for them.
        drop(mapped);
        (walked, hard_links, stats)
    });
    // An error of the walk names the first bad entry in archive order; a writer's error only
    // counts when the walk had none.
    walked?;
    if let Some(error) = failure.take() {
        return Err(error);
    }
    for link in &hard_links {
        link.create()?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::{EntryType, Header};

    // ---- building archives ----

    fn header(kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h
    }

    /// A GNU header with the name (and link name) written as raw bytes, bypassing the
    /// builder's refusal of `..` and absolute paths.
    fn raw(name: &[u8], kind: EntryType, size: u64, link: Option<&[u8]>) -> Header {
        let mut h = header(kind, 0o644, size);
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name = [0; 100];
            gnu.name[..name.len()].copy_from_slice(name);
            if let Some(link) = link {
                gnu.linkname[..link.len()].copy_from_slice(link);
            }
        }
        h.set_cksum();
        h
    }

    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Self {
            Tar(tar::Builder::new(Vec::new()))
        }
        fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
            let mut h = header(EntryType::Regular, mode, data.len() as u64);
            self.0.append_data(&mut h, path, data).unwrap();
            self
        }
        fn symlink(mut self, path: &str, target: &str) -> Self {
            let mut h = header(EntryType::Symlink, 0o777, 0);
            self.0.append_link(&mut h, path, target).unwrap();
            self
        }
        fn raw(mut self, name: &[u8], kind: EntryType, link: Option<&[u8]>, data: &[u8]) -> Self {
            let h = raw(name, kind, data.len() as u64, link);
            self.0.append(&h, data).unwrap();
            self
        }
        fn pax_path(mut self, path: &[u8]) -> Self {
            // A PAX record is "<len> path=<value>\n" where <len> counts the whole record.
            let body = [b" path=".as_slice(), path, b"\n"].concat();
            let mut len = body.len() + 1;
            while len.to_string().len() + body.len() != len {
                len = len.to_string().len() + body.len();
            }
            let record = [len.to_string().as_bytes(), &body].concat();
            let h = raw(b"PaxHeader", EntryType::XHeader, record.len() as u64, None);
            self.0.append(&h, record.as_slice()).unwrap();
            self
        }
        fn gnu_long_name(mut self, path: &[u8]) -> Self {
            let data = [path, b"\0"].concat();
            let h = raw(
                b"././@LongLink",
                EntryType::GNULongName,
                data.len() as u64,
                None,
            );
            self.0.append(&h, data.as_slice()).unwrap();
            self
        }
        fn finish(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn digest(tar: &[u8]) -> String {
        blake3::hash(tar).to_hex().to_string()
    }

    fn compress(tar: &[u8]) -> Vec<u8> {
        zstd::encode_all(tar, 3).unwrap()
    }

    /// A parent temp dir holding only the (not yet existing) target `out`, so anything written
    /// outside the target shows up in the parent's listing. The archive lives elsewhere.
    struct Run {
        parent: tempfile::TempDir,
        target: PathBuf,
        _store: tempfile::TempDir,
        result: Result<UnpackStats>,
    }

    fn run_with(tar: &[u8], limits: UnpackLimits) -> Run {
        let store = tempfile::tempdir().unwrap();
        let archive = store.path().join("package.tar.zst");
        fs::write(&archive, compress(tar)).unwrap();
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("out");
        let result = unpack_file_with_limits(&archive, &digest(tar), &target, limits);
        Run {
            parent,
            target,
            _store: store,
            result,
        }
    }

    fn run(tar: &[u8]) -> Run {
        run_with(tar, UnpackLimits::default())
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The unpack failed naming `entry` and `why`, and left nothing behind: not the target, not
    /// anything beside it.
    fn assert_refused(run: Run, entry: &str, why: &str) {
        let message = run
            .result
            .expect_err("hostile archive accepted")
            .to_string();
        assert!(
            message.contains(&format!("`{entry}`")),
            "error does not name `{entry}`: {message}"
        );
        assert!(
            message.contains(why),
            "error does not say `{why}`: {message}"
        );
        assert!(!run.target.exists(), "target left behind: {message}");
        assert_eq!(
            listing(run.parent.path()),
            Vec::<String>::new(),
            "{message}"
        );
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    // ---- hostile entries ----

    #[test]
    fn refuses_parent_traversal() {
        let tar = Tar::new()
            .raw(b"../evil", EntryType::Regular, None, b"x")
            .finish();
        assert_refused(run(&tar), "../evil", "its path leaves the target directory");
    }

    #[test]
    fn refuses_absolute_path() {
        let parent = tempfile::tempdir().unwrap();
        let absolute = format!("{}/abs", parent.path().display());
        let tar = Tar::new()
            .raw(absolute.as_bytes(), EntryType::Regular, None, b"x")
            .finish();
        assert_refused(run(&tar), &absolute, "its path is absolute");
        assert!(!Path::new(&absolute).exists());
        let tar = Tar::new()
            .raw(b"/tmp/abs", EntryType::Regular, None, b"x")
            .finish();
        assert_refused(run(&tar), "/tmp/abs", "its path is absolute");
    }

    #[test]
    fn refuses_nested_traversal() {
        let tar = Tar::new()
            .file("a/ok", 0o644, b"fine")
            .raw(b"a/../../evil", EntryType::Regular, None, b"x")
            .finish();
        assert_refused(run(&tar), "a/../../evil", "leaves the target directory");
    }

    #[test]
    fn refuses_escaping_symlink() {
        let tar = Tar::new()
            .raw(b"link", EntryType::Symlink, Some(b"../../outside"), b"")
            .finish();
        assert_refused(
            run(&tar),
            "link",
            "its link target `../../outside` leaves the target directory",
        );
        // One level up from a subdirectory is fine, two is not.
        let tar = Tar::new()
            .raw(b"a/link", EntryType::Symlink, Some(b"../../x"), b"")
            .finish();
        assert_refused(run(&tar), "a/link", "leaves the target directory");
    }

    #[test]
    fn refuses_absolute_symlink() {
        let tar = Tar::new().symlink("link", "/etc/passwd").finish();
        assert_refused(
            run(&tar),
            "link",
            "its link target `/etc/passwd` is absolute",
        );
    }

    #[test]
    fn refuses_write_through_symlink() {
        let tar = Tar::new()
            .file("sub/keep", 0o644, b"k")
            .symlink("d", "sub")
            .file("d/file", 0o644, b"through")
            .finish();
        assert_refused(run(&tar), "d/file", "its parent `d` is a symlink");
    }

    #[test]
    fn refuses_symlink_chain_escape() {
        // `x -> .` is the root; `y -> x/..` looks like the root lexically but is its parent.
        let tar = Tar::new()
            .symlink("x", ".")
            .raw(b"y", EntryType::Symlink, Some(b"x/.."), b"")
            .finish();
        assert_refused(run(&tar), "y", "`x`, which is not a real directory");
    }

    #[test]
    fn refuses_deferred_symlink_written_through() {
        // `a -> sub/../sub` waits for the end; `a/file` meanwhile makes `a` a real directory,
        // so the link cannot be created and nothing was written through it.
        let tar = Tar::new()
            .raw(b"a", EntryType::Symlink, Some(b"sub/../sub"), b"")
            .file("a/file", 0o644, b"x")
            .file("sub/f", 0o644, b"y")
            .finish();
        assert_refused(run(&tar), "a", "already exists");
    }

    #[test]
    fn refuses_overwriting_symlink() {
        // A dangling inside link, then a file entry at the same path spelled differently.
        let tar = Tar::new()
            .symlink("link", "missing")
            .raw(b"./link", EntryType::Regular, None, b"x")
            .finish();
        assert_refused(run(&tar), "./link", "appears earlier");
        // Unsorted archives: a directory created implicitly, then a symlink at its path.
        let tar = Tar::new()
            .file("dir/f", 0o644, b"x")
            .symlink("dir", ".")
            .finish();
        assert_refused(run(&tar), "dir", "already exists");
    }

    #[test]
    fn refuses_hardlink_to_etc_passwd() {
        let tar = Tar::new()
            .raw(b"passwd", EntryType::Link, Some(b"/etc/passwd"), b"")
            .finish();
        assert_refused(run(&tar), "passwd", "`/etc/passwd` is absolute");
    }

    #[test]
    fn refuses_hardlink_outside() {
        let tar = Tar::new()
            .raw(b"x", EntryType::Link, Some(b"../x"), b"")
            .finish();
        assert_refused(run(&tar), "x", "`../x` leaves the target directory");
        // Inside but not an earlier regular file (a symlink) is refused too.
        let tar = Tar::new()
            .symlink("s", "f")
            .file("t", 0o644, b"")
            .raw(b"u", EntryType::Link, Some(b"s"), b"")
            .finish();
        assert_refused(run(&tar), "u", "is not a regular file extracted earlier");
    }

    #[test]
    fn refuses_char_device() {
        let tar = Tar::new()
            .raw(b"dev/null", EntryType::Char, None, b"")
            .finish();
        assert_refused(run(&tar), "dev/null", "it is a character device");
        let tar = Tar::new()
            .raw(b"dev/sda", EntryType::Block, None, b"")
            .finish();
        assert_refused(run(&tar), "dev/sda", "it is a block device");
    }

    #[test]
    fn refuses_fifo() {
        let tar = Tar::new()
            .file("a", 0o644, b"a")
            .raw(b"pipe", EntryType::Fifo, None, b"")
            .finish();
        assert_refused(run(&tar), "pipe", "it is a fifo");
    }

    #[test]
    fn refuses_unknown_type() {
        let tar = Tar::new()
            .raw(b"odd", EntryType::new(b'Z'), None, b"")
            .finish();
        assert_refused(run(&tar), "odd", "unknown type `Z`");
    }

    #[test]
    fn refuses_duplicate_path() {
        let tar = Tar::new()
            .file("a", 0o644, b"first")
            .file("a", 0o644, b"second")
            .finish();
        assert_refused(run(&tar), "a", "appears earlier");
    }

    #[test]
    fn refuses_pax_path_traversal() {
        // The header says `innocent`; the PAX `path` the tar crate resolves says otherwise.
        let tar = Tar::new()
            .pax_path(b"../pax-evil")
            .raw(b"innocent", EntryType::Regular, None, b"x")
            .finish();
        assert_refused(run(&tar), "../pax-evil", "leaves the target directory");
    }

    #[test]
    fn a_file_a_writer_thread_cannot_create_fails_the_unpack_and_leaves_nothing() {
        // Many good files, then one whose name the file system refuses (a component over
        // 255 bytes), then more: the writer's error stops the walk, names the entry, and
        // everything written before it, by either writer, is removed.
        let long = "n".repeat(300);
        let mut tar = Tar::new();
        for i in 0..200 {
            tar = tar.file(&format!("d{}/f{i}", i % 7), 0o644, b"data");
        }
        let tar = tar
            .gnu_long_name(format!("d1/{long}").as_bytes())
            .raw(b"placeholder", EntryType::Regular, None, b"x")
            .file("z/after", 0o644, b"after")
            .finish();
        let run = run(&tar);
        let message = run
            .result
            .expect_err("a name too long was written")
            .to_string();
        assert!(message.contains(&long), "{message}");
        assert!(!run.target.exists(), "target left behind: {message}");
        assert_eq!(
            listing(run.parent.path()),
            Vec::<String>::new(),
            "{message}"
        );
    }

    #[test]
    fn refuses_gnu_long_name_tricks() {
        let long = format!("{}/../../evil", "a".repeat(120));
        let tar = Tar::new()
            .gnu_long_name(long.as_bytes())
            .raw(b"innocent", EntryType::Regular, None, b"x")
            .finish();
        assert_refused(run(&tar), &long, "leaves the target directory");
        // A GNU long name may carry a NUL inside; only the trailing one is stripped.
        let tar = Tar::new()
            .gnu_long_name(b"a\0/../../evil")
            .raw(b"innocent", EntryType::Regular, None, b"x")
            .finish();
        assert_refused(run(&tar), "a\\u{0}/../../evil", "contains a NUL byte");
    }

    #[test]
    fn refuses_absolute_ustar_prefix() {
        // A harmless-looking name under an absolute ustar prefix.
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        {
            let ustar = h.as_ustar_mut().unwrap();
            ustar.name[..1].copy_from_slice(b"x");
            ustar.prefix[..4].copy_from_slice(b"/etc");
        }
        h.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&h, b"x".as_slice()).unwrap();
        let tar = builder.into_inner().unwrap();
        assert_refused(run(&tar), "/etc/x", "its path is absolute");
    }

    #[test]
    fn refuses_windows_paths() {
        let tar = Tar::new()
            .raw(b"C:/evil", EntryType::Regular, None, b"x")
            .finish();
        assert_refused(run(&tar), "C:/evil", "windows-style prefix");
        let tar = Tar::new()
            .raw(b"..\\evil", EntryType::Regular, None, b"x")
            .finish();
        assert_refused(run(&tar), "..\\evil", "windows-style prefix");
    }

    #[test]
    fn refuses_empty_path() {
        let tar = Tar::new()
            .raw(b".", EntryType::Regular, None, b"x")
            .finish();
        assert_refused(run(&tar), ".", "its path is empty");
    }

    // ---- stream-level failures: nothing is written, the target is not even created ----

    fn assert_nothing_written(parent: &Path, message: &str) {
        assert_eq!(listing(parent), Vec::<String>::new(), "{message}");
    }

    #[test]
    fn refuses_digest_mismatch() {
        let tar = Tar::new().file("a", 0o644, b"a").finish();
        let compressed = compress(&tar);
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("out");
        let wrong = digest(b"something else");
        let open =
            || -> io::Result<Box<dyn Read>> { Ok(Box::new(io::Cursor::new(compressed.clone()))) };
        let err = unpack_with(open, &wrong, &target).unwrap_err();
        assert!(matches!(err, UnpackError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&digest(&tar)), "{err}");
        assert_nothing_written(parent.path(), &err.to_string());
        // Malformed digests are refused before anything is read.
        for bad in [
            "",
            "ABC",
            &digest(&tar).to_uppercase(),
            &format!("{}0", digest(&tar)),
        ] {
            let err = unpack_with(open, bad, &target).unwrap_err();
            assert!(matches!(err, UnpackError::InvalidDigest { .. }), "{err}");
        }
        assert_nothing_written(parent.path(), "invalid digest");
    }

    #[test]
    fn refuses_truncated_zstd() {
        let tar = Tar::new()
            .file("a", 0o644, &[7u8; 10_000])
            .file("b", 0o644, b"b")
            .finish();
        let compressed = compress(&tar);
        let half = compressed[..compressed.len() / 2].to_vec();
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("out");
        let open = || -> io::Result<Box<dyn Read>> { Ok(Box::new(io::Cursor::new(half.clone()))) };
        let err = unpack_with(open, &digest(&tar), &target).unwrap_err();
        assert!(matches!(err, UnpackError::Corrupt { .. }), "{err}");
        assert_nothing_written(parent.path(), &err.to_string());
    }

    #[test]
    fn refuses_garbage() {
        let garbage = b"this is not a zstd frame, just text".to_vec();
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("out");
        let open =
            || -> io::Result<Box<dyn Read>> { Ok(Box::new(io::Cursor::new(garbage.clone()))) };
        let err = unpack_with(open, &digest(b""), &target).unwrap_err();
        assert!(matches!(err, UnpackError::Corrupt { .. }), "{err}");
        assert_nothing_written(parent.path(), &err.to_string());
        // A missing archive file is an open error, also before anything is written.
        let err = unpack_file(&parent.path().join("nope"), &digest(b""), &target).unwrap_err();
        assert!(matches!(err, UnpackError::Open { .. }), "{err}");
        assert_nothing_written(parent.path(), &err.to_string());
    }

    #[test]
    fn refuses_size_limit_exceeded() {
        let tar = Tar::new().file("big", 0o644, &vec![0u8; 2 << 20]).finish();
        let limits = UnpackLimits {
            max_bytes: 1 << 20,
            ..UnpackLimits::default()
        };
        let r = run_with(&tar, limits);
        let err = r.result.unwrap_err();
        assert!(
            matches!(err, UnpackError::TooLarge { limit } if limit == 1 << 20),
            "{err}"
        );
        // Caught by the verification pass: nothing written at all.
        assert_nothing_written(r.parent.path(), &err.to_string());
    }

    #[test]
    fn refuses_oversized_entry_by_name_without_digest() {
        // Without the verification pass (the fuzz path), the header's claimed size is checked
        // before any byte is written, and the error names the entry.
        let tar = Tar::new()
            .file("small", 0o644, b"ok")
            .file("big", 0o644, &vec![1u8; 64 * 1024])
            .finish();
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("out");
        let limits = UnpackLimits {
            max_bytes: 32 * 1024,
            max_entries: 10,
        };
        let err = unpack_into(compress(&tar).as_slice(), None, &target, limits).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("refused entry `big`"), "{message}");
        assert!(message.contains("limit of 32768 bytes"), "{message}");
        assert_nothing_written(parent.path(), &message);
    }

    #[test]
    fn refuses_too_many_entries() {
        let tar = Tar::new()
            .file("a", 0o644, b"")
            .file("b", 0o644, b"")
            .file("c", 0o644, b"")
            .finish();
        let limits = UnpackLimits {
            max_entries: 2,
            ..UnpackLimits::default()
        };
        assert_refused(run_with(&tar, limits), "c", "more than 2 entries");
    }

    #[test]
    fn refuses_package_changed_between_passes() {
        let good = Tar::new().file("a", 0o644, b"good").finish();
        let evil = Tar::new().file("a", 0o644, b"evil").finish();
        let mut calls = 0;
        let open = || -> io::Result<Box<dyn Read>> {
            calls += 1;
            let tar = if calls == 1 { &good } else { &evil };
            Ok(Box::new(io::Cursor::new(compress(tar))))
        };
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("out");
        let err = unpack_with(open, &digest(&good), &target).unwrap_err();
        assert!(
            matches!(err, UnpackError::ChangedDuringExtraction { .. }),
            "{err}"
        );
        assert_nothing_written(parent.path(), &err.to_string());
    }

    #[test]
    fn existing_target_is_emptied_not_removed_on_error() {
        let tar = Tar::new()
            .file("a", 0o644, b"a")
            .raw(b"../evil", EntryType::Regular, None, b"x")
            .finish();
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("out");
        fs::create_dir(&target).unwrap();
        let open =
            || -> io::Result<Box<dyn Read>> { Ok(Box::new(io::Cursor::new(compress(&tar)))) };
        let err = unpack_with(open, &digest(&tar), &target).unwrap_err();
        assert!(err.to_string().contains("`../evil`"), "{err}");
        assert_eq!(listing(parent.path()), vec!["out".to_string()]);
        assert_eq!(listing(&target), Vec::<String>::new());
    }

    // ---- good paths ----

    #[test]
    fn round_trip_with_exec_bits_and_inside_symlink() {
        let tar = Tar::new()
            .file("bin/run", 0o755, b"#!/bin/sh\necho hi\n")
            .file("bin/setuid", 0o4755, b"x")
            .file("lib/a.txt", 0o644, b"hello")
            .file("lib/ro", 0o400, b"r")
            .symlink("lib/link", "../bin/run")
            .symlink("top", "lib")
            .raw(b"lib/hard", EntryType::Link, Some(b"lib/a.txt"), b"")
            .finish();
        let r = run(&tar);
        let stats = r.result.unwrap();
        assert_eq!(
            stats,
            UnpackStats {
                files: 5,
                symlinks: 2,
                bytes: 18 + 1 + 5 + 1
            }
        );
        let t = &r.target;
        assert_eq!(
            fs::read(t.join("bin/run")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(mode(&t.join("bin/run")), 0o755);
        assert_eq!(mode(&t.join("bin/setuid")), 0o755);
        assert_eq!(mode(&t.join("lib/a.txt")), 0o644);
        assert_eq!(mode(&t.join("lib/ro")), 0o644);
        assert_eq!(
            fs::read_link(t.join("lib/link")).unwrap(),
            Path::new("../bin/run")
        );
        assert_eq!(
            fs::read(t.join("lib/link")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(fs::read(t.join("top/a.txt")).unwrap(), b"hello");
        assert_eq!(fs::read(t.join("lib/hard")).unwrap(), b"hello");
        assert_eq!(listing(r.parent.path()), vec!["out".to_string()]);
    }

    #[test]
    fn symlink_with_inner_parent_is_created_after_its_directory() {
        // The packer allows `sub/../x`; sorted, the link comes before `sub/` exists.
        let tar = Tar::new()
            .raw(b"a", EntryType::Symlink, Some(b"sub/../x"), b"")
            .file("sub/f", 0o644, b"f")
            .file("x", 0o644, b"target")
            .finish();
        let r = run(&tar);
        assert_eq!(r.result.unwrap().symlinks, 1);
        assert_eq!(fs::read(r.target.join("a")).unwrap(), b"target");
    }

    #[test]
    fn long_path() {
        let long = format!("{}/{}/file.txt", "d".repeat(80), "e".repeat(90));
        assert!(long.len() > 100);
        let target_long = format!("{}/target", "t".repeat(120));
        let tar = Tar::new()
            .file(&long, 0o644, b"deep")
            .file(&target_long, 0o644, b"t")
            .symlink(
                &format!("{}/link", "l".repeat(110)),
                &format!("../{target_long}"),
            )
            .finish();
        let r = run(&tar);
        assert_eq!(r.result.unwrap().files, 2);
        assert_eq!(fs::read(r.target.join(&long)).unwrap(), b"deep");
        assert_eq!(
            fs::read(r.target.join("l".repeat(110)).join("link")).unwrap(),
            b"t"
        );
    }

    #[test]
    fn empty_archive() {
        let tar = Tar::new().finish();
        let r = run(&tar);
        assert_eq!(r.result.unwrap(), UnpackStats::default());
        assert!(r.target.is_dir());
        assert_eq!(listing(&r.target), Vec::<String>::new());
    }

    #[test]
    fn directory_entries_are_accepted() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = header(EntryType::Directory, 0o000, 0);
        builder.append_data(&mut h, "./", io::empty()).unwrap();
        let mut h = header(EntryType::Directory, 0o000, 0);
        builder.append_data(&mut h, "d/", io::empty()).unwrap();
        let mut h = header(EntryType::Regular, 0o644, 1);
        builder.append_data(&mut h, "d/f", b"x".as_slice()).unwrap();
        let mut h = header(EntryType::Directory, 0o755, 0);
        builder.append_data(&mut h, "e/f/", io::empty()).unwrap();
        let tar = builder.into_inner().unwrap();
        let r = run(&tar);
        assert_eq!(r.result.unwrap().files, 1);
        assert!(r.target.join("e/f").is_dir());
        assert_eq!(fs::read(r.target.join("d/f")).unwrap(), b"x");
    }

    #[test]
    fn target_must_be_empty() {
        let tar = Tar::new().file("a", 0o644, b"a").finish();
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("out");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), b"mine").unwrap();
        let open =
            || -> io::Result<Box<dyn Read>> { Ok(Box::new(io::Cursor::new(compress(&tar)))) };
        let err = unpack_with(open, &digest(&tar), &target).unwrap_err();
        assert!(err.to_string().contains("it is not empty"), "{err}");
        // What was there is left alone.
        assert_eq!(listing(&target), vec!["keep".to_string()]);
        // A file as target is refused too; an existing empty directory is fine.
        let err = unpack_with(open, &digest(&tar), &target.join("keep")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        let empty = parent.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert_eq!(unpack_with(open, &digest(&tar), &empty).unwrap().files, 1);
    }

    // ---- fuzzing smoke test ----

    /// xorshift64*: deterministic, dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn sample_tar() -> Vec<u8> {
        Tar::new()
            .file("bin/run", 0o755, b"#!/bin/sh\n")
            .file(&format!("{}/long", "x".repeat(110)), 0o644, b"long")
            .file("lib/a.txt", 0o644, &[b'a'; 700])
            .symlink("lib/link", "../bin/run")
            .raw(b"lib/hard", EntryType::Link, Some(b"lib/a.txt"), b"")
            .finish()
    }

    /// Recompute a tar header's checksum (bytes 148..156: the byte sum with that field as
    /// spaces, in octal).
    fn fix_checksum(block: &mut [u8]) {
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    #[test]
    fn fuzz_unpack_never_panics() {
        let scratch = tempfile::tempdir().unwrap();
        let mut rng = Rng(0x5eed_1234_abcd_0042);
        let zstd_magic = [0x28, 0xb5, 0x2f, 0xfd];
        for i in 0..200 {
            let len = rng.below(2048);
            let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if i % 2 == 0 {
                // Half start like a zstd frame so the decoder gets further than the magic.
                data.splice(0..0, zstd_magic);
            }
            let _ = fuzz_unpack(&data, scratch.path());
        }
        let tar = sample_tar();
        let compressed = compress(&tar);
        assert_eq!(fuzz_unpack(&compressed, scratch.path()).unwrap().files, 4);
        let headers: Vec<usize> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .raw(true)
            .map(|e| e.unwrap().raw_header_position() as usize)
            .collect();
        for _ in 0..300 {
            // Mutating the compressed bytes mostly exercises zstd...
            let mut data = compressed.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(data.len());
                data[at] ^= 1 << rng.below(8);
            }
            let _ = fuzz_unpack(&data, scratch.path());
            // ...so also mutate the tar itself (headers, names, sizes) and recompress.
            let mut plain = tar.clone();
            for _ in 0..=rng.below(8) {
                let at = rng.below(plain.len());
                plain[at] = rng.next() as u8;
            }
            // Random bytes almost always break a header checksum, which stops the tar crate at
            // once; repair it most of the time so the mutation reaches the unpacker's checks.
            if rng.below(4) != 0 {
                for &at in &headers {
                    fix_checksum(&mut plain[at..at + 512]);
                }
            }
            if rng.below(4) == 0 {
                plain.truncate(rng.below(plain.len()));
            }
            let _ = fuzz_unpack(&compress(&plain), scratch.path());
        }
        // Every temp dir was removed.
        assert_eq!(listing(scratch.path()), Vec::<String>::new());
    }

    /// The seeds in `fuzz/corpus/unpack` are exactly what this test builds: it fails when
    /// they drift, and `FERRY_WRITE_FUZZ_CORPUS=1 cargo test -p orchestrator-core
    /// fuzz_corpus` rewrites them. The valid seeds unpack and the hostile one is refused.
    #[test]
    fn fuzz_corpus_is_current_and_behaves() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/unpack");
        let seeds = [
            ("empty.tar.zst", Tar::new().finish(), true),
            (
                "small.tar.zst",
                Tar::new()
                    .file("a.txt", 0o644, b"hello\n")
                    .file("bin/run", 0o755, b"#!/bin/sh\n")
                    .symlink("link", "a.txt")
                    .finish(),
                true,
            ),
            ("links.tar.zst", sample_tar(), true),
            (
                "hostile.tar.zst",
                Tar::new()
                    .symlink("d", "sub")
                    .file("d/file", 0o644, b"through")
                    .raw(b"../evil", EntryType::Regular, None, b"x")
                    .finish(),
                false,
            ),
        ];
        let rewrite = std::env::var_os("FERRY_WRITE_FUZZ_CORPUS").is_some();
        for (name, tar, valid) in seeds {
            let path = dir.join(name);
            if rewrite {
                fs::create_dir_all(&dir).unwrap();
                fs::write(&path, compress(&tar)).unwrap();
            }
            let stored = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let decoded = zstd::decode_all(stored.as_slice()).unwrap();
            assert!(
                decoded == tar,
                "{name} is stale; rewrite with FERRY_WRITE_FUZZ_CORPUS=1"
            );
            let scratch = tempfile::tempdir().unwrap();
            assert_eq!(
                fuzz_unpack(&stored, scratch.path()).is_ok(),
                valid,
                "{name}"
            );
        }
    }
}
