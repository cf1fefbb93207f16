//! The bundle stream: tar entries written straight into a zstd encoder,
//! whose output is hashed on its way into the temporary file.
//!
//! Nothing is staged: each input file is read once, hashed and compared with
//! its digest while its bytes flow into the tar, and the SHA-256 of the
//! compressed file is known the moment it is complete. Memory is a few
//! fixed buffers plus the zstd window, whatever the size of the inputs.
//!
//! Entries are deterministic, so the same inputs give the same bytes: GNU
//! headers (long names and sizes over 8 GiB need no extension the reader
//! lacks), mode 0644, uid/gid 0, mtime 0, no user or group names.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use crate::digest::{Algorithm, Digest};
use crate::read::{DEFAULT_MAX_DOCUMENT_BYTES, DEFAULT_MAX_DOCUMENTS_TOTAL_BYTES};

use super::Compression;
use super::error::{Error, Result};
use super::hashing::{CheckingReader, HashingWriter};
use super::layout_source::BlobFile;

/// zstd window for `--long`: 128 MiB finds repeats across layers that
/// share content, and stays far below the 2 GiB readers accept.
pub const LONG_WINDOW_LOG: u32 = 27;

/// Write buffer in front of the file: one syscall per MiB of output.
const FILE_BUFFER_BYTES: usize = 1 << 20;

/// Read buffer behind each input file: one syscall per MiB of input.
const INPUT_BUFFER_BYTES: usize = 1 << 20;

type Sink = zstd::stream::write::Encoder<'static, HashingWriter<BufWriter<File>>>;

/// What the finished bundle file is: the digest the signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Written {
    pub(super) sha256: [u8; 32],
    pub(super) size: u64,
}

/// A bundle being written into a temporary file.
pub(super) struct BundleWriter {
    tar: tar::Builder<Sink>,
    path: PathBuf,
    /// Bytes of small JSON-looking blobs, which the importer keeps in memory
    /// while indexing: checked here against the same budget.
    document_bytes: u64,
}

impl BundleWriter {
    /// Starts a bundle in `file` (whose path `path` is used in messages).
    pub(super) fn new(file: File, path: &Path, compression: Compression) -> Result<Self> {
        let output = |source| Error::OutputIo {
            action: "start compressing into",
            path: path.to_owned(),
            source,
        };
        let sink = HashingWriter::new(BufWriter::with_capacity(FILE_BUFFER_BYTES, file));
        let mut encoder =
            zstd::stream::write::Encoder::new(sink, compression.level).map_err(output)?;
        // A frame checksum lets `zstd -t` and the importer's decoder notice
        // corruption in transit even before the signature is checked.
        encoder.include_checksum(true).map_err(output)?;
        if compression.long {
            encoder.long_distance_matching(true).map_err(output)?;
            encoder.window_log(LONG_WINDOW_LOG).map_err(output)?;
        }
        Ok(Self {
            tar: tar::Builder::new(encoder),
            path: path.to_owned(),
            document_bytes: 0,
        })
    }

    fn write_error(&self, source: io::Error) -> Error {
        Error::OutputIo {
            action: "write the bundle",
            path: self.path.clone(),
            source,
        }
    }

    /// Adds a small file held in memory (`oci-layout`, `index.json`).
    pub(super) fn add_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut header = header(bytes.len() as u64);
        self.tar
            .append_data(&mut header, name, bytes)
            .map_err(|e| self.write_error(e))
    }

    /// Adds `blobs/<alg>/<hex>`, refusing it unless its content hashes to
    /// `digest`. The bytes are already in the temporary file by then; the
    /// caller discards that file on any error, so nothing is ever signed.
    pub(super) fn add_blob(&mut self, digest: &Digest, blob: &BlobFile) -> Result<()> {
        let name = format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex());
        let (actual, looks_like_json) =
            self.copy(&name, &blob.path, blob.size, digest.algorithm())?;
        if actual != *digest {
            return Err(Error::BlobDigestMismatch {
                path: blob.path.clone(),
                actual,
            });
        }
        if blob.size <= DEFAULT_MAX_DOCUMENT_BYTES && looks_like_json {
            self.document_bytes += blob.size;
            if self.document_bytes > DEFAULT_MAX_DOCUMENTS_TOTAL_BYTES {
                return Err(Error::ImportLimit {
                    path: blob.path.clone(),
                    reason: format!(
                        "small JSON blobs (manifests, configs) exceed the importer's \
                         {DEFAULT_MAX_DOCUMENTS_TOTAL_BYTES}-byte memory budget; \
                         split the images over several bundles"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Adds `size` bytes read from `reader` (an entry of an input archive)
    /// as the entry `name`; `source` names the input in messages.
    pub(super) fn add_reader(
        &mut self,
        name: &str,
        reader: &mut dyn Read,
        size: u64,
        source: &Path,
    ) -> Result<()> {
        let mut checking = CheckingReader::new(reader.take(size), Algorithm::Sha256);
        let mut header = header(size);
        let appended = self.tar.append_data(&mut header, name, &mut checking);
        let checked = checking.finish();
        if let Some(error) = checked.error {
            return Err(Error::LayoutRead {
                path: source.to_owned(),
                source: error,
            });
        }
        appended.map_err(|e| self.write_error(e))?;
        if checked.size != size {
            return Err(Error::InputChanged {
                path: source.to_owned(),
                expected: size,
                actual: checked.size,
            });
        }
        Ok(())
    }

    /// Adds a symlink `name` pointing at `target` (relative, inside the
    /// bundle: docker-save links repeated layers).
    pub(super) fn add_link(&mut self, name: &str, target: &str) -> Result<()> {
        let mut header = header(0);
        header.set_entry_type(tar::EntryType::Symlink);
        self.tar
            .append_link(&mut header, name, target)
            .map_err(|e| self.write_error(e))
    }

    /// Adds a plain file (`files/<name>`) of `size` bytes.
    pub(super) fn add_file(&mut self, name: &str, path: &Path, size: u64) -> Result<()> {
        self.copy(name, path, size, Algorithm::Sha256).map(|_| ())
    }

    /// Streams `size` bytes of `path` into the entry `name`; returns their
    /// digest and whether they start like a JSON object.
    fn copy(
        &mut self,
        name: &str,
        path: &Path,
        size: u64,
        algorithm: Algorithm,
    ) -> Result<(Digest, bool)> {
        let input = |source| Error::LayoutRead {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(input)?;
        // The tar builder copies in 8 KiB pieces; the buffer keeps that to
        // one read syscall per MiB. `take` caps a file that grew; a file that
        // shrank is caught below. Either way the header's size holds.
        let buffered = BufReader::with_capacity(INPUT_BUFFER_BYTES, file);
        let mut reader = CheckingReader::new(buffered.take(size), algorithm);
        let mut header = header(size);
        let appended = self.tar.append_data(&mut header, name, &mut reader);
        let checked = reader.finish();
        if let Some(source) = checked.error {
            return Err(input(source));
        }
        appended.map_err(|e| self.write_error(e))?;
        if checked.size != size {
            return Err(Error::InputChanged {
                path: path.to_owned(),
                expected: size,
                actual: checked.size,
            });
        }
        Ok((checked.digest, checked.looks_like_json))
    }

    /// Ends the tar and the zstd frame, flushes and syncs the file, and
    /// returns the digest and size of what was written.
    pub(super) fn finish(self) -> Result<Written> {
        let path = self.path;
        let output = |action, source| Error::OutputIo {
            action,
            path: path.clone(),
            source,
        };
        let encoder = self
            .tar
            .into_inner()
            .map_err(|e| output("finish the tar archive in", e))?;
        let hashing = encoder
            .finish()
            .map_err(|e| output("finish the zstd stream in", e))?;
        let (buffered, sha256, size) = hashing.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| output("write the bundle", e.into_error()))?;
        file.sync_all()
            .map_err(|e| output("sync the bundle to disk", e))?;
        Ok(Written { sha256, size })
    }
}

/// The deterministic header every entry gets; the path is set by the
/// builder (with a GNU long-name entry when it exceeds 100 bytes).
fn header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_sizes_over_8_gib() {
        let size = 9 * (1u64 << 30) + 7;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(header(size).as_bytes());
        let parsed = tar::Header::from_byte_slice(&bytes);
        assert_eq!(parsed.size().unwrap(), size);
        assert_eq!(parsed.mode().unwrap(), 0o644);
        assert_eq!(parsed.mtime().unwrap(), 0);
    }

    #[test]
    fn a_file_that_shrank_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("blob");
        std::fs::write(&input, b"short").unwrap();
        let output = dir.path().join("out.zst");
        let file = File::create(&output).unwrap();
        let mut writer = BundleWriter::new(file, &output, Compression::default()).unwrap();
        let blob = BlobFile {
            path: input,
            size: 10,
        };
        let err = writer
            .add_blob(&Digest::sha256_of(b"short"), &blob)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InputChanged {
                    expected: 10,
                    actual: 5,
                    ..
                }
            ),
            "{err}"
        );
    }
}
