//! A folder of downloaded bundles, verified and imported in one command, as
//! Artifact Studio's download instructions lay them out: one line per bundle,
//! a summary, the worst exit code, and one bad bundle never stopping the rest.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::airlock;
use support::bundle::{BuiltBundle, BundleBuilder, Image, Naming};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;
use support::skopeo;

/// A download folder: five pack-named bundles, signed under Artifact
/// Studio's and airlock's names; one tampered after signing, one whose
/// signature never arrived.
struct Downloads {
    dir: tempfile::TempDir,
    key: TestKey,
    good: Vec<BuiltBundle>,
    tampered: BuiltBundle,
    unsigned: BuiltBundle,
}

const TAMPERED: &str = "csi-aws-ebs-1.41.0";
const UNSIGNED: &str = "kubernetes-1.32.3";

fn pack_bundle(key: &TestKey, name: &str) -> BuiltBundle {
    BundleBuilder::new(name)
        .image(Image::new(&format!("quay.io/spectro/{name}:1.0")).naming(Naming::ContainerdName))
        .build(key)
}

fn downloads() -> Downloads {
    let key = TestKey::generate(KeyKind::EcP256);
    let dir = tempfile::tempdir().expect("download dir");
    let mut good = Vec::new();
    for (name, signature_suffix) in [
        ("cni-calico-3.29.2", ".tar.sig.bin"),
        ("ubuntu-aws-22.04", ".sig.bin"),
        ("spectro-proxy-1.5.5", ".tar.sig.bin"),
    ] {
        let built = pack_bundle(&key, name);
        std::fs::copy(built.zst(), dir.path().join(format!("{name}.zst"))).expect("copy");
        std::fs::copy(
            built.sig(),
            dir.path().join(format!("{name}{signature_suffix}")),
        )
        .expect("copy");
        good.push(built);
    }
    let tampered = pack_bundle(&key, TAMPERED);
    tampered.tamper();
    std::fs::copy(tampered.zst(), dir.path().join(format!("{TAMPERED}.zst"))).expect("copy");
    std::fs::copy(
        tampered.sig(),
        dir.path().join(format!("{TAMPERED}.tar.sig.bin")),
    )
    .expect("copy");
    let unsigned = pack_bundle(&key, UNSIGNED);
    std::fs::copy(unsigned.zst(), dir.path().join(format!("{UNSIGNED}.zst"))).expect("copy");
    // What else lands in a download folder is ignored.
    std::fs::copy(key.public_pem(), dir.path().join("public_key.pem")).expect("copy");
    Downloads {
        dir,
        key,
        good,
        tampered,
        unsigned,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn verify(args: &[&Path], key: &Path, extra: &[&str]) -> Output {
    airlock()
        .arg("verify")
        .args(args)
        .arg("--public-key")
        .arg(key)
        .args(extra)
        .output()
        .expect("run airlock verify")
}

#[test]
fn verify_a_folder_prints_a_line_per_bundle_and_a_summary_and_exits_3() {
    let downloads = downloads();
    let output = verify(&[downloads.dir.path()], downloads.key.public_pem(), &[]);
    let stdout = text(&output.stdout);
    println!("$ airlock verify DIR\n{stdout}{}", text(&output.stderr));
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    // Sorted by name: cni, csi (tampered), kubernetes (unsigned), spectro, ubuntu.
    let verdicts: Vec<(&str, &str)> = lines[..5]
        .iter()
        .map(|line| {
            let mut words = line.split_whitespace();
            let file = words.next().unwrap_or_default();
            let name = Path::new(file)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            (name, words.next().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("cni-calico-3.29.2.zst", "verified"),
            ("csi-aws-ebs-1.41.0.zst", "FAILED"),
            ("kubernetes-1.32.3.zst", "UNPAIRED"),
            ("spectro-proxy-1.5.5.zst", "verified"),
            ("ubuntu-aws-22.04.zst", "verified"),
        ]
    );
    let key = downloads.key.public_pem().display().to_string();
    assert!(
        lines[0].contains(&key) && lines[0].contains("ECDSA P-256"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with("with cni-calico-3.29.2.tar.sig.bin")
            && lines[4].ends_with("with ubuntu-aws-22.04.sig.bin"),
        "{stdout}"
    );
    assert!(lines[1].contains("does not verify"), "{}", lines[1]);
    assert!(
        lines[2].contains("kubernetes-1.32.3.tar.sig.bin"),
        "{}",
        lines[2]
    );
    assert!(
        lines[5].starts_with("5 bundle(s): 3 verified, 1 failed, 1 without a signature"),
        "{}",
        lines[5]
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(TAMPERED) && stderr.contains(UNSIGNED),
        "the failures are named: {stderr}"
    );
}

#[test]
fn verify_json_is_an_array_of_the_same_lines() {
    let downloads = downloads();
    let output = verify(
        &[downloads.dir.path()],
        downloads.key.public_pem(),
        &["--output", "json"],
    );
    assert_eq!(output.status.code(), Some(3));
    let lines: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let lines = lines.as_array().expect("an array");
    assert_eq!(lines.len(), 5);
    let verdicts: Vec<&str> = lines
        .iter()
        .map(|l| l["verdict"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        verdicts,
        ["verified", "failed", "unpaired", "verified", "verified"]
    );
    let cni = std::fs::read(downloads.good[0].zst()).expect("read the bundle");
    assert_eq!(
        lines[0]["digest"].as_str(),
        Some(skopeo::sha256_digest(&cni).as_str())
    );
    assert!(lines[0]["verifiedBy"]["fingerprint"].is_string());
    assert!(
        lines[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("does not verify"))
    );
}

#[test]
fn a_signature_without_its_bundle_is_listed_and_fails_the_run() {
    let downloads = downloads();
    std::fs::write(downloads.dir.path().join("orphan-1.0.sig.bin"), b"x").expect("write");
    let good = downloads.dir.path().join("cni-calico-3.29.2.zst");
    let output = verify(
        &[&good, downloads.dir.path()],
        downloads.key.public_pem(),
        &[],
    );
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert_eq!(stdout.lines().count(), 7, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("orphan-1.0.sig.bin") && l.contains("orphan-1.0.zst")),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 signature(s) without a bundle"),
        "{stdout}"
    );
}

#[test]
fn several_good_bundles_verify_with_exit_0_and_recursion_is_opt_in() {
    let downloads = downloads();
    let nested = downloads.dir.path().join("nested");
    std::fs::create_dir(&nested).expect("mkdir");
    for name in ["cni-calico-3.29.2.zst", "cni-calico-3.29.2.tar.sig.bin"] {
        std::fs::rename(downloads.dir.path().join(name), nested.join(name)).expect("move");
    }
    let files: Vec<_> = ["ubuntu-aws-22.04.zst", "spectro-proxy-1.5.5.zst"]
        .iter()
        .map(|n| downloads.dir.path().join(n))
        .collect();
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let output = verify(&refs, downloads.key.public_pem(), &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).lines().count(), 3);

    let flat = verify(&[downloads.dir.path()], downloads.key.public_pem(), &[]);
    assert!(!text(&flat.stdout).contains("cni-calico"));
    let deep = verify(
        &[downloads.dir.path()],
        downloads.key.public_pem(),
        &["--recursive"],
    );
    let stdout = text(&deep.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("nested/cni-calico-3.29.2.zst") && l.contains("verified")),
        "{stdout}"
    );
}

#[test]
fn import_a_folder_imports_the_good_bundles_and_names_the_others() {
    let downloads = downloads();
    let registry = Registry::start();
    let output = airlock()
        .arg("import")
        .arg(downloads.dir.path())
        .arg("--public-key")
        .arg(downloads.key.public_pem())
        .args(["--registry", &format!("{}/mirror", registry.host())])
        .args(["--plain-http", "--quiet"])
        .env(
            "DOCKER_CONFIG",
            downloads.dir.path().join("no-docker-config"),
        )
        .output()
        .expect("run airlock import");
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    println!("$ airlock import DIR\n{stdout}{stderr}");
    assert_eq!(output.status.code(), Some(3), "{stdout}{stderr}");
    for built in &downloads.good {
        let image = &built.images()[0];
        assert_eq!(
            skopeo::manifest_digest(&registry, &format!("mirror/{}", image.full_ref)),
            image.digest,
            "{}",
            built.name()
        );
    }
    for refused in [&downloads.tampered, &downloads.unsigned] {
        let image = &refused.images()[0];
        assert!(
            !skopeo::exists(&registry, &format!("mirror/{}", image.full_ref)),
            "{} must not be pushed",
            refused.name()
        );
    }
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("2 of 5") && last.contains(TAMPERED) && last.contains(UNSIGNED),
        "{stderr}"
    );
    // One table: a header, a row per bundle, a total.
    assert_eq!(stdout.lines().count(), 7, "{stdout}");
    assert!(stdout.contains("3 of 5 bundle(s) imported"), "{stdout}");
    for line in stdout
        .lines()
        .filter(|l| l.contains(TAMPERED) || l.contains(UNSIGNED))
    {
        assert!(line.contains("FAILED"), "{line}");
    }
}

#[test]
fn import_json_of_a_folder_is_an_array_of_rows() {
    let downloads = downloads();
    let registry = Registry::start();
    let output = airlock()
        .arg("import")
        .arg(downloads.dir.path())
        .arg("--public-key")
        .arg(downloads.key.public_pem())
        .args(["--registry", &format!("{}/mirror", registry.host())])
        .args(["--plain-http", "--quiet", "--output", "json"])
        .env(
            "DOCKER_CONFIG",
            downloads.dir.path().join("no-docker-config"),
        )
        .output()
        .expect("run airlock import");
    assert_eq!(output.status.code(), Some(3));
    let rows: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let rows = rows.as_array().expect("an array");
    let imported: Vec<bool> = rows.iter().map(|r| r["imported"] == true).collect();
    assert_eq!(imported, [true, false, false, true, true]);
    assert_eq!(rows[0]["images"], 1);
    assert!(
        rows[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not verify"))
    );
}

#[test]
fn inspect_takes_a_folder_too() {
    let downloads = downloads();
    let output = airlock()
        .arg("inspect")
        .arg(downloads.dir.path())
        .args(["--output", "json"])
        .output()
        .expect("run airlock inspect");
    // Unverified inspection reads every bundle; the tampered one is corrupt.
    let inspections: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let inspections = inspections.as_array().expect("an array");
    assert!(inspections.len() >= 4, "{inspections:?}");
    assert!(inspections.iter().any(|i| {
        i["bundle"]
            .as_str()
            .is_some_and(|b| b.ends_with("kubernetes-1.32.3.zst"))
    }));
    let verified = airlock()
        .arg("inspect")
        .arg(downloads.dir.path())
        .arg("--public-key")
        .arg(downloads.key.public_pem())
        .output()
        .expect("run airlock inspect");
    assert_eq!(verified.status.code(), Some(3));
    let stdout = text(&verified.stdout);
    assert_eq!(
        stdout.matches("Signature: verified by").count(),
        3,
        "{stdout}"
    );
}
