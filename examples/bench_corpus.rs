//! Writes a benchmark corpus for `scripts/bench`: a signed bundle built by the
//! test suite's own bundle builder (`tests/support/bundle.rs`), plus the
//! files the script needs to drive the baselines and check the results.
//!
//! ```text
//! cargo run --release --example bench_corpus -- CORPUS OUT_DIR [--size-gb N]
//! ```
//!
//! `CORPUS` is one of:
//!
//! * `small`: 3 images sharing a 16 MiB base layer, ~48 MiB of layers.
//! * `big`: 5 images sharing a base layer, one ~300 MB layer, ~500 MB of
//!   layers (uncompressed-tar layers of pseudo-random data). `--size-gb N`
//!   scales it to N GB with the same shape (20 % base, 60 % one big layer,
//!   4 × 5 % others), for the memory check.
//! * `many`: 300 images in 60 repositories, ~900 blobs, small gzip layers
//!   shared between images and repositories.
//!
//! `OUT_DIR` receives:
//!
//! * `bundle.zst`, `bundle.sig.bin`, `bundle.pub.pem` (ECDSA P-256, as
//!   Artifact Studio signs);
//! * `images.tsv`: `ref.name in index.json` TAB `normalised full reference`
//!   TAB `top manifest digest`, one image per line (the names are full
//!   references: `Naming::FullRefName`, as skopeo `oci:DIR:NAME` writes them);
//! * `blobs.tsv`: `digest` TAB `size` of every distinct config and layer blob
//!   (what a registry receives through blob uploads);
//! * `corpus.env`: `key=value` lines (counts and sizes) for the report;
//! * with `--signed`: every image also carries a cosign simple-signing
//!   signature (`sha256-<hex>.sig`) by a vendor key whose public half is
//!   `vendor.pub.pem`, to measure `--image-signature-key`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

// The builder is reused from the test suite rather than copied. Only the
// modules it needs are included: `tests/support/mod.rs` itself cannot be,
// because its `airlock()` helper uses `env!("CARGO_BIN_EXE_airlock")`, which
// cargo defines for integration tests and benches but not for examples.
#[allow(dead_code, unused_imports)]
#[path = "../tests/support"]
mod support {
    pub mod bundle;
    pub mod cosign;
    pub mod keys;
    pub mod tools;
}

use support::bundle::{BuiltBundle, BundleBuilder, EntryOrder, Image, Layer, Naming, seed_from};
use support::keys::{KeyKind, TestKey};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

fn usage() -> ! {
    eprintln!("usage: bench_corpus small|big|many OUT_DIR [--size-gb N] [--signed]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut positional = Vec::new();
    let mut size_gb: Option<f64> = None;
    let mut signed = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--size-gb" => {
                let value = args.get(i + 1).unwrap_or_else(|| usage());
                let gb: f64 = value.parse().unwrap_or_else(|_| usage());
                if !(gb > 0.0 && gb <= 64.0) {
                    eprintln!("--size-gb must be in (0, 64], got {gb}");
                    std::process::exit(2);
                }
                size_gb = Some(gb);
                i += 2;
            }
            "--signed" => {
                signed = true;
                i += 1;
            }
            _ => {
                positional.push(args[i].clone());
                i += 1;
            }
        }
    }
    let [corpus, out] = positional.as_slice() else {
        usage()
    };
    let out = PathBuf::from(out);
    fs::create_dir_all(&out).expect("create the output directory");

    let started = Instant::now();
    let key = TestKey::generate(KeyKind::EcP256);
    let (builder, description) = match corpus.as_str() {
        "small" => small(),
        "big" => big(size_gb.unwrap_or(0.5)),
        "many" => many(),
        _ => usage(),
    };
    let builder = if signed {
        sign_images(builder, &key, &out)
    } else {
        builder
    };
    let bundle = builder.build(&key);
    write_outputs(&bundle, &out, &description);
    eprintln!(
        "bench_corpus: {corpus} ({description}) written to {} in {:.1} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
}

/// A few images, ~50 MB: a quick run.
fn small() -> (BundleBuilder, String) {
    let base = Layer::uncompressed(seed_from("small/base"), 16 * MIB);
    let mut builder = BundleBuilder::new("bundle").order(EntryOrder::BlobsFirst);
    for n in 0..3u64 {
        let reference = format!("quay.io/bench/small-{n}:1.0");
        let own_gzip = Layer::gzip_tar(seed_from(&format!("small/gz/{n}")), 256 * KIB as usize);
        let own_big = Layer::uncompressed(seed_from(&format!("small/raw/{n}")), 10 * MIB);
        builder = builder.image(
            Image::new(&reference)
                .layers(&[base.clone(), own_gzip, own_big])
                .naming(Naming::FullRefName),
        );
    }
    (builder, "3 images, shared 16 MiB base".to_owned())
}

/// 5 images sharing a base layer; one layer is 60 % of the total.
fn big(total_gb: f64) -> (BundleBuilder, String) {
    let total = (total_gb * 1e9) as u64;
    let round = |fraction: f64| ((total as f64 * fraction) as u64 / MIB).max(1) * MIB;
    let base = Layer::uncompressed(seed_from("big/base"), round(0.20));
    let mut builder = BundleBuilder::new("bundle").order(EntryOrder::BlobsFirst);
    for n in 0..5u64 {
        let reference = format!("quay.io/bench/big-{n}:1.0");
        let own_size = if n == 0 { round(0.60) } else { round(0.05) };
        let own = Layer::uncompressed(seed_from(&format!("big/own/{n}")), own_size);
        // A small gzip layer too, as real images have (config files, etc.).
        let small = Layer::gzip_tar(seed_from(&format!("big/gz/{n}")), 64 * KIB as usize);
        builder = builder.image(
            Image::new(&reference)
                .layers(&[base.clone(), own, small])
                .naming(Naming::FullRefName),
        );
    }
    (
        builder,
        format!(
            "5 images, {total_gb} GB: base {} MiB shared, one {} MiB layer",
            round(0.2) / MIB,
            round(0.6) / MIB
        ),
    )
}

/// 300 images in 60 repositories; 300 configs + 10 base layers + 60
/// repository layers + 530 image layers = 900 blobs.
fn many() -> (BundleBuilder, String) {
    // Sizes from a few KiB to a few hundred KiB, varied deterministically.
    let size = |name: &str, min: u64, max: u64| -> usize {
        (min + seed_from(name) % (max - min + 1)) as usize
    };
    let bases: Vec<Layer> = (0..10)
        .map(|b| {
            let name = format!("many/base/{b}");
            Layer::gzip_tar(seed_from(&name), size(&name, 200 * KIB, 400 * KIB))
        })
        .collect();
    let mut builder = BundleBuilder::new("bundle").order(EntryOrder::BlobsFirst);
    let mut image_number = 0u64;
    for repo in 0..60u64 {
        let repo_name = format!("many/repo/{repo}");
        let repo_layer =
            Layer::gzip_tar(seed_from(&repo_name), size(&repo_name, 32 * KIB, 160 * KIB));
        for tag in 0..5u64 {
            let mut layers = vec![bases[(repo % 10) as usize].clone(), repo_layer.clone()];
            let own = if image_number < 230 { 2 } else { 1 };
            for l in 0..own {
                let name = format!("many/image/{repo}/{tag}/{l}");
                layers.push(Layer::gzip_tar(
                    seed_from(&name),
                    size(&name, 4 * KIB, 64 * KIB),
                ));
            }
            let reference = format!("quay.io/bench/svc-{repo:02}:1.0.{tag}");
            builder = builder.image(
                Image::new(&reference)
                    .layers(&layers)
                    .naming(Naming::FullRefName),
            );
            image_number += 1;
        }
    }
    (builder, "300 images in 60 repositories".to_owned())
}

fn write_outputs(bundle: &BuiltBundle, out: &Path, description: &str) {
    move_file(bundle.zst(), &out.join("bundle.zst"));
    move_file(bundle.sig(), &out.join("bundle.sig.bin"));
    move_file(bundle.public_key_pem(), &out.join("bundle.pub.pem"));

    let mut images = String::new();
    let mut repositories = std::collections::BTreeSet::new();
    for image in bundle.images() {
        let ref_name = image
            .annotations
            .get("org.opencontainers.image.ref.name")
            .expect("FullRefName images carry org.opencontainers.image.ref.name");
        writeln!(images, "{ref_name}\t{}\t{}", image.full_ref, image.digest).unwrap();
        repositories.insert(image.repository());
    }
    fs::write(out.join("images.tsv"), images).expect("write images.tsv");

    let blobs = bundle.content_blobs();
    let mut listing = String::new();
    for blob in &blobs {
        writeln!(listing, "{}\t{}", blob.digest, blob.size).unwrap();
    }
    fs::write(out.join("blobs.tsv"), listing).expect("write blobs.tsv");

    let zst_bytes = fs::metadata(out.join("bundle.zst"))
        .expect("stat bundle.zst")
        .len();
    let env = format!(
        "description='{description}'\nimages={}\nrepositories={}\nunique_blobs={}\nunique_blob_bytes={}\nlayout_blobs={}\nzst_bytes={zst_bytes}\n",
        bundle.images().len(),
        repositories.len(),
        blobs.len(),
        bundle.unique_blob_bytes(),
        bundle.blobs().len(),
    );
    fs::write(out.join("corpus.env"), env).expect("write corpus.env");
}

/// Moves a file out of the builder's temporary directory (which is deleted
/// when the `BuiltBundle` drops): a rename on the same file system, else a copy.
fn move_file(from: &Path, to: &Path) {
    if fs::rename(from, to).is_err() {
        fs::copy(from, to)
            .unwrap_or_else(|err| panic!("copy {} to {}: {err}", from.display(), to.display()));
    }
}

/// Adds a cosign signature of every image (by a vendor key written to
/// `vendor.pub.pem`), made the way cosign makes them. The images' digests
/// come from building the bundle once without signatures (the builder is
/// deterministic).
fn sign_images(builder: BundleBuilder, key: &TestKey, out: &Path) -> BundleBuilder {
    let vendor = TestKey::generate(KeyKind::EcP256);
    fs::copy(vendor.public_pem(), out.join("vendor.pub.pem")).expect("write vendor.pub.pem");
    let probe = builder.clone().build(key);
    let mut signed = builder;
    for image in probe.images() {
        signed = signed.artifact(support::cosign::signed_by(
            &vendor,
            &image.repository(),
            &image.digest,
        ));
    }
    signed
}
