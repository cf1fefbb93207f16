//! The bundle file, opened once.
//!
//! Verification and every later pass over a bundle read through the same open
//! file, never through its path again: whoever can write to the drop folder
//! could otherwise rename an unsigned file over `X.zst` between the signature
//! check and the parsers. Every pass reads with positional reads from byte 0
//! up to the size seen when the file was opened, so passes do not share a
//! cursor and none reads past what was verified, however the file grows.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::sync::Arc;

/// What to do when the bundle's path is a symbolic link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Symlinks {
    /// Open what it points to (`airlock import LINK`; the daemon with
    /// `drop.follow_symlinks`). It must still be a regular file.
    #[default]
    Follow,
    /// Refuse it (the daemon's default: a link in the drop folder could
    /// point at `/dev/zero` or a file the daemon may read but the sender
    /// may not).
    Refuse,
}

/// An open regular bundle file and its size when opened. Cloning shares the
/// open file.
#[derive(Debug, Clone)]
pub struct BundleFile {
    file: Arc<File>,
    size: u64,
}

impl BundleFile {
    /// Opens `path` for reading. Refuses anything but a regular file (a
    /// FIFO, a device, a directory), and a symbolic link when `symlinks` is
    /// [`Symlinks::Refuse`]. Opening never blocks: a FIFO put in place of the
    /// bundle is opened non-blocking and refused by its type.
    pub fn open(path: &Path, symlinks: Symlinks) -> io::Result<Self> {
        let mut flags = libc::O_NONBLOCK;
        if symlinks == Symlinks::Refuse {
            flags |= libc::O_NOFOLLOW;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) if symlinks == Symlinks::Refuse => io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it is a symbolic link, which is not followed (drop.follow_symlinks)",
                ),
                _ => e,
            })?;
        let metadata = file.metadata()?;
        if !metadata.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("it is not a regular file but {}", kind(&metadata)),
            ));
        }
        Ok(BundleFile {
            file: Arc::new(file),
            size: metadata.len(),
        })
    }

    /// The file's size when it was opened: no pass reads beyond it.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// A reader over the whole file from its first byte, independent of any
    /// other reader of the same file.
    pub fn reader(&self) -> BundleReader {
        self.reader_from(0)
    }

    /// A reader from byte `offset` to the size seen at open (nothing when
    /// `offset` is beyond it).
    pub fn reader_from(&self, offset: u64) -> BundleReader {
        BundleReader {
            file: Arc::clone(&self.file),
            offset: offset.min(self.size),
            end: self.size,
        }
    }
}

fn kind(metadata: &Metadata) -> &'static str {
    let kind = metadata.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// One pass over a [`BundleFile`], with its own position.
#[derive(Debug)]
pub struct BundleReader {
    file: Arc<File>,
    offset: u64,
    end: u64,
}

impl Read for BundleReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.offset;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_are_independent_and_stop_at_the_size_seen_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.zst");
        std::fs::write(&path, b"0123456789").expect("write");
        let file = BundleFile::open(&path, Symlinks::Refuse).expect("open");
        let mut first = file.reader();
        let mut four = [0u8; 4];
        first.read_exact(&mut four).expect("read");
        // The file grows after it was opened: no reader sees the growth.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"tail"))
            .expect("append");
        let mut whole = Vec::new();
        file.reader().read_to_end(&mut whole).expect("read");
        assert_eq!(whole, b"0123456789");
        let mut rest = Vec::new();
        first.read_to_end(&mut rest).expect("read");
        assert_eq!(rest, b"456789");
    }

    #[test]
    fn special_files_and_refused_links_are_not_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("zero.zst");
        std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
        let refused = BundleFile::open(&link, Symlinks::Refuse).expect_err("link refused");
        assert!(refused.to_string().contains("symbolic link"), "{refused}");
        let device = BundleFile::open(&link, Symlinks::Follow).expect_err("device refused");
        assert!(device.to_string().contains("a device"), "{device}");
        let directory = BundleFile::open(dir.path(), Symlinks::Follow).expect_err("dir refused");
        assert!(directory.to_string().contains("a directory"), "{directory}");
    }
}
