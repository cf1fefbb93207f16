//! Manifests, indexes and `index.json`, and their creation-time annotation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = airlock::read::document::parse(data);
    let _ = airlock::read::document::created(data);
    let _ = airlock::read::document::config_platform(data);
});
