//! Inputs at the sizes real air-gap content reaches: a tar entry over the
//! 8 GiB a classic tar header can describe, an index of 10,000 manifests, and
//! (ignored by default, they take minutes and gigabytes of disk) the import
//! of a corrupted 8 GiB entry and a multi-gigabyte bundle imported in bounded
//! memory.

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::{airlock, skopeo};

/// Just over the 8 GiB (8,589,934,591 bytes) an octal tar size field holds.
const OVER_8_GIB: u64 = (8 << 30) + (64 << 20);

/// A zero-filled layer compresses thousands of times, far past the default
/// `read.max_expansion_ratio` a real bundle never reaches: these bundles
/// are read with the ratio raised out of the way.
const ZEROS_EXPANSION_RATIO: &str = "1000000";

fn run(command: &mut std::process::Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn inspect_json(bundle: &BuiltBundle) -> Value {
    let output = run(
        airlock()
            .arg("inspect")
            .arg(bundle.zst())
            .arg("--public-key")
            .arg(bundle.public_key_pem())
            .args(["--max-expansion-ratio", ZEROS_EXPANSION_RATIO])
            .args(["--output", "json"]),
        "airlock inspect",
    );
    serde_json::from_slice(&output.stdout).expect("inspect prints JSON")
}

#[test]
fn a_tar_entry_over_8_gib_is_indexed_and_checked_against_its_digest() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("over-8-gib")
        .image(Image::new("example.com/big/zeros:1.0").layers(&[Layer::zeros(OVER_8_GIB)]))
        .build(&key);
    let size = std::fs::metadata(bundle.zst()).expect("bundle").len();
    assert!(size < 64 << 20, "the bundle should compress: {size} bytes");

    let report = inspect_json(&bundle);
    let image = &report["images"][0];
    assert_eq!(image["sourceRef"], "example.com/big/zeros:1.0");
    assert!(
        image["size"].as_u64().expect("size") > OVER_8_GIB,
        "{image}"
    );
    assert_eq!(
        bundle.image("example.com/big/zeros:1.0").blob_bytes(),
        report["totals"]["blobBytes"].as_u64().expect("blob bytes")
    );
}

/// A bundle whose one layer is just over 8 GiB of zeros with one byte
/// flipped in the middle; name and size kept.
fn corrupted_over_8_gib_bundle() -> BuiltBundle {
    let key = TestKey::generate(KeyKind::EcP256);
    BundleBuilder::new("over-8-gib-corrupt")
        .image(Image::new("example.com/big/zeros:1.0").layers(&[Layer::zeros(OVER_8_GIB)]))
        .break_with(support::bundle::Breakage::BlobDigestMismatch)
        .build(&key)
}

/// Asserts that `output` is the integrity refusal (exit 3) naming the
/// corrupted layer of `bundle`.
fn assert_refused_naming_the_layer(bundle: &BuiltBundle, output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("does not match its digest"),
        "not a digest refusal: {stderr}"
    );
    let layer = &bundle.image("example.com/big/zeros:1.0").blobs;
    assert!(
        layer
            .iter()
            .any(|b| stderr.contains(b.digest.trim_start_matches("sha256:"))),
        "the refused blob is not named: {stderr}"
    );
}

/// The index pass that `inspect` and `import` share hashes the whole
/// entry past the classic size field and refuses it by its digest. Run
/// through `inspect`, which writes nothing: an import of it writes the
/// 8 GiB into the target before the last byte decides (see the ignored
/// variant below), more free disk than a test machine can be counted on
/// to have.
#[test]
fn a_corrupted_tar_entry_over_8_gib_is_refused_by_its_digest() {
    let bundle = corrupted_over_8_gib_bundle();
    let output = airlock()
        .arg("inspect")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--max-expansion-ratio", ZEROS_EXPANSION_RATIO])
        .output()
        .expect("run airlock inspect");
    assert_refused_naming_the_layer(&bundle, &output);
}

/// Run with `cargo nextest run --run-ignored only -E 'test(imported_over_8_gib)'`
/// (or `cargo test --test large_inputs -- --ignored`): the import of the
/// corrupted entry writes 8 GiB into the layout's temporary file before
/// the digest refuses it, and must leave nothing imported.
#[test]
#[ignore = "writes 8 GiB to the temporary directory"]
fn a_corrupted_tar_entry_imported_over_8_gib_leaves_the_layout_empty() {
    let bundle = corrupted_over_8_gib_bundle();
    let mirror = tempfile::tempdir().expect("mirror directory");
    let output = airlock()
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--registry", &format!("oci:{}", mirror.path().display())])
        .args(["--max-expansion-ratio", ZEROS_EXPANSION_RATIO])
        .args(["--quiet"])
        .output()
        .expect("run airlock import");
    assert_refused_naming_the_layer(&bundle, &output);
    assert!(
        !mirror.path().join("index.json").exists(),
        "something was imported"
    );
    // The `oci-layout` marker is written when the layout is opened; no
    // blob, not even the partial one, may be left.
    let left: Vec<_> = walk(mirror.path())
        .into_iter()
        .filter(|f| !f.ends_with("oci-layout"))
        .collect();
    assert!(left.is_empty(), "files left in the layout: {left:?}");
}

/// Every regular file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read the layout").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn an_index_of_10000_manifests_imports_into_a_layout() {
    const IMAGES: usize = 10_000;
    let key = TestKey::generate(KeyKind::EcP256);
    let shared = [Layer::gzip_tar(7, 256)];
    let building = Instant::now();
    let mut builder = BundleBuilder::new("ten-thousand");
    for i in 0..IMAGES {
        builder = builder
            .image(Image::new(&format!("example.com/fleet/app{}:v{i}", i % 50)).layers(&shared));
    }
    let bundle = builder.build(&key);
    eprintln!("built the bundle in {:?}", building.elapsed());

    let mirror = tempfile::tempdir().expect("mirror directory");
    let target = format!("oci:{}", mirror.path().display());
    let started = Instant::now();
    let output = run(
        airlock()
            .arg("import")
            .arg(bundle.zst())
            .arg("--public-key")
            .arg(bundle.public_key_pem())
            .args(["--registry", &target, "--output", "json", "--quiet"]),
        "airlock import of 10,000 manifests",
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    eprintln!("imported in {:?}", started.elapsed());
    assert_eq!(
        report["push"]["images"].as_array().map(Vec::len),
        Some(IMAGES),
        "took {:?}",
        started.elapsed()
    );
    let index: Value = serde_json::from_slice(
        &std::fs::read(mirror.path().join("index.json")).expect("index.json"),
    )
    .expect("index.json is JSON");
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(IMAGES));
    for i in [0, IMAGES - 1] {
        let name = format!("example.com/fleet/app{}:v{i}", i % 50);
        let raw = skopeo::inspect_oci_layout(mirror.path(), &name);
        let expected = bundle.image(&name).manifest_digests();
        assert_eq!(
            skopeo::sha256_digest(&raw),
            *expected.last().expect("a manifest"),
            "{name}"
        );
    }
}

/// Peak resident memory of a finished child, from its `/proc` status while
/// it runs (sampled every 20 ms).
fn peak_rss_kib(mut child: std::process::Child, limit: Duration) -> (Output, u64) {
    let pid = child.id();
    let started = Instant::now();
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(hwm) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(hwm);
        }
        if child.try_wait().expect("poll the import").is_some() {
            break;
        }
        assert!(started.elapsed() < limit, "the import took over {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("collect the import");
    (output, peak)
}

/// MiB: the memory bound of an import that is not the zstd window: the
/// upload budget (`--buffer-mib`, 48 MiB by default) plus the process's
/// baseline, the HTTP client's buffers and the bundle's documents (a few
/// MiB here), measured at 30–40 MiB.
const BOUND_WITHOUT_WINDOW_MIB: u64 = 48 + 52;

/// Builds a bundle of one `size`-byte incompressible layer, zstd level 1
/// (an 8 MiB window at most), optionally recompressed with
/// `zstd --long=27` (a 128 MiB window, what `bundle create --long` writes)
/// and signed again.
fn incompressible_bundle(name: &str, size: u64, long: bool) -> BuiltBundle {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new(name)
        .image(Image::new("example.com/big/app:1.0").layers(&[Layer::big(200, size)]))
        .zstd_level(1)
        .build(&key);
    if long {
        let recompressed = bundle.dir().join("long.zst");
        run(
            std::process::Command::new("sh")
                .arg("-c")
                .arg("zstd -dc \"$1\" | zstd -q -1 --long=27 -o \"$2\"")
                .arg("sh")
                .arg(bundle.zst())
                .arg(&recompressed),
            "recompress with zstd --long=27",
        );
        std::fs::rename(&recompressed, bundle.zst()).expect("replace the bundle");
        bundle.sign_with(&key);
    }
    bundle
}

/// Imports `bundle` into a fresh registry and returns the peak RSS in MiB.
fn import_peak_mib(bundle: &BuiltBundle) -> u64 {
    let registry = Registry::start();
    let child = airlock()
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--registry", &registry.host(), "--plain-http", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start airlock import");
    let (output, peak) = peak_rss_kib(child, Duration::from_secs(600));
    assert!(
        output.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(skopeo::exists(&registry, "example.com/big/app:1.0"));
    peak / 1024
}

#[test]
fn a_256_mib_bundle_imports_within_the_memory_bound() {
    let bundle = incompressible_bundle("bounded", 256 << 20, false);
    let peak = import_peak_mib(&bundle);
    eprintln!("peak RSS {peak} MiB");
    let bound = BOUND_WITHOUT_WINDOW_MIB + 8;
    assert!(peak < bound, "peak RSS {peak} MiB, bound {bound} MiB");
}

#[test]
fn a_long_window_bundle_needs_its_window_on_top_of_the_bound() {
    let bundle = incompressible_bundle("long-window", 256 << 20, true);
    let peak = import_peak_mib(&bundle);
    eprintln!("peak RSS {peak} MiB with a 128 MiB window");
    let bound = BOUND_WITHOUT_WINDOW_MIB + 128;
    assert!(peak < bound, "peak RSS {peak} MiB, bound {bound} MiB");
}

/// Run with `cargo nextest run --run-ignored only -E 'test(bounded_memory)'`
/// (or `cargo test --test large_inputs -- --ignored`): builds a 3 GB bundle
/// of incompressible layers (3 GB of disk for the bundle and 3 GB in the
/// registry's storage) and imports it into a real registry; peak RSS must
/// stay under 100 MiB.
#[test]
#[ignore = "multi-GB: minutes of CPU and 6 GB of disk"]
fn a_multi_gb_bundle_imports_in_bounded_memory() {
    let key = TestKey::generate(KeyKind::EcP256);
    let layers: Vec<Layer> = (0..3).map(|i| Layer::big(100 + i, 1 << 30)).collect();
    let bundle = BundleBuilder::new("multi-gb")
        .image(Image::new("example.com/big/app:1.0").layers(&layers))
        .zstd_level(1)
        .build(&key);
    let registry = Registry::start();
    let child = airlock()
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--registry", &registry.host(), "--plain-http", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start airlock import");
    let (output, peak) = peak_rss_kib(child, Duration::from_secs(1800));
    assert!(
        output.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("peak RSS {} MiB", peak / 1024);
    assert!(peak < 100 * 1024, "peak RSS {} MiB", peak / 1024);
    assert!(skopeo::exists(&registry, "example.com/big/app:1.0"));
}
