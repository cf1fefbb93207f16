//! Endless data: every cap on what a bundle may make airlock read refuses
//! the bundle as an integrity failure (exit 3) naming the limit and the
//! value, before anything reaches the registry; zstd bombs and tars of
//! endless zero blocks, signed with a trusted key, are refused within
//! seconds in bounded memory.
//!
//! The bombs are made here, block by block in the zstd frame format (RLE
//! blocks: 4 bytes for each 128 KiB of zeros), so no big file is kept in
//! the repository and building one takes milliseconds.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::airlock;
use support::bundle::{BuiltBundle, BundleBuilder, Image};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;

/// What a zstd bomb here expands to: 20 GiB from 640 KiB.
const BOMB_BYTES: u64 = 20 << 30;

/// The most a bomb may take to be refused. Decompressing and hashing the
/// 1 GiB the ratio lets through takes 1 to 3 s on the 2-core test machine;
/// reading the whole bomb would take minutes.
const BOMB_DEADLINE: Duration = Duration::from_secs(30);

/// The most memory an import refusing a bomb may use, in MiB: the process
/// baseline (about 30 MiB) and the buffers of one import, nowhere near the
/// gigabytes it decompresses.
const BOMB_PEAK_MIB: u64 = 128;

/// RLE blocks carry at most this many bytes (the zstd block maximum).
const BLOCK: u64 = 128 << 10;

/// A zstd frame: `prefix` in raw blocks, then `zeros` zero bytes in RLE
/// blocks, with a 128 KiB window.
fn zstd_bomb(prefix: &[u8], zeros: u64) -> Vec<u8> {
    let mut frame = vec![0x28, 0xB5, 0x2F, 0xFD];
    // Frame header: no content size, no checksum, a window descriptor of
    // 2^17 bytes (exponent 7, mantissa 0).
    frame.extend_from_slice(&[0x00, 7 << 3]);
    let blocks = zeros.div_ceil(BLOCK);
    for chunk in prefix.chunks(BLOCK as usize) {
        block_header(&mut frame, 0, chunk.len() as u64, blocks == 0);
        frame.extend_from_slice(chunk);
    }
    let mut left = zeros;
    while left > 0 {
        let size = left.min(BLOCK);
        left -= size;
        block_header(&mut frame, 1, size, left == 0);
        frame.push(0);
    }
    frame
}

/// A block header: last-block bit, block type (0 raw, 1 RLE), size.
fn block_header(frame: &mut Vec<u8>, kind: u32, size: u64, last: bool) {
    let header = u32::from(last) | (kind << 1) | ((size as u32) << 3);
    frame.extend_from_slice(&header.to_le_bytes()[..3]);
}

/// The header of a tar entry `blobs/sha256/…` announcing `size` bytes
/// (GNU base-256 size, as for any entry over 8 GiB).
fn huge_blob_header(size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header
        .set_path(format!("blobs/sha256/{}", "ab".repeat(32)))
        .expect("blob path");
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    header.as_bytes().to_vec()
}

/// Writes `frame` as `NAME.zst` in `dir` and signs it with `key`.
fn signed(dir: &Path, name: &str, frame: &[u8], key: &TestKey) -> (PathBuf, PathBuf) {
    let zst = dir.join(format!("{name}.zst"));
    let sig = dir.join(format!("{name}.sig.bin"));
    std::fs::write(&zst, frame).expect("write the bomb");
    key.sign(&zst, &sig);
    (zst, sig)
}

/// Runs `command` to its end, sampling its peak memory (`VmHWM`) every
/// 20 ms; returns its output, peak in MiB and run time. Fails the test if
/// it runs past `deadline`.
fn measured(command: &mut Command, deadline: Duration) -> (Output, u64, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start airlock");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(hwm) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(hwm);
        }
        if child.try_wait().expect("poll airlock").is_some() {
            break;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("airlock still ran after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let output = child.wait_with_output().expect("collect airlock's output");
    (output, peak_kib / 1024, took)
}

fn import_command(zst: &Path, public_key: &Path, registry: &Registry) -> Command {
    let mut command = airlock();
    command
        .arg("import")
        .arg(zst)
        .arg("--public-key")
        .arg(public_key)
        .args(["--registry", &format!("{}/mirror", registry.host())])
        .args(["--plain-http", "--quiet"]);
    command
}

/// Asserts exit 3 and one line on stderr naming the bundle and every
/// fragment, and that the registry saw no write at all.
fn assert_refused(output: &Output, zst: &Path, registry: &Registry, fragments: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(3),
        "expected exit 3 (integrity), got {}: {stderr}",
        output.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line reason, got:\n{stderr}");
    let zst = zst.display().to_string();
    for fragment in std::iter::once(zst.as_str()).chain(fragments.iter().copied()) {
        assert!(
            lines[0].contains(fragment),
            "the reason should mention {fragment:?}: {}",
            lines[0]
        );
    }
    let writes = registry.settled_commits_since(0);
    assert!(
        writes.is_empty(),
        "airlock committed to the registry or left a session open: {writes:?}"
    );
    assert!(
        registry.catalog().is_empty(),
        "the registry catalog changed: {:?}",
        registry.catalog()
    );
}

fn refused_bomb(name: &str, frame: &[u8], fragments: &[&str]) {
    let key = TestKey::generate(KeyKind::EcP256);
    let dir = tempfile::tempdir().expect("bomb directory");
    let (zst, _sig) = signed(dir.path(), name, frame, &key);
    let registry = Registry::start();
    let (output, peak, took) = measured(
        &mut import_command(&zst, key.public_pem(), &registry),
        BOMB_DEADLINE,
    );
    eprintln!(
        "{name}: {} KiB expanding to {} GiB refused in {took:?}, peak RSS {peak} MiB",
        frame.len() >> 10,
        BOMB_BYTES >> 30
    );
    assert_refused(&output, &zst, &registry, fragments);
    assert!(peak < BOMB_PEAK_MIB, "peak RSS {peak} MiB");
}

#[test]
fn a_signed_zstd_bomb_is_refused_by_the_expansion_ratio_within_seconds() {
    let frame = zstd_bomb(&huge_blob_header(BOMB_BYTES), BOMB_BYTES);
    assert!(frame.len() < 1 << 20, "{} bytes", frame.len());
    refused_bomb(
        "zstd-bomb",
        &frame,
        &[
            "read.max_expansion_ratio",
            "decompressed bytes per compressed byte",
        ],
    );
}

#[test]
fn a_signed_tar_of_endless_zero_blocks_is_refused_within_seconds() {
    // Nothing but zero blocks: the tar ends at the first, and everything
    // after it is still decompressed to check the whole file was read.
    let frame = zstd_bomb(&[], BOMB_BYTES);
    refused_bomb("zero-blocks", &frame, &["read.max_expansion_ratio"]);
}

#[test]
fn an_unsigned_bomb_is_refused_by_verify_unread_and_by_inspect_at_the_limit() {
    let signer = TestKey::generate(KeyKind::EcP256);
    let other = TestKey::generate(KeyKind::EcP256);
    let dir = tempfile::tempdir().expect("bomb directory");
    let frame = zstd_bomb(&huge_blob_header(BOMB_BYTES), BOMB_BYTES);
    // Signed, but by a key airlock is not told to trust.
    let (zst, _sig) = signed(dir.path(), "untrusted-bomb", &frame, &other);

    let (output, _, took) = measured(
        airlock()
            .arg("verify")
            .arg(&zst)
            .arg("--public-key")
            .arg(signer.public_pem()),
        BOMB_DEADLINE,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("signature"), "{stderr}");
    assert!(
        !stderr.contains("read."),
        "verify decompressed it: {stderr}"
    );
    eprintln!("verify refused the untrusted bomb in {took:?}");

    // inspect with the wrong key stops at the signature as well.
    let (output, _, _) = measured(
        airlock()
            .arg("inspect")
            .arg(&zst)
            .arg("--public-key")
            .arg(signer.public_pem()),
        BOMB_DEADLINE,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(!stderr.contains("read."), "{stderr}");

    // inspect without a key reads the unverified bundle, under the same caps.
    let (output, peak, took) = measured(airlock().arg("inspect").arg(&zst), BOMB_DEADLINE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("inspect refused the unverified bomb in {took:?}, peak RSS {peak} MiB");
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("read.max_expansion_ratio"), "{stderr}");
    assert!(peak < BOMB_PEAK_MIB, "peak RSS {peak} MiB");
}

/// A signed bundle of one multi-platform image: `index.json` → an index →
/// two manifests, each with a config and a layer.
fn two_platform_bundle(name: &str) -> BuiltBundle {
    let key = TestKey::generate(KeyKind::EcP256);
    BundleBuilder::new(name)
        .image(Image::new("quay.io/acme/app:1.0").platforms(&["linux/amd64", "linux/arm64"]))
        .build(&key)
}

/// Imports a good bundle under a lowered limit (`flag value`) and expects
/// it refused naming the limit's key and what it counts.
fn refused_under(name: &str, flag: &str, value: &str, fragments: &[&str]) {
    let bundle = two_platform_bundle(name);
    let registry = Registry::start();
    let output = import_command(bundle.zst(), bundle.public_key_pem(), &registry)
        .args([flag, value])
        .output()
        .expect("run airlock import");
    assert_refused(&output, bundle.zst(), &registry, fragments);
}

#[test]
fn the_uncompressed_size_limit_is_named_when_exceeded() {
    refused_under(
        "uncompressed",
        "--max-uncompressed-bytes",
        "4096",
        &[
            "read.max_uncompressed_bytes = 4096",
            "4097 decompressed bytes",
        ],
    );
}

#[test]
fn the_entry_limit_is_named_when_exceeded() {
    refused_under(
        "entries",
        "--max-entries",
        "3",
        &["read.max_entries = 3", "4 tar entries"],
    );
}

#[test]
fn the_manifest_limit_is_named_when_exceeded() {
    refused_under(
        "manifests",
        "--max-manifests",
        "2",
        &["read.max_manifests = 2", "3 manifests and indexes"],
    );
}

#[test]
fn the_index_depth_limit_is_named_when_exceeded() {
    refused_under(
        "depth",
        "--max-index-depth",
        "0",
        &["read.max_index_depth = 0", "1 levels of nested indexes"],
    );
}

#[test]
fn the_path_length_limit_is_named_when_exceeded() {
    // Blob paths are `blobs/sha256/` and 64 hex digits: 77 bytes.
    refused_under(
        "paths",
        "--max-path-bytes",
        "40",
        &["read.max_path_bytes = 40", "bytes in a path"],
    );
}

#[test]
fn the_document_size_limit_is_named_when_exceeded() {
    refused_under(
        "documents",
        "--max-document-bytes",
        "64",
        &[
            "read.max_document_bytes = 64",
            "bytes in one document",
            "index.json",
        ],
    );
}

#[test]
fn the_same_bundle_imports_under_the_default_limits() {
    let bundle = two_platform_bundle("within-limits");
    let registry = Registry::start();
    let output = import_command(bundle.zst(), bundle.public_key_pem(), &registry)
        .output()
        .expect("run airlock import");
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

/// `bytes` gzip-compressed (fast level: zeros compress 1,000 times).
fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("finish gzip")
}

#[test]
fn gzip_inside_a_bundle_is_held_to_the_same_caps() {
    // 16 MiB of zeros gzip to 16 KiB: a layer-like file and a pack archive,
    // each decompressed by airlock while indexing (the layer for its
    // uncompressed digest, the pack for its pack.json).
    let zeros = vec![0u8; 16 << 20];
    let layer = gzip(&zeros);
    let pack_json = br#"{"name":"bomb","version":"1.0.0","layer":"addon","cloudTypes":["all"]}"#;
    let pack = support::pack::gzip_tar(&[
        ("bomb/filler".to_owned(), zeros.clone()),
        ("bomb/pack.json".to_owned(), pack_json.to_vec()),
    ]);
    for (name, path, bytes) in [
        ("gzip-layer", "layer.tar.gz", &layer),
        ("gzip-pack", "packs/bomb-1.0.0.tar.gz", &pack),
    ] {
        let key = TestKey::generate(KeyKind::EcP256);
        let bundle = BundleBuilder::new(name)
            .image(Image::new("quay.io/acme/app:1.0"))
            .file(path, bytes)
            .build(&key);
        let registry = Registry::start();
        // The bundle itself decompresses to well under 1 MiB.
        let output = import_command(bundle.zst(), bundle.public_key_pem(), &registry)
            .args(["--max-uncompressed-bytes", "1000000"])
            .output()
            .expect("run airlock import");
        assert_refused(
            &output,
            bundle.zst(),
            &registry,
            &["read.max_uncompressed_bytes = 1000000", path],
        );
    }
}
