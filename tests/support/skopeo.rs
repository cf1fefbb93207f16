//! `skopeo`, an independent client, to read back what airlock pushed and to
//! check that the bundles the tests build are what real tools accept.
//!
//! Every call passes `--insecure-policy` (no dependence on the machine's
//! `/etc/containers/policy.json`) and the registry's transport options:
//! `--tls-verify=false` for plain HTTP, `--cert-dir` with the registry's CA for
//! TLS, `--creds` for basic auth.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use super::registry::Registry;
use super::tools;

/// Which side of a `skopeo copy` the registry options are for.
#[derive(Clone, Copy)]
enum Side {
    /// `skopeo inspect` and friends: `--tls-verify`, `--cert-dir`, `--creds`.
    Only,
    /// `--src-tls-verify`, `--src-cert-dir`, `--src-creds`.
    Src,
    /// `--dest-tls-verify`, `--dest-cert-dir`, `--dest-creds`.
    Dest,
}

fn skopeo() -> Command {
    let mut cmd = tools::command("skopeo");
    cmd.arg("--insecure-policy");
    cmd
}

fn registry_args(cmd: &mut Command, registry: &Registry, side: Side) {
    let prefix = match side {
        Side::Only => "--",
        Side::Src => "--src-",
        Side::Dest => "--dest-",
    };
    if registry.is_tls() {
        cmd.arg(format!("{prefix}tls-verify=true"));
        cmd.arg(format!("{prefix}cert-dir"))
            .arg(registry.cert_dir());
    } else {
        cmd.arg(format!("{prefix}tls-verify=false"));
    }
    if let Some((user, password)) = registry.credentials() {
        cmd.arg(format!("{prefix}creds"))
            .arg(format!("{user}:{password}"));
    } else {
        cmd.arg(format!("{prefix}no-creds"));
    }
}

/// `docker://HOST/REPO:TAG` (or `REPO@DIGEST`) on `registry`.
pub fn docker_ref(registry: &Registry, repo_and_tag: &str) -> String {
    format!("docker://{}/{repo_and_tag}", registry.host())
}

/// The manifest bytes exactly as the registry serves them
/// (`skopeo inspect --raw docker://HOST/REPO:TAG`).
pub fn inspect_raw(registry: &Registry, repo_and_tag: &str) -> Vec<u8> {
    let mut cmd = skopeo();
    cmd.args(["inspect", "--raw"]);
    registry_args(&mut cmd, registry, Side::Only);
    cmd.arg(docker_ref(registry, repo_and_tag));
    tools::run(
        &mut cmd,
        &format!("read the manifest of {repo_and_tag} with skopeo inspect --raw"),
    )
    .stdout
}

/// Whether skopeo finds `repo_and_tag` in the registry at all.
pub fn exists(registry: &Registry, repo_and_tag: &str) -> bool {
    let mut cmd = skopeo();
    cmd.args(["inspect", "--raw"]);
    registry_args(&mut cmd, registry, Side::Only);
    cmd.arg(docker_ref(registry, repo_and_tag));
    tools::output(&mut cmd, &format!("look for {repo_and_tag} with skopeo"))
        .status
        .success()
}

/// `sha256:<hex>` of the raw manifest bytes the registry serves.
pub fn manifest_digest(registry: &Registry, repo_and_tag: &str) -> String {
    sha256_digest(&inspect_raw(registry, repo_and_tag))
}

/// `skopeo copy --all --preserve-digests docker://HOST/REPO:TAG oci:DIR:NAME`,
/// where NAME is the tag of `repo_and_tag` (`latest` for a digest reference):
/// the image with every platform, digests unchanged, into an OCI layout.
pub fn copy_to_oci_dir(registry: &Registry, repo_and_tag: &str, dir: &Path) {
    let name = tag_of(repo_and_tag).unwrap_or("latest");
    let mut cmd = skopeo();
    cmd.args(["copy", "--all", "--preserve-digests", "--quiet"]);
    registry_args(&mut cmd, registry, Side::Src);
    cmd.arg(docker_ref(registry, repo_and_tag));
    cmd.arg(format!("oci:{}:{name}", dir.display()));
    tools::run(
        &mut cmd,
        &format!(
            "copy {repo_and_tag} into the OCI layout {} with skopeo",
            dir.display()
        ),
    );
}

/// `skopeo copy [--all] --preserve-digests oci:DIR:REF_NAME docker://HOST/REPO:TAG`:
/// pushes an image from an OCI layout as an independent producer would.
/// `--preserve-digests` stops skopeo from compressing uncompressed layers
/// (which it does by default when writing to a registry) so the manifest
/// arrives byte for byte.
pub fn push_oci_layout(
    registry: &Registry,
    layout_dir: &Path,
    ref_name: &str,
    repo_and_tag: &str,
    all: bool,
) {
    let mut cmd = skopeo();
    cmd.args(["copy", "--preserve-digests", "--quiet"]);
    if all {
        cmd.arg("--all");
    }
    registry_args(&mut cmd, registry, Side::Dest);
    cmd.arg(format!("oci:{}:{ref_name}", layout_dir.display()));
    cmd.arg(docker_ref(registry, repo_and_tag));
    tools::run(
        &mut cmd,
        &format!(
            "push oci:{}:{ref_name} to {repo_and_tag} with skopeo",
            layout_dir.display()
        ),
    );
}

/// The manifest named `ref_name` in an OCI layout directory, raw
/// (`skopeo inspect --raw oci:DIR:REF`).
pub fn inspect_oci_layout(dir: &Path, ref_name: &str) -> Vec<u8> {
    tools::run(
        skopeo()
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:{ref_name}", dir.display())),
        &format!(
            "read the manifest {ref_name} of the OCI layout {} with skopeo",
            dir.display()
        ),
    )
    .stdout
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The tag of `repo:tag` (not confused by a registry port), if it has one.
fn tag_of(reference: &str) -> Option<&str> {
    if reference.contains('@') {
        return None;
    }
    let last = reference.rsplit('/').next().unwrap_or(reference);
    last.split_once(':').map(|(_, tag)| tag)
}
