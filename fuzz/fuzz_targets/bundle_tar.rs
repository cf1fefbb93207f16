//! The bundle reader past zstd: the input is the tar stream, compressed
//! here, so mutations land in tar headers, layout files and the archives of
//! packs and charts rather than in the compressed bytes.
#![no_main]

use std::io::Write as _;

use airlock::progress::Progress;
use airlock::read::{BundleIndex, ReadLimits, UnverifiedBundle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(compressed) = zstd::encode_all(data, 1) else {
        return;
    };
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if file.write_all(&compressed).is_err() {
        return;
    }
    let limits = ReadLimits {
        max_uncompressed_bytes: 64 << 20,
        ..ReadLimits::default()
    };
    if let Ok(bundle) = UnverifiedBundle::open(file.path()) {
        let _ = BundleIndex::build(bundle, limits, &Progress::new());
    }
});
