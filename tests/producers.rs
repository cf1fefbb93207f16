//! Bundles made by other producers' tools import as they are: a docker-save
//! written by skopeo `docker-archive:` (with its symlinked layers), a
//! hand-built legacy docker-save with a gzip layer, skopeo `oci-archive:`
//! and umoci layouts — each compressed with the `zstd` CLI and signed with
//! `openssl dgst -sha256 -sign`, imported into a real registry and read
//! back with skopeo.

mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::Value;
use support::airlock;
use support::bundle::{BundleBuilder, Image, Layer, sha256_digest};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::{skopeo, tools};

const PREFIX: &str = "mirror";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A temporary directory and the key bundles are signed with.
struct Work {
    dir: tempfile::TempDir,
    key: TestKey,
}

impl Work {
    fn new() -> Work {
        Work {
            dir: tempfile::tempdir().expect("work directory"),
            key: TestKey::generate(KeyKind::EcP256),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An OCI layout holding `reference` (two gzip layers, or `layers`),
    /// made by the test bundle builder and unpacked with zstd and tar.
    fn layout(&self, name: &str, reference: &str, layers: &[Layer]) -> PathBuf {
        let mut image = Image::new(reference);
        if !layers.is_empty() {
            image = image.layers(layers);
        }
        let built = BundleBuilder::new(name).image(image).build(&self.key);
        let dest = self.path(name);
        fs::create_dir_all(&dest).expect("create the unpack directory");
        built.unpack_with_cli(&dest)
    }

    /// `zstd -q TAR -o NAME.zst` and `openssl dgst -sha256 -sign`, as a
    /// producer without airlock would seal a bundle.
    fn seal(&self, tar: &Path, name: &str) -> PathBuf {
        let zst = self.path(&format!("{name}.zst"));
        tools::run(
            tools::command("zstd")
                .args(["-q", "-f"])
                .arg(tar)
                .arg("-o")
                .arg(&zst),
            "compress the bundle with the zstd CLI",
        );
        self.key.sign(&zst, &self.path(&format!("{name}.sig.bin")));
        zst
    }
}

fn import_output(zst: &Path, work: &Work, registry: &Registry) -> Output {
    airlock()
        .arg("import")
        .arg(zst)
        .arg("--public-key")
        .arg(work.key.public_pem())
        .args(["--registry", &format!("{}/{PREFIX}", registry.host())])
        .args(["--plain-http", "--output", "json", "--quiet"])
        .stdin(Stdio::null())
        .output()
        .expect("run airlock import")
}

fn import(zst: &Path, work: &Work, registry: &Registry) -> Value {
    let output = import_output(zst, work, registry);
    assert!(
        output.status.success(),
        "airlock import failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the import report is JSON")
}

/// `airlock inspect --output json` of a bundle.
fn inspect(zst: &Path, work: &Work) -> Value {
    let output = tools::run(
        airlock()
            .arg("inspect")
            .arg(zst)
            .arg("--public-key")
            .arg(work.key.public_pem())
            .args(["--output", "json"]),
        "inspect the bundle",
    );
    serde_json::from_slice(&output.stdout).expect("inspect prints JSON")
}

/// `tar -C DIR -cf OUT .` with GNU tar.
fn tar_directory(dir: &Path, out: &Path) {
    tools::run(
        tools::command("tar")
            .arg("-C")
            .arg(dir)
            .arg("-cf")
            .arg(out)
            .arg("."),
        "tar the directory",
    );
}

fn manifest_of(registry: &Registry, repo_and_tag: &str) -> Value {
    serde_json::from_slice(&skopeo::inspect_raw(registry, repo_and_tag)).expect("manifest JSON")
}

fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect()
}

fn file_digest(path: &Path) -> String {
    sha256_digest(&fs::read(path).expect("read a file"))
}

/// Expected (config digest, layer digests) of the first image of an
/// unpacked docker-save, read from its manifest.json.
fn expected_from_save(dir: &Path) -> (String, Vec<String>) {
    let manifest: Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).expect("manifest.json"))
            .expect("manifest.json is JSON");
    let entry = &manifest[0];
    let config = file_digest(&dir.join(entry["Config"].as_str().expect("Config")));
    let layers = entry["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| file_digest(&dir.join(l.as_str().expect("layer path"))))
        .collect();
    (config, layers)
}

/// Imports `zst` and asserts exit 3, one line naming every fragment, and
/// nothing written to the registry.
fn assert_rejected(zst: &Path, work: &Work, fragments: &[&str]) {
    let registry = Registry::start();
    let output = import_output(zst, work, &registry);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "expected exit 3: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line reason, got:\n{stderr}");
    for fragment in fragments {
        assert!(
            lines[0].contains(fragment),
            "{fragment:?} not in {}",
            lines[0]
        );
    }
    assert!(registry.catalog().is_empty(), "{:?}", registry.catalog());
    let writes = registry.settled_writes_since(0);
    assert!(
        writes.is_empty(),
        "airlock wrote to the registry: {writes:?}"
    );
}

#[test]
fn skopeo_docker_archive_imports_as_a_docker_schema_2_image() {
    let work = Work::new();
    let layout = work.layout(
        "source",
        "quay.io/acme/app:1.0",
        &[Layer::gzip_tar(11, 4096), Layer::gzip_tar(12, 2048)],
    );
    let save = work.path("app.tar");
    tools::run(
        tools::command("skopeo")
            .args(["--insecure-policy", "copy", "--quiet"])
            .arg(format!("oci:{}:quay.io/acme/app:1.0", layout.display()))
            .arg(format!(
                "docker-archive:{}:quay.io/acme/app:1.0",
                save.display()
            )),
        "write a docker-archive with skopeo",
    );
    let unpacked = work.path("unpacked");
    fs::create_dir_all(&unpacked).expect("mkdir");
    tools::run(
        tools::command("tar")
            .arg("-C")
            .arg(&unpacked)
            .arg("-xf")
            .arg(&save),
        "unpack the docker-archive",
    );
    let (config, layers) = expected_from_save(&unpacked);
    let zst = work.seal(&save, "skopeo-docker-archive");

    let inspected = inspect(&zst, &work);
    assert_eq!(
        inspected["extraFiles"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0),
        0,
        "every docker-save file is claimed: {inspected}"
    );

    let registry = Registry::start();
    import(&zst, &work, &registry);
    let reference = format!("{PREFIX}/quay.io/acme/app:1.0");
    let manifest = manifest_of(&registry, &reference);
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
    assert_eq!(manifest["config"]["digest"], config.as_str());
    assert_eq!(layer_digests(&manifest), layers);
    assert!(
        manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .all(|l| l["mediaType"] == DOCKER_LAYER),
        "{manifest}"
    );
    let pulled = work.path("pulled");
    skopeo::copy_to_oci_dir(&registry, &reference, &pulled);

    // A second import finds everything present and writes the same digest.
    let digest = skopeo::manifest_digest(&registry, &reference);
    import(&zst, &work, &registry);
    assert_eq!(skopeo::manifest_digest(&registry, &reference), digest);
}

/// A small tar holding one file, as a layer's content.
fn layer_tar(name: &str, body: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, name, body).expect("append");
    tar.into_inner().expect("tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

fn hex_of(bytes: &[u8]) -> String {
    sha256_digest(bytes)
        .trim_start_matches("sha256:")
        .to_owned()
}

/// A legacy `docker save` of two images sharing a base layer, the second
/// layer of the first image gzip-compressed: `<id>/layer.tar`, `<id>/json`,
/// `<id>/VERSION`, `<config>.json`, `manifest.json`, `repositories`, all
/// under `root`. `break_it` may change the files before they are written.
struct LegacySave {
    files: Vec<(String, Vec<u8>)>,
    base_id: String,
    top_id: String,
    config_a: String,
}

impl LegacySave {
    fn new(root: &str) -> LegacySave {
        let base = layer_tar("etc/base.txt", b"base layer");
        let top = layer_tar("app/top.txt", b"top layer");
        let top_gz = gzip(&top);
        let config = |layers: &[&[u8]]| {
            let ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
            serde_json::to_vec(&serde_json::json!({
                "architecture": "amd64", "os": "linux", "config": {},
                "rootfs": {"type": "layers", "diff_ids": ids}
            }))
            .expect("config")
        };
        let config_a = config(&[&base, &top]);
        let config_b = config(&[&base]);
        let base_id = hex_of(b"base-id");
        let top_id = hex_of(b"top-id");
        let manifest = serde_json::json!([
            {"Config": format!("{}.json", hex_of(&config_a)),
             "RepoTags": ["acme/legacy:1", "quay.io/acme/legacy:1"],
             "Layers": [format!("{base_id}/layer.tar"), format!("{top_id}/layer.tar")]},
            {"Config": format!("{}.json", hex_of(&config_b)),
             "RepoTags": ["acme/base:1"],
             "Layers": [format!("{base_id}/layer.tar")]}
        ]);
        let repositories = serde_json::json!({"acme/legacy": {"1": top_id}});
        let at = |p: String| format!("{root}{p}");
        let files = vec![
            (
                at("manifest.json".into()),
                manifest.to_string().into_bytes(),
            ),
            (
                at("repositories".into()),
                repositories.to_string().into_bytes(),
            ),
            (at(format!("{}.json", hex_of(&config_a))), config_a.clone()),
            (at(format!("{}.json", hex_of(&config_b))), config_b),
            (at(format!("{base_id}/VERSION")), b"1.0".to_vec()),
            (at(format!("{base_id}/json")), b"{}".to_vec()),
            (at(format!("{base_id}/layer.tar")), base),
            (at(format!("{top_id}/VERSION")), b"1.0".to_vec()),
            (at(format!("{top_id}/json")), b"{}".to_vec()),
            (at(format!("{top_id}/layer.tar")), top_gz),
        ];
        LegacySave {
            files,
            base_id,
            top_id,
            config_a: sha256_digest(&config_a),
        }
    }

    fn file(&self, suffix: &str) -> &[u8] {
        &self
            .files
            .iter()
            .find(|(p, _)| p.ends_with(suffix))
            .expect("file of the save")
            .1
    }

    fn without(mut self, suffix: &str) -> LegacySave {
        self.files.retain(|(p, _)| !p.ends_with(suffix));
        self
    }

    fn replace(mut self, suffix: &str, bytes: Vec<u8>) -> LegacySave {
        for (path, content) in &mut self.files {
            if path.ends_with(suffix) {
                *content = bytes.clone();
            }
        }
        self
    }

    fn write_tar(&self, out: &Path) {
        support::bundle::write_plain_tar(out, &self.files);
    }
}

#[test]
fn legacy_docker_save_with_a_gzip_layer_imports_two_images_sharing_a_layer() {
    let work = Work::new();
    let save = LegacySave::new("saved/");
    let tar = work.path("legacy.tar");
    save.write_tar(&tar);
    let zst = work.seal(&tar, "legacy");

    let registry = Registry::start();
    import(&zst, &work, &registry);
    let legacy = manifest_of(&registry, &format!("{PREFIX}/docker.io/acme/legacy:1"));
    assert_eq!(legacy["mediaType"], DOCKER_MANIFEST);
    assert_eq!(legacy["config"]["digest"], save.config_a.as_str());
    let base = sha256_digest(save.file(&format!("{}/layer.tar", save.base_id)));
    let top = sha256_digest(save.file(&format!("{}/layer.tar", save.top_id)));
    assert_eq!(layer_digests(&legacy), [base.clone(), top]);
    assert_eq!(legacy["layers"][0]["mediaType"], DOCKER_LAYER);
    assert_eq!(legacy["layers"][1]["mediaType"], DOCKER_LAYER_GZIP);
    let same = format!("{PREFIX}/quay.io/acme/legacy:1");
    assert_eq!(
        skopeo::manifest_digest(&registry, &same),
        skopeo::manifest_digest(&registry, &format!("{PREFIX}/docker.io/acme/legacy:1"))
    );
    let base_image = manifest_of(&registry, &format!("{PREFIX}/docker.io/acme/base:1"));
    assert_eq!(layer_digests(&base_image), [base]);
    skopeo::copy_to_oci_dir(
        &registry,
        &format!("{PREFIX}/docker.io/acme/legacy:1"),
        &work.path("pulled"),
    );
}

#[test]
fn docker_save_naming_a_missing_layer_is_refused_and_nothing_pushed() {
    let work = Work::new();
    let save = LegacySave::new("");
    let top = format!("{}/layer.tar", save.top_id);
    let tar = work.path("missing.tar");
    save.without(&top).write_tar(&tar);
    let zst = work.seal(&tar, "missing-layer");
    assert_rejected(&zst, &work, &["manifest.json", "acme/legacy:1", &top]);
}

#[test]
fn docker_save_layer_that_does_not_match_its_diff_id_is_refused() {
    let work = Work::new();
    let save = LegacySave::new("");
    let base = format!("{}/layer.tar", save.base_id);
    let tar = work.path("mismatch.tar");
    save.replace(&base, layer_tar("etc/other.txt", b"not the base"))
        .write_tar(&tar);
    let zst = work.seal(&tar, "diff-id-mismatch");
    assert_rejected(&zst, &work, &["manifest.json", &base, "diff_ids[0]"]);
}

#[test]
fn skopeo_oci_archive_imports_with_its_digests() {
    let work = Work::new();
    let reference = "quay.io/acme/archived:2.0";
    let layout = work.layout("source", reference, &[]);
    let archive = work.path("archived.tar");
    tools::run(
        tools::command("skopeo")
            .args(["--insecure-policy", "copy", "--quiet", "--preserve-digests"])
            .arg(format!("oci:{}:{reference}", layout.display()))
            .arg(format!("oci-archive:{}:{reference}", archive.display())),
        "write an oci-archive with skopeo",
    );
    let expected = sha256_digest(&skopeo::inspect_oci_layout(&layout, reference));
    let zst = work.seal(&archive, "oci-archive");
    let registry = Registry::start();
    import(&zst, &work, &registry);
    assert_eq!(
        skopeo::manifest_digest(&registry, &format!("{PREFIX}/{reference}")),
        expected
    );
}

#[test]
fn umoci_layout_imports_with_its_digests() {
    let work = Work::new();
    let layout = work.path("umoci");
    let image = format!("{}:quay.io/acme/umoci:1.0", layout.display());
    let umoci = |args: &[&str]| {
        tools::run(tools::command("umoci").args(args), "run umoci");
    };
    umoci(&["init", "--layout", &layout.display().to_string()]);
    umoci(&["new", "--image", &image]);
    let content = work.path("hello.txt");
    fs::write(&content, b"hello from umoci\n").expect("write content");
    umoci(&[
        "insert",
        "--rootless",
        "--image",
        &image,
        &content.display().to_string(),
        "/hello.txt",
    ]);
    let expected = sha256_digest(&skopeo::inspect_oci_layout(
        &layout,
        "quay.io/acme/umoci:1.0",
    ));
    let tar = work.path("umoci.tar");
    tar_directory(&layout, &tar);
    let zst = work.seal(&tar, "umoci");
    let registry = Registry::start();
    import(&zst, &work, &registry);
    assert_eq!(
        skopeo::manifest_digest(&registry, &format!("{PREFIX}/quay.io/acme/umoci:1.0")),
        expected
    );
}

/// Docker 25+ writes an OCI layout and a manifest.json side by side: the
/// layout is imported once, and manifest.json with `blobs/sha256/…` paths
/// alone (no index.json) is read as a docker-save.
#[test]
fn oci_style_docker_save_is_imported_once_with_or_without_index_json() {
    let work = Work::new();
    let reference = "docker.io/acme/oci-style:3";
    let layout = work.layout(
        "source",
        reference,
        &[Layer::uncompressed(31, 3000), Layer::uncompressed(32, 1000)],
    );
    let top: Value =
        serde_json::from_slice(&skopeo::inspect_oci_layout(&layout, reference)).expect("manifest");
    let blob = |d: &Value| {
        format!(
            "blobs/sha256/{}",
            d.as_str().expect("digest").trim_start_matches("sha256:")
        )
    };
    let save = serde_json::json!([{
        "Config": blob(&top["config"]["digest"]),
        "RepoTags": ["acme/oci-style:3"],
        "Layers": top["layers"].as_array().expect("layers").iter().map(|l| blob(&l["digest"])).collect::<Vec<_>>(),
    }]);
    fs::write(layout.join("manifest.json"), save.to_string()).expect("manifest.json");
    fs::write(
        layout.join("repositories"),
        br#"{"acme/oci-style":{"3":"x"}}"#,
    )
    .expect("repositories");

    let with_index = work.path("with-index.tar");
    tar_directory(&layout, &with_index);
    let zst = work.seal(&with_index, "oci-style");
    let inspected = inspect(&zst, &work);
    assert_eq!(
        inspected["images"].as_array().map(Vec::len),
        Some(1),
        "{inspected}"
    );
    let registry = Registry::start();
    import(&zst, &work, &registry);
    let oci_digest = sha256_digest(&skopeo::inspect_oci_layout(&layout, reference));
    assert_eq!(
        skopeo::manifest_digest(&registry, &format!("{PREFIX}/{reference}")),
        oci_digest
    );

    fs::remove_file(layout.join("index.json")).expect("remove index.json");
    fs::remove_file(layout.join("oci-layout")).expect("remove oci-layout");
    let without_index = work.path("without-index.tar");
    tar_directory(&layout, &without_index);
    let zst = work.seal(&without_index, "docker-style");
    let registry = Registry::start();
    import(&zst, &work, &registry);
    let manifest = manifest_of(&registry, &format!("{PREFIX}/{reference}"));
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(manifest["config"]["digest"], top["config"]["digest"]);
    assert_eq!(layer_digests(&manifest), layer_digests(&top));
}

/// `airlock bundle create` with the given flags, signing with `work.key`.
fn bundle_create(work: &Work, name: &str, flags: &[&std::ffi::OsStr]) -> (PathBuf, Output) {
    let zst = work.path(&format!("{name}.zst"));
    let output = tools::output(
        airlock()
            .args(["bundle", "create", "--output"])
            .arg(&zst)
            .arg("--signing-key")
            .arg(work.key.private_pem())
            .args(flags),
        "run airlock bundle create",
    );
    (zst, output)
}

fn unpack(zst: &Path, work: &Work, name: &str) -> PathBuf {
    let dest = work.path(name);
    fs::create_dir_all(&dest).expect("mkdir");
    support::bundle::unpack_with_cli(zst, &dest);
    dest
}

#[test]
fn bundle_create_carries_a_gzip_docker_archive_packs_and_a_chart() {
    let work = Work::new();
    let layout = work.layout(
        "source",
        "quay.io/acme/app:1.0",
        &[Layer::gzip_tar(41, 3000)],
    );
    let save = work.path("app.tar");
    tools::run(
        tools::command("skopeo")
            .args(["--insecure-policy", "copy", "--quiet"])
            .arg(format!("oci:{}:quay.io/acme/app:1.0", layout.display()))
            .arg(format!(
                "docker-archive:{}:quay.io/acme/app:1.0",
                save.display()
            )),
        "write a docker-archive with skopeo",
    );
    let save_gz = work.path("app.tar.gz");
    fs::write(&save_gz, gzip(&fs::read(&save).expect("read the archive"))).expect("gzip");

    let pack_dir = work.path("nginx-pack");
    fs::create_dir_all(pack_dir.join("charts")).expect("mkdir");
    fs::write(
        pack_dir.join("pack.json"),
        r#"{"name":"nginx","version":"1.2.3","layer":"addon"}"#,
    )
    .expect("pack.json");
    fs::write(pack_dir.join("values.yaml"), "pack:\n  content: {}\n").expect("values.yaml");
    let pack_tarball = work.path("edge-2.0.0.tar.gz");
    let edge = work.path("edge-src/edge");
    fs::create_dir_all(&edge).expect("mkdir");
    fs::write(
        edge.join("pack.json"),
        r#"{"name":"edge","version":"2.0.0"}"#,
    )
    .expect("pack.json");
    tools::run(
        tools::command("tar")
            .arg("-C")
            .arg(work.path("edge-src"))
            .arg("-czf")
            .arg(&pack_tarball)
            .arg("edge"),
        "make a pack tarball",
    );
    let chart_src = work.path("chart-src/mychart");
    fs::create_dir_all(&chart_src).expect("mkdir");
    fs::write(
        chart_src.join("Chart.yaml"),
        "apiVersion: v2\nname: mychart\nversion: 0.1.0\n",
    )
    .expect("Chart.yaml");
    let chart = work.path("mychart-0.1.0.tgz");
    tools::run(
        tools::command("tar")
            .arg("-C")
            .arg(work.path("chart-src"))
            .arg("-czf")
            .arg(&chart)
            .arg("mychart"),
        "make a chart archive",
    );

    let flags = [
        "--docker-archive".as_ref(),
        save_gz.as_os_str(),
        "--pack".as_ref(),
        pack_dir.as_os_str(),
        "--pack".as_ref(),
        pack_tarball.as_os_str(),
        "--chart".as_ref(),
        chart.as_os_str(),
    ];
    let (zst, output) = bundle_create(&work, "created", &flags);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        work.key
            .openssl_verifies(&zst, &work.path("created.sig.bin"))
    );

    let unpacked = unpack(&zst, &work, "created-unpacked");
    assert!(unpacked.join("docker-app/manifest.json").is_file());
    assert!(unpacked.join("charts/mychart-0.1.0.tgz").is_file());
    assert_eq!(
        fs::read(unpacked.join("packs/edge-2.0.0.tar.gz")).expect("copied pack"),
        fs::read(&pack_tarball).expect("pack tarball")
    );
    let listing = tools::run(
        tools::command("tar")
            .arg("-tzvf")
            .arg(unpacked.join("packs/nginx-1.2.3.tar.gz")),
        "list the packed pack",
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("nginx/pack.json"), "{listing}");
    assert!(listing.contains("0/0"), "owner 0: {listing}");

    // The same directory packs to the same bytes.
    let (again, output) = bundle_create(&work, "again", &flags[2..4]);
    assert!(output.status.success());
    let again = unpack(&again, &work, "again-unpacked");
    assert_eq!(
        fs::read(again.join("packs/nginx-1.2.3.tar.gz")).expect("packed"),
        fs::read(unpacked.join("packs/nginx-1.2.3.tar.gz")).expect("packed")
    );

    let inspected = inspect(&zst, &work);
    // Only a docker-save, packs and a chart: no OCI layout at all.
    assert_eq!(inspected["layoutRoot"], "none", "{inspected}");
    let extra: Vec<&str> = inspected["extraFiles"]
        .as_array()
        .expect("extraFiles")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    assert!(
        extra
            .iter()
            .all(|p| p.starts_with("packs/") || p.starts_with("charts/")),
        "{extra:?}"
    );

    // The image lands with the same digest as the archive imported directly.
    let direct = work.seal(&save, "direct");
    let registry = Registry::start();
    import(&direct, &work, &registry);
    let reference = format!("{PREFIX}/quay.io/acme/app:1.0");
    let expected = skopeo::manifest_digest(&registry, &reference);
    let registry = Registry::start();
    import(&zst, &work, &registry);
    assert_eq!(skopeo::manifest_digest(&registry, &reference), expected);
}

#[test]
fn bundle_create_refuses_packs_without_name_and_version_as_configuration_errors() {
    let work = Work::new();
    let no_pack_json = work.path("empty-pack");
    fs::create_dir_all(&no_pack_json).expect("mkdir");
    let no_version = work.path("no-version");
    fs::create_dir_all(&no_version).expect("mkdir");
    fs::write(no_version.join("pack.json"), r#"{"name":"nginx"}"#).expect("pack.json");
    for (dir, fragment) in [
        (&no_pack_json, "needs a pack.json"),
        (&no_version, "has no version"),
    ] {
        let (zst, output) = bundle_create(&work, "refused", &["--pack".as_ref(), dir.as_os_str()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(fragment), "{stderr}");
        assert!(stderr.contains(&dir.display().to_string()), "{stderr}");
        assert!(!zst.exists());
    }
}

#[test]
fn bundle_create_refuses_a_docker_archive_naming_a_missing_layer() {
    let work = Work::new();
    let save = LegacySave::new("");
    let top = format!("{}/layer.tar", save.top_id);
    let tar = work.path("broken.tar");
    save.without(&top).write_tar(&tar);
    let (zst, output) = bundle_create(
        &work,
        "broken",
        &["--docker-archive".as_ref(), tar.as_os_str()],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&top) && stderr.contains("acme/legacy:1"),
        "{stderr}"
    );
    assert!(!zst.exists());
}

#[test]
fn bundle_create_pulls_images_from_a_registry_with_every_platform() {
    let work = Work::new();
    let reference = "quay.io/acme/multi:1.0";
    let built = BundleBuilder::new("multi")
        .image(Image::new(reference).platforms(&["linux/amd64", "linux/arm64"]))
        .build(&work.key);
    let dest = work.path("multi");
    fs::create_dir_all(&dest).expect("mkdir");
    let layout = built.unpack_with_cli(&dest);
    let source = Registry::start();
    skopeo::push_oci_layout(&source, &layout, reference, "cache/acme/multi:1.0", true);

    let image = format!("{}/cache/acme/multi:1.0={reference}", source.host());
    let (zst, output) = bundle_create(
        &work,
        "pulled",
        &[
            "--image".as_ref(),
            image.as_ref(),
            "--image-plain-http".as_ref(),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("(1 image, "), "{stdout}");

    let target = Registry::start();
    import(&zst, &work, &target);
    assert_eq!(
        skopeo::manifest_digest(&target, &format!("{PREFIX}/{reference}")),
        built.image(reference).digest
    );
    skopeo::copy_to_oci_dir(
        &target,
        &format!("{PREFIX}/{reference}"),
        &work.path("back"),
    );
    let leftovers: Vec<_> = fs::read_dir(work.dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".airlock-pull-")
        })
        .collect();
    assert!(leftovers.is_empty(), "the pulled layout is removed");
}

#[test]
fn bundle_create_reports_an_image_the_registry_does_not_have() {
    let work = Work::new();
    let source = Registry::start();
    let image = format!("{}/acme/absent:1.0=quay.io/acme/absent:1.0", source.host());
    let (zst, output) = bundle_create(
        &work,
        "absent",
        &[
            "--image".as_ref(),
            image.as_ref(),
            "--image-plain-http".as_ref(),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("acme/absent:1.0"), "{stderr}");
    assert!(!zst.exists());
}

#[test]
fn bundle_create_checks_docker_archive_layers_against_their_diff_ids() {
    let work = Work::new();
    let save = LegacySave::new("");
    let top = format!("{}/layer.tar", save.top_id);
    let tar = work.path("tampered.tar");
    save.replace(
        &top,
        gzip(&layer_tar("app/other.txt", b"not the top layer")),
    )
    .write_tar(&tar);
    let (zst, output) = bundle_create(
        &work,
        "tampered",
        &["--docker-archive".as_ref(), tar.as_os_str()],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&top) && stderr.contains("diff_ids[1]"),
        "{stderr}"
    );
    assert!(!zst.exists());
}

#[test]
fn symlinks_outside_a_docker_save_are_still_refused() {
    let work = Work::new();
    let tar_path = work.path("linked.tar");
    let mut tar = tar::Builder::new(fs::File::create(&tar_path).expect("create"));
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "files/tool-1.0.bin", &b"tool"[..])
        .expect("append");
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    tar.append_link(&mut link, "files/tool-2.0.bin", "tool-1.0.bin")
        .expect("append the link");
    tar.finish().expect("finish");
    drop(tar);
    let zst = work.seal(&tar_path, "linked");
    assert_rejected(&zst, &work, &["files/tool-2.0.bin", "links"]);
}
