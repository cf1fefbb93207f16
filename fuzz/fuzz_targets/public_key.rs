//! Trusted key files: PEM of any label and any body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = airlock::verify::TrustedKey::from_pem("fuzz", text);
    }
});
