//! `docker save` archives become Docker v2 schema 2 images.
//!
//! A docker-save is recognised by its `manifest.json` — a JSON array of
//! `{Config, RepoTags, Layers}` — at the bundle's root or one directory down.
//! Both shapes Docker writes are read: the legacy one (`<id>.json` configs,
//! `<id>/layer.tar` layers, `repositories`) and Docker 25's OCI-style one
//! (`blobs/sha256/<hex>` paths). When an `index.json` sits beside
//! `manifest.json` the directory is an OCI image layout, which the layout
//! reader imports; this module then only claims Docker's own files there so
//! the two never both import the same images.
//!
//! Every file was hashed by the index pass, gzip layers also decompressed on
//! the way, so the manifest is written from digests already known: the
//! config blob is the config file, each layer blob is the layer file as it is
//! (`…diff.tar` or `…diff.tar.gzip`), and each layer's uncompressed digest
//! must equal the config's `rootfs.diff_ids` entry, or the image is refused.
//! One image is written per `manifest.json` entry and named once per RepoTag;
//! layers shared by several images are blobs once.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use crate::digest::Digest;
use crate::read::artifact::{Assembly, Written, WrittenManifest};
use crate::read::document::config_platform;
use crate::read::image::{BundleImage, ImageKind};
use crate::read::names::{ImageName, parse_full};
use crate::read::peek::ScannedFile;
use crate::read::{Error, Result, invalid};

/// The file that makes a directory a docker-save.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The legacy tag file docker-save writes beside `manifest.json`.
const REPOSITORIES_FILE: &str = "repositories";

/// The config media type of a Docker image.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The media type of an uncompressed layer.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The media type of a gzip-compressed layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Top-level directories holding other formats, never a docker-save.
const OTHER_FORMATS: [&str; 3] = ["packs", "charts", "files"];

/// One entry of `manifest.json`.
#[derive(Debug, Deserialize)]
pub struct SaveEntry {
    /// The config file's path, relative to `manifest.json`.
    #[serde(rename = "Config")]
    pub config: String,
    /// The image's names (`nginx:1.25`); absent or null when it had none.
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    /// The layer files' paths, base layer first.
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// The part of an image config that lists the uncompressed layer digests.
#[derive(Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<Digest>,
}

/// Turns every docker-save in the bundle into images. `links` are the
/// bundle's symlinks (docker-save links a repeated `layer.tar` to its first
/// copy); `layout_roots` are the directories holding an OCI layout
/// (`index.json`), which are left to the layout reader. Returns the images
/// and the paths of the files used.
pub fn collect(
    bundle: &str,
    files: &[ScannedFile],
    links: &[(String, String)],
    layout_roots: &[&str],
    assembly: &mut Assembly,
) -> Result<(Vec<BundleImage>, Vec<String>)> {
    let mut images = Vec::new();
    let mut used = Vec::new();
    for manifest in files.iter().filter(|f| save_root(&f.file.path).is_some()) {
        let root = save_root(&manifest.file.path).unwrap_or_default();
        if layout_roots.contains(&root) {
            // Docker 25+ writes an OCI layout too: its index.json is read
            // instead, and these files are only described by it.
            used.extend(docker_files(files, root, &[]));
            continue;
        }
        let save = Save::new(bundle, root, files, links, manifest)?;
        let mut referenced = Vec::new();
        for (position, entry) in save.entries.iter().enumerate() {
            images.extend(save.images(position, entry, assembly, &mut referenced)?);
        }
        used.extend(docker_files(files, root, &referenced));
    }
    Ok((images, used))
}

/// Whether the symlink at `link` lies in a docker-save (the only producer
/// that writes links): a directory holding `manifest.json`, or any path when
/// the save is at the bundle's root.
pub fn holds_link(files: &[ScannedFile], link: &str) -> bool {
    let roots: Vec<&str> = files
        .iter()
        .filter_map(|f| save_root(&f.file.path))
        .collect();
    let top = link.split_once('/').map(|(top, _)| top);
    roots
        .iter()
        .any(|root| root.is_empty() || Some(*root) == top)
}

/// The directory (`""` for the root) of a docker-save `manifest.json`.
fn save_root(path: &str) -> Option<&str> {
    if path == MANIFEST_FILE {
        return Some("");
    }
    let (root, name) = path.split_once('/')?;
    (name == MANIFEST_FILE && !root.is_empty() && !OTHER_FORMATS.contains(&root)).then_some(root)
}

/// `manifest.json`, `repositories`, the files `referenced` names, and the
/// legacy per-layer directories (`<id>/json`, `<id>/VERSION`,
/// `<id>/layer.tar`), whose content the manifest describes.
fn docker_files(files: &[ScannedFile], root: &str, referenced: &[String]) -> Vec<String> {
    let mut used = vec![join(root, MANIFEST_FILE)];
    used.extend(referenced.iter().cloned());
    for file in files {
        let path = file.file.path.as_str();
        let relative = if root.is_empty() {
            Some(path)
        } else {
            path.strip_prefix(root).and_then(|p| p.strip_prefix('/'))
        };
        let legacy = |relative: &str| match relative.split_once('/') {
            Some((id, name)) => is_layer_id(id) && matches!(name, "json" | "VERSION" | "layer.tar"),
            None => relative == REPOSITORIES_FILE,
        };
        if relative.is_some_and(legacy) {
            used.push(path.to_owned());
        }
    }
    used.sort();
    used.dedup();
    used
}

/// A legacy layer directory's name: 64 lowercase hex digits.
fn is_layer_id(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn join(root: &str, relative: &str) -> String {
    if root.is_empty() {
        relative.to_owned()
    } else {
        format!("{root}/{relative}")
    }
}

/// One docker-save: its entries and its files by path.
struct Save<'a> {
    bundle: &'a str,
    root: &'a str,
    manifest_path: &'a str,
    entries: Vec<SaveEntry>,
    by_path: HashMap<&'a str, &'a ScannedFile>,
}

/// Adds each link of `links` to `by_path` as the file it ends at, following
/// links to links. Each chain is walked once and every link on it settled,
/// so the work grows with the number of links, not its square; a link that
/// ends nowhere (or in a cycle) is left out.
fn resolve_links<'a>(
    links: &'a [(String, String)],
    by_path: &mut HashMap<&'a str, &'a ScannedFile>,
) {
    let targets: HashMap<&str, &str> = links
        .iter()
        .map(|(link, target)| (link.as_str(), target.as_str()))
        .collect();
    let mut settled: HashSet<&str> = HashSet::new();
    for (start, _) in links {
        let mut chain = Vec::new();
        let mut at = start.as_str();
        let file = loop {
            if let Some(file) = by_path.get(at).copied() {
                break Some(file);
            }
            if !settled.insert(at) {
                break None;
            }
            chain.push(at);
            match targets.get(at) {
                Some(next) => at = next,
                None => break None,
            }
        };
        if let Some(file) = file {
            for link in chain {
                by_path.insert(link, file);
            }
        }
    }
}

impl<'a> Save<'a> {
    fn new(
        bundle: &'a str,
        root: &'a str,
        files: &'a [ScannedFile],
        links: &'a [(String, String)],
        manifest: &'a ScannedFile,
    ) -> Result<Self> {
        let manifest_path = manifest.file.path.as_str();
        let bytes = manifest.whole().ok_or_else(|| {
            invalid(
                bundle,
                manifest_path,
                "it is too large to be a docker-save manifest.json".into(),
            )
        })?;
        let entries: Vec<SaveEntry> = serde_json::from_slice(bytes).map_err(|e| {
            invalid(
                bundle,
                manifest_path,
                format!(
                    "it is not a docker-save manifest (a JSON array of {{Config, RepoTags, Layers}}): {e}"
                ),
            )
        })?;
        let mut by_path: HashMap<&str, &ScannedFile> =
            files.iter().map(|f| (f.file.path.as_str(), f)).collect();
        resolve_links(links, &mut by_path);
        Ok(Save {
            bundle,
            root,
            manifest_path,
            entries,
            by_path,
        })
    }

    /// The file at `relative` (as `manifest.json` spells it), or an error
    /// naming the image and the missing path.
    fn file(&self, image: &str, what: &str, relative: &str) -> Result<&'a ScannedFile> {
        let relative = relative.trim_start_matches("./");
        let path = join(self.root, relative);
        self.by_path.get(path.as_str()).copied().ok_or_else(|| {
            self.invalid(format!(
                "image {image} names {what} {path}, which is not in the bundle"
            ))
        })
    }

    fn invalid(&self, reason: String) -> Error {
        invalid(self.bundle, self.manifest_path, reason)
    }

    /// The images of one entry: one per RepoTag, or one unnamed image.
    fn images(
        &self,
        position: usize,
        entry: &SaveEntry,
        assembly: &mut Assembly,
        referenced: &mut Vec<String>,
    ) -> Result<Vec<BundleImage>> {
        let tags = entry.repo_tags.clone().unwrap_or_default();
        let label = match tags.first() {
            Some(tag) => tag.clone(),
            None => format!("entry {position} ({})", entry.config),
        };
        let config_file = self.file(&label, "config", &entry.config)?;
        let config_bytes = config_file.whole().ok_or_else(|| {
            self.invalid(format!(
                "image {label}: config {} is not a small JSON document",
                config_file.file.path
            ))
        })?;
        let config: Config = serde_json::from_slice(config_bytes).map_err(|e| {
            self.invalid(format!(
                "image {label}: config {} has no usable rootfs.diff_ids: {e}",
                config_file.file.path
            ))
        })?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != entry.layers.len() {
            return Err(self.invalid(format!(
                "image {label} lists {} layers but its config {} has {} rootfs.diff_ids",
                entry.layers.len(),
                config_file.file.path,
                diff_ids.len()
            )));
        }
        let config_written = Written::new(DOCKER_CONFIG, assembly.file_blob(config_file));
        referenced.push(config_file.file.path.clone());
        let mut layers = Vec::with_capacity(entry.layers.len());
        for (index, (relative, diff_id)) in entry.layers.iter().zip(diff_ids).enumerate() {
            let layer = self.file(&label, "layer", relative)?;
            layers.push(self.layer(&label, index, layer, diff_id, assembly)?);
            referenced.push(layer.file.path.clone());
        }
        let manifest = WrittenManifest::docker(config_written, layers);
        let platforms = config_platform(config_bytes)
            .into_iter()
            .collect::<Vec<_>>();
        if tags.is_empty() {
            let reason = format!(
                "docker-save {} entry {position} has no RepoTags (it was saved by image ID); \
                 save it by name (docker save repo:tag)",
                self.manifest_path
            );
            let name = ImageName::Unnamed { reason };
            return Ok(vec![assembly.image(
                name,
                &manifest,
                ImageKind::Image,
                platforms,
            )]);
        }
        tags.iter()
            .map(|tag| {
                let reference = parse_full(tag).map_err(|reason| {
                    self.invalid(format!(
                        "RepoTag {tag:?} is not a valid reference: {reason}"
                    ))
                })?;
                Ok(assembly.image(
                    ImageName::Named(reference),
                    &manifest,
                    ImageKind::Image,
                    platforms.clone(),
                ))
            })
            .collect()
    }

    /// Describes one layer file, checking its uncompressed digest against
    /// the config's diff ID.
    fn layer(
        &self,
        label: &str,
        index: usize,
        layer: &ScannedFile,
        diff_id: &Digest,
        assembly: &mut Assembly,
    ) -> Result<Written> {
        let (media_type, uncompressed) = if layer.gzip {
            (DOCKER_LAYER_GZIP, layer.uncompressed.as_ref())
        } else {
            (DOCKER_LAYER, Some(&layer.file.digest))
        };
        match uncompressed {
            Some(actual) if actual == diff_id => {}
            Some(actual) => {
                return Err(self.invalid(format!(
                    "image {label}: layer {index} ({}) hashes to {actual} uncompressed \
                     but the config's rootfs.diff_ids[{index}] is {diff_id}",
                    layer.file.path
                )));
            }
            None => {
                return Err(self.invalid(format!(
                    "image {label}: layer {index} ({}) starts like gzip but does not decompress",
                    layer.file.path
                )));
            }
        }
        Ok(Written::new(media_type, assembly.file_blob(layer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::ExtraFile;
    use crate::read::document::DOCKER_MANIFEST;
    use crate::read::peek::Peek;
    use bytes::Bytes;

    fn file(path: &str, bytes: &[u8]) -> ScannedFile {
        let keep = path.ends_with(".json");
        ScannedFile {
            file: ExtraFile {
                path: path.into(),
                size: bytes.len() as u64,
                digest: Digest::sha256_of(bytes),
            },
            gzip: false,
            uncompressed: None,
            peek: if keep {
                Peek::Whole(Bytes::copy_from_slice(bytes))
            } else {
                Peek::Nothing
            },
            kept: None,
        }
    }

    fn config(diff_ids: &[&[u8]]) -> Vec<u8> {
        let ids: Vec<String> = diff_ids
            .iter()
            .map(|l| Digest::sha256_of(l).to_string())
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": ids}
        }))
        .expect("json")
    }

    const BASE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const TOP: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn two_images_sharing_a_layer() -> Vec<ScannedFile> {
        let manifest = format!(
            r#"[
            {{"Config":"a.json","RepoTags":["nginx:1.25","quay.io/acme/nginx:1.25"],"Layers":["{BASE}/layer.tar","{TOP}/layer.tar"]}},
            {{"Config":"b.json","RepoTags":["acme/b:1"],"Layers":["{BASE}/layer.tar"]}}
        ]"#
        );
        vec![
            file("save/manifest.json", manifest.as_bytes()),
            file("save/repositories", b"{}"),
            file("save/a.json", &config(&[b"base", b"a"])),
            file("save/b.json", &config(&[b"base"])),
            file(&format!("save/{BASE}/layer.tar"), b"base"),
            file(&format!("save/{BASE}/json"), b"{}"),
            file(&format!("save/{BASE}/VERSION"), b"1.0"),
            file(&format!("save/{TOP}/layer.tar"), b"a"),
        ]
    }

    #[test]
    fn long_link_chains_resolve_in_linear_time_and_cycles_resolve_to_nothing() {
        let target = file("save/first.tar", b"layer");
        // link0 -> link1 -> ... -> linkN -> first.tar, listed head first, the
        // order that made each pass over the links settle only one of them.
        let count = 20_000;
        let mut links: Vec<(String, String)> = (0..count)
            .map(|i| (format!("save/l{i}"), format!("save/l{}", i + 1)))
            .collect();
        links.push((format!("save/l{count}"), "save/first.tar".into()));
        links.push(("save/a".into(), "save/b".into()));
        links.push(("save/b".into(), "save/a".into()));
        let mut by_path = HashMap::from([("save/first.tar", &target)]);
        let started = std::time::Instant::now();
        resolve_links(&links, &mut by_path);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(by_path.len(), count + 2);
        assert!(by_path.contains_key("save/l0"));
        assert!(!by_path.contains_key("save/a"));
    }

    #[test]
    fn images_sharing_layers_are_written_once_per_tag() {
        let files = two_images_sharing_a_layer();
        let mut assembly = Assembly::default();
        let (images, used) = collect("x.zst", &files, &[], &[], &mut assembly).expect("collected");
        let names: Vec<String> = images
            .iter()
            .map(|i| match &i.name {
                ImageName::Named(r) => r.whole(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "docker.io/library/nginx:1.25",
                "quay.io/acme/nginx:1.25",
                "docker.io/acme/b:1"
            ]
        );
        assert_eq!(images[0].descriptor.digest, images[1].descriptor.digest);
        assert_eq!(images[0].descriptor.media_type, DOCKER_MANIFEST);
        assert_eq!(images[0].blobs.len(), 3);
        assert_eq!(images[0].platforms, ["linux/amd64"]);
        // Base layer, a's layer, two configs.
        assert_eq!(assembly.blobs.len(), 4);
        assert_eq!(used.len(), files.len(), "{used:?}");
        let bytes = assembly
            .documents
            .get(&images[2].descriptor.digest)
            .expect("kept");
        let text = std::str::from_utf8(bytes).expect("utf-8");
        assert!(
            text.starts_with(&format!(
                r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}""#
            )),
            "{text}"
        );
        assert!(text.contains(DOCKER_LAYER), "{text}");
    }

    #[test]
    fn a_missing_layer_names_the_image_and_the_path() {
        let mut files = two_images_sharing_a_layer();
        let top = format!("save/{TOP}/layer.tar");
        files.retain(|f| f.file.path != top);
        let err =
            collect("x.zst", &files, &[], &[], &mut Assembly::default()).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("nginx:1.25"), "{text}");
        assert!(text.contains(&top), "{text}");
    }

    #[test]
    fn a_layer_linked_to_another_file_is_read_from_that_file() {
        let mut files = two_images_sharing_a_layer();
        let top = format!("save/{TOP}/layer.tar");
        files.retain(|f| f.file.path != top);
        files.push(file("save/top.tar", b"a"));
        let links = [(top, "save/top.tar".to_owned())];
        let mut assembly = Assembly::default();
        let (images, used) =
            collect("x.zst", &files, &links, &[], &mut assembly).expect("collected");
        assert_eq!(images.len(), 3);
        assert!(used.iter().any(|u| u == "save/top.tar"), "{used:?}");
        assert!(matches!(
            assembly.sources.get(&Digest::sha256_of(b"a")),
            Some(crate::read::BlobSource::Entry(path)) if path == "save/top.tar"
        ));
    }

    #[test]
    fn a_layer_that_does_not_match_its_diff_id_is_refused() {
        let mut files = two_images_sharing_a_layer();
        let top = format!("save/{TOP}/layer.tar");
        files.retain(|f| f.file.path != top);
        files.push(file(&top, b"tampered"));
        let err =
            collect("x.zst", &files, &[], &[], &mut Assembly::default()).expect_err("refused");
        assert!(err.to_string().contains("diff_ids[1]"), "{err}");
    }

    #[test]
    fn a_save_beside_an_index_json_is_left_to_the_layout_reader() {
        let files = two_images_sharing_a_layer();
        let (images, used) =
            collect("x.zst", &files, &[], &["save"], &mut Assembly::default()).expect("collected");
        assert!(images.is_empty());
        assert!(used.iter().any(|u| u == "save/manifest.json"), "{used:?}");
        assert!(used.iter().any(|u| u == "save/repositories"), "{used:?}");
    }

    #[test]
    fn links_are_held_only_by_docker_saves() {
        let files = two_images_sharing_a_layer();
        assert!(holds_link(&files, "save/x/layer.tar"));
        assert!(!holds_link(&files, "other/x/layer.tar"));
        assert!(!holds_link(&files, "layer.tar"));
        let at_root = [file("manifest.json", b"[]")];
        assert!(holds_link(&at_root, "x/layer.tar"));
    }

    #[test]
    fn manifests_under_other_formats_are_not_saves() {
        assert_eq!(save_root("manifest.json"), Some(""));
        assert_eq!(save_root("images/manifest.json"), Some("images"));
        assert_eq!(save_root("files/manifest.json"), None);
        assert_eq!(save_root("a/b/manifest.json"), None);
    }
}
