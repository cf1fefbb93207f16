//! Which image an `index.json` entry is, from the annotations producers write.
//!
//! | producer | `org.opencontainers.image.ref.name` | other |
//! |---|---|---|
//! | containerd / buildkit / regctl | tag only (`1.25`) | `io.containerd.image.name` = full ref |
//! | crane, Zarf, umoci, skopeo `oci:` | full ref | |
//! | Hauler | repo path without registry | `io.containerd.image.name` = full ref |
//!
//! The order of precedence is therefore: the containerd name, then a `ref.name`
//! that is a full reference, then a tag-only `ref.name` combined with the
//! containerd name's repository.

use std::collections::BTreeMap;

use oci_client::Reference;

/// The annotation containerd and Hauler write with the full image reference.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI image-spec annotation naming a manifest in an index.
pub const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Hauler's annotation saying what an entry of a haul is.
pub const HAULER_KIND: &str = "kind";
/// Hauler's `kind` of a Helm chart (a Helm OCI artifact).
pub const HAULER_CHART: &str = "dev.hauler/chart";
/// Hauler's `kind` of a file.
pub const HAULER_FILE: &str = "dev.hauler/file";

/// The outcome of naming one index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageName {
    /// A full, normalised reference (`docker.io/library/nginx:1.25`): an
    /// image mirrored under its source name.
    Named(Reference),
    /// Content that lands in one of airlock's areas of the target (packs,
    /// installers, charts) rather than under a mirrored source name.
    Artifact(ArtifactName),
    /// The annotations do not say which image this is.
    Unnamed {
        /// Why not, in words an operator can act on.
        reason: String,
    },
}

/// The areas of a target that hold content other than mirrored images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    /// Palette packs: `<pack-prefix>/spectro-packs/archive/<name>:<version>`,
    /// where Palette's OCI pack registry looks for them.
    Packs,
    /// Installers and other files: `<prefix>/installers/<name>:<version>`.
    Installers,
    /// Helm charts: `<prefix>/charts/<name>:<version>`, for
    /// `helm pull oci://<host>/<prefix>/charts/<name>`.
    Charts,
}

impl Area {
    /// The area's path below the target's prefix.
    pub fn path(self) -> &'static str {
        match self {
            Area::Packs => "spectro-packs/archive",
            Area::Installers => "installers",
            Area::Charts => "charts",
        }
    }
}

/// Where a pack, installer or chart lands: `<repository>:<tag>` below the
/// target's prefix (or, for packs, below the pack prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArtifactName {
    /// The area, which decides the prefix and how the content is listed.
    pub area: Area,
    /// The repository below the prefix (`spectro-packs/archive/nginx`,
    /// `installers/palette-enterprise`): valid path components.
    pub repository: String,
    /// The tag (usually the version), valid per [`is_tag`].
    pub tag: String,
}

impl ArtifactName {
    /// The usual name in `area`: `<area path>/<name>:<tag>`.
    pub fn in_area(area: Area, name: &str, tag: &str) -> Self {
        ArtifactName {
            area,
            repository: format!("{}/{name}", area.path()),
            tag: tag.to_owned(),
        }
    }
}

impl std::fmt::Display for ArtifactName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

/// Turns a version into a tag the way Helm and oras do: `+` (semver build
/// metadata), which tags cannot hold, becomes `_`.
pub fn version_tag(version: &str) -> Option<String> {
    let tag = version.replace('+', "_");
    is_tag(&tag).then_some(tag)
}

/// Resolves the source reference of an index entry from its annotations;
/// the error says, in words an operator can act on, why there is none.
pub fn resolve(annotations: Option<&BTreeMap<String, String>>) -> Result<Reference, String> {
    let empty = BTreeMap::new();
    let annotations = annotations.unwrap_or(&empty);
    let containerd = annotations.get(CONTAINERD_NAME).map(String::as_str);
    let ref_name = annotations.get(OCI_REF_NAME).map(String::as_str);

    if let Some(name) = containerd {
        return match parse_full(name) {
            Ok(mut reference) => {
                // containerd writes the tag into ref.name; honour it if the
                // containerd name itself carried none.
                if let Some(tag) = ref_name.filter(|r| is_tag(r))
                    && name_has_no_tag_or_digest(name)
                {
                    reference = Reference::with_tag(
                        reference.registry().to_owned(),
                        reference.repository().to_owned(),
                        tag.to_owned(),
                    );
                }
                Ok(reference)
            }
            Err(reason) => Err(format!(
                "{CONTAINERD_NAME} {name:?} is not a valid reference: {reason}"
            )),
        };
    }
    match ref_name {
        Some(name) if is_tag(name) => Err(format!(
            "{OCI_REF_NAME} is only a tag ({name:?}) and no {CONTAINERD_NAME} names the image"
        )),
        Some(name) => match parse_full(name) {
            Ok(reference) => Ok(reference),
            Err(reason) => Err(format!(
                "{OCI_REF_NAME} {name:?} is not a valid reference: {reason}"
            )),
        },
        None => Err(format!(
            "neither {CONTAINERD_NAME} nor {OCI_REF_NAME} is set"
        )),
    }
}

impl ImageName {
    /// The name `index.json` annotations give an image.
    pub fn from_annotations(annotations: Option<&BTreeMap<String, String>>) -> Self {
        let area = match annotations
            .and_then(|a| a.get(HAULER_KIND))
            .map(String::as_str)
        {
            Some(HAULER_CHART) => Some(Area::Charts),
            Some(HAULER_FILE) => Some(Area::Installers),
            _ => None,
        };
        if let Some(area) = area {
            return hauled(area, annotations);
        }
        match resolve(annotations) {
            Ok(reference) => ImageName::Named(reference),
            Err(reason) => ImageName::Unnamed { reason },
        }
    }
}

/// A Hauler chart or file lands in airlock's charts or installers area under
/// the last component of its Hauler name (`hauler/rke2-install.sh:latest` →
/// `installers/rke2-install.sh:latest`), so `helm pull` and `oras pull` find
/// it where airlock's own charts and files land.
fn hauled(area: Area, annotations: Option<&BTreeMap<String, String>>) -> ImageName {
    let reference = match resolve(annotations) {
        Ok(reference) => reference,
        Err(reason) => return ImageName::Unnamed { reason },
    };
    let name = reference
        .repository()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let tag = reference.tag().unwrap_or("latest").to_owned();
    if !is_path_component(&name) || !is_tag(&tag) {
        return ImageName::Unnamed {
            reason: format!(
                "Hauler {} {:?} cannot be named {}/{name}:{tag} (not a valid repository name and tag)",
                area.path(),
                reference.whole(),
                area.path()
            ),
        };
    }
    ImageName::Artifact(ArtifactName::in_area(area, &name, &tag))
}

/// The subject digest's hex of a tag of the tag scheme: the referrers tag
/// itself (`sha256-<hex>`) or cosign's tags beside it (`sha256-<hex>.sig`,
/// `.att`, `.sbom`).
pub fn subject_of_tag(tag: &str) -> Option<&str> {
    let rest = tag.strip_prefix("sha256-")?;
    let hex = rest.split_once('.').map_or(rest, |(hex, _)| hex);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Parses a reference the way Docker does, normalising Docker Hub short names
/// (`nginx:1.25` → `docker.io/library/nginx:1.25`).
pub fn parse_full(name: &str) -> Result<Reference, String> {
    let reference = name.parse::<Reference>().map_err(|e| e.to_string())?;
    // The parser accepts some names Docker refuses (upper case in a Docker
    // Hub repository, `AA/6.1`), whose normalised form then does not parse:
    // a name airlock would push to must survive its own normalisation.
    let whole = reference.whole();
    whole
        .parse::<Reference>()
        .map_err(|e| format!("{name:?} normalises to {whole:?}, which is not a reference: {e}"))?;
    Ok(reference)
}

/// A repository path component per the distribution spec:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub fn is_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes
            .iter()
            .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
}

/// A tag per the distribution spec: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_tag(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn name_has_no_tag_or_digest(name: &str) -> bool {
    let last = name.rsplit('/').next().unwrap_or(name);
    !last.contains(':') && !name.contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_does_not_survive_normalisation_is_refused() {
        // Found by the `reference` fuzz target: accepted by the parser,
        // normalised to docker.io/AA/6.1:latest, which does not parse.
        let error = parse_full("AA/6.1").expect_err("upper-case Docker Hub repository");
        assert!(error.contains("docker.io/AA/6.1:latest"), "{error}");
        assert_eq!(
            parse_full("nginx:1.25").expect("valid").whole(),
            "docker.io/library/nginx:1.25"
        );
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn named(a: &BTreeMap<String, String>) -> String {
        match resolve(Some(a)) {
            Ok(r) => r.whole(),
            Err(reason) => panic!("unnamed: {reason}"),
        }
    }

    #[test]
    fn containerd_export_uses_the_containerd_name() {
        let a = annotations(&[
            (CONTAINERD_NAME, "quay.io/acme/app:1.0"),
            (OCI_REF_NAME, "1.0"),
        ]);
        assert_eq!(named(&a), "quay.io/acme/app:1.0");
    }

    #[test]
    fn tag_only_ref_name_completes_an_untagged_containerd_name() {
        let a = annotations(&[
            (CONTAINERD_NAME, "docker.io/library/nginx"),
            (OCI_REF_NAME, "1.25"),
        ]);
        assert_eq!(named(&a), "docker.io/library/nginx:1.25");
    }

    #[test]
    fn full_ref_name_is_used_and_docker_hub_short_names_are_normalised() {
        let a = annotations(&[(OCI_REF_NAME, "nginx:1.25")]);
        assert_eq!(named(&a), "docker.io/library/nginx:1.25");
        let hauler = annotations(&[(OCI_REF_NAME, "library/nginx:1.25")]);
        assert_eq!(named(&hauler), "docker.io/library/nginx:1.25");
        let crane = annotations(&[(OCI_REF_NAME, "registry.k8s.io/pause:3.9")]);
        assert_eq!(named(&crane), "registry.k8s.io/pause:3.9");
    }

    #[test]
    fn hauler_charts_and_files_land_in_their_areas() {
        let chart = annotations(&[
            (OCI_REF_NAME, "hauler/podinfo:6.5.0"),
            (HAULER_KIND, HAULER_CHART),
        ]);
        assert_eq!(
            ImageName::from_annotations(Some(&chart)),
            ImageName::Artifact(ArtifactName::in_area(Area::Charts, "podinfo", "6.5.0"))
        );
        let file = annotations(&[
            (OCI_REF_NAME, "hauler/install.sh:latest"),
            (HAULER_KIND, HAULER_FILE),
        ]);
        assert_eq!(
            ImageName::from_annotations(Some(&file)),
            ImageName::Artifact(ArtifactName::in_area(
                Area::Installers,
                "install.sh",
                "latest"
            ))
        );
    }

    #[test]
    fn tag_only_without_containerd_name_is_unnamed() {
        let a = annotations(&[(OCI_REF_NAME, "1.25")]);
        assert!(resolve(Some(&a)).is_err());
        assert!(resolve(None).is_err());
    }
}
