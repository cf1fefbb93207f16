//! The daemon's configuration file, loaded exactly as `airlock watch
//! --config FILE` loads it.
#![no_main]

use std::io::Write as _;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile::Builder::new().suffix(".yaml").tempfile() else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    let _ = airlock::config::DaemonConfig::load_from(
        Some(file.path()),
        Vec::new(),
        &airlock::config::WatchArgs::default(),
    );
});
