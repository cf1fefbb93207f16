//! Every bad input gets a one-line reason naming the file and the problem,
//! exit code 3, and leaves the registry exactly as it was.

mod support;

use std::path::Path;
use std::process::Output;

use support::airlock;
use support::bundle::{Breakage, BuiltBundle, BundleBuilder, Image, broken_bundle};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;

/// Imports `bundle` and asserts: exit 3, one line on stderr containing every
/// fragment, and nothing at all stored in the registry.
fn assert_rejected(bundle: &BuiltBundle, public_key: &Path, fragments: &[&str]) {
    let registry = Registry::start();
    let output = import(bundle, public_key, &registry);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(3),
        "expected exit 3 (integrity), got {}: {stderr}",
        output.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line reason, got:\n{stderr}");
    for fragment in fragments {
        assert!(
            lines[0].contains(fragment),
            "the reason should mention {fragment:?}: {}",
            lines[0]
        );
    }
    assert!(
        output.stdout.is_empty(),
        "nothing should be reported as imported"
    );
    assert!(
        registry.catalog().is_empty(),
        "the registry catalog changed: {:?}",
        registry.catalog()
    );
    assert!(
        registry.stored_blobs().is_empty(),
        "blobs reached the registry: {:?}",
        registry.stored_blobs()
    );
    let writes = registry.settled_commits_since(0);
    assert!(
        writes.is_empty(),
        "airlock committed to the registry or left a session open: {writes:?}"
    );
}

fn import(bundle: &BuiltBundle, public_key: &Path, registry: &Registry) -> Output {
    airlock()
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(public_key)
        .args(["--registry", &format!("{}/mirror", registry.host())])
        .args(["--plain-http", "--quiet"])
        .output()
        .expect("run airlock import")
}

fn one_image(name: &str) -> (TestKey, BuiltBundle) {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new(name)
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    (key, bundle)
}

fn rejected_breakage(breakage: Breakage, fragments: &[&str]) {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = broken_bundle(breakage, &key);
    let name = bundle.zst().display().to_string();
    let mut all = vec![name.as_str()];
    all.extend_from_slice(fragments);
    assert_rejected(&bundle, bundle.public_key_pem(), &all);
}

#[test]
fn missing_signature_is_rejected() {
    let (_key, bundle) = one_image("unsigned");
    std::fs::remove_file(bundle.sig()).expect("remove signature");
    let zst = bundle.zst().display().to_string();
    assert_rejected(
        &bundle,
        bundle.public_key_pem(),
        &[
            "no signature for bundle",
            &zst,
            "unsigned.sig.bin",
            "unsigned.tar.sig.bin",
        ],
    );
}

#[test]
fn signature_from_another_key_is_rejected() {
    let (_key, bundle) = one_image("wrong-key");
    let stranger = TestKey::generate(KeyKind::EcP256);
    assert_rejected(&bundle, stranger.public_pem(), &["does not verify"]);
}

#[test]
fn one_flipped_byte_is_rejected() {
    let (_key, bundle) = one_image("tampered");
    bundle.tamper();
    let name = bundle.zst().display().to_string();
    assert_rejected(
        &bundle,
        bundle.public_key_pem(),
        &[&name, "does not verify"],
    );
}

#[test]
fn truncated_zstd_is_rejected() {
    rejected_breakage(Breakage::TruncatedZstd, &["truncated or corrupt"]);
}

#[test]
fn a_file_that_is_not_zstd_is_rejected() {
    rejected_breakage(Breakage::NotZstd, &["not zstd-compressed"]);
}

#[test]
fn zstd_content_that_is_not_a_tar_is_rejected() {
    rejected_breakage(Breakage::ZstdOfNotTar, &["tar"]);
}

#[test]
fn path_traversal_is_rejected() {
    rejected_breakage(Breakage::ParentDirEntry, &["unsafe entry", "'..'"]);
}

#[test]
fn absolute_paths_are_rejected() {
    rejected_breakage(Breakage::AbsolutePathEntry, &["unsafe entry", "absolute"]);
}

#[test]
fn symlinks_are_rejected() {
    rejected_breakage(Breakage::SymlinkEntry, &["unsafe entry", "links"]);
}

#[test]
fn hard_links_are_rejected() {
    rejected_breakage(Breakage::HardLinkEntry, &["unsafe entry", "links"]);
}

#[test]
fn a_blob_whose_content_does_not_match_its_digest_is_rejected() {
    rejected_breakage(Breakage::BlobDigestMismatch, &["does not match its digest"]);
}

#[test]
fn a_manifest_whose_content_does_not_match_its_digest_is_rejected() {
    rejected_breakage(
        Breakage::ManifestDigestMismatch,
        &["does not match its digest"],
    );
}

#[test]
fn a_manifest_naming_an_absent_blob_is_rejected() {
    rejected_breakage(Breakage::MissingLayer, &["which is not in the bundle"]);
}

#[test]
fn invalid_json_is_rejected() {
    rejected_breakage(
        Breakage::InvalidIndexJson,
        &["index.json", "not valid JSON"],
    );
}

#[test]
fn a_bundle_with_no_importable_image_is_rejected() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("tag-only")
        .image(Image::new("quay.io/acme/app:1.0").naming(support::bundle::Naming::TagOnlyRefName))
        .build(&key);
    assert_rejected(
        &bundle,
        bundle.public_key_pem(),
        &["nothing in bundle", "only a tag"],
    );
}

/// Recompresses `bundle` with `zstd --long=27 --no-content-size` (so the
/// frame header carries a window descriptor) and returns the bytes.
fn recompressed_with_window_descriptor(bundle: &BuiltBundle) -> Vec<u8> {
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg("zstd -dc --long=31 \"$1\" | zstd -q -c --long=27 --no-content-size")
        .arg("sh")
        .arg(bundle.zst())
        .output()
        .expect("run zstd");
    assert!(output.status.success(), "{output:?}");
    output.stdout
}

#[test]
fn a_zstd_window_over_2_gib_is_refused() {
    let (key, bundle) = one_image("huge-window");
    let mut zst = recompressed_with_window_descriptor(&bundle);
    // Magic (4 bytes), frame header descriptor, then the window descriptor:
    // exponent in its top 5 bits, window = 2^(10 + exponent). 22 claims a
    // 4 GiB window, past the 2 GiB (--long=31) airlock accepts.
    let descriptor = zst[4];
    assert_eq!(
        descriptor & 0x20,
        0,
        "single-segment frame: no window descriptor"
    );
    zst[5] = 22 << 3;
    std::fs::write(bundle.zst(), &zst).expect("write the bundle");
    bundle.sign_with(&key);
    let name = bundle.zst().display().to_string();
    assert_rejected(&bundle, bundle.public_key_pem(), &[&name, "window"]);
}

#[test]
fn a_zstd_window_of_2_gib_is_accepted() {
    let (key, bundle) = one_image("big-window");
    let mut zst = recompressed_with_window_descriptor(&bundle);
    // Exponent 21: a 2 GiB window, what `zstd --long=31` writes. The frame
    // stays valid: a window larger than the content changes nothing else.
    zst[5] = 21 << 3;
    std::fs::write(bundle.zst(), &zst).expect("write the bundle");
    bundle.sign_with(&key);
    let registry = Registry::start();
    let output = import(&bundle, bundle.public_key_pem(), &registry);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(support::skopeo::exists(
        &registry,
        "mirror/quay.io/acme/app:1.0"
    ));
}

#[test]
fn a_bundle_rewritten_after_its_signature_verified_is_not_read() {
    use airlock::progress::Progress;
    use airlock::read::{BundleIndex, ReadLimits};
    use airlock::verify::{TrustedKeys, verify_bundle};

    let (key, bundle) = one_image("switched");
    let other = BundleBuilder::new("switched-other")
        .image(Image::new("quay.io/acme/other:1.0"))
        .build(&key);
    let keys = TrustedKeys::load(&[bundle.public_key_pem().to_owned()]).expect("the key loads");
    let verified = verify_bundle(bundle.zst(), bundle.sig(), &keys).expect("the bundle verifies");

    // Rewritten in place (same file, new bytes) between the signature check
    // and the read: another validly signed bundle's content.
    std::fs::write(
        bundle.zst(),
        std::fs::read(other.zst()).expect("read the other bundle"),
    )
    .expect("rewrite the bundle");
    let error = match BundleIndex::build(verified, ReadLimits::default(), &Progress::new()) {
        Ok(_) => panic!("a bundle that changed after verification was read"),
        Err(error) => error,
    };
    assert!(
        matches!(error, airlock::read::Error::ChangedAfterVerification { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("changed after its signature was verified")
    );
}
