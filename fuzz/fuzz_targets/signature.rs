//! Detached signatures (DER or base64, every algorithm) against a trusted
//! key of each kind: none may verify, none may panic.
#![no_main]

use std::sync::OnceLock;

use airlock::verify::{TrustedKey, TrustedKeys, verify_message};
use libfuzzer_sys::fuzz_target;

const P256: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEyKVKl75SDZtuXci+K85bJ34RdkSh
4doGCGJr1/aBmFcmvmMkb4yv9iDCSndcyCvJXWxFIXYjKDQS7frJAX1C2Q==
-----END PUBLIC KEY-----
";

const ED25519: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAR3/nnwp96y7tc/WEfypdkDmz0obDTRAnjtSUOk3px7Q=
-----END PUBLIC KEY-----
";

fn keys() -> &'static TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let keys = [P256, ED25519]
            .iter()
            .filter_map(|pem| TrustedKey::from_pem("fuzz", pem).ok())
            .collect();
        TrustedKeys::new(keys).expect("the fuzz keys load")
    })
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (message, signature) = data.split_at(split);
    assert!(
        verify_message(keys(), message, signature).is_none(),
        "a fuzzed signature verified"
    );
});
