//! `airlock bundle create`, checked with independent tools: the signature
//! with the openssl CLI, the archive with zstd and GNU tar, the layouts made
//! by the test bundle builder or by skopeo, and the result by importing it
//! into a real registry (Debian's docker-registry) and reading it back with
//! skopeo.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::Value;
use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer, Naming, unpack_with_cli};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::{airlock, skopeo, tools};

const PREFIX: &str = "mirror";

/// Two images, one multi-arch and named the containerd way, sharing a layer.
fn source_bundle(name: &str, app: &str, web: &str) -> BuiltBundle {
    let shared = Layer::gzip_tar(seed(name), 4096);
    BundleBuilder::new(name)
        .image(Image::new(app).layers(&[shared.clone(), Layer::gzip_tar(seed(name) + 1, 2048)]))
        .image(
            Image::new(web)
                .layers(&[shared])
                .naming(Naming::ContainerdName)
                .platforms(&["linux/amd64", "linux/arm64"]),
        )
        .build(&TestKey::generate(KeyKind::EcP256))
}

fn seed(text: &str) -> u64 {
    text.bytes()
        .fold(7u64, |acc, b| acc.wrapping_mul(31).wrapping_add(b as u64))
}

/// The bundle's layout as a directory, unpacked by `zstd -dc | tar -x`.
fn layout_of(bundle: &BuiltBundle, work: &Path, name: &str) -> PathBuf {
    let dest = work.join(name);
    fs::create_dir_all(&dest).expect("create the unpack directory");
    bundle.unpack_with_cli(&dest)
}

/// `airlock bundle create --output OUT --signing-key KEY --layout … EXTRA…`.
fn create(out: &Path, key: &Path, layouts: &[&Path], extra: &[&str]) -> Output {
    let mut command = airlock();
    command
        .args(["bundle", "create", "--output"])
        .arg(out)
        .arg("--signing-key")
        .arg(key);
    for layout in layouts {
        command.arg("--layout").arg(layout);
    }
    command.args(extra);
    tools::output(&mut command, "run airlock bundle create")
}

fn assert_created(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "airlock bundle create failed ({}):\n{}\n{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("Created "), "{stdout}");
    stdout
}

/// `airlock import` into `registry`/mirror; returns the JSON report.
fn import(zst: &Path, public_key: &Path, registry: &Registry) -> Value {
    let output = airlock()
        .arg("import")
        .arg(zst)
        .arg("--public-key")
        .arg(public_key)
        .args(["--registry", &format!("{}/{PREFIX}", registry.host())])
        .args(["--plain-http", "--output", "json", "--quiet"])
        .env("DOCKER_CONFIG", zst.with_extension("no-docker-config"))
        .stdin(Stdio::null())
        .output()
        .expect("run airlock import");
    assert!(
        output.status.success(),
        "airlock import failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the import report is JSON")
}

/// Every image of `bundle` is in `registry` with the bundle's manifest
/// digest, as skopeo reads it.
fn assert_images_landed(bundle: &BuiltBundle, registry: &Registry) {
    for image in bundle.images() {
        let reference = format!("{PREFIX}/{}", image.full_ref);
        assert_eq!(
            skopeo::manifest_digest(registry, &reference),
            image.digest,
            "{reference} has the wrong manifest"
        );
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list the output directory")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Bundle a builder-made layout with a key of `kind`, check the signature
/// with openssl, import into a fresh registry and compare digests.
fn round_trip(kind: KeyKind) {
    let source = source_bundle("round-trip", "quay.io/acme/app:1.0", "nginx:1.25");
    let work = tempfile::tempdir().expect("work directory");
    let layout = layout_of(&source, work.path(), "layout");
    let key = TestKey::generate(kind);
    let zst = work.path().join("acme.tar.zst");

    let stdout = assert_created(&create(&zst, key.private_pem(), &[&layout], &[]));
    assert!(stdout.contains("(2 images, "), "{stdout}");
    assert!(
        stdout.contains(&format!("signed with {}", key.private_pem().display())),
        "{stdout}"
    );
    let sig = work.path().join("acme.tar.sig.bin");
    assert!(
        key.openssl_verifies(&zst, &sig),
        "openssl does not accept the {kind:?} signature"
    );

    let registry = Registry::start();
    let report = import(&zst, key.public_pem(), &registry);
    assert_eq!(
        report["verifiedBy"]["label"],
        key.public_pem().display().to_string()
    );
    assert_images_landed(&source, &registry);
}

#[test]
fn ecdsa_p256_bundle_round_trips_through_openssl_and_a_registry() {
    round_trip(KeyKind::EcP256);
}

#[test]
fn ecdsa_p384_bundle_round_trips_through_openssl_and_a_registry() {
    round_trip(KeyKind::EcP384);
}

#[test]
fn rsa_2048_bundle_round_trips_through_openssl_and_a_registry() {
    round_trip(KeyKind::Rsa2048);
}

#[test]
fn rsa_4096_bundle_round_trips_through_openssl_and_a_registry() {
    round_trip(KeyKind::Rsa4096);
}

#[test]
fn ed25519_bundle_round_trips_through_openssl_and_a_registry() {
    round_trip(KeyKind::Ed25519);
}

/// `skopeo copy --all --preserve-digests docker://… oci:DIR:FULL_REF` from a
/// plain-HTTP registry: a layout written by an independent tool, named the
/// way airlock import reads names.
fn skopeo_copy_to_layout(registry: &Registry, full_ref: &str, dir: &Path) {
    tools::run(
        tools::command("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--all",
                "--preserve-digests",
                "--quiet",
            ])
            .args(["--src-tls-verify=false", "--src-no-creds"])
            .arg(skopeo::docker_ref(
                registry,
                &format!("{PREFIX}/{full_ref}"),
            ))
            .arg(format!("oci:{}:{full_ref}", dir.display())),
        &format!("copy {full_ref} into an OCI layout with skopeo"),
    );
}

#[test]
fn a_layout_written_by_skopeo_round_trips_with_the_same_digests() {
    let source = source_bundle("via-skopeo", "quay.io/acme/api:2.0", "nginx:1.27");
    let first = Registry::start();
    import(source.zst(), source.public_key_pem(), &first);

    let work = tempfile::tempdir().expect("work directory");
    let layout = work.path().join("skopeo-layout");
    for image in source.images() {
        skopeo_copy_to_layout(&first, &image.full_ref, &layout);
    }
    let key = TestKey::generate(KeyKind::EcP256);
    let zst = work.path().join("from-skopeo.zst");
    let stdout = assert_created(&create(&zst, key.private_pem(), &[&layout], &[]));
    assert!(stdout.contains("(2 images, "), "{stdout}");
    assert!(key.openssl_verifies(&zst, &work.path().join("from-skopeo.sig.bin")));

    let second = Registry::start();
    import(&zst, key.public_pem(), &second);
    for image in source.images() {
        let reference = format!("{PREFIX}/{}", image.full_ref);
        assert_eq!(
            skopeo::inspect_raw(&second, &reference),
            skopeo::inspect_raw(&first, &reference),
            "{reference} differs between the two registries"
        );
    }
    assert_images_landed(&source, &second);
}

#[test]
fn a_layout_written_by_airlock_import_can_be_bundled_again() {
    let source = source_bundle("re-export", "quay.io/acme/tool:0.9", "busybox:1.36");
    let work = tempfile::tempdir().expect("work directory");
    let mirror = work.path().join("mirror");
    let output = airlock()
        .arg("import")
        .arg(source.zst())
        .arg("--public-key")
        .arg(source.public_key_pem())
        .arg("--registry")
        .arg(format!("oci:{}", mirror.display()))
        .arg("--quiet")
        .output()
        .expect("run airlock import into an OCI layout");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // What a crash in the middle of a blob write leaves behind.
    fs::write(
        mirror.join("blobs/sha256/.airlock-leftover.partial"),
        b"half a blob",
    )
    .expect("write a leftover temporary file");

    let key = TestKey::generate(KeyKind::EcP384);
    let zst = work.path().join("again.zst");
    let stdout = assert_created(&create(&zst, key.private_pem(), &[&mirror], &[]));
    assert!(stdout.contains("(2 images, "), "{stdout}");
    let registry = Registry::start();
    import(&zst, key.public_pem(), &registry);
    assert_images_landed(&source, &registry);
}

#[test]
fn two_layouts_merge_into_one_bundle_and_both_sets_import() {
    let one = source_bundle("merge-one", "quay.io/acme/app:1.0", "nginx:1.25");
    let two = source_bundle("merge-two", "quay.io/acme/db:3.1", "redis:7.2");
    let work = tempfile::tempdir().expect("work directory");
    let first = layout_of(&one, work.path(), "one");
    let second = layout_of(&two, work.path(), "two");
    let iso = work.path().join("edge-installer-1.2.0.iso");
    fs::write(&iso, b"not really an ISO").expect("write the extra file");
    let key = TestKey::generate(KeyKind::Ed25519);
    let zst = work.path().join("merged.zst");
    let iso_arg = iso.display().to_string();

    let stdout = assert_created(&create(
        &zst,
        key.private_pem(),
        &[&first, &second],
        &["--file", &iso_arg],
    ));
    assert!(stdout.contains("(4 images, "), "{stdout}");
    assert!(stdout.contains(", 1 file, "), "{stdout}");

    let registry = Registry::start();
    let report = import(&zst, key.public_pem(), &registry);
    assert_images_landed(&one, &registry);
    assert_images_landed(&two, &registry);
    let installer = format!(
        "{}/{PREFIX}/installers/edge-installer:1.2.0",
        registry.host()
    );
    let pushed = report["push"]["images"].as_array().expect("pushed images");
    assert!(
        pushed.iter().any(|i| i["target"] == installer.as_str()),
        "{installer} not among {pushed:?}"
    );
    assert_eq!(report["extraFiles"], serde_json::json!([]));
    // Read back independently: the manifest with skopeo, the layer with curl.
    let manifest: serde_json::Value = serde_json::from_slice(&skopeo::inspect_raw(
        &registry,
        &format!("{PREFIX}/installers/edge-installer:1.2.0"),
    ))
    .expect("the installer manifest is JSON");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{manifest}");
    let digest = layers[0]["digest"].as_str().expect("a layer digest");
    let blob = registry.get(&format!(
        "/v2/{PREFIX}/installers/edge-installer/blobs/{digest}"
    ));
    assert_eq!(blob.status, 200);
    assert_eq!(blob.body, b"not really an ISO");
}

/// The layer blob file of the first image of `bundle` inside `layout`.
fn first_layer_file(bundle: &BuiltBundle, layout: &Path) -> PathBuf {
    let digest = &bundle.images()[0].manifests[0].layers[0].digest;
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    layout.join("blobs/sha256").join(hex)
}

#[test]
fn a_corrupt_or_incomplete_layout_is_refused_with_exit_3_and_no_output() {
    let source = source_bundle("broken", "quay.io/acme/app:1.0", "nginx:1.25");
    let work = tempfile::tempdir().expect("work directory");
    let key = TestKey::generate(KeyKind::EcP256);

    // One flipped byte in a layer: only hashing the content finds it.
    let corrupt = layout_of(&source, work.path(), "corrupt");
    let blob = first_layer_file(&source, &corrupt);
    let mut bytes = fs::read(&blob).expect("read the layer");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&blob, bytes).expect("write the corrupted layer");

    // A layer missing altogether.
    let incomplete = layout_of(&source, work.path(), "incomplete");
    fs::remove_file(first_layer_file(&source, &incomplete)).expect("remove a layer");

    for (layout, expected) in [
        (&corrupt, "does not match its digest"),
        (&incomplete, "does not hold"),
    ] {
        let out = work.path().join(format!(
            "out-{}",
            layout.file_name().unwrap_or_default().to_string_lossy()
        ));
        fs::create_dir(&out).expect("create the output directory");
        let output = create(&out.join("broken.zst"), key.private_pem(), &[layout], &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(
            names_in(&out).is_empty(),
            "left behind: {:?}",
            names_in(&out)
        );
    }
    let stderr = String::from_utf8_lossy(
        &create(
            &work.path().join("x.zst"),
            key.private_pem(),
            &[&corrupt],
            &[],
        )
        .stderr,
    )
    .into_owned();
    assert!(
        stderr.contains(&blob.display().to_string()),
        "names the blob: {stderr}"
    );
}

#[test]
fn creating_twice_from_the_same_inputs_gives_identical_bundles() {
    let source = source_bundle("determinism", "quay.io/acme/app:1.0", "nginx:1.25");
    let work = tempfile::tempdir().expect("work directory");
    let layout = layout_of(&source, work.path(), "layout");
    let key = TestKey::generate(KeyKind::EcP256);
    let mut bundles = Vec::new();
    for run in ["one", "two"] {
        let out = work.path().join(run);
        fs::create_dir(&out).expect("create the output directory");
        let zst = out.join("same.zst");
        // The creation time in index.json is the one input that differs
        // between runs; SOURCE_DATE_EPOCH fixes it, as for any reproducible
        // build.
        let mut command = airlock();
        command
            .args(["bundle", "create", "--long", "--output"])
            .arg(&zst)
            .arg("--signing-key")
            .arg(key.private_pem())
            .arg("--layout")
            .arg(&layout)
            .env("SOURCE_DATE_EPOCH", "1764000000");
        assert_created(&tools::output(&mut command, "run airlock bundle create"));
        bundles.push(zst);
    }
    let first = fs::read(&bundles[0]).expect("read the first bundle");
    assert!(first == fs::read(&bundles[1]).expect("read the second bundle"));
    // RFC 6979: airlock's ECDSA signatures are deterministic as well (openssl's
    // are not; either verifies).
    assert_eq!(
        fs::read(bundles[0].with_extension("sig.bin")).expect("read a signature"),
        fs::read(bundles[1].with_extension("sig.bin")).expect("read a signature")
    );

    // GNU tar lists the entries in the documented order with fixed metadata.
    let unpacked = work.path().join("unpacked");
    fs::create_dir(&unpacked).expect("create the unpack directory");
    unpack_with_cli(&bundles[0], &unpacked);
    let listing = tools::run(
        tools::command("sh").arg("-c").arg(format!(
            "zstd -dc --long=31 '{}' | tar -tv --numeric-owner --full-time",
            bundles[0].display()
        )),
        "list the bundle with zstd and tar",
    );
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let lines: Vec<&str> = listing.lines().collect();
    assert!(lines[0].ends_with(" oci-layout"), "{listing}");
    assert!(lines[1].ends_with(" index.json"), "{listing}");
    assert!(
        lines[2..].iter().all(|l| l.contains(" blobs/sha256/")),
        "{listing}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("-rw-r--r-- 0/0 ") && l.contains(" 1970-01-01 00:00:00 ")),
        "{listing}"
    );
}

#[test]
fn traditional_openssl_pem_keys_sign_too() {
    let source = source_bundle("pem-flavours", "quay.io/acme/app:1.0", "nginx:1.25");
    let work = tempfile::tempdir().expect("work directory");
    let layout = layout_of(&source, work.path(), "layout");
    for (kind, header) in [
        (KeyKind::EcP384, "BEGIN EC PRIVATE KEY"),
        (KeyKind::Rsa2048, "BEGIN RSA PRIVATE KEY"),
    ] {
        let key = TestKey::generate(kind);
        let traditional = work.path().join(format!("{kind:?}-traditional.pem"));
        tools::run(
            tools::command("openssl")
                .args(["pkey", "-traditional", "-in"])
                .arg(key.private_pem())
                .arg("-out")
                .arg(&traditional),
            "convert a key to the traditional PEM format",
        );
        let pem = fs::read_to_string(&traditional).expect("read the converted key");
        assert!(pem.contains(header), "{pem}");
        let zst = work.path().join(format!("{kind:?}.zst"));
        assert_created(&create(&zst, &traditional, &[&layout], &[]));
        assert!(
            key.openssl_verifies(&zst, &zst.with_extension("sig.bin")),
            "openssl does not accept the signature made with a traditional {kind:?} key"
        );
    }
}

#[test]
fn bad_flags_and_keys_exit_2_with_one_line_naming_the_file() {
    let source = source_bundle("bad-flags", "quay.io/acme/app:1.0", "nginx:1.25");
    let work = tempfile::tempdir().expect("work directory");
    let layout = layout_of(&source, work.path(), "layout");
    let key = TestKey::generate(KeyKind::EcP256);
    let out = work.path().join("out");
    fs::create_dir(&out).expect("create the output directory");
    let zst = out.join("b.zst");
    let missing = work.path().join("absent.pem");
    let cases: Vec<(Output, String)> = vec![
        // A public key cannot sign.
        (
            create(&zst, key.public_pem(), &[&layout], &[]),
            key.public_pem().display().to_string(),
        ),
        (
            create(&zst, &missing, &[&layout], &[]),
            missing.display().to_string(),
        ),
        (
            create(&out.join("b.tar"), key.private_pem(), &[&layout], &[]),
            "b.tar".into(),
        ),
        (
            create(&zst, key.private_pem(), &[&work.path().join("nope")], &[]),
            "nope".into(),
        ),
        (
            create(&zst, key.private_pem(), &[&layout], &["--zstd-level", "25"]),
            "25".into(),
        ),
        // No --layout at all.
        (create(&zst, key.private_pem(), &[], &[]), "--layout".into()),
    ];
    for (output, named) in cases {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&named), "should name {named}: {stderr}");
    }
    assert!(
        names_in(&out).is_empty(),
        "left behind: {:?}",
        names_in(&out)
    );
}

#[test]
fn help_shows_an_example_and_how_ed25519_is_signed() {
    let output = tools::run(
        airlock().args(["bundle", "create", "--help"]),
        "show airlock bundle create --help",
    );
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("Examples:"), "{help}");
    assert!(help.contains("airlock bundle create --output"), "{help}");
    assert!(help.contains("Ed25519"), "{help}");
}
