//! The streaming read of a bundle file that its signature check hashes.

use std::io::{self, Read};

/// Large enough that per-read overhead vanishes next to hashing, small
/// enough to stay in L2/L3 cache while several hash states consume it.
const CHUNK_SIZE: usize = 1024 * 1024;

/// Reads `reader` to its end exactly once, handing every chunk in order to
/// `each_chunk` (the hash states and the progress callback), which returns
/// false to stop reading early. Returns the number of bytes read.
///
/// Memory use is one fixed buffer whatever the file size, so multi-gigabyte
/// bundles verify on small import hosts.
pub(super) fn read_chunks(
    reader: &mut impl Read,
    mut each_chunk: impl FnMut(&[u8]) -> bool,
) -> io::Result<u64> {
    let mut buffer = vec![0u8; CHUNK_SIZE];
    let mut size = 0u64;
    loop {
        let filled = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        size += filled as u64;
        if !each_chunk(&buffer[..filled]) {
            break;
        }
    }
    Ok(size)
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
    fn short_reads_are_handed_on_whole_and_in_order() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut seen = Vec::new();
        let size = read_chunks(&mut Trickle(&data), |chunk| {
            seen.extend_from_slice(chunk);
            true
        })
        .unwrap();
        assert_eq!(seen, data);
        assert_eq!(size, data.len() as u64);
    }

    #[test]
    fn empty_input_hands_on_nothing() {
        let size = read_chunks(&mut io::empty(), |_| panic!("no chunk")).unwrap();
        assert_eq!(size, 0);
    }
}
