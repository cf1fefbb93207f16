//! Lists the packs a target already holds in its pack area
//! (`<pack-prefix>/spectro-packs/archive/<name>:<version>`), with the
//! metadata their manifest annotations carry, for `GET /api/v1/packs`.
//!
//! A registry is read through `/v2/_catalog` (paginated with `n`/`last`),
//! each pack repository's `/tags/list`, and each tag's manifest; an `oci:`
//! layout through its `index.json` and manifest blobs. Every read is bounded
//! (the `MAX_*` constants below); a listing cut short says so with
//! `truncated`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Result;
use super::registry::RegistryClient;
use crate::digest::Digest;
use crate::plan::{PlanOptions, Target};
use crate::read::names::is_path_component;
use crate::read::{Area, ArtifactName, Pack, PackMetadata};

/// Repository names asked for per `/v2/_catalog` page.
pub const CATALOG_PAGE: usize = 1000;
/// Repository names read from `/v2/_catalog` at most: enough for a registry
/// mirroring a full Palette release several times over, small enough that a
/// request stays within seconds.
pub const MAX_CATALOG_REPOSITORIES: usize = 20_000;
/// Pack repositories (one per pack name) scanned at most.
pub const MAX_PACK_REPOSITORIES: usize = 1000;
/// Tags (pack versions) read per pack repository at most.
pub const MAX_TAGS_PER_PACK: usize = 200;
/// Manifests read per listing at most.
pub const MAX_PACK_MANIFESTS: usize = 5000;
/// The bounds of one listing (defaults: the constants above).
#[derive(Debug, Clone, Copy)]
pub struct CatalogLimits {
    /// Repository names asked for per `/v2/_catalog` page.
    pub page: usize,
    /// Repository names read from `/v2/_catalog` at most.
    pub catalog_repositories: usize,
    /// Pack repositories scanned at most.
    pub pack_repositories: usize,
    /// Tags read per pack repository at most.
    pub tags_per_pack: usize,
    /// Manifests read at most.
    pub manifests: usize,
}

impl Default for CatalogLimits {
    fn default() -> Self {
        CatalogLimits {
            page: CATALOG_PAGE,
            catalog_repositories: MAX_CATALOG_REPOSITORIES,
            pack_repositories: MAX_PACK_REPOSITORIES,
            tags_per_pack: MAX_TAGS_PER_PACK,
            manifests: MAX_PACK_MANIFESTS,
        }
    }
}

/// Largest manifest read; registries need accept no bigger one.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// One pack the target holds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CatalogPack {
    /// `pack.json` name (the repository's last component when the manifest
    /// does not say).
    pub name: String,
    /// `pack.json` version (the tag when the manifest does not say).
    pub version: String,
    /// The tag.
    pub tag: String,
    /// Where it is: `<host>/<repository>:<tag>`, or `<repository>:<tag>` in
    /// a layout.
    pub reference: String,
    /// The manifest digest, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// What its manifest annotations say about it.
    #[serde(flatten)]
    pub metadata: PackMetadata,
}

/// What the listing found.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PackCatalog {
    /// The packs, by name then tag.
    pub packs: Vec<CatalogPack>,
    /// Whether a bound was reached, so packs may be missing.
    pub truncated: bool,
}

/// The filters of `GET /api/v1/packs`, as Artifact Studio's catalog offers
/// them. Text comparisons ignore case.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackFilter {
    /// The layer (`kernel`, `os`, `k8s`, `cni`, `csi`, `addon`).
    pub layer: Option<String>,
    /// A cloud type; packs for `all` clouds match every cloud type.
    pub cloud_type: Option<String>,
    /// An architecture the pack supports.
    pub architecture: Option<String>,
    /// FIPS-compliant packs only (`true`), or only the others (`false`).
    pub fips: Option<bool>,
    /// A substring of the name or display name.
    pub q: Option<String>,
}

impl PackFilter {
    /// Whether `pack` passes every filter given.
    pub fn matches(&self, pack: &CatalogPack) -> bool {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let name = &pack.name;
        let pack = &pack.metadata;
        let layer = self
            .layer
            .as_deref()
            .is_none_or(|l| pack.layer.as_deref().is_some_and(|p| same(p, l)));
        let cloud = self.cloud_type.as_deref().is_none_or(|c| {
            pack.cloud_types
                .iter()
                .any(|p| same(p, c) || same(p, "all"))
        });
        let architecture = self
            .architecture
            .as_deref()
            .is_none_or(|a| pack.architectures.iter().any(|p| same(p, a)));
        let fips = self
            .fips
            .is_none_or(|wanted| pack.fips.unwrap_or(false) == wanted);
        let text = self.q.as_deref().is_none_or(|q| {
            let q = q.to_ascii_lowercase();
            name.to_ascii_lowercase().contains(&q)
                || pack
                    .display_name
                    .as_deref()
                    .is_some_and(|d| d.to_ascii_lowercase().contains(&q))
        });
        layer && cloud && architecture && fips && text
    }
}

/// The repository path of the pack area: `[<pack prefix>/]spectro-packs/archive`.
pub fn pack_area(target: &Target, options: &PlanOptions) -> String {
    let prefix = match target {
        Target::Registry { prefix, .. } => options.pack_prefix.as_deref().unwrap_or(prefix),
        Target::Layout { .. } => "",
    };
    if prefix.is_empty() {
        Area::Packs.path().to_owned()
    } else {
        format!("{prefix}/{}", Area::Packs.path())
    }
}

/// Lists the packs of a registry target through `client`.
pub async fn registry_packs(
    client: &RegistryClient,
    target: &Target,
    options: &PlanOptions,
    limits: CatalogLimits,
) -> Result<PackCatalog> {
    let page_size = limits.page.max(1);
    let area = format!("{}/", pack_area(target, options));
    let mut catalog = PackCatalog::default();
    let mut repositories = Vec::new();
    let mut last: Option<String> = None;
    let mut read = 0;
    loop {
        let page = client.catalog_page(page_size, last.as_deref()).await?;
        read += page.len();
        let full = page.len() >= page_size;
        last = page.last().cloned();
        repositories.extend(
            page.into_iter()
                .filter(|r| r.strip_prefix(&area).is_some_and(is_path_component)),
        );
        if !full || last.is_none() {
            break;
        }
        if read >= limits.catalog_repositories {
            catalog.truncated = true;
            break;
        }
    }
    if repositories.len() > limits.pack_repositories {
        repositories.truncate(limits.pack_repositories);
        catalog.truncated = true;
    }
    let mut manifests = 0;
    'repositories: for repository in repositories {
        let mut tags = client.tags(&repository, limits.tags_per_pack).await?;
        if tags.len() >= limits.tags_per_pack {
            catalog.truncated = true;
        }
        tags.sort();
        for tag in tags {
            if manifests >= limits.manifests {
                catalog.truncated = true;
                break 'repositories;
            }
            manifests += 1;
            let Some(fetched) = client.manifest(&repository, &tag).await? else {
                continue;
            };
            let reference = format!("{}/{repository}:{tag}", client.host());
            catalog.packs.push(describe(
                &repository,
                &tag,
                reference,
                fetched.digest,
                &fetched.bytes,
            ));
        }
    }
    Ok(catalog)
}

/// Lists the packs of an `oci:` layout target: `index.json` entries named
/// `spectro-packs/archive/<name>:<tag>`.
pub fn layout_packs(dir: &Path) -> Result<PackCatalog> {
    let entries = super::repositories::layout_entries(dir)?;
    let area = format!("{}/", Area::Packs.path());
    let mut catalog = PackCatalog::default();
    for (name, digest) in entries {
        let Some((repository, tag)) = name.rsplit_once(':') else {
            continue;
        };
        if !repository
            .strip_prefix(&area)
            .is_some_and(is_path_component)
        {
            continue;
        }
        if catalog.packs.len() >= MAX_PACK_MANIFESTS {
            catalog.truncated = true;
            break;
        }
        let digest: Option<Digest> = digest.parse().ok();
        let bytes = digest
            .as_ref()
            .map(|d| dir.join("blobs").join(d.algorithm().as_str()).join(d.hex()))
            .filter(|blob| std::fs::metadata(blob).is_ok_and(|m| m.len() <= MAX_MANIFEST_BYTES))
            .and_then(|blob| std::fs::read(blob).ok())
            .unwrap_or_default();
        catalog
            .packs
            .push(describe(repository, tag, name.clone(), digest, &bytes));
    }
    catalog
        .packs
        .sort_by(|a, b| (&a.name, &a.tag).cmp(&(&b.name, &b.tag)));
    Ok(catalog)
}

/// A pack's entry from its manifest's annotations.
fn describe(
    repository: &str,
    tag: &str,
    reference: String,
    digest: Option<Digest>,
    manifest: &[u8],
) -> CatalogPack {
    #[derive(Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    let annotations = serde_json::from_slice::<Annotated>(manifest)
        .map(|a| a.annotations)
        .unwrap_or_default();
    let name = repository.rsplit('/').next().unwrap_or(repository);
    let artifact = ArtifactName::in_area(Area::Packs, name, tag);
    let pack = Pack::from_annotations(
        reference.clone(),
        artifact,
        digest
            .clone()
            .unwrap_or_else(|| Digest::sha256_of(manifest)),
        &annotations,
    );
    CatalogPack {
        name: pack.name,
        version: pack.version,
        tag: tag.to_owned(),
        reference,
        digest,
        metadata: pack.metadata,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(layer: &str, clouds: &[&str], fips: Option<bool>) -> CatalogPack {
        CatalogPack {
            name: "cni-cilium".into(),
            version: "1.0".into(),
            tag: "1.0".into(),
            reference: "r".into(),
            digest: None,
            metadata: PackMetadata {
                display_name: Some("Cilium".into()),
                layer: Some(layer.into()),
                addon_type: None,
                cloud_types: clouds.iter().map(|c| (*c).to_owned()).collect(),
                architectures: vec!["amd64".into()],
                fips,
            },
        }
    }

    #[test]
    fn filters_match_like_the_artifact_studio_catalog() {
        let cilium = pack("cni", &["all"], Some(true));
        let filter = |f: PackFilter| f.matches(&cilium);
        assert!(filter(PackFilter::default()));
        assert!(filter(PackFilter {
            layer: Some("CNI".into()),
            cloud_type: Some("aws".into()),
            architecture: Some("amd64".into()),
            fips: Some(true),
            q: Some("cili".into()),
        }));
        assert!(!filter(PackFilter {
            layer: Some("csi".into()),
            ..Default::default()
        }));
        assert!(!filter(PackFilter {
            architecture: Some("arm64".into()),
            ..Default::default()
        }));
        assert!(!filter(PackFilter {
            fips: Some(false),
            ..Default::default()
        }));
        let aws_only = pack("addon", &["aws"], None);
        assert!(
            !PackFilter {
                cloud_type: Some("vsphere".into()),
                ..Default::default()
            }
            .matches(&aws_only)
        );
        assert!(
            PackFilter {
                fips: Some(false),
                ..Default::default()
            }
            .matches(&aws_only)
        );
    }

    #[test]
    fn the_pack_area_follows_the_pack_prefix() {
        let target: Target = "harbor.local/spectro".parse().expect("target");
        assert_eq!(
            pack_area(&target, &PlanOptions::default()),
            "spectro/spectro-packs/archive"
        );
        let apart = PlanOptions {
            pack_prefix: Some(String::new()),
            ..PlanOptions::default()
        };
        assert_eq!(pack_area(&target, &apart), "spectro-packs/archive");
    }
}
