//! How often, and when, airlock reads a bundle file: the signature is
//! checked over the raw file before a single byte is decompressed, a warm
//! import reads the file twice (the signature, then the index), a refused one
//! once, and a file changed on disk between reads leaves neither a tag nor an
//! open upload session in the registry.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::airlock;
use support::bundle::{BlobInfo, BuiltBundle, BundleBuilder, Image, Layer, sha256_digest};
use support::keys::{KeyKind, TestKey};
use support::pack::PackFixture;
use support::process::run_counting_reads;
use support::registry::Registry;
use support::skopeo;

const PREFIX: &str = "mirror";
const APP: &str = "quay.io/acme/app:1.0";
const APP_REPO: &str = "mirror/quay.io/acme/app";

/// A layer bigger than one upload chunk (8 MiB), so it goes out in
/// `PATCH`es, and incompressible, so the bundle file is about its size.
const BIG_LAYER_BYTES: u64 = 24 << 20;

/// Bytes read from the bundle file ÷ its size, at most, for an import (the
/// signature pass, then the index pass, which also uploads what the target
/// lacks, cold or warm) and for one whose signature is refused (the
/// signature pass only). The 5 % above whole passes is for everything else
/// the process reads: the key, the signature, `/proc` and `/sys` files the
/// runtime looks at.
const MAX_READS: f64 = 2.05;
const MAX_READS_REFUSED: f64 = 1.05;

/// Bytes read ÷ size, at least, for a cold import with the staging
/// repository turned off: the bundle is streamed a third time to upload.
const MIN_READS_WITHOUT_STAGING: f64 = 2.9;

/// What an import reads besides the bundle, at most, for a bundle too small
/// for 5 % of it to cover that.
const OTHER_READS_BYTES: u64 = 1 << 20;

fn big_bundle(name: &str) -> (TestKey, BuiltBundle) {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new(name)
        .image(Image::new(APP).layers(&[Layer::uncompressed(7, BIG_LAYER_BYTES)]))
        .build(&key);
    (key, bundle)
}

/// The big layer of a [`big_bundle`].
fn big_layer(bundle: &BuiltBundle) -> BlobInfo {
    bundle
        .image(APP)
        .blobs
        .iter()
        .find(|b| b.size == BIG_LAYER_BYTES)
        .expect("the big layer")
        .clone()
}

fn import_command(zst: &Path, public_key: &Path, registry: &Registry) -> Command {
    let mut command = airlock();
    command
        .arg("import")
        .arg(zst)
        .arg("--public-key")
        .arg(public_key)
        .args(["--registry", &format!("{}/{PREFIX}", registry.host())])
        .args(["--plain-http", "--quiet", "--output", "json"])
        .env("DOCKER_CONFIG", zst.with_extension("no-docker-config"));
    command
}

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat the bundle").len()
}

fn assert_landed(bundle: &BuiltBundle, registry: &Registry) {
    let image = bundle.image(APP);
    assert_eq!(
        skopeo::manifest_digest(registry, &format!("{PREFIX}/{APP}")),
        image.digest,
        "{APP}"
    );
}

/// Imports `bundle` into `registry` (`temperature`: "cold" or "warm", for
/// messages), asserts it landed, and returns the bytes the import read.
fn import_counting_reads(bundle: &BuiltBundle, registry: &Registry, temperature: &str) -> u64 {
    let (import, read) = run_counting_reads(
        &mut import_command(bundle.zst(), bundle.public_key_pem(), registry),
        Duration::from_secs(120),
    );
    assert!(
        import.success(),
        "{temperature} import failed: {}",
        import.stderr
    );
    assert_landed(bundle, registry);
    read
}

fn reads_of(read: u64, size: u64) -> f64 {
    read as f64 / size as f64
}

#[test]
fn an_import_reads_the_bundle_twice_cold_and_warm_and_a_refused_one_once() {
    let (_key, bundle) = big_bundle("reads");
    let size = size_of(bundle.zst());
    let registry = Registry::start();
    let limit = Duration::from_secs(120);

    let read = import_counting_reads(&bundle, &registry, "cold");
    assert!(
        reads_of(read, size) <= MAX_READS,
        "a cold import read {read} bytes, {:.2} times the {size}-byte bundle",
        reads_of(read, size)
    );
    assert!(
        registry.open_upload_sessions().is_empty(),
        "upload sessions left open: {:?}",
        registry.open_upload_sessions()
    );

    let read = import_counting_reads(&bundle, &registry, "warm");
    assert!(
        reads_of(read, size) <= MAX_READS,
        "a warm import read {read} bytes, {:.2} times the {size}-byte bundle",
        reads_of(read, size)
    );

    let stranger = TestKey::generate(KeyKind::EcP256);
    let (refused, read) = run_counting_reads(
        &mut import_command(bundle.zst(), stranger.public_pem(), &registry),
        limit,
    );
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("does not verify"),
        "{}",
        refused.stderr
    );
    assert!(
        reads_of(read, size) <= MAX_READS_REFUSED,
        "a refused import read {read} bytes, {:.2} times the {size}-byte bundle",
        reads_of(read, size)
    );
}

#[test]
fn without_the_staging_repository_a_cold_import_reads_the_bundle_three_times() {
    let (_key, bundle) = big_bundle("unstaged");
    let size = size_of(bundle.zst());
    let registry = Registry::start();
    let mut command = import_command(bundle.zst(), bundle.public_key_pem(), &registry);
    command.args(["--staging-repository", ""]);

    let (cold, read) = run_counting_reads(&mut command, Duration::from_secs(120));

    assert!(cold.success(), "cold import failed: {}", cold.stderr);
    assert_landed(&bundle, &registry);
    assert!(
        reads_of(read, size) >= MIN_READS_WITHOUT_STAGING,
        "without staging a cold import read {:.2} times the bundle",
        reads_of(read, size)
    );
    let staged: Vec<_> = registry
        .settled_requests()
        .into_iter()
        .filter(|r| r.path.contains("airlock-staging"))
        .collect();
    assert!(staged.is_empty(), "{staged:#?}");
}

/// The bomb's one tar entry: 64 GiB of zeros (a GNU binary size field) in
/// about 2 MiB of zstd.
const BOMB_ENTRY_BYTES: u64 = 64 << 30;

/// zstd's largest block: an RLE block repeats one byte this many times.
const ZSTD_BLOCK_BYTES: u64 = 128 << 10;

/// Writes a zstd frame of a tar whose one entry expands to 64 GiB of zeros,
/// block by block: a raw block for the tar header, then RLE blocks of
/// 128 KiB of zeros (4 bytes each) for the content.
fn write_zstd_bomb(path: &Path) {
    fn block_header(last: bool, kind: u32, size: u64) -> [u8; 3] {
        let value = u32::from(last) | (kind << 1) | ((size as u32) << 3);
        let bytes = value.to_le_bytes();
        [bytes[0], bytes[1], bytes[2]]
    }
    const RAW: u32 = 0;
    const RLE: u32 = 1;
    // Magic, a frame header without content size, a 128 KiB window (2^17).
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, (17 - 10) << 3];
    let mut header = tar::Header::new_gnu();
    header
        .set_path(format!("blobs/sha256/{:064x}", 1))
        .expect("tar path");
    header.set_size(BOMB_ENTRY_BYTES);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    out.extend_from_slice(&block_header(false, RAW, 512));
    out.extend_from_slice(header.as_bytes());
    for _ in 0..BOMB_ENTRY_BYTES / ZSTD_BLOCK_BYTES {
        out.extend_from_slice(&block_header(false, RLE, ZSTD_BLOCK_BYTES));
        out.push(0);
    }
    // The tar's end: two zero records.
    out.extend_from_slice(&block_header(true, RLE, 1024));
    out.push(0);
    std::fs::write(path, out).expect("write the bomb");
}

#[test]
fn a_zstd_bomb_with_a_bad_signature_is_refused_in_the_time_of_hashing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zst = dir.path().join("bomb.zst");
    write_zstd_bomb(&zst);
    let size = size_of(&zst);
    let trusted = TestKey::generate(KeyKind::EcP256);
    let stranger = TestKey::generate(KeyKind::EcP256);
    stranger.sign(&zst, &dir.path().join("bomb.sig.bin"));
    let registry = Registry::start();

    let started = Instant::now();
    let (refused, read) = run_counting_reads(
        &mut import_command(&zst, trusted.public_pem(), &registry),
        Duration::from_secs(120),
    );
    let took = started.elapsed();

    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("does not verify"),
        "{}",
        refused.stderr
    );
    // Hashing 2 MiB takes milliseconds; expanding and hashing 64 GiB takes
    // minutes on any machine.
    assert!(
        took < Duration::from_secs(15),
        "refusing the bomb took {took:?}: was it decompressed?"
    );
    assert!(
        read <= size + OTHER_READS_BYTES,
        "the refused bomb was read {read} bytes, {:.2} times its {size} bytes",
        read as f64 / size as f64
    );
    let patches: Vec<String> = registry
        .settled_requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.path.clone())
        .collect();
    assert!(
        patches.is_empty(),
        "PATCHes before verification: {patches:?}"
    );
    let writes = registry.settled_writes_since(0);
    assert!(writes.is_empty(), "a refused bomb wrote: {writes:?}");
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Flips a byte in the middle of the big layer of `bundle`, in place (same
/// file, same size): the layer is incompressible, so zstd stored its bytes as
/// they are and they can be found in the compressed file.
fn change_big_layer_in_place(bundle: &BuiltBundle, layer_digest: &str) {
    let compressed = std::fs::read(bundle.zst()).expect("read the bundle");
    let decoder = zstd::stream::read::Decoder::new(&compressed[..]).expect("zstd");
    let mut archive = tar::Archive::new(decoder);
    let wanted = format!(
        "blobs/sha256/{}",
        layer_digest.trim_start_matches("sha256:")
    );
    let mut sample = vec![0u8; 64];
    let mut found = false;
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = entry.path().expect("entry path").display().to_string();
        if path.trim_start_matches("./") != wanted {
            continue;
        }
        let mut skipped = vec![0u8; (BIG_LAYER_BYTES / 2) as usize];
        entry.read_exact(&mut skipped).expect("read the layer");
        entry.read_exact(&mut sample).expect("read the layer");
        found = true;
        break;
    }
    assert!(found, "the layer {wanted} is not in the bundle");
    let at = find(&compressed, &sample).expect("the layer's bytes stored as they are");
    bundle.flip_byte(at as u64);
}

#[test]
fn a_bundle_changed_between_its_reads_gets_no_tag_and_leaves_no_upload_open() {
    use airlock::plan::{Plan, PlanOptions, Target};
    use airlock::progress::Progress;
    use airlock::push::registry::RegistryConfig;
    use airlock::push::{Destination, PushOptions};
    use airlock::read::{BundleIndex, ReadLimits};
    use airlock::verify::{TrustedKeys, verify_bundle};

    let (_key, bundle) = big_bundle("changing");
    let layer = big_layer(&bundle);
    let registry = Registry::start();

    let keys = TrustedKeys::load(&[bundle.public_key_pem().to_owned()]).expect("the key loads");
    let verified = verify_bundle(bundle.zst(), bundle.sig(), &keys).expect("the bundle verifies");
    let index =
        BundleIndex::build(verified, ReadLimits::default(), &Progress::new()).expect("indexed");
    // Changed on disk after the index pass and before the upload pass.
    change_big_layer_in_place(&bundle, &layer.digest);

    let target: Target = format!("{}/{PREFIX}", registry.host())
        .parse()
        .expect("target");
    let plan = Plan::new(Arc::new(index), target.clone(), PlanOptions::default()).expect("plan");
    let config = RegistryConfig {
        host: registry.host(),
        plain_http: true,
        ..RegistryConfig::default()
    };
    let options = PushOptions::default();
    let destination =
        Arc::new(Destination::open(&target, config, &options, None).expect("destination"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let pushed = runtime.block_on(airlock::push::push(
        &plan,
        destination,
        &options,
        &Progress::new(),
    ));

    let error = match pushed {
        Ok(_) => panic!("a bundle changed between its reads was pushed"),
        Err(error) => error,
    };
    assert!(
        error.to_string().contains(&layer.digest),
        "the error should name the changed blob: {error}"
    );
    assert!(
        !registry.blob_exists(APP_REPO, &layer.digest),
        "the changed blob was committed"
    );
    assert!(
        !registry.manifest_exists(APP_REPO, "1.0"),
        "the image was tagged"
    );
    let open = registry.open_upload_sessions();
    let requests: Vec<String> = registry
        .settled_requests()
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r.method,
                r.status,
                &r.path[..r.path.len().min(60)]
            )
        })
        .collect();
    assert!(
        open.is_empty(),
        "upload sessions left open: {open:?}; requests: {requests:#?}; error: {error}"
    );
}

#[test]
fn a_layer_the_registry_holds_is_read_past_without_being_hashed() {
    let (key, bundle) = big_bundle("held");
    let layer = big_layer(&bundle);
    let registry = Registry::start();
    let limit = Duration::from_secs(120);
    let (first, _) = run_counting_reads(
        &mut import_command(bundle.zst(), bundle.public_key_pem(), &registry),
        limit,
    );
    assert!(first.success(), "first import failed: {}", first.stderr);

    // The same bundle with one byte of its layer changed, and signed again:
    // the layer's entry still names the old digest.
    change_big_layer_in_place(&bundle, &layer.digest);
    key.sign(bundle.zst(), bundle.sig());

    // A registry without the layer hashes it and refuses the bundle.
    let fresh = Registry::start();
    let (refused, _) = run_counting_reads(
        &mut import_command(bundle.zst(), bundle.public_key_pem(), &fresh),
        limit,
    );
    assert!(
        !refused.success(),
        "a layer that is not its digest was accepted"
    );
    assert!(
        refused.stderr.contains("does not match its digest")
            && refused
                .stderr
                .contains(layer.digest.trim_start_matches("sha256:")),
        "{}",
        refused.stderr
    );
    assert!(
        fresh.settled_commits_since(0).is_empty(),
        "the refused bundle committed: {:?}",
        fresh.settled_commits_since(0)
    );

    // The registry that holds the layer under that digest is not asked to
    // take these bytes, so they are not hashed: the import goes through and
    // the image is the one the registry had.
    let (again, _) = run_counting_reads(
        &mut import_command(bundle.zst(), bundle.public_key_pem(), &registry),
        limit,
    );
    assert!(
        again.success(),
        "the held layer was hashed: {}",
        again.stderr
    );
    assert_landed(&bundle, &registry);
}

fn oci_import_command(zst: &Path, public_key: &Path, layout: &Path) -> Command {
    let mut command = airlock();
    command
        .arg("import")
        .arg(zst)
        .arg("--public-key")
        .arg(public_key)
        .args(["--registry", &format!("oci:{}", layout.display())])
        .args(["--quiet", "--output", "json"]);
    command
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    for _ in 0..10_000 {
        let Some(current) = dirs.pop() else { break };
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                files.push(relative.display().to_string());
            }
        }
    }
    files.sort();
    files
}

/// Imports the bundle `zst` into `layout` cold, then warm; each must read
/// the bundle at most twice.
fn import_into_layout_cold_and_warm(zst: &Path, public_key: &Path, layout: &Path) {
    let size = size_of(zst);
    for temperature in ["cold", "warm"] {
        let (import, read) = run_counting_reads(
            &mut oci_import_command(zst, public_key, layout),
            Duration::from_secs(120),
        );
        assert!(import.success(), "{temperature} import: {}", import.stderr);
        assert!(
            reads_of(read, size) <= MAX_READS,
            "a {temperature} import into a layout read {read} bytes, {:.2} times the {size}-byte bundle",
            reads_of(read, size)
        );
    }
}

/// No temporary blob file is left anywhere in `layout`.
fn assert_no_temporary_blobs(layout: &Path) {
    let partial: Vec<String> = files_under(layout)
        .into_iter()
        .filter(|f| f.ends_with(".partial"))
        .collect();
    assert!(partial.is_empty(), "temporary blobs left: {partial:?}");
}

#[test]
fn an_import_into_an_oci_layout_reads_the_bundle_twice_cold_and_warm() {
    let (_key, bundle) = big_bundle("layout-reads");
    let mirror = tempfile::tempdir().expect("tempdir");
    let layout = mirror.path().join("mirror");

    import_into_layout_cold_and_warm(bundle.zst(), bundle.public_key_pem(), &layout);
    let image = bundle.image(APP);
    let raw = support::skopeo::inspect_oci_layout(&layout, &image.full_ref);
    assert_eq!(raw, image.manifest, "{} in the layout", image.full_ref);
    for blob in &image.blobs {
        let hex = blob.digest.trim_start_matches("sha256:");
        assert!(
            layout.join("blobs/sha256").join(hex).is_file(),
            "{} is not in the layout",
            blob.digest
        );
    }
    assert_no_temporary_blobs(&layout);
}

#[test]
fn a_broken_bundle_leaves_no_blob_and_no_temporary_file_in_an_oci_layout() {
    use support::bundle::{Breakage, broken_bundle};
    let key = TestKey::generate(KeyKind::EcP256);
    // Every blob but the first layer is in the tar and read (and set aside)
    // before the index finds the layer missing.
    let bundle = broken_bundle(Breakage::MissingLayer, &key);
    let mirror = tempfile::tempdir().expect("tempdir");
    let layout = mirror.path().join("mirror");

    let output = oci_import_command(bundle.zst(), bundle.public_key_pem(), &layout)
        .output()
        .expect("run airlock");
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let left: Vec<String> = files_under(&layout)
        .into_iter()
        .filter(|f| f.starts_with("blobs/"))
        .collect();
    assert!(
        left.is_empty(),
        "a broken bundle left in the layout: {left:?}"
    );
}

#[test]
fn blobs_of_platforms_left_out_are_not_left_in_an_oci_layout() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("platforms")
        .image(Image::new("nginx:1.25").platforms(&["linux/amd64", "linux/arm64"]))
        .build(&key);
    let mirror = tempfile::tempdir().expect("tempdir");
    let layout = mirror.path().join("mirror");

    let output = oci_import_command(bundle.zst(), bundle.public_key_pem(), &layout)
        .args(["--platform", "linux/amd64"])
        .output()
        .expect("run airlock");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let image = bundle.image("nginx:1.25");
    let arm = image
        .manifests
        .iter()
        .find(|m| m.platform == "linux/arm64")
        .expect("an arm64 manifest");
    let amd = image
        .manifests
        .iter()
        .find(|m| m.platform == "linux/amd64")
        .expect("an amd64 manifest");
    let kept: Vec<&str> = std::iter::once(&amd.config)
        .chain(&amd.layers)
        .map(|b| b.digest.as_str())
        .collect();
    let files = files_under(&layout);
    for blob in std::iter::once(&arm.config)
        .chain(&arm.layers)
        .filter(|b| !kept.contains(&b.digest.as_str()))
    {
        let hex = blob.digest.trim_start_matches("sha256:");
        assert!(
            !files.iter().any(|f| f.contains(hex)),
            "the left-out platform's blob {} is in the layout: {files:?}",
            blob.digest
        );
    }
    assert!(
        !files.iter().any(|f| f.ends_with(".partial")),
        "temporary blobs left: {files:?}"
    );
}

#[test]
fn sessions_of_platforms_left_out_are_cancelled_in_the_registry() {
    let key = TestKey::generate(KeyKind::EcP256);
    // A layer past the in-memory size, which is staged, and a small one,
    // which the index keeps in memory.
    let bundle = BundleBuilder::new("platforms-registry")
        .image(
            Image::new("nginx:1.25")
                .layers(&[
                    Layer::uncompressed(3, STAGED_LAYER_BYTES),
                    Layer::gzip_tar(4, 4096),
                ])
                .platforms(&["linux/amd64", "linux/arm64"]),
        )
        .build(&key);
    let registry = Registry::start();

    let output = import_command(bundle.zst(), bundle.public_key_pem(), &registry)
        .args(["--platform", "linux/amd64"])
        .output()
        .expect("run airlock");

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let image = bundle.image("nginx:1.25");
    let platform = |name: &str| {
        image
            .manifests
            .iter()
            .find(|m| m.platform == name)
            .unwrap_or_else(|| panic!("a {name} manifest"))
    };
    let (amd, arm) = (platform("linux/amd64"), platform("linux/arm64"));
    let kept: Vec<&str> = std::iter::once(&amd.config)
        .chain(&amd.layers)
        .map(|b| b.digest.as_str())
        .collect();
    let staging = format!("{PREFIX}/airlock-staging");
    let requests = registry.settled_requests();
    let mut left_out = 0;
    let mut staged = 0;
    for blob in arm
        .layers
        .iter()
        .filter(|b| !kept.contains(&b.digest.as_str()))
    {
        left_out += 1;
        if blob.size == STAGED_LAYER_BYTES {
            staged += 1;
        }
        let target = format!("{PREFIX}/{}", image.repository());
        for repository in [staging.as_str(), target.as_str()] {
            assert!(
                !registry.blob_exists(repository, &blob.digest),
                "the left-out platform's blob {} is in {repository}",
                blob.digest
            );
        }
    }
    assert!(
        left_out == 2 && staged == 1,
        "the platforms share layers: {left_out} left out"
    );
    // The staged layer's bytes were sent while indexing (before the plan
    // left it out) and its session cancelled; the small one never left
    // memory.
    let cancelled = requests
        .iter()
        .filter(|r| {
            r.method == "DELETE" && r.path.starts_with(&format!("/v2/{staging}/blobs/uploads/"))
        })
        .count();
    assert!(cancelled >= staged, "{requests:#?}");
    let open = registry.open_upload_sessions();
    assert!(open.is_empty(), "upload sessions left open: {open:?}");
}

/// A layer a little larger than the 1 MiB up to which the index keeps
/// blobs in memory for the push, so it is staged.
const STAGED_LAYER_BYTES: u64 = (1 << 20) + 4096;

/// Digests of the blobs the import sent into staging sessions, by the
/// `PUT ?digest=` committing them or the `DELETE` cancelling them, and of
/// those uploaded straight into `repository` (`PUT ?digest=` there).
fn staged_and_direct(
    requests: &[support::registry::LoggedRequest],
    repository: &str,
) -> (usize, Vec<String>) {
    let staging = format!("/v2/{PREFIX}/airlock-staging/blobs/uploads/");
    let direct = format!("/v2/{repository}/blobs/uploads/");
    let opened = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with(&staging))
        .count();
    let digests = requests
        .iter()
        .filter(|r| r.method == "PUT" && r.status == 201 && r.path.starts_with(&direct))
        .filter_map(|r| r.path.split("digest=").nth(1))
        .map(|d| d.split('&').next().unwrap_or(d).replace("%3A", ":"))
        .collect();
    (opened, digests)
}

#[test]
fn small_layers_go_from_memory_and_only_larger_ones_into_staging_sessions() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("small-layers")
        .image(Image::new(APP).layers(&[
            Layer::uncompressed(11, STAGED_LAYER_BYTES),
            Layer::gzip_tar(12, 8192),
            Layer::uncompressed(13, 512 << 10),
        ]))
        .build(&key);
    let registry = Registry::start();
    let size = size_of(bundle.zst());

    let read = import_counting_reads(&bundle, &registry, "cold");
    assert!(
        read <= 2 * size + OTHER_READS_BYTES,
        "a cold import read {read} bytes of a {size}-byte bundle"
    );
    let requests = registry.settled_requests();
    let (staged, direct) = staged_and_direct(&requests, APP_REPO);
    assert_eq!(staged, 1, "only the larger layer is staged: {requests:#?}");
    let image = bundle.image(APP);
    for blob in image.blobs.iter().filter(|b| b.size < STAGED_LAYER_BYTES) {
        assert!(
            direct.contains(&blob.digest),
            "{} ({} bytes) was not uploaded from memory into {APP_REPO}: {direct:?}",
            blob.digest,
            blob.size
        );
    }
    let large = image
        .blobs
        .iter()
        .find(|b| b.size == STAGED_LAYER_BYTES)
        .expect("the larger layer");
    assert!(
        !direct.contains(&large.digest),
        "the larger layer was uploaded again instead of mounted from staging"
    );
    // The tag policy's lookup tells the push the image is not there yet.
    let tag_lookups = requests
        .iter()
        .filter(|r| r.method == "HEAD" && r.path == format!("/v2/{APP_REPO}/manifests/1.0"))
        .count();
    assert_eq!(tag_lookups, 1, "{requests:#?}");
    assert!(registry.open_upload_sessions().is_empty());
}

#[test]
fn a_pack_archive_goes_from_memory_and_a_cold_import_reads_the_bundle_twice() {
    // The pack archive is a file outside the layout, whose digest is only
    // known once hashed, and comes last in the tar: sending it from the
    // bundle would read the whole bundle a third time to reach it.
    let key = TestKey::generate(KeyKind::EcP256);
    let pack = PackFixture::new("nginx", "1.2.0").layer("addon").image(APP);
    let archive = pack.archive();
    let bundle = BundleBuilder::new("pack-reads")
        .image(Image::new(APP).layers(&[Layer::uncompressed(21, BIG_LAYER_BYTES)]))
        .file(&pack.bundle_path(), &archive)
        .build(&key);
    let registry = Registry::start();
    let size = size_of(bundle.zst());

    let read = import_counting_reads(&bundle, &registry, "cold");
    assert!(
        reads_of(read, size) <= MAX_READS,
        "a cold import read {read} bytes, {:.2} times the {size}-byte bundle",
        reads_of(read, size)
    );
    let raw = skopeo::inspect_raw(
        &registry,
        &format!("{PREFIX}/spectro-packs/archive/nginx:1.2.0"),
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw).expect("manifest JSON");
    assert_eq!(
        manifest["layers"][0]["digest"].as_str(),
        Some(sha256_digest(&archive).as_str()),
        "{manifest}"
    );
    assert!(registry.blob_exists(
        &format!("{PREFIX}/spectro-packs/archive/nginx"),
        &sha256_digest(&archive)
    ));
}

#[test]
fn small_blobs_past_the_memory_budget_are_staged() {
    // 34 layers of 1000 KiB: 33.2 MiB, past the 32 MiB the index keeps in
    // memory; the first 32 stay there, the last two are staged.
    let key = TestKey::generate(KeyKind::EcP256);
    let layers: Vec<Layer> = (0..34)
        .map(|seed| Layer::uncompressed(100 + seed, 1000 << 10))
        .collect();
    let bundle = BundleBuilder::new("memory-budget")
        .image(Image::new(APP).layers(&layers))
        .build(&key);
    let registry = Registry::start();

    import_counting_reads(&bundle, &registry, "cold");
    let requests = registry.settled_requests();
    let (staged, direct) = staged_and_direct(&requests, APP_REPO);
    let layers_direct = bundle.image(APP).manifests[0]
        .layers
        .iter()
        .filter(|l| direct.contains(&l.digest))
        .count();
    assert_eq!(
        (layers_direct, staged),
        (32, 2),
        "layers uploaded from memory, and staged: {requests:#?}"
    );
    assert!(registry.open_upload_sessions().is_empty());
}

/// Bytes read from the bundle file ÷ its size, at most, for an import that
/// reads it once (`--single-read`), cold or warm, into an `oci:` layout or a
/// registry (whose blobs the one pass sends into staging sessions).
const MAX_READS_SINGLE: f64 = 1.05;

fn ratio(read: u64, size: u64) -> f64 {
    read as f64 / size as f64
}

#[test]
fn a_single_read_import_into_an_oci_layout_reads_the_bundle_once_cold_and_warm() {
    let (_key, bundle) = big_bundle("layout-single");
    let size = size_of(bundle.zst());
    let mirror = tempfile::tempdir().expect("tempdir");
    let layout = mirror.path().join("mirror");

    for temperature in ["cold", "warm"] {
        let (import, read) = run_counting_reads(
            oci_import_command(bundle.zst(), bundle.public_key_pem(), &layout).arg("--single-read"),
            Duration::from_secs(120),
        );
        assert!(import.success(), "{temperature} import: {}", import.stderr);
        assert!(
            ratio(read, size) <= MAX_READS_SINGLE,
            "a {temperature} single-read import into a layout read {read} bytes, {:.2} times the {size}-byte bundle",
            ratio(read, size)
        );
    }
    let image = bundle.image(APP);
    let raw = support::skopeo::inspect_oci_layout(&layout, &image.full_ref);
    assert_eq!(raw, image.manifest, "{} in the layout", image.full_ref);
    for blob in &image.blobs {
        let hex = blob.digest.trim_start_matches("sha256:");
        assert!(
            layout.join("blobs/sha256").join(hex).is_file(),
            "{} is not in the layout",
            blob.digest
        );
    }
    assert_no_temporary_blobs(&layout);
}

#[test]
fn a_single_read_import_into_the_registry_reads_the_bundle_once_cold_and_warm() {
    let (_key, bundle) = big_bundle("registry-single");
    let size = size_of(bundle.zst());
    let registry = Registry::start();
    let limit = Duration::from_secs(120);

    let (cold, read) = run_counting_reads(
        import_command(bundle.zst(), bundle.public_key_pem(), &registry).arg("--single-read"),
        limit,
    );
    assert!(cold.success(), "cold import failed: {}", cold.stderr);
    assert!(
        ratio(read, size) <= MAX_READS_SINGLE,
        "a cold single-read import read {read} bytes, {:.2} times the {size}-byte bundle",
        ratio(read, size)
    );
    let image = bundle.image(APP);
    assert_eq!(
        support::skopeo::manifest_digest(&registry, &format!("{PREFIX}/{}", image.full_ref)),
        image.digest,
        "{} in the registry",
        image.full_ref
    );

    let (warm, read) = run_counting_reads(
        import_command(bundle.zst(), bundle.public_key_pem(), &registry).arg("--single-read"),
        limit,
    );
    assert!(warm.success(), "warm import failed: {}", warm.stderr);
    assert!(
        ratio(read, size) <= MAX_READS_SINGLE,
        "a warm single-read import read {read} bytes, {:.2} times the {size}-byte bundle",
        ratio(read, size)
    );
}

/// The layout's `index.json` and every file under its `blobs/`.
fn layout_state(layout: &Path) -> (Vec<u8>, Vec<String>) {
    let index = std::fs::read(layout.join("index.json")).expect("read index.json");
    let blobs = files_under(layout)
        .into_iter()
        .filter(|f| f.starts_with("blobs/"))
        .collect();
    (index, blobs)
}

/// A layout holding one small image already, so `index.json` exists.
fn seeded_layout(key: &TestKey, layout: &Path) {
    let seed = BundleBuilder::new("seed")
        .image(Image::new("quay.io/acme/seed:1.0"))
        .build(key);
    let output = oci_import_command(seed.zst(), seed.public_key_pem(), layout)
        .output()
        .expect("run airlock");
    assert!(
        output.status.success(),
        "seeding the layout: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_bad_signature_under_single_read_commits_nothing_to_a_layout_or_a_registry() {
    let (key, bundle) = big_bundle("single-bad-signature");
    let stranger = TestKey::generate(KeyKind::EcP256);
    bundle.sign_with(&stranger);
    let mirror = tempfile::tempdir().expect("tempdir");
    let layout = mirror.path().join("mirror");
    seeded_layout(&key, &layout);
    let before = layout_state(&layout);

    let output = oci_import_command(bundle.zst(), key.public_pem(), &layout)
        .arg("--single-read")
        .output()
        .expect("run airlock");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("does not verify"), "{stderr}");
    let after = layout_state(&layout);
    assert_eq!(
        after.1, before.1,
        "a badly signed bundle changed the layout's blobs/"
    );
    assert!(
        after.0 == before.0,
        "a badly signed bundle changed index.json"
    );

    let registry = Registry::start();
    let (refused, _) = run_counting_reads(
        import_command(bundle.zst(), key.public_pem(), &registry).arg("--single-read"),
        Duration::from_secs(120),
    );
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("does not verify"),
        "{}",
        refused.stderr
    );
    // The one pass may have sent blobs into staging sessions before the
    // signature was known: nothing of them may be committed or left open.
    let written = registry.settled_commits_since(0);
    assert!(
        written.is_empty(),
        "a badly signed bundle was committed: {written:?}"
    );
    let open = registry.open_upload_sessions();
    assert!(open.is_empty(), "upload sessions left open: {open:?}");
}

/// Imports `bundle` with `--single-read` into a fresh layout and returns the
/// exit code, stderr and the files the layout holds under `blobs/`.
fn single_read_into_fresh_layout(bundle: &BuiltBundle) -> (Option<i32>, String, Vec<String>) {
    let mirror = tempfile::tempdir().expect("tempdir");
    let layout = mirror.path().join("mirror");
    let output = oci_import_command(bundle.zst(), bundle.public_key_pem(), &layout)
        .arg("--single-read")
        .output()
        .expect("run airlock");
    let blobs = files_under(&layout)
        .into_iter()
        .filter(|f| f.starts_with("blobs/"))
        .collect();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        blobs,
    )
}

/// Unsigned bytes appended to a bundle in the trailing-bytes test.
const TRAILING_BYTES: usize = 4 << 20;

#[test]
fn trailing_bytes_after_the_zstd_frame_and_a_cut_off_bundle_are_refused_under_single_read() {
    let (_key, bundle) = big_bundle("single-trailing");
    // Bytes the producer did not sign, after the last zstd frame: the
    // decompressor stops at them, the signature check must not. More than
    // the reader buffers ahead of the decompressor (1 MiB), so that most of
    // them are only read by the signature check itself.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(bundle.zst())
        .expect("open the bundle");
    std::io::Write::write_all(
        &mut file,
        &support::bundle::pseudo_random_bytes(3, TRAILING_BYTES),
    )
    .expect("append to the bundle");
    drop(file);
    let (code, stderr, blobs) = single_read_into_fresh_layout(&bundle);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("does not verify"), "{stderr}");
    assert!(blobs.is_empty(), "a refused bundle left blobs: {blobs:?}");

    let (_key, bundle) = big_bundle("single-truncated");
    let size = size_of(bundle.zst());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(bundle.zst())
        .expect("open the bundle");
    file.set_len(size - 1000).expect("cut the bundle off");
    drop(file);
    let (code, stderr, blobs) = single_read_into_fresh_layout(&bundle);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("does not verify"), "{stderr}");
    assert!(blobs.is_empty(), "a refused bundle left blobs: {blobs:?}");
}

#[test]
fn a_zstd_bomb_with_a_bad_signature_under_single_read_is_stopped_by_the_read_limits_and_refused_at_the_signature()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let zst = dir.path().join("bomb.zst");
    write_zstd_bomb(&zst);
    let trusted = TestKey::generate(KeyKind::EcP256);
    let stranger = TestKey::generate(KeyKind::EcP256);
    stranger.sign(&zst, &dir.path().join("bomb.sig.bin"));
    let registry = Registry::start();

    let started = Instant::now();
    let (refused, _) = run_counting_reads(
        import_command(&zst, trusted.public_pem(), &registry).arg("--single-read"),
        Duration::from_secs(120),
    );
    let took = started.elapsed();

    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("does not verify"),
        "the signature, not the content, is what refuses it: {}",
        refused.stderr
    );
    // The expansion ratio stops decompression after about 1 GiB; expanding
    // all 64 GiB takes minutes on any machine.
    assert!(
        took < Duration::from_secs(60),
        "refusing the bomb took {took:?}: did the read limits stop it?"
    );
    let writes = registry.settled_writes_since(0);
    assert!(writes.is_empty(), "a refused bomb wrote: {writes:?}");
}

/// A legacy `docker save` of [`SAVED`] in a signed bundle: one
/// uncompressed layer of incompressible bytes, written
/// last in the tar, after `manifest.json` and the config (the config's
/// `diff_ids` name it, but its tar entry `<id>/layer.tar` does not: its
/// digest is known only once it is read whole).
struct SavedBundle {
    dir: tempfile::TempDir,
    key: TestKey,
    layer_digest: String,
}

const SAVED: &str = "quay.io/acme/saved:1.0";
const SAVED_REPO: &str = "mirror/quay.io/acme/saved";

impl SavedBundle {
    /// `diff_id`: what the config claims the layer hashes to (its real
    /// digest when `None`).
    fn build(name: &str, layer_bytes: u64, diff_id: Option<&str>) -> SavedBundle {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = TestKey::generate(KeyKind::EcP256);
        let layer = support::bundle::pseudo_random_bytes(
            support::bundle::seed_from(name),
            layer_bytes as usize,
        );
        let layer_digest = sha256_digest(&layer);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id.unwrap_or(&layer_digest)]}
        }))
        .expect("config");
        let config_file = format!(
            "{}.json",
            sha256_digest(&config).trim_start_matches("sha256:")
        );
        let layer_file = "5a7ed1a7e4/layer.tar";
        let manifest = serde_json::json!([
            {"Config": config_file, "RepoTags": [SAVED], "Layers": [layer_file]}
        ]);
        let files: [(&str, Vec<u8>); 4] = [
            ("manifest.json", manifest.to_string().into_bytes()),
            (&config_file, config),
            ("5a7ed1a7e4/VERSION", b"1.0".to_vec()),
            (layer_file, layer),
        ];
        let tar_path = dir.path().join(format!("{name}.tar"));
        support::bundle::write_plain_tar(&tar_path, &files);
        let saved = SavedBundle {
            dir,
            key,
            layer_digest,
        };
        support::tools::run(
            support::tools::command("zstd")
                .args(["-q", "-f", "-1"])
                .arg(&tar_path)
                .arg("-o")
                .arg(saved.zst()),
            "compress the bundle with the zstd CLI",
        );
        saved
            .key
            .sign(&saved.zst(), &saved.dir.path().join("saved.sig.bin"));
        saved
    }

    fn zst(&self) -> std::path::PathBuf {
        self.dir.path().join("saved.zst")
    }
}

/// Imports `saved` into `registry` cold, then warm; each must read the
/// bundle at most twice and leave no upload session open.
fn import_cold_and_warm(saved: &SavedBundle, registry: &Registry) {
    let size = size_of(&saved.zst());
    for temperature in ["cold", "warm"] {
        let (import, read) = run_counting_reads(
            &mut import_command(&saved.zst(), saved.key.public_pem(), registry),
            Duration::from_secs(120),
        );
        assert!(import.success(), "{temperature} import: {}", import.stderr);
        assert!(
            reads_of(read, size) <= MAX_READS,
            "a {temperature} import read {read} bytes, {:.2} times the {size}-byte bundle",
            reads_of(read, size)
        );
        assert!(
            registry.open_upload_sessions().is_empty(),
            "{temperature}: sessions left open"
        );
    }
}

#[test]
fn a_docker_save_layer_is_sent_while_it_is_hashed_and_an_import_reads_the_bundle_twice() {
    let saved = SavedBundle::build("saved-reads", BIG_LAYER_BYTES, None);
    let size = size_of(&saved.zst());
    let registry = Registry::start();

    import_cold_and_warm(&saved, &registry);
    let raw = skopeo::inspect_raw(&registry, &format!("{PREFIX}/{SAVED}"));
    let manifest: serde_json::Value = serde_json::from_slice(&raw).expect("manifest JSON");
    assert_eq!(
        manifest["layers"][0]["digest"].as_str(),
        Some(saved.layer_digest.as_str()),
        "{manifest}"
    );
    assert!(registry.blob_exists(SAVED_REPO, &saved.layer_digest));
    // The layer (within half the 48 MiB buffer) was held back until it was
    // hashed, then sent into a staging session and committed under that
    // digest; the warm import found the digest in the staging repository
    // and sent nothing.
    let requests = registry.settled_requests();
    let sessions = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/airlock-staging/blobs/uploads/"))
        .count();
    assert_eq!(sessions, 1, "{requests:#?}");
    let commits: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/airlock-staging/blobs/uploads/"))
        .filter(|r| {
            r.path
                .contains(saved.layer_digest.trim_start_matches("sha256:"))
        })
        .collect();
    assert_eq!(commits.len(), 1, "{requests:#?}");
    let (_, direct) = staged_and_direct(&requests, SAVED_REPO);
    assert!(
        !direct.contains(&saved.layer_digest),
        "the layer was uploaded from the bundle again: {requests:#?}"
    );

    // Read once, it is sent in that one pass too.
    let fresh = Registry::start();
    let (single, read) = run_counting_reads(
        import_command(&saved.zst(), saved.key.public_pem(), &fresh).arg("--single-read"),
        Duration::from_secs(120),
    );
    assert!(single.success(), "single-read import: {}", single.stderr);
    assert!(
        ratio(read, size) <= MAX_READS_SINGLE,
        "a cold single-read import read {read} bytes, {:.2} times the {size}-byte bundle",
        ratio(read, size)
    );
    assert!(fresh.blob_exists(SAVED_REPO, &saved.layer_digest));
}

#[test]
fn a_docker_save_layer_that_does_not_match_its_diff_id_leaves_no_session_and_no_blob() {
    let wrong = format!("sha256:{}", "0".repeat(64));
    let saved = SavedBundle::build("saved-mismatch", BIG_LAYER_BYTES, Some(&wrong));
    let registry = Registry::start();

    let output = import_command(&saved.zst(), saved.key.public_pem(), &registry)
        .output()
        .expect("run airlock import");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("diff_ids[0]"), "{stderr}");
    // Its bytes were sent while it was read (the mismatch shows only once
    // the config names it) and the session was cancelled.
    let requests = registry.settled_requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "PATCH" && r.path.contains("/airlock-staging/")),
        "the layer was not staged: {requests:#?}"
    );
    assert!(
        registry.open_upload_sessions().is_empty(),
        "{:?}",
        registry.open_upload_sessions()
    );
    assert!(
        registry.stored_blobs().is_empty(),
        "{:?}",
        registry.stored_blobs()
    );
    assert!(registry.catalog().is_empty(), "{:?}", registry.catalog());
}

#[test]
fn a_docker_save_layer_is_set_aside_in_an_oci_layout_while_it_is_hashed() {
    let saved = SavedBundle::build("saved-layout", BIG_LAYER_BYTES, None);
    let mirror = tempfile::tempdir().expect("tempdir");
    let layout = mirror.path().join("mirror");

    import_into_layout_cold_and_warm(&saved.zst(), saved.key.public_pem(), &layout);
    let hex = saved.layer_digest.trim_start_matches("sha256:");
    let stored = std::fs::read(layout.join("blobs/sha256").join(hex)).expect("the layer");
    assert_eq!(sha256_digest(&stored), saved.layer_digest);
    // skopeo's `oci:` transport lists only OCI media types, and this is a
    // Docker schema 2 manifest: it is read from the layout's files.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("index.json is JSON");
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"], SAVED,
        "{index}"
    );
    let manifest_hex = entry["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .expect("a manifest digest");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(manifest_hex)).expect("the manifest"),
    )
    .expect("manifest JSON");
    assert_eq!(
        manifest["layers"][0]["digest"].as_str(),
        Some(saved.layer_digest.as_str())
    );
    assert_no_temporary_blobs(&layout);
}

#[test]
fn a_docker_save_layer_larger_than_half_the_buffer_is_sent_as_it_is_read() {
    // 40 MiB: past the 24 MiB a file is held back before it is named, so it
    // streams into its session while it is read, and a warm import, which
    // cannot know before the end that the staging repository holds it,
    // sends it again and cancels that session.
    let saved = SavedBundle::build("saved-streamed", 40 << 20, None);
    let registry = Registry::start();

    import_cold_and_warm(&saved, &registry);
    assert!(registry.blob_exists(SAVED_REPO, &saved.layer_digest));
    let requests = registry.settled_requests();
    let staging = |method: &str| {
        requests
            .iter()
            .filter(|r| r.method == method && r.path.contains("/airlock-staging/blobs/uploads/"))
            .count()
    };
    assert_eq!(
        (staging("POST"), staging("PUT"), staging("DELETE")),
        (2, 1, 1),
        "sessions opened, committed and cancelled: {requests:#?}"
    );
}

/// A tmpfs of `size` mounted on `path`, unmounted on drop: a layout that
/// runs out of space for real.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| SmallDisk {
            path: path.to_owned(),
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

const SKIP_MOUNT_TESTS: &str = "AIRLOCK_TEST_SKIP_MOUNT";

#[test]
fn a_layout_that_runs_out_of_space_while_a_file_is_set_aside_fails_naming_the_file() {
    let saved = SavedBundle::build("saved-full", BIG_LAYER_BYTES, None);
    let mirror = tempfile::tempdir().expect("tempdir");
    let layout = mirror.path().join("mirror");
    let Some(_disk) = SmallDisk::mount(&layout, "8m") else {
        assert!(
            std::env::var_os(SKIP_MOUNT_TESTS).is_some(),
            "cannot mount a tmpfs (needs root and mount privileges); \
             set {SKIP_MOUNT_TESTS}=1 to skip this test knowingly"
        );
        eprintln!("skipping: {SKIP_MOUNT_TESTS} is set and no tmpfs can be mounted");
        return;
    };

    let output = oci_import_command(&saved.zst(), saved.key.public_pem(), &layout)
        .output()
        .expect("run airlock import");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // A failure of the target, not of the bundle: exit 4, as for a
    // registry that cannot be written.
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("cannot set blob of tar entry 5a7ed1a7e4/layer.tar aside in the target")
            && stderr.contains("No space left on device"),
        "{stderr}"
    );
    let left: Vec<String> = files_under(&layout)
        .into_iter()
        .filter(|f| f != "oci-layout")
        .collect();
    assert!(left.is_empty(), "left in the layout: {left:?}");
}
