//! The byte-level view of a bundle: a zstd stream holding a tar archive.
//!
//! Everything here is streaming: the file is read in fixed-size buffers, the
//! zstd window is allowed up to 2 GiB (`--long=31` bundles), and tar entries of
//! any size (PAX and GNU extensions) are read without being held in memory.

use std::io::{self, BufReader, Read};
use std::path::{Component, Path};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest as _, Sha256};
use zstd::stream::read::Decoder;

use super::limits::Meter;
use super::tar_guard::TarGuard;
use super::{Error, ReadLimits, Result};
use crate::digest::side::{Blake3, SideHash};
use crate::progress::Progress;
use crate::verify::{BundleFile, BundleReader};

/// The largest zstd window airlock accepts: `zstd --long=31`, the format's maximum.
pub const MAX_WINDOW_LOG: u32 = 31;

/// Read size from the bundle file; large enough to keep syscalls rare.
const FILE_BUFFER_BYTES: usize = 1 << 20;

/// The four magic bytes that open a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// The decompressed tar stream of a bundle, with the compressed bytes hashed as
/// they are read so the caller can prove it read the bytes that were verified,
/// and the decompressed bytes metered against the [`ReadLimits`].
pub type TarStream<'t> = tar::Archive<TarGuard<Meter<Decompressor<'t>>>>;

/// The zstd decoder, recording whether it (rather than the tar parser above
/// it) failed, so a truncated stream is not reported as "not a tar".
pub struct Decompressor<'t> {
    decoder: Decoder<'static, BufReader<HashingFile<'t>>>,
    failed: Arc<AtomicBool>,
}

impl Read for Decompressor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.decoder
            .read(buf)
            .inspect_err(|_| self.failed.store(true, Ordering::Relaxed))
    }
}

/// Tells whether the zstd layer of an opened bundle has failed.
#[derive(Debug, Clone)]
pub struct DecompressionHealth(Arc<AtomicBool>);

impl DecompressionHealth {
    /// True once the compressed data turned out truncated or corrupt.
    pub fn failed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a read of the bundle does with its compressed bytes. A hash is
/// taken on a thread of its own ([`SideHash`]), so it overlaps with
/// decompressing and indexing.
pub enum CompressedHash<'t> {
    /// Take their SHA-256: the digest of a bundle read without a signature.
    Sha256,
    /// Take their BLAKE3: the index pass proves it read the bytes that were
    /// verified ([`crate::verify::Binding`]).
    Blake3,
    /// Skip it: the streaming pass checks every blob it sends against its
    /// digest instead, which saves one SHA-256 pass over the whole bundle.
    Skip,
    /// Hand them, from the file's first byte and in order, to the signature
    /// check of a bundle read once ([`crate::verify::BundleHasher`]), which
    /// hashes them itself.
    Verify(&'t mut dyn FnMut(&[u8])),
}

/// A file reader that counts, and optionally hashes (SHA-256), everything
/// read through it, and stops when the import is cancelled.
pub struct HashingFile<'t> {
    file: BundleReader,
    hash: CompressedHash<'t>,
    hasher: Option<SideHash<FileHash>>,
    progress: Progress,
}

/// The hash a [`HashingFile`] takes of the whole file.
enum FileHash {
    Sha256(Sha256),
    Blake3(Box<Blake3>),
}

impl FileHash {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            FileHash::Sha256(hash) => hash.update(bytes),
            FileHash::Blake3(hash) => hash.update(bytes),
        }
    }

    fn finish(self) -> String {
        match self {
            FileHash::Sha256(hash) => hex::encode(hash.finalize()),
            FileHash::Blake3(hash) => hash.finish(),
        }
    }
}

impl Read for HashingFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.progress.cancelled() {
            return Err(io::Error::other("the import was stopped"));
        }
        let n = self.file.read(buf)?;
        if let Some(hasher) = &self.hasher {
            hasher.feed(&buf[..n]);
        }
        if let CompressedHash::Verify(signature) = &mut self.hash {
            signature(&buf[..n]);
        }
        self.progress.add_bundle_bytes(n as u64);
        Ok(n)
    }
}

impl HashingFile<'_> {
    /// Reads the rest of the file and returns the hex hash of all of it
    /// (`None` unless it was opened with [`CompressedHash::Sha256`] or
    /// [`CompressedHash::Blake3`]).
    pub fn finish(mut self) -> io::Result<Option<String>> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher.map(|side| side.finish().finish()))
    }
}

/// Opens the bundle `file` (at `path`, for messages) as a zstd-compressed
/// tar stream, reading from its first byte and decompressing no more than
/// `limits` allow for the file's size.
pub fn open<'t>(
    file: &BundleFile,
    path: &Path,
    progress: &Progress,
    hash: CompressedHash<'t>,
    limits: &ReadLimits,
) -> Result<(TarStream<'t>, DecompressionHealth)> {
    let display = path.display().to_string();
    let mut magic = [0u8; 4];
    let magic_read = read_prefix(&mut file.reader(), &mut magic).map_err(|source| Error::Open {
        path: display.clone(),
        source,
    })?;
    // Skippable frames (0x184D2A50..5F, little-endian) may precede the data.
    let skippable = magic_read == 4 && magic[1..] == [0x2A, 0x4D, 0x18] && magic[0] & 0xF0 == 0x50;
    if magic_read < 4 || (magic != ZSTD_MAGIC && !skippable) {
        return Err(Error::NotZstd { path: display });
    }
    let file_hash = match hash {
        CompressedHash::Sha256 => Some(FileHash::Sha256(Sha256::new())),
        CompressedHash::Blake3 => Some(FileHash::Blake3(Box::default())),
        CompressedHash::Skip | CompressedHash::Verify(_) => None,
    };
    let hasher = file_hash
        .map(|state| SideHash::spawn(state, FileHash::update))
        .transpose()
        .map_err(|source| Error::Open {
            path: display.clone(),
            source,
        })?;
    let hashing = HashingFile {
        file: file.reader(),
        hasher,
        hash,
        progress: progress.clone(),
    };
    let mut decoder = Decoder::with_buffer(BufReader::with_capacity(FILE_BUFFER_BYTES, hashing))
        .map_err(|source| Error::Corrupt {
            path: display.clone(),
            source,
        })?;
    decoder
        .window_log_max(MAX_WINDOW_LOG)
        .map_err(|source| Error::Corrupt {
            path: display,
            source,
        })?;
    let failed = Arc::new(AtomicBool::new(false));
    let health = DecompressionHealth(Arc::clone(&failed));
    let metered = limits.meter(Decompressor { decoder, failed }, file.size());
    let mut archive = tar::Archive::new(TarGuard::new(metered));
    archive.set_ignore_zeros(false);
    Ok((archive, health))
}

fn read_prefix(file: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Drains what follows the tar archive and returns the SHA-256 of the whole
/// compressed file, so a truncated tail or a swapped file is noticed.
pub fn finish(archive: TarStream<'_>, path: &Path) -> Result<Option<String>> {
    let mut metered = archive.into_inner().into_inner();
    io::copy(&mut metered, &mut io::sink()).map_err(|source| super::corrupt(path, source))?;
    metered
        .into_inner()
        .decoder
        .finish()
        .into_inner()
        .finish()
        .map_err(|source| Error::Open {
            path: path.display().to_string(),
            source,
        })
}

/// What a tar entry's path means once it has been checked for safety.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPath {
    /// The path with `.` components and a leading `./` removed, `/`-separated.
    pub normalized: String,
}

/// Checks an entry's header: regular files and directories only, and a
/// relative path that cannot climb out of the extraction root.
pub fn check_entry(
    header: &tar::Header,
    raw_path: &[u8],
) -> std::result::Result<EntryPath, String> {
    let entry_type = header.entry_type();
    if entry_type.is_symlink() || entry_type.is_hard_link() {
        return Err("links are not allowed in bundles".into());
    }
    if !(entry_type.is_file() || entry_type.is_dir() || entry_type == tar::EntryType::Continuous) {
        return Err(format!(
            "entry type {entry_type:?} is not allowed in bundles"
        ));
    }
    Ok(EntryPath {
        normalized: normalize(raw_path, &[])?.join("/"),
    })
}

/// Checks a symlink entry and returns its path and the path it points to,
/// both normalised. Only relative links that stay inside the bundle are
/// accepted (docker-save links a repeated `layer.tar` to its first copy);
/// airlock never follows them on disk, it only reads the target's entry.
pub fn check_symlink(
    raw_path: &[u8],
    raw_target: &[u8],
) -> std::result::Result<(String, String), String> {
    let path = normalize(raw_path, &[])?;
    let directory = &path[..path.len().saturating_sub(1)];
    let target = normalize(raw_target, directory)
        .map_err(|reason| format!("links may only point inside the bundle ({reason})"))?;
    if target.is_empty() {
        return Err("links may only point at a file inside the bundle".into());
    }
    Ok((path.join("/"), target.join("/")))
}

/// Splits a relative path into its components. An entry's own path (empty
/// `base`) may not hold `..`; a link target is resolved against its link's
/// directory `base`, where `..` may climb, but never above the bundle's root.
fn normalize(raw: &[u8], base: &[String]) -> std::result::Result<Vec<String>, String> {
    let resolving = !base.is_empty();
    let text = std::str::from_utf8(raw).map_err(|_| "path is not valid UTF-8".to_string())?;
    if text.starts_with('/') || text.starts_with('\\') {
        return Err("absolute paths are not allowed".into());
    }
    let mut parts = base.to_vec();
    for component in Path::new(text).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir if resolving => {
                if parts.pop().is_none() {
                    return Err("'..' climbs out of the bundle".into());
                }
            }
            Component::ParentDir => return Err("'..' is not allowed in paths".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are not allowed".into());
            }
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header
    }

    #[test]
    fn relative_file_paths_are_normalized() {
        let path = check_entry(
            &header(tar::EntryType::Regular),
            b"./images/./blobs/sha256/ab",
        )
        .expect("safe path");
        assert_eq!(path.normalized, "images/blobs/sha256/ab");
    }

    #[test]
    fn traversal_absolute_paths_and_links_are_refused() {
        let file = header(tar::EntryType::Regular);
        assert!(check_entry(&file, b"../escape").is_err());
        assert!(check_entry(&file, b"blobs/../../escape").is_err());
        assert!(check_entry(&file, b"/etc/passwd").is_err());
        assert!(check_entry(&header(tar::EntryType::Symlink), b"blobs/x").is_err());
        assert!(check_entry(&header(tar::EntryType::Link), b"blobs/x").is_err());
        assert!(check_entry(&header(tar::EntryType::Char), b"dev").is_err());
    }

    #[test]
    fn symlinks_inside_the_bundle_resolve_and_others_are_refused() {
        assert_eq!(
            check_symlink(b"save/abc/layer.tar", b"../def.tar"),
            Ok(("save/abc/layer.tar".into(), "save/def.tar".into()))
        );
        assert!(check_symlink(b"link-to-passwd", b"/etc/passwd").is_err());
        assert!(check_symlink(b"abc/layer.tar", b"../../escape").is_err());
        assert!(check_symlink(b"../x", b"y").is_err());
        assert!(check_symlink(b"abc/link", b"..").is_err());
    }
}
