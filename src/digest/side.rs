//! Hashing a stream on a thread of its own.
//!
//! A pass that decompresses and indexes a bundle also hashes its compressed
//! bytes: to bind them to the bytes whose signature verified, or, read once,
//! for the signature itself. On the reading thread that hash adds its whole
//! time to the pass; on a thread of its own it overlaps with decompression
//! and indexing, so the pass takes the longer of the two, not their sum.
//! The bytes are copied into buffers the hashing thread hands back, so the
//! reader keeps its own buffer and memory stays at a few buffers.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Buffers queued for the hashing thread before the reader waits for it.
/// Eight reads of the bundle file (1 MiB each) let the reader run ahead of a
/// hash that is briefly slower without holding much memory.
pub const QUEUED_BUFFERS: usize = 8;

/// The reading side: hands copies of the bytes read to the hashing thread.
#[derive(Debug)]
pub struct SideFeed {
    feed: SyncSender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
}

impl SideFeed {
    /// Hands a copy of `bytes`, the next of the stream, to the hashing
    /// thread; waits while it is [`QUEUED_BUFFERS`] behind.
    pub fn feed(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut buffer = self.spare.try_recv().unwrap_or_default();
        buffer.clear();
        buffer.extend_from_slice(bytes);
        // The thread ends only when this feed is dropped (or it panicked,
        // which joining it reports).
        let _ = self.feed.send(buffer);
    }
}

/// A feed and the body of the thread that applies `update` to `state` for
/// every buffer fed, in order, and returns `state` once the feed is dropped.
/// Run the body on a thread of any kind (scoped when `state` borrows).
pub fn side_hash<T: Send>(
    mut state: T,
    mut update: impl FnMut(&mut T, &[u8]) + Send,
) -> (SideFeed, impl FnOnce() -> T + Send) {
    let (feed, buffers) = mpsc::sync_channel::<Vec<u8>>(QUEUED_BUFFERS);
    let (back, spare) = mpsc::sync_channel::<Vec<u8>>(QUEUED_BUFFERS + 2);
    let body = move || {
        for buffer in buffers {
            update(&mut state, &buffer);
            // A full return queue only means a buffer is freed, not reused.
            let _ = back.try_send(buffer);
        }
        state
    };
    (SideFeed { feed, spare }, body)
}

/// A hash of a stream computed on a thread of its own (`'static` state).
#[derive(Debug)]
pub struct SideHash<T: Send + 'static> {
    feed: SideFeed,
    thread: JoinHandle<T>,
}

impl<T: Send + 'static> SideHash<T> {
    /// Starts the hashing thread.
    pub fn spawn(
        state: T,
        update: impl FnMut(&mut T, &[u8]) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (feed, body) = side_hash(state, update);
        let thread = std::thread::Builder::new()
            .name("airlock-hash".into())
            .spawn(body)?;
        Ok(SideHash { feed, thread })
    }

    /// Hashes a copy of `bytes`, the next of the stream.
    pub fn feed(&self, bytes: &[u8]) {
        self.feed.feed(bytes);
    }

    /// Waits for the thread to hash everything fed and returns its state.
    pub fn finish(self) -> T {
        drop(self.feed);
        join(self.thread.join())
    }
}

/// The state a hashing thread returned; a panic there is re-raised here, as
/// if the hash had run on the caller's thread.
pub fn join<T>(joined: std::thread::Result<T>) -> T {
    match joined {
        Ok(state) => state,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The BLAKE3 hash that binds a later pass over a bundle file to the pass
/// that verified its signature (lower-case hex).
#[derive(Debug, Default)]
pub struct Blake3(blake3::Hasher);

impl Blake3 {
    /// Hashes the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The hex digest of everything hashed.
    pub fn finish(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn a_side_hash_sees_every_byte_in_order() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let side = SideHash::spawn(sha2::Sha256::new(), |h, b| h.update(b)).expect("spawn");
        for piece in data.chunks(65_537) {
            side.feed(piece);
        }
        side.feed(&[]);
        let on_thread = hex::encode(side.finish().finalize());
        assert_eq!(on_thread, hex::encode(sha2::Sha256::digest(&data)));
    }

    #[test]
    fn a_scoped_side_hash_can_borrow() {
        let data = vec![42u8; 3 << 20];
        let mut seen = 0usize;
        let counted = std::thread::scope(|scope| {
            let (feed, body) = side_hash(&mut seen, |seen, b| **seen += b.len());
            let thread = scope.spawn(body);
            for piece in data.chunks(1 << 20) {
                feed.feed(piece);
            }
            drop(feed);
            *join(thread.join())
        });
        assert_eq!(counted, 3 << 20);
    }

    #[test]
    fn blake3_of_the_same_bytes_in_other_pieces_is_the_same() {
        let data = vec![7u8; 2_000_003];
        let mut whole = Blake3::default();
        whole.update(&data);
        let mut pieces = Blake3::default();
        for piece in data.chunks(4099) {
            pieces.update(piece);
        }
        assert_eq!(whole.finish(), pieces.finish());
        assert_eq!(whole.finish(), blake3::hash(&data).to_hex().to_string());
    }
}
