//! The bundle reader from the first byte: zstd, the tar guard, the tar
//! parser, the OCI layout and every format collector, on the file as given.
#![no_main]

use std::io::Write as _;

use airlock::progress::Progress;
use airlock::read::{BundleIndex, ReadLimits, UnverifiedBundle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if file.write_all(data).is_err() {
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
