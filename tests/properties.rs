//! Property tests of the parsers that read untrusted input: whatever the
//! bytes, they answer with a value or an error, never a panic, a hang or
//! unbounded memory. The same parsers are the targets of the coverage-guided
//! fuzzer (`scripts/fuzz`, see docs/SECURITY.md); these run in the normal
//! suite on a few hundred generated inputs each.

use std::io::Write as _;

use airlock::FailureClass;
use airlock::progress::Progress;
use airlock::read::document;
use airlock::read::{BundleIndex, ReadLimits, UnverifiedBundle};
use airlock::verify::{TrustedKey, TrustedKeys, verify_message};
use proptest::prelude::*;

/// A tar archive of `entries` (path, content), as a producer's tool writes it.
fn tar_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        if header.set_path(path).is_err() {
            continue;
        }
        header.set_cksum();
        let _ = builder.append(&header, &bytes[..]);
    }
    builder.into_inner().unwrap_or_default()
}

/// Indexes `bytes` as a bundle file (without a signature, as `inspect`
/// without a key does) under small limits.
fn read_bundle(bytes: &[u8]) -> Result<(), airlock::read::Error> {
    let mut file = tempfile::NamedTempFile::new().expect("temporary bundle");
    file.write_all(bytes).expect("write the bundle");
    let limits = ReadLimits {
        max_uncompressed_bytes: 1 << 20,
        max_entries: 1000,
        ..ReadLimits::default()
    };
    let bundle = UnverifiedBundle::open(file.path())?;
    BundleIndex::build(bundle, limits, &Progress::new()).map(|_| ())
}

fn entry() -> impl Strategy<Value = (String, Vec<u8>)> {
    let path = prop_oneof![
        Just("index.json".to_owned()),
        Just("oci-layout".to_owned()),
        "blobs/sha256/[0-9a-f]{64}",
        "packs/[a-z]{1,8}-1\\.0\\.0\\.tar\\.gz",
        "charts/[a-z]{1,8}-0\\.1\\.0\\.tgz",
        "files/[a-z]{1,8}\\.(iso|yaml|json)",
        "[a-z/.]{1,40}",
    ];
    let content = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        "\\{\"schemaVersion\":2,\"manifests\":\\[[ -~]{0,200}\\]\\}".prop_map(String::into_bytes),
        "[ -~\n]{0,300}".prop_map(String::into_bytes),
    ];
    (path, content)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_as_a_bundle_are_read_or_refused_as_integrity_failures(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096)
    ) {
        if let Err(error) = read_bundle(&bytes) {
            prop_assert_eq!(error.class(), FailureClass::Integrity, "{}", error);
        }
    }

    #[test]
    fn any_tar_of_layout_like_entries_is_read_or_refused(
        entries in proptest::collection::vec(entry(), 0..8),
        flip in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
    ) {
        let mut tar = tar_of(&entries);
        if let Some((at, byte)) = flip && !tar.is_empty() {
            let at = at.index(tar.len());
            tar[at] ^= byte;
        }
        let zst = zstd::encode_all(&tar[..], 1).expect("compress");
        if let Err(error) = read_bundle(&zst) {
            prop_assert_eq!(error.class(), FailureClass::Integrity, "{}", error);
        }
    }

    #[test]
    fn any_json_document_is_parsed_or_refused(text in "[ -~]{0,400}") {
        let _ = document::parse(text.as_bytes());
        let _ = document::created(text.as_bytes());
    }

    #[test]
    fn any_text_as_a_public_key_is_loaded_or_refused(
        body in "[A-Za-z0-9+/=\n]{0,600}",
        kind in prop_oneof![Just("PUBLIC KEY"), Just("RSA PUBLIC KEY"), Just("EC PRIVATE KEY")],
    ) {
        let pem = format!("-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n");
        let _ = TrustedKey::from_pem("fuzzed", &pem);
    }

    #[test]
    fn any_bytes_as_a_signature_are_refused(
        signature in proptest::collection::vec(any::<u8>(), 0..600),
        message in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let keys = TrustedKeys::new(vec![TrustedKey::from_pem("test", TEST_KEY).expect("test key")])
            .expect("one key");
        prop_assert!(verify_message(&keys, &message, &signature).is_none());
    }

    #[test]
    fn an_image_reference_that_parses_parses_again_to_itself(text in "[a-z0-9./:@_-]{1,80}") {
        if let Ok(reference) = airlock::read::names::parse_full(&text) {
            let whole = reference.whole();
            let again = airlock::read::names::parse_full(&whole).expect("reparses");
            prop_assert_eq!(again.whole(), whole);
        }
    }

    #[test]
    fn any_yaml_as_the_configuration_is_loaded_or_refused(text in "[ -~\n]{0,400}") {
        let mut file = tempfile::NamedTempFile::new().expect("temporary config");
        file.write_all(text.as_bytes()).expect("write the config");
        let _ = airlock::config::DaemonConfig::load_from(
            Some(file.path()),
            Vec::new(),
            &airlock::config::WatchArgs::default(),
        );
    }
}

/// An ECDSA P-256 public key, for signatures that must not verify.
const TEST_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEyKVKl75SDZtuXci+K85bJ34RdkSh
4doGCGJr1/aBmFcmvmMkb4yv9iDCSndcyCvJXWxFIXYjKDQS7frJAX1C2Q==
-----END PUBLIC KEY-----
";
