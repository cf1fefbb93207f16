//! Lists the repositories and tags a target holds, with the digest each tag
//! points at, a page at a time, for `GET /api/v1/images` and the console.
//!
//! A registry is read through `/v2/_catalog` (paginated with `n`/`last`),
//! each listed repository's `/tags/list`, and a `HEAD` of each tag's
//! manifest; an `oci:` layout through its `index.json`. Every read is
//! bounded (the constants below); a listing cut short says so.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::catalog::{CATALOG_PAGE, MAX_CATALOG_REPOSITORIES};
use super::registry::RegistryClient;
use super::{Error, Result};
use crate::read::names::OCI_REF_NAME;

/// Repositories on one page without `?limit=`.
pub const DEFAULT_REPOSITORIES_PER_PAGE: usize = 50;
/// The most repositories on one page; larger limits are capped.
pub const MAX_REPOSITORIES_PER_PAGE: usize = 200;
/// Tags read per repository at most: a mirror keeps a handful of versions
/// per image, so more is rare and would only make the page slow.
pub const MAX_TAGS_PER_REPOSITORY: usize = 100;
/// Tag digests looked up (one `HEAD` each) per page at most, so one page
/// stays within seconds; tags beyond it are listed without a digest.
pub const MAX_DIGESTS_PER_PAGE: usize = 1000;

/// What to list: a page of repositories whose name contains `q`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageQuery {
    /// A substring of the repository name (case ignored).
    pub q: Option<String>,
    /// Repositories on the page (default [`DEFAULT_REPOSITORIES_PER_PAGE`],
    /// at most [`MAX_REPOSITORIES_PER_PAGE`]).
    pub limit: Option<usize>,
    /// List the repositories after this one (the `next` of the previous
    /// page).
    pub after: Option<String>,
}

impl ImageQuery {
    fn page_size(&self) -> usize {
        self.limit
            .unwrap_or(DEFAULT_REPOSITORIES_PER_PAGE)
            .clamp(1, MAX_REPOSITORIES_PER_PAGE)
    }

    fn wants(&self, repository: &str) -> bool {
        let after = self.after.as_deref().is_none_or(|a| repository > a);
        let text = self.q.as_deref().is_none_or(|q| {
            repository
                .to_ascii_lowercase()
                .contains(&q.to_ascii_lowercase())
        });
        after && text
    }
}

/// One page of the target's repositories.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageListing {
    /// The repositories, by name.
    pub repositories: Vec<Repository>,
    /// The `after` of the next page, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Whether a bound was reached, so repositories, tags or digests may be
    /// missing.
    pub truncated: bool,
}

/// One repository and its tags.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Repository {
    /// The repository name, e.g. `mirror/quay.io/acme/app`.
    pub name: String,
    /// Its tags, sorted.
    pub tags: Vec<TagDigest>,
}

/// A tag and the manifest digest it points at.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagDigest {
    /// The tag.
    pub tag: String,
    /// The manifest digest; `None` when the per-page bound was reached or
    /// the tag vanished while listing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Lists one page of a registry target's repositories through `client`.
pub async fn registry_images(client: &RegistryClient, query: &ImageQuery) -> Result<ImageListing> {
    let wanted = query.page_size();
    let mut listing = ImageListing::default();
    let mut names = Vec::new();
    let mut last = query.after.clone();
    let mut read = 0;
    // One name more than the page shows tells whether a next page exists.
    while names.len() <= wanted {
        let page = client.catalog_page(CATALOG_PAGE, last.as_deref()).await?;
        read += page.len();
        let full = page.len() >= CATALOG_PAGE;
        last = page.last().cloned();
        names.extend(page.into_iter().filter(|r| query.wants(r)));
        if !full || last.is_none() {
            break;
        }
        if read >= MAX_CATALOG_REPOSITORIES {
            listing.truncated = true;
            break;
        }
    }
    names.sort();
    if names.len() > wanted {
        names.truncate(wanted);
        listing.next = names.last().cloned();
    }
    let mut digests = 0;
    for name in names {
        let mut tags = client.tags(&name, MAX_TAGS_PER_REPOSITORY).await?;
        if tags.len() >= MAX_TAGS_PER_REPOSITORY {
            listing.truncated = true;
        }
        tags.sort();
        let mut repository = Repository {
            name,
            tags: Vec::with_capacity(tags.len()),
        };
        for tag in tags {
            let digest = if digests < MAX_DIGESTS_PER_PAGE {
                digests += 1;
                client
                    .manifest_digest(&repository.name, &tag)
                    .await?
                    .map(|d| d.to_string())
            } else {
                listing.truncated = true;
                None
            };
            repository.tags.push(TagDigest { tag, digest });
        }
        listing.repositories.push(repository);
    }
    Ok(listing)
}

/// Lists one page of an `oci:` layout target's repositories: its
/// `index.json` entries named `<repository>:<tag>`.
pub fn layout_images(dir: &Path, query: &ImageQuery) -> Result<ImageListing> {
    let mut repositories: BTreeMap<String, Vec<TagDigest>> = BTreeMap::new();
    for (name, digest) in layout_entries(dir)? {
        let Some((repository, tag)) = name.rsplit_once(':') else {
            continue;
        };
        if query.wants(repository) {
            repositories
                .entry(repository.to_owned())
                .or_default()
                .push(TagDigest {
                    tag: tag.to_owned(),
                    digest: Some(digest),
                });
        }
    }
    let wanted = query.page_size();
    let mut listing = ImageListing::default();
    for (name, mut tags) in repositories {
        if listing.repositories.len() == wanted {
            listing.next = listing.repositories.last().map(|r| r.name.clone());
            break;
        }
        tags.sort_by(|a, b| a.tag.cmp(&b.tag));
        listing.repositories.push(Repository { name, tags });
    }
    Ok(listing)
}

/// The `ref.name`s of an `oci:` layout target's `index.json` entries.
pub fn layout_names(dir: &Path) -> Result<HashSet<String>> {
    Ok(layout_entries(dir)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// The named entries of a layout's `index.json`: (ref name, digest); none
/// when the layout has no index yet.
pub(super) fn layout_entries(dir: &Path) -> Result<Vec<(String, String)>> {
    #[derive(Deserialize)]
    struct Entry {
        digest: String,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    #[derive(Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Entry>,
    }
    let path = dir.join("index.json");
    let index: Index = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Layout {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Layout {
                path: path.display().to_string(),
                source,
            });
        }
    };
    Ok(index
        .manifests
        .into_iter()
        .filter_map(|mut entry| {
            let name = entry.annotations.remove(OCI_REF_NAME)?;
            Some((name, entry.digest))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_keeps_names_after_the_cursor_that_contain_the_text() {
        let query = ImageQuery {
            q: Some("ACME".into()),
            limit: None,
            after: Some("mirror/quay.io/acme/app".into()),
        };
        assert!(query.wants("mirror/quay.io/acme/web"));
        assert!(!query.wants("mirror/quay.io/acme/app"));
        assert!(!query.wants("mirror/quay.io/acme/aaa"));
        assert!(!query.wants("mirror/quay.io/other/zzz"));
    }

    #[test]
    fn page_sizes_are_bounded() {
        let size = |limit| {
            ImageQuery {
                limit,
                ..ImageQuery::default()
            }
            .page_size()
        };
        assert_eq!(size(None), DEFAULT_REPOSITORIES_PER_PAGE);
        assert_eq!(size(Some(0)), 1);
        assert_eq!(size(Some(100_000)), MAX_REPOSITORIES_PER_PAGE);
    }

    #[test]
    fn a_layout_lists_its_named_entries_by_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"digest": "sha256:aa", "annotations": {OCI_REF_NAME: "acme/app:1.1"}},
                {"digest": "sha256:bb", "annotations": {OCI_REF_NAME: "acme/app:1.0"}},
                {"digest": "sha256:cc", "annotations": {OCI_REF_NAME: "other/db:2"}},
                {"digest": "sha256:dd"}
            ]
        });
        std::fs::write(dir.path().join("index.json"), index.to_string()).expect("index");
        let query = ImageQuery {
            q: Some("app".into()),
            ..ImageQuery::default()
        };
        let listing = layout_images(dir.path(), &query).expect("listing");
        assert_eq!(listing.repositories.len(), 1);
        let app = &listing.repositories[0];
        assert_eq!(app.name, "acme/app");
        let tags: Vec<_> = app.tags.iter().map(|t| t.tag.as_str()).collect();
        assert_eq!(tags, ["1.0", "1.1"]);
        assert_eq!(app.tags[0].digest.as_deref(), Some("sha256:bb"));
    }
}
