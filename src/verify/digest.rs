//! The single streaming pass over a bundle file.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// Large enough that per-read overhead vanishes next to hashing, small
/// enough to stay in L2/L3 cache while several hash states consume it.
const CHUNK_SIZE: usize = 1024 * 1024;

/// What one pass over the bundle yields.
pub(super) struct Digested {
    pub(super) sha256: [u8; 32],
    pub(super) size: u64,
}

/// Reads `reader` to its end exactly once, hashing it with SHA-256 and handing
/// every chunk to `each_chunk` (the Ed25519 states and the progress callback),
/// which returns false to stop reading early.
///
/// Memory use is one fixed buffer whatever the file size, so multi-gigabyte
/// bundles verify on small import hosts.
pub(super) fn digest(
    reader: &mut impl Read,
    mut each_chunk: impl FnMut(&[u8]) -> bool,
) -> io::Result<Digested> {
    let mut buffer = vec![0u8; CHUNK_SIZE];
    let mut sha256 = Sha256::new();
    let mut size = 0u64;
    loop {
        let filled = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buffer[..filled];
        sha256.update(chunk);
        size += filled as u64;
        if !each_chunk(chunk) {
            break;
        }
    }
    Ok(Digested {
        sha256: sha256.finalize().into(),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns a few bytes per call, as pipes and network
    /// filesystems do, to prove short reads are stitched together correctly.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(7);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_hash_the_same_as_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut seen = 0usize;
        let digested = digest(&mut Trickle(&data), |chunk| {
            seen += chunk.len();
            true
        })
        .unwrap();
        assert_eq!(digested.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
        assert_eq!(digested.size, data.len() as u64);
        assert_eq!(seen, data.len());
    }

    #[test]
    fn empty_input_has_the_empty_sha256() {
        let digested = digest(&mut io::empty(), |_| true).unwrap();
        assert_eq!(
            hex::encode(digested.sha256),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(digested.size, 0);
    }
}
