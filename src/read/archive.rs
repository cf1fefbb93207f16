//! The byte-level view of a bundle: a zstd stream holding a tar archive.
//!
//! Everything here is streaming: the file is read in fixed-size buffers, the
//! zstd window is allowed up to 2 GiB (`--long=31` bundles), and tar entries of
//! any size (PAX and GNU extensions) are read without being held in memory.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest as _, Sha256};
use zstd::stream::read::Decoder;

use super::{Error, Result};
use crate::progress::Progress;

/// The largest zstd window airlock accepts: `zstd --long=31`, the format's maximum.
pub const MAX_WINDOW_LOG: u32 = 31;

/// Read size from the bundle file; large enough to keep syscalls rare.
const FILE_BUFFER_BYTES: usize = 1 << 20;

/// The four magic bytes that open a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// The decompressed tar stream of a bundle, with the compressed bytes hashed as
/// they are read so the caller can prove it read the bytes that were verified.
pub type TarStream = tar::Archive<Decompressor>;

/// The zstd decoder, recording whether it (rather than the tar parser above
/// it) failed, so a truncated stream is not reported as "not a tar".
pub struct Decompressor {
    decoder: Decoder<'static, BufReader<HashingFile>>,
    failed: Arc<AtomicBool>,
}

impl Read for Decompressor {
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

/// Whether a read of the bundle hashes its compressed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressedHash {
    /// Hash them: the index pass proves it read the bytes that were verified.
    Compute,
    /// Skip it: the streaming pass checks every blob it sends against its
    /// digest instead, which saves one SHA-256 pass over the whole bundle.
    Skip,
}

/// A file reader that counts, and optionally hashes (SHA-256), everything
/// read through it.
pub struct HashingFile {
    file: File,
    hasher: Option<Sha256>,
    progress: Progress,
}

impl Read for HashingFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        self.progress.add_bundle_bytes(n as u64);
        Ok(n)
    }
}

impl HashingFile {
    /// Reads the rest of the file and returns the hex SHA-256 of all of it
    /// (`None` when it was opened with [`CompressedHash::Skip`]).
    pub fn finish(mut self) -> io::Result<Option<String>> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher.map(|h| hex::encode(h.finalize())))
    }
}

/// Opens `path` as a zstd-compressed tar stream.
pub fn open(
    path: &Path,
    progress: &Progress,
    hash: CompressedHash,
) -> Result<(TarStream, DecompressionHealth)> {
    let display = path.display().to_string();
    let mut file = File::open(path).map_err(|source| Error::Open {
        path: display.clone(),
        source,
    })?;
    let mut magic = [0u8; 4];
    let magic_read = read_prefix(&mut file, &mut magic).map_err(|source| Error::Open {
        path: display.clone(),
        source,
    })?;
    // Skippable frames (0x184D2A50..5F, little-endian) may precede the data.
    let skippable = magic_read == 4 && magic[1..] == [0x2A, 0x4D, 0x18] && magic[0] & 0xF0 == 0x50;
    if magic_read < 4 || (magic != ZSTD_MAGIC && !skippable) {
        return Err(Error::NotZstd { path: display });
    }
    let file = File::open(path).map_err(|source| Error::Open {
        path: display.clone(),
        source,
    })?;
    let hashing = HashingFile {
        file,
        hasher: (hash == CompressedHash::Compute).then(Sha256::new),
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
    let mut archive = tar::Archive::new(Decompressor { decoder, failed });
    archive.set_ignore_zeros(false);
    Ok((archive, health))
}

fn read_prefix(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
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
pub fn finish(archive: TarStream, path: &Path) -> Result<Option<String>> {
    let corrupt = |source| Error::Corrupt {
        path: path.display().to_string(),
        source,
    };
    let mut decompressor = archive.into_inner();
    io::copy(&mut decompressor, &mut io::sink()).map_err(corrupt)?;
    decompressor
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
    let text = std::str::from_utf8(raw_path).map_err(|_| "path is not valid UTF-8".to_string())?;
    if text.starts_with('/') || text.starts_with('\\') {
        return Err("absolute paths are not allowed".into());
    }
    let mut parts = Vec::new();
    for component in Path::new(text).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err("'..' is not allowed in paths".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are not allowed".into());
            }
        }
    }
    Ok(EntryPath {
        normalized: parts.join("/"),
    })
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
}
