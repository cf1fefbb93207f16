//! Installers and other files under `files/` land as oras-style artifacts:
//! the oras Python client pulls them back byte for byte, skopeo shows their
//! artifact type, title and empty config, and bad files or sidecars are
//! refused with nothing pushed.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::airlock;
use support::bundle::{BuiltBundle, BundleBuilder, pseudo_random_bytes};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::{skopeo, tools};

const PREFIX: &str = "mirror";
const ISO: &str = "files/palette-enterprise-4.6.0.iso";
const ISO_BYTES: usize = 8 << 20;
const CLI: &str = "files/tools/edge-cli";
const EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

const CLI_SIDECAR: &str = "\
repository: installers/edge/cli
tag: v1.2.0
artifactType: application/vnd.acme.edge.cli.v1
mediaType: application/x-executable
annotations:
  org.opencontainers.image.description: Edge command line
";

fn import_command(bundle: &BuiltBundle, target: &str, extra: &[&str]) -> Command {
    let mut command = airlock();
    command
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--registry", target, "--quiet"])
        .args(extra);
    command
}

fn import_to(bundle: &BuiltBundle, target: &str, extra: &[&str]) -> Output {
    import_command(bundle, target, extra)
        .output()
        .expect("run airlock import")
}

fn import(bundle: &BuiltBundle, registry: &Registry) -> Output {
    import_to(
        bundle,
        &format!("{}/{PREFIX}", registry.host()),
        &["--plain-http"],
    )
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "airlock import failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn bundle_with(name: &str, files: &[(&str, &[u8])]) -> BuiltBundle {
    let key = TestKey::generate(KeyKind::EcP256);
    files
        .iter()
        .fold(BundleBuilder::new(name), |b, (path, bytes)| {
            b.file(path, bytes)
        })
        .build(&key)
}

/// Pulls `reference` (below the registry host) with the oras Python client
/// into `outdir`; returns the paths it reports.
fn oras_pull(registry: &Registry, reference: &str, outdir: &Path) -> Vec<String> {
    let script = "\
import sys, oras.client
client = oras.client.OrasClient(hostname=sys.argv[1], insecure=True)
for path in client.pull(target=sys.argv[2], outdir=sys.argv[3]):
    print(path)
";
    let out = tools::run(
        tools::command("python3").args([
            "-c",
            script,
            &registry.host(),
            &format!("{}/{reference}", registry.host()),
            &outdir.display().to_string(),
        ]),
        &format!("pull {reference} with the oras Python client"),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn manifest(registry: &Registry, reference: &str) -> Value {
    serde_json::from_slice(&skopeo::inspect_raw(registry, reference)).expect("manifest JSON")
}

#[test]
fn installers_are_pulled_back_by_oras_byte_for_byte() {
    let iso = pseudo_random_bytes(46, ISO_BYTES);
    let cli = pseudo_random_bytes(7, 300_000);
    let bundle = bundle_with(
        "installers",
        &[
            (ISO, &iso),
            (CLI, &cli),
            (&format!("{CLI}.artifact.yaml"), CLI_SIDECAR.as_bytes()),
        ],
    );
    let registry = Registry::start();
    // No scratch space: the import runs with an empty TMPDIR that must stay
    // empty, the files streaming from the bundle to the registry.
    let tmp = tempfile::tempdir().expect("tempdir");
    let output = import_command(
        &bundle,
        &format!("{}/{PREFIX}", registry.host()),
        &["--plain-http"],
    )
    .env("TMPDIR", tmp.path())
    .output()
    .expect("run airlock import");
    assert_success(&output);
    assert_eq!(
        std::fs::read_dir(tmp.path()).expect("list TMPDIR").count(),
        0
    );

    let out = tempfile::tempdir().expect("tempdir");
    let iso_ref = format!("{PREFIX}/installers/palette-enterprise:4.6.0");
    let pulled = oras_pull(&registry, &iso_ref, &out.path().join("iso"));
    assert_eq!(pulled.len(), 1, "{pulled:?}");
    assert!(
        pulled[0].ends_with("palette-enterprise-4.6.0.iso"),
        "{pulled:?}"
    );
    assert!(std::fs::read(&pulled[0]).expect("read the pulled ISO") == iso);

    let cli_ref = format!("{PREFIX}/installers/edge/cli:v1.2.0");
    let pulled = oras_pull(&registry, &cli_ref, &out.path().join("cli"));
    assert_eq!(pulled.len(), 1, "{pulled:?}");
    assert!(pulled[0].ends_with("edge-cli"), "{pulled:?}");
    assert!(std::fs::read(&pulled[0]).expect("read the pulled CLI") == cli);

    let iso_manifest = manifest(&registry, &iso_ref);
    assert_eq!(
        iso_manifest["artifactType"], "application/vnd.airlock.file.v1",
        "{iso_manifest}"
    );
    assert_eq!(
        iso_manifest["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(iso_manifest["config"]["digest"], EMPTY_CONFIG_DIGEST);
    assert_eq!(iso_manifest["config"]["size"], 2);
    let layer = &iso_manifest["layers"][0];
    assert_eq!(layer["mediaType"], "application/octet-stream");
    assert_eq!(layer["size"], ISO_BYTES);
    assert_eq!(
        layer["annotations"]["org.opencontainers.image.title"],
        "palette-enterprise-4.6.0.iso"
    );
    assert_eq!(
        iso_manifest["annotations"]["org.opencontainers.image.version"],
        "4.6.0"
    );

    let cli_manifest = manifest(&registry, &cli_ref);
    assert_eq!(
        cli_manifest["artifactType"],
        "application/vnd.acme.edge.cli.v1"
    );
    assert_eq!(
        cli_manifest["layers"][0]["mediaType"],
        "application/x-executable"
    );
    assert_eq!(
        cli_manifest["annotations"]["org.opencontainers.image.description"],
        "Edge command line"
    );
    assert_eq!(
        cli_manifest["annotations"]["org.opencontainers.image.title"],
        "edge-cli"
    );

    // Importing again writes nothing.
    let before = registry.settled_requests().len();
    assert_success(&import(&bundle, &registry));
    let writes = registry.settled_writes_since(before);
    assert!(writes.is_empty(), "a second import wrote: {writes:?}");
}

#[test]
fn an_installer_in_an_oci_layout_target_is_named_by_its_repository_and_tag() {
    let iso = pseudo_random_bytes(9, 100_000);
    let bundle = bundle_with("to-layout", &[(ISO, &iso)]);
    let mirror = tempfile::tempdir().expect("tempdir");

    assert_success(&import_to(
        &bundle,
        &format!("oci:{}", mirror.path().display()),
        &[],
    ));

    let index: Value = serde_json::from_slice(
        &std::fs::read(mirror.path().join("index.json")).expect("read index.json"),
    )
    .expect("index.json is JSON");
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert_eq!(names, vec!["installers/palette-enterprise:4.6.0"]);
    let raw = skopeo::inspect_oci_layout(mirror.path(), "installers/palette-enterprise:4.6.0");
    let manifest: Value = serde_json::from_slice(&raw).expect("manifest JSON");
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest");
    let stored = mirror
        .path()
        .join("blobs/sha256")
        .join(layer_digest.trim_start_matches("sha256:"));
    assert!(std::fs::read(stored).expect("read the layer blob") == iso);
}

/// Imports `files`, expecting exit 3, one line on stderr naming `item` and
/// holding `reason`, and no write to the registry.
fn assert_rejected(files: &[(&str, &[u8])], item: &str, reason: &str) {
    let bundle = bundle_with("bad-files", files);
    let registry = Registry::start();
    let output = import(&bundle, &registry);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "expected exit 3: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line reason, got:\n{stderr}");
    let bundle_name = bundle.zst().display().to_string();
    for fragment in [bundle_name.as_str(), item, reason] {
        assert!(
            lines[0].contains(fragment),
            "the reason should mention {fragment:?}: {}",
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
fn a_file_without_a_derivable_name_is_refused() {
    assert_rejected(
        &[(ISO, b"iso"), ("files/README", b"read me\n")],
        "files/README",
        "no repository and version can be derived",
    );
}

#[test]
fn a_sidecar_with_an_invalid_tag_is_refused() {
    assert_rejected(
        &[
            ("files/tool", b"tool"),
            (
                "files/tool.artifact.yaml",
                b"repository: installers/tool\ntag: \"not a tag!\"\n",
            ),
        ],
        "files/tool.artifact.yaml",
        "is not a valid tag",
    );
}

#[test]
fn a_sidecar_without_its_file_is_refused() {
    assert_rejected(
        &[
            (ISO, b"iso"),
            (
                "files/gone-1.0.bin.artifact.yaml",
                b"repository: installers/gone\ntag: \"1.0\"\n",
            ),
        ],
        "files/gone-1.0.bin.artifact.yaml",
        "not in the bundle",
    );
}

#[test]
fn a_sidecar_that_is_not_yaml_is_refused() {
    assert_rejected(
        &[
            ("files/tool-1.0.bin", b"tool"),
            (
                "files/tool-1.0.bin.artifact.yaml",
                b"repository: installers/tool\ntag: \"1.0\n\t- [\n",
            ),
        ],
        "files/tool-1.0.bin.artifact.yaml",
        "is not a valid sidecar",
    );
}

#[test]
fn a_sidecar_tag_yaml_reads_as_a_number_is_refused_with_the_fix() {
    assert_rejected(
        &[
            ("files/tool", b"tool"),
            (
                "files/tool.artifact.yaml",
                b"repository: installers/tool\ntag: 1.10\n",
            ),
        ],
        "files/tool.artifact.yaml",
        "put the value in quotes",
    );
}

#[test]
fn two_files_landing_at_one_tag_are_refused_naming_both() {
    assert_rejected(
        &[
            (ISO, b"iso"),
            ("files/palette-enterprise-4.6.0.iso.sha256", b"checksum"),
        ],
        "installers/palette-enterprise:4.6.0",
        "files/palette-enterprise-4.6.0.iso.sha256",
    );
}
