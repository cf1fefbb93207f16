//! The two stream adapters that let the bundle be checked and hashed in the
//! same pass that writes it, so no input or output file is read twice.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::digest::{Algorithm, Digest, Hasher};

/// Hashes (SHA-256) and counts everything written through it: the digest
/// `openssl dgst -sha256` would compute over the finished file, known the
/// moment the last byte is written.
pub(super) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(super) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The inner writer, the SHA-256 and the byte count.
    pub(super) fn finish(self) -> (W, [u8; 32], u64) {
        (self.inner, self.hasher.finalize().into(), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads an input file into the tar while hashing it with the algorithm of
/// its expected digest, counting the bytes, and noting how the content
/// starts (the importer keeps small JSON-looking blobs in memory, and the
/// producer checks that budget too).
///
/// Read errors are kept so the caller can tell an input failure from an
/// output failure after the tar writer reports "an I/O error".
pub(super) struct CheckingReader<R> {
    inner: R,
    hasher: Hasher,
    read: u64,
    first_non_space: Option<u8>,
    error: Option<io::Error>,
}

impl<R: Read> CheckingReader<R> {
    pub(super) fn new(inner: R, algorithm: Algorithm) -> Self {
        Self {
            inner,
            hasher: Hasher::new(algorithm),
            read: 0,
            first_non_space: None,
            error: None,
        }
    }

    /// What was read: its digest, its length, whether it starts like a JSON
    /// object, and the read error if one stopped it.
    pub(super) fn finish(self) -> Checked {
        Checked {
            digest: self.hasher.finish(),
            size: self.read,
            looks_like_json: self.first_non_space == Some(b'{'),
            error: self.error,
        }
    }
}

/// The outcome of one [`CheckingReader`].
pub(super) struct Checked {
    pub(super) digest: Digest,
    pub(super) size: u64,
    pub(super) looks_like_json: bool,
    pub(super) error: Option<io::Error>,
}

impl<R: Read> Read for CheckingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                let chunk = &buf[..n];
                if self.first_non_space.is_none() {
                    self.first_non_space = chunk.iter().copied().find(|b| !b.is_ascii_whitespace());
                }
                self.hasher.update(chunk);
                self.read += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                // Keep the original; hand the tar writer a copy of its kind
                // and text so it stops.
                let copy = io::Error::new(e.kind(), e.to_string());
                self.error = Some(e);
                Err(copy)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_hash_matches_one_shot_sha256() {
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(b"hello ").unwrap();
        writer.write_all(b"world").unwrap();
        let (inner, sha256, written) = writer.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(sha256, <[u8; 32]>::from(Sha256::digest(b"hello world")));
        assert_eq!(written, 11);
    }

    #[test]
    fn reader_reports_digest_size_and_json_start() {
        let mut reader = CheckingReader::new(&b"  \n{\"a\":1}"[..], Algorithm::Sha256);
        io::copy(&mut reader, &mut io::sink()).unwrap();
        let checked = reader.finish();
        assert_eq!(checked.digest, Digest::sha256_of(b"  \n{\"a\":1}"));
        assert_eq!(checked.size, 10);
        assert!(checked.looks_like_json);
        assert!(checked.error.is_none());
    }

    #[test]
    fn reader_keeps_the_input_error() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::PermissionDenied, "nope"))
            }
        }
        let mut reader = CheckingReader::new(Failing, Algorithm::Sha512);
        assert!(io::copy(&mut reader, &mut io::sink()).is_err());
        let checked = reader.finish();
        assert_eq!(
            checked.error.map(|e| e.kind()),
            Some(io::ErrorKind::PermissionDenied)
        );
        assert!(!checked.looks_like_json);
    }
}
