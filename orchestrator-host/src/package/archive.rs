//! Writing a package: a deterministic tar of the selected files, compressed with zstd, with a
//! blake3 digest of the uncompressed stream.
//!
//! Deterministic means the same tree gives the same bytes on any machine and after any
//! `touch`: entries sorted by path, mtime 0, uid/gid 0, no user or group names, modes 0644 or
//! 0755. So the digest, and the store key made from it, only change when the code does.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::files::{FileKind, ProjectFile, Selection};

#[non_exhaustive]
#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot write the package {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path} while packaging")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the package {path} is damaged (its content does not match digest {digest})")]
    Damaged { path: PathBuf, digest: String },
    #[error("{path} changed size while it was being packaged")]
    Changed { path: PathBuf },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What to do about it, printed on its own line after the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Damaged { .. } => Some("delete .ferry/packages and package again".into()),
            Self::Changed { .. } => Some("run again once nothing writes to it".into()),
            Self::Write { .. } | Self::Read { .. } => None,
        }
    }
}

/// How a package is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// zstd level, 1 to 19.
    pub level: i32,
    /// zstd worker threads; 0 picks the number of cores. (zstd's output does not depend on the
    /// number of workers, so packages stay byte-identical across machines.)
    pub threads: u32,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            level: 3,
            threads: 0,
        }
    }
}

/// A package written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    pub path: PathBuf,
    /// blake3 of the uncompressed tar, lowercase hex.
    pub digest: String,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    pub files: usize,
}

/// Counts and hashes what passes through on its way to the compressor.
struct Tee<W> {
    inner: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads exactly `size` bytes or fails: a file that shrinks or grows while being read must
/// not produce a corrupt entry.
struct Exact<R> {
    inner: R,
    left: u64,
    path: PathBuf,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One more byte available means the file grew.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(format!("{} grew", self.path.display()))),
            };
        }
        let want = buf.len().min(self.left as usize);
        let read = self.inner.read(&mut buf[..want])?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank", self.path.display()),
            ));
        }
        self.left -= read as u64;
        Ok(read)
    }
}

/// The fixed modification time of every entry.
const MTIME: u64 = 0;

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Write `selection` as a `.tar.zst` at `out`.
pub fn write(selection: &Selection, compression: Compression, out: &Path) -> Result<Archive> {
    let write_error = |source| Error::Write {
        path: out.to_path_buf(),
        source,
    };
    let file = File::create(out).map_err(write_error)?;
    let mut encoder =
        zstd::Encoder::new(BufWriter::with_capacity(1 << 20, file), compression.level)
            .map_err(write_error)?;
    let threads = match compression.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        n => n,
    };
    encoder.multithread(threads).map_err(write_error)?;
    encoder.include_checksum(true).map_err(write_error)?;
    let tee = Tee {
        inner: encoder,
        hasher: blake3::Hasher::new(),
        bytes: 0,
    };
    // tar writes 512-byte headers and small files in small pieces; batch them so hashing and
    // compression see large buffers.
    let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, tee));
    builder.mode(tar::HeaderMode::Deterministic);
    for file in &selection.files {
        append(&mut builder, file).map_err(|e| match e {
            Error::Write { source, .. } => write_error(source),
            other => other,
        })?;
    }
    let tee = builder
        .into_inner()
        .map_err(write_error)?
        .into_inner()
        .map_err(|e| write_error(e.into_error()))?;
    let digest = tee.hasher.finalize().to_hex().to_string();
    let uncompressed_size = tee.bytes;
    let mut buffered = tee.inner.finish().map_err(write_error)?;
    buffered.flush().map_err(write_error)?;
    // No fsync: a package is a cache entry named by its content, and whoever unpacks it
    // verifies the digest first, so a torn write is caught rather than trusted.
    let file = buffered
        .into_inner()
        .map_err(|e| write_error(e.into_error()))?;
    let compressed_size = file.metadata().map_err(write_error)?.len();
    Ok(Archive {
        path: out.to_path_buf(),
        digest,
        compressed_size,
        uncompressed_size,
        files: selection.files.len(),
    })
}

fn append<W: Write>(builder: &mut tar::Builder<W>, file: &ProjectFile) -> Result<()> {
    let write_error = |source| Error::Write {
        path: PathBuf::new(),
        source,
    };
    match &file.kind {
        FileKind::File { size, executable } => {
            let mode = if *executable { 0o755 } else { 0o644 };
            let mut header = header(tar::EntryType::Regular, mode, *size);
            let source = File::open(&file.absolute).map_err(|source| Error::Read {
                path: file.absolute.clone(),
                source,
            })?;
            let reader = Exact {
                inner: source,
                left: *size,
                path: file.absolute.clone(),
            };
            builder
                .append_data(&mut header, &file.relative, reader)
                .map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof || e.to_string().ends_with(" grew")
                    {
                        Error::Changed {
                            path: file.absolute.clone(),
                        }
                    } else {
                        write_error(e)
                    }
                })
        }
        FileKind::Symlink { target } => {
            let mut header = header(tar::EntryType::Symlink, 0o777, 0);
            builder
                .append_link(&mut header, &file.relative, target)
                .map_err(write_error)
        }
    }
}

/// Check that the archive at `path` decompresses to a tar whose blake3 is `digest`.
pub fn verify(path: &Path, digest: &str) -> Result<()> {
    let damaged = || Error::Damaged {
        path: path.to_path_buf(),
        digest: digest.to_string(),
    };
    let file = File::open(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut decoder = zstd::Decoder::new(file).map_err(|_| damaged())?;
    let mut hasher = blake3::Hasher::new();
    io::copy(&mut decoder, &mut hasher).map_err(|_| damaged())?;
    if hasher.finalize().to_hex().as_str() != digest {
        return Err(damaged());
    }
    Ok(())
}
