//! Builds real signed bundles the way producers do: an OCI image layout
//! written as tar entries straight into a zstd stream (never laid out on disk
//! first), then signed with a [`TestKey`] into `NAME.sig.bin`.
//!
//! Content is generated deterministically from seeds: the same builder calls
//! give the same bytes, digests and signatures-to-verify on every run.
//!
//! ```ignore
//! let key = TestKey::generate(KeyKind::EcP256);
//! let bundle = BundleBuilder::new("acme")
//!     .image(Image::new("quay.io/acme/app:1.0").layers(&[Layer::gzip_tar(1, 4096)]))
//!     .image(Image::new("nginx:1.25").naming(Naming::TagOnlyRefName).platforms(&["linux/amd64", "linux/arm64"]))
//!     .artifact(Artifact::new("application/vnd.example.sbom").subject_of("quay.io/acme/app:1.0"))
//!     .layout_root("images/")
//!     .order(EntryOrder::BlobsFirst)
//!     .build(&key);
//! bundle.image("quay.io/acme/app:1.0").digest // "sha256:…"
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::keys::{KeyKind, TestKey};
use super::tools;

// ---------------------------------------------------------------------------
// Media types and annotation keys

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const OCI_LAYOUT_CONTENT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
pub const ANNOTATION_BASE_NAME: &str = "org.opencontainers.image.base.name";
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
pub const ANNOTATION_HAULER_KIND: &str = "kind";
pub const HAULER_KIND_IMAGE: &str = "dev.hauler/image";

/// The tar entries' modification time (2023-11-14T22:13:20Z).
const MTIME: u64 = 1_700_000_000;
const CREATED: &str = "2024-01-01T00:00:00Z";

// ---------------------------------------------------------------------------
// References

/// Normalises an image reference the way docker/containerd do:
/// `nginx:1.25` → `docker.io/library/nginx:1.25`, `acme/app` →
/// `docker.io/acme/app:latest`, `quay.io/acme/app:1.0` unchanged. A digest
/// (`@sha256:…`) is kept; `:latest` is added only when there is neither tag
/// nor digest.
pub fn normalize_ref(reference: &str) -> String {
    let parts = RefParts::parse(reference);
    parts.full()
}

/// An image reference split into its parts (after normalisation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefParts {
    /// `docker.io`, `quay.io`, `127.0.0.1:5000`, …
    pub domain: String,
    /// `library/nginx`, `acme/app`
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl RefParts {
    pub fn parse(reference: &str) -> RefParts {
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(digest.to_owned())),
            None => (reference, None),
        };
        let (name, tag) = {
            let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
            match name[last_slash..].rfind(':') {
                Some(colon) => (
                    &name[..last_slash + colon],
                    Some(name[last_slash + colon + 1..].to_owned()),
                ),
                None => (name, None),
            }
        };
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => ("docker.io".to_owned(), name.to_owned()),
        };
        let domain = if domain == "index.docker.io" {
            "docker.io".to_owned()
        } else {
            domain
        };
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_owned())
        } else {
            tag
        };
        RefParts {
            domain,
            path,
            tag,
            digest,
        }
    }

    /// `domain/path`, e.g. `docker.io/library/nginx`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The normalised full reference.
    pub fn full(&self) -> String {
        let mut full = self.repository();
        if let Some(tag) = &self.tag {
            full.push(':');
            full.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            full.push('@');
            full.push_str(digest);
        }
        full
    }

    /// `path:tag` without the registry, as Hauler names images.
    pub fn path_and_tag(&self) -> String {
        match &self.tag {
            Some(tag) => format!("{}:{tag}", self.path),
            None => self.path.clone(),
        }
    }
}

// ---------------------------------------------------------------------------
// Deterministic data

/// Fast deterministic pseudo-random bytes (xorshift64*, seeded through
/// splitmix64). Not for cryptography; for content that does not compress.
#[derive(Debug, Clone)]
pub struct PseudoRandom {
    state: u64,
    buffered: [u8; 8],
    used: usize,
    remaining: u64,
}

impl PseudoRandom {
    /// A reader of exactly `len` bytes derived from `seed`.
    pub fn new(seed: u64, len: u64) -> PseudoRandom {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        PseudoRandom {
            state: z | 1,
            buffered: [0; 8],
            used: 8,
            remaining: len,
        }
    }

    #[inline]
    fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Read for PseudoRandom {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let buf = &mut buf[..want];
        let mut pos = 0;
        while pos < buf.len() && self.used < 8 {
            buf[pos] = self.buffered[self.used];
            self.used += 1;
            pos += 1;
        }
        let mut chunks = buf[pos..].chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            self.buffered = self.next_u64().to_le_bytes();
            let n = tail.len();
            tail.copy_from_slice(&self.buffered[..n]);
            self.used = n;
        }
        self.remaining -= want as u64;
        Ok(want)
    }
}

/// `len` pseudo-random bytes from `seed`, in memory (for small content).
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    PseudoRandom::new(seed, len as u64)
        .read_to_end(&mut out)
        .expect("generate pseudo-random bytes");
    out
}

/// A stable 64-bit hash of a string (FNV-1a), for deriving seeds from names.
pub fn seed_from(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `sha256:<hex>` of everything `reader` yields.
pub fn sha256_digest_of_reader(mut reader: impl Read) -> String {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).expect("read content to hash");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

fn hex_of(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"))
}

// ---------------------------------------------------------------------------
// What goes into a bundle

/// One image layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Layer {
    kind: LayerKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LayerKind {
    GzipTar { seed: u64, size: usize },
    Uncompressed { seed: u64, size: u64 },
    Zeros { size: u64 },
}

impl Layer {
    /// A gzip-compressed tar layer (`…layer.v1.tar+gzip`) holding a directory
    /// `app/`, a small text file and `app/data.bin` of `size` pseudo-random
    /// bytes (so the blob is a little larger than `size`). Built in memory:
    /// keep it small (up to a few MiB).
    pub fn gzip_tar(seed: u64, size: usize) -> Layer {
        Layer {
            kind: LayerKind::GzipTar { seed, size },
        }
    }

    /// An uncompressed layer (`…layer.v1.tar`) of exactly `size` pseudo-random
    /// bytes (not a real tar: registries and airlock never look inside). It
    /// is never held in memory: its digest is computed by generating it once,
    /// and it is generated again while it is written. Its diff_id is its
    /// digest. Use it for big layers (64–100 MiB and more).
    pub fn uncompressed(seed: u64, size: u64) -> Layer {
        Layer {
            kind: LayerKind::Uncompressed { seed, size },
        }
    }

    /// Same as [`Layer::uncompressed`].
    pub fn big(seed: u64, size: u64) -> Layer {
        Layer::uncompressed(seed, size)
    }

    /// An uncompressed layer of `size` zero bytes: it compresses to almost
    /// nothing, so a bundle can hold a tar entry of many gigabytes (over the
    /// 8 GiB of a classic tar size field) without filling the disk. Never
    /// held in memory.
    pub fn zeros(size: u64) -> Layer {
        Layer {
            kind: LayerKind::Zeros { size },
        }
    }

    fn with_seed_mixed(&self, mix: u64) -> Layer {
        let kind = match self.kind {
            LayerKind::GzipTar { seed, size } => LayerKind::GzipTar {
                seed: seed ^ mix,
                size,
            },
            LayerKind::Uncompressed { seed, size } => LayerKind::Uncompressed {
                seed: seed ^ mix,
                size,
            },
            LayerKind::Zeros { size } => LayerKind::Zeros { size },
        };
        Layer { kind }
    }
}

/// Which annotations name a manifest in `index.json` (see DESIGN.md's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// containerd / buildkit / regctl export: `io.containerd.image.name` = the
    /// normalised full ref, `org.opencontainers.image.ref.name` = the tag only.
    ContainerdName,
    /// crane `--annotate-ref`, skopeo `oci:DIR:NAME`, umoci:
    /// `org.opencontainers.image.ref.name` = the reference exactly as given to
    /// [`Image::new`] (pass a normalised one to get a normalised name).
    FullRefName,
    /// Zarf: `ref.name` and `org.opencontainers.image.base.name` = the
    /// normalised full ref.
    ZarfStyle,
    /// Only `org.opencontainers.image.ref.name` = the tag (`1.25`), nothing
    /// else: what `skopeo copy … oci:DIR:1.25` writes. The layout alone does
    /// not say which repository the image is from.
    TagOnlyRefName,
    /// Hauler: `ref.name` = the path without the registry
    /// (`library/nginx:1.25`), `io.containerd.image.name` = the normalised
    /// full ref, `kind` = `dev.hauler/image`.
    HaulerStyle,
    /// No annotations at all.
    Unnamed,
    /// Exactly these annotations.
    Custom(Vec<(String, String)>),
}

impl Naming {
    fn annotations(&self, given: &str) -> BTreeMap<String, String> {
        let parts = RefParts::parse(given);
        let full = parts.full();
        let tag = || {
            parts
                .tag
                .clone()
                .unwrap_or_else(|| panic!("{self:?} naming needs a tag in {given:?}"))
        };
        let pairs: Vec<(&str, String)> = match self {
            Naming::ContainerdName => vec![
                (ANNOTATION_CONTAINERD_NAME, full),
                (ANNOTATION_REF_NAME, tag()),
            ],
            Naming::FullRefName => vec![(ANNOTATION_REF_NAME, given.to_owned())],
            Naming::ZarfStyle => vec![
                (ANNOTATION_REF_NAME, full.clone()),
                (ANNOTATION_BASE_NAME, full),
            ],
            Naming::TagOnlyRefName => vec![(ANNOTATION_REF_NAME, tag())],
            Naming::HaulerStyle => vec![
                (ANNOTATION_REF_NAME, parts.path_and_tag()),
                (ANNOTATION_CONTAINERD_NAME, full),
                (ANNOTATION_HAULER_KIND, HAULER_KIND_IMAGE.to_owned()),
            ],
            Naming::Unnamed => vec![],
            Naming::Custom(pairs) => {
                return pairs.iter().cloned().collect();
            }
        };
        pairs
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect()
    }
}

/// Manifest media types of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// OCI image manifest / OCI image index (the default).
    Oci,
    /// Docker schema 2 manifest / manifest list, docker config and layer types.
    Docker,
}

/// An image to put in a bundle.
#[derive(Debug, Clone)]
pub struct Image {
    reference: String,
    layers: Option<Vec<Layer>>,
    naming: Naming,
    platforms: Vec<String>,
    format: ManifestFormat,
}

impl Image {
    /// An image named `reference` (short Docker Hub names are fine: they are
    /// normalised where a full name is needed). Defaults: one 2 KiB gzip
    /// layer seeded from the reference, [`Naming::FullRefName`], single
    /// platform `linux/amd64`, OCI media types.
    pub fn new(reference: &str) -> Image {
        Image {
            reference: reference.to_owned(),
            layers: None,
            naming: Naming::FullRefName,
            platforms: Vec::new(),
            format: ManifestFormat::Oci,
        }
    }

    /// The layers, in order. Two images given an equal `Layer` share the blob.
    pub fn layers(mut self, layers: &[Layer]) -> Image {
        self.layers = Some(layers.to_vec());
        self
    }

    pub fn naming(mut self, naming: Naming) -> Image {
        self.naming = naming;
        self
    }

    /// Makes a multi-arch image: an index with one image manifest per
    /// platform (`os/arch[/variant]`). The first platform gets exactly the
    /// given layers; the others get layers of the same sizes with their seeds
    /// mixed with the platform's position, so each platform has its own.
    pub fn platforms(mut self, platforms: &[&str]) -> Image {
        self.platforms = platforms.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    /// Docker schema 2 media types instead of OCI.
    pub fn format(mut self, format: ManifestFormat) -> Image {
        self.format = format;
        self
    }

    fn layer_list(&self) -> Vec<Layer> {
        self.layers
            .clone()
            .unwrap_or_else(|| vec![Layer::gzip_tar(seed_from(&self.reference), 2048)])
    }
}

/// An OCI 1.1 artifact: an image manifest with `artifactType`, the empty
/// config (unless [`Artifact::config`] sets one) and the given blobs as
/// layers, optionally with a `subject`.
#[derive(Debug, Clone)]
pub struct Artifact {
    artifact_type: String,
    blobs: Vec<(String, Vec<u8>, BTreeMap<String, String>)>,
    config: Option<(String, Vec<u8>)>,
    subject: Option<String>,
    reference: Option<String>,
    referrers_tag_suffix: Option<String>,
    naming: Naming,
}

impl Artifact {
    /// An artifact of `artifact_type` (e.g.
    /// `application/vnd.dev.cosign.artifact.sig.v1+json`). Without
    /// [`Artifact::blob`]/[`Artifact::file`] it carries one 256-byte blob
    /// (`application/octet-stream`) seeded from the type.
    pub fn new(artifact_type: &str) -> Artifact {
        Artifact {
            artifact_type: artifact_type.to_owned(),
            blobs: Vec::new(),
            config: None,
            subject: None,
            reference: None,
            referrers_tag_suffix: None,
            naming: Naming::FullRefName,
        }
    }

    /// Adds a layer blob.
    pub fn blob(mut self, media_type: &str, bytes: &[u8]) -> Artifact {
        self.blobs
            .push((media_type.to_owned(), bytes.to_vec(), BTreeMap::new()));
        self
    }

    /// Adds a layer blob with these annotations (a cosign signature layer
    /// carries its signature in `dev.cosignproject.cosign/signature`).
    pub fn annotated_blob(
        mut self,
        media_type: &str,
        bytes: &[u8],
        annotations: &[(&str, &str)],
    ) -> Artifact {
        let annotations = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.blobs
            .push((media_type.to_owned(), bytes.to_vec(), annotations));
        self
    }

    /// Adds a layer blob with an `org.opencontainers.image.title` annotation,
    /// as `oras push` does for files.
    pub fn file(mut self, title: &str, media_type: &str, bytes: &[u8]) -> Artifact {
        self.blobs.push((
            media_type.to_owned(),
            bytes.to_vec(),
            BTreeMap::from([(ANNOTATION_TITLE.to_owned(), title.to_owned())]),
        ));
        self
    }

    /// A real config blob instead of the empty one (oras 1.0 writes
    /// `application/vnd.unknown.config.v1+json` with `{}`).
    pub fn config(mut self, media_type: &str, bytes: &[u8]) -> Artifact {
        self.config = Some((media_type.to_owned(), bytes.to_vec()));
        self
    }

    /// Sets `subject` to the top manifest of the image in the same bundle
    /// named `image_ref` (as given to [`Image::new`], or normalised).
    pub fn subject_of(mut self, image_ref: &str) -> Artifact {
        self.subject = Some(image_ref.to_owned());
        self
    }

    /// Names the artifact in `index.json` with this reference (using the
    /// artifact's [`Naming`], [`Naming::FullRefName`] by default). Without a
    /// name (and without [`Artifact::referrers_tag`]) the artifact's entry has
    /// no naming annotations: it is found through its subject only.
    pub fn named(mut self, reference: &str) -> Artifact {
        self.reference = Some(reference.to_owned());
        self
    }

    /// Names the artifact with the referrers tag scheme of its subject:
    /// `<subject repository>:sha256-<subject hex>.<suffix>` (`sig`, `att`,
    /// `sbom`), as cosign and oras do for registries without the referrers API.
    pub fn referrers_tag(mut self, suffix: &str) -> Artifact {
        self.referrers_tag_suffix = Some(suffix.to_owned());
        self
    }

    pub fn naming(mut self, naming: Naming) -> Artifact {
        self.naming = naming;
        self
    }
}

/// In which order the tar entries come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryOrder {
    /// `oci-layout`, `index.json`, then blobs (layers, config, manifests,
    /// index, image after image), then extra files. (Default.)
    IndexFirst,
    /// Sorted by name, as containerd and `tar` of a sorted walk write: the
    /// blobs come before `index.json` and `oci-layout`; top manifests come
    /// wherever their digest sorts.
    BlobsFirst,
}

/// A way to break a bundle. The bundle is signed after breaking, so its
/// signature is valid and only reading it can find the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakage {
    /// An entry named `/etc/passwd` (absolute), first in the tar.
    AbsolutePathEntry,
    /// An entry named `../escape`, first in the tar.
    ParentDirEntry,
    /// A symlink entry `<root>link-to-passwd` → `/etc/passwd`, first in the tar.
    SymlinkEntry,
    /// A hard link entry `<root>hardlink-to-passwd` → `/etc/passwd`, first in the tar.
    HardLinkEntry,
    /// The first image's first layer: one byte of its content flipped, its
    /// file name (digest) and size kept.
    BlobDigestMismatch,
    /// The first image's top manifest: one byte flipped, file name kept.
    ManifestDigestMismatch,
    /// The first image's first layer is not in the tar at all.
    MissingLayer,
    /// `index.json` is cut off in the middle (invalid JSON).
    InvalidIndexJson,
    /// No `oci-layout` file.
    MissingOciLayoutFile,
    /// The zstd file cut in half (then signed).
    TruncatedZstd,
    /// The `.zst` file is a plain, uncompressed tar.
    NotZstd,
    /// A valid zstd stream whose content is text, not a tar.
    ZstdOfNotTar,
}

/// The name of the entries added by the entry breakages.
pub const ESCAPE_TARGET: &str = "/etc/passwd";

// ---------------------------------------------------------------------------
// What the builder reports

/// A blob of the layout: a layer, a config, or a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// One platform's image manifest inside a multi-arch image.
#[derive(Debug, Clone)]
pub struct BuiltManifest {
    /// `os/arch[/variant]`
    pub platform: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// The exact manifest bytes.
    pub manifest: Vec<u8>,
    pub config: BlobInfo,
    pub layers: Vec<BlobInfo>,
}

/// An image as built into the bundle.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The reference as given to [`Image::new`].
    pub given_ref: String,
    /// The normalised full reference (`docker.io/library/nginx:1.25`).
    pub full_ref: String,
    /// Digest of the top manifest (the index for a multi-arch image).
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// The exact top manifest bytes.
    pub manifest: Vec<u8>,
    /// One per platform for a multi-arch image; one (the top manifest itself)
    /// for a single-platform image.
    pub manifests: Vec<BuiltManifest>,
    /// The annotations naming it in `index.json`.
    pub annotations: BTreeMap<String, String>,
    /// The distinct config and layer blobs it references (all platforms),
    /// not counting manifests.
    pub blobs: Vec<BlobInfo>,
}

impl BuiltImage {
    pub fn is_multi_arch(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_MANIFEST_LIST
    }

    /// Number of distinct config and layer blobs.
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// Total bytes of the distinct config and layer blobs.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }

    /// Digests of every manifest of the image: the top one and, for a
    /// multi-arch image, each platform's.
    pub fn manifest_digests(&self) -> Vec<String> {
        let mut digests = vec![self.digest.clone()];
        for m in &self.manifests {
            if m.digest != self.digest {
                digests.push(m.digest.clone());
            }
        }
        digests
    }

    /// `docker.io/library/nginx` for `docker.io/library/nginx:1.25`.
    pub fn repository(&self) -> String {
        RefParts::parse(&self.full_ref).repository()
    }

    /// The normalised reference without its registry: `library/nginx:1.25`.
    pub fn path_and_tag(&self) -> String {
        RefParts::parse(&self.full_ref).path_and_tag()
    }

    pub fn tag(&self) -> Option<String> {
        RefParts::parse(&self.full_ref).tag
    }
}

/// An artifact as built into the bundle.
#[derive(Debug, Clone)]
pub struct BuiltArtifact {
    pub artifact_type: String,
    /// The normalised reference naming it, if it is named.
    pub full_ref: Option<String>,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub manifest: Vec<u8>,
    /// Digest of its subject, if it has one.
    pub subject: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// Config (unless the empty one) and layer blobs.
    pub blobs: Vec<BlobInfo>,
}

// ---------------------------------------------------------------------------
// The builder

/// Builds a signed bundle; see the module documentation.
#[derive(Debug, Clone)]
pub struct BundleBuilder {
    name: String,
    images: Vec<Image>,
    artifacts: Vec<Artifact>,
    layout_root: String,
    order: EntryOrder,
    directory_entries: bool,
    files: Vec<(String, Vec<u8>)>,
    breakages: Vec<Breakage>,
    zstd_level: i32,
}

impl BundleBuilder {
    /// A bundle written as `NAME.zst` with signature `NAME.sig.bin` (so
    /// `acme.tar` gives `acme.tar.zst` and `acme.tar.sig.bin`).
    pub fn new(name: &str) -> BundleBuilder {
        assert!(
            !name.is_empty() && !name.contains('/'),
            "a bundle name is a plain file name, got {name:?}"
        );
        BundleBuilder {
            name: name.to_owned(),
            images: Vec::new(),
            artifacts: Vec::new(),
            layout_root: String::new(),
            order: EntryOrder::IndexFirst,
            directory_entries: true,
            files: Vec::new(),
            breakages: Vec::new(),
            zstd_level: 3,
        }
    }

    pub fn image(mut self, image: Image) -> BundleBuilder {
        self.images.push(image);
        self
    }

    pub fn artifact(mut self, artifact: Artifact) -> BundleBuilder {
        self.artifacts.push(artifact);
        self
    }

    /// Puts the layout under this directory of the tar (`images/` as Zarf
    /// does, or `./` as `tar -C dir .` writes). Default: the tar root.
    pub fn layout_root(mut self, root: &str) -> BundleBuilder {
        let mut root = root.to_owned();
        if !root.is_empty() && !root.ends_with('/') {
            root.push('/');
        }
        self.layout_root = root;
        self
    }

    pub fn order(mut self, order: EntryOrder) -> BundleBuilder {
        self.order = order;
        self
    }

    /// Whether directories get their own tar entries (`blobs/`,
    /// `blobs/sha256/`, …), as `tar -c` writes them. Default: yes.
    pub fn directory_entries(mut self, on: bool) -> BundleBuilder {
        self.directory_entries = on;
        self
    }

    /// An extra regular file at `path` from the tar root (e.g.
    /// `packs/nginx-1.0.0.tar.gz`, `files/readme.txt`).
    pub fn file(mut self, path: &str, bytes: &[u8]) -> BundleBuilder {
        self.files.push((path.to_owned(), bytes.to_vec()));
        self
    }

    /// Breaks the bundle this way (may be given more than once).
    pub fn break_with(mut self, breakage: Breakage) -> BundleBuilder {
        self.breakages.push(breakage);
        self
    }

    pub fn zstd_level(mut self, level: i32) -> BundleBuilder {
        self.zstd_level = level;
        self
    }

    /// Writes `NAME.zst` into a new temporary directory, streaming the tar
    /// through zstd, then signs it with `key` into `NAME.sig.bin` and copies
    /// the key's public PEM next to them as `NAME.pub.pem`.
    pub fn build(self, key: &TestKey) -> BuiltBundle {
        let dir = tempfile::Builder::new()
            .prefix("airlock-bundle-")
            .tempdir()
            .expect("create a temporary directory for a test bundle");
        let zst = dir.path().join(format!("{}.zst", self.name));
        let sig = dir.path().join(format!("{}.sig.bin", self.name));
        let public_key = dir.path().join(format!("{}.pub.pem", self.name));

        let mut store = BlobStore::default();
        let images = self.build_images(&mut store);
        let artifacts = self.build_artifacts(&mut store, &images);
        let entries = self.entries(&store, &images, &artifacts);

        let breaks = |b: Breakage| self.breakages.contains(&b);
        let file = File::create(&zst).expect("create the bundle's .zst file");
        let out = BufWriter::with_capacity(1 << 20, file);
        if breaks(Breakage::NotZstd) {
            let out = write_tar(out, &entries, &store);
            finish_file(out);
        } else if breaks(Breakage::ZstdOfNotTar) {
            let mut encoder =
                zstd::Encoder::new(out, self.zstd_level).expect("start the zstd stream");
            for i in 0..2000 {
                writeln!(encoder, "line {i}: this is plain text, not a tar archive")
                    .expect("write text into the zstd stream");
            }
            finish_file(encoder.finish().expect("finish the zstd stream"));
        } else {
            let encoder = zstd::Encoder::new(out, self.zstd_level).expect("start the zstd stream");
            let encoder = write_tar(encoder, &entries, &store);
            finish_file(encoder.finish().expect("finish the zstd stream"));
        }
        if breaks(Breakage::TruncatedZstd) {
            let len = fs::metadata(&zst).expect("stat the bundle").len();
            OpenOptions::new()
                .write(true)
                .open(&zst)
                .and_then(|f| f.set_len(len / 2))
                .expect("truncate the bundle's zstd stream");
        }
        key.sign(&zst, &sig);
        fs::copy(key.public_pem(), &public_key).expect("copy the public key next to the bundle");

        let mut all_blobs: Vec<BlobInfo> = store.blobs.iter().map(StoredBlob::info).collect();
        all_blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        BuiltBundle {
            dir,
            name: self.name,
            zst,
            sig,
            public_key,
            key_kind: key.kind(),
            layout_root: self.layout_root,
            images,
            artifacts,
            all_blobs,
        }
    }

    fn build_images(&self, store: &mut BlobStore) -> Vec<BuiltImage> {
        let mut built = Vec::new();
        for image in &self.images {
            let full_ref = normalize_ref(&image.reference);
            let (manifest_type, index_type) = match image.format {
                ManifestFormat::Oci => (OCI_MANIFEST, OCI_INDEX),
                ManifestFormat::Docker => (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST),
            };
            let layers = image.layer_list();
            let platforms: Vec<String> = if image.platforms.is_empty() {
                vec!["linux/amd64".to_owned()]
            } else {
                image.platforms.clone()
            };
            let mut manifests = Vec::new();
            for (i, platform) in platforms.iter().enumerate() {
                let mix = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let layers: Vec<Layer> = layers.iter().map(|l| l.with_seed_mixed(mix)).collect();
                manifests.push(build_image_manifest(
                    store,
                    &full_ref,
                    platform,
                    &layers,
                    image.format,
                    manifest_type,
                ));
            }
            let (digest, size, media_type, manifest) = if image.platforms.is_empty() {
                let m = &manifests[0];
                (
                    m.digest.clone(),
                    m.size,
                    m.media_type.clone(),
                    m.manifest.clone(),
                )
            } else {
                let index = IndexJson {
                    schema_version: 2,
                    media_type: Some(index_type.to_owned()),
                    manifests: manifests
                        .iter()
                        .map(|m| Descriptor {
                            platform: Some(Platform::parse(&m.platform)),
                            ..Descriptor::new(&m.media_type, &m.digest, m.size)
                        })
                        .collect(),
                };
                let bytes = serde_json::to_vec(&index).expect("serialise an image index");
                let desc = store.add_bytes(index_type, bytes.clone());
                (desc.digest, desc.size, index_type.to_owned(), bytes)
            };
            let mut blobs: Vec<BlobInfo> = Vec::new();
            for m in &manifests {
                for b in std::iter::once(&m.config).chain(&m.layers) {
                    if !blobs.iter().any(|x| x.digest == b.digest) {
                        blobs.push(b.clone());
                    }
                }
            }
            built.push(BuiltImage {
                given_ref: image.reference.clone(),
                annotations: image.naming.annotations(&image.reference),
                full_ref,
                digest,
                media_type,
                size,
                manifest,
                manifests,
                blobs,
            });
        }
        built
    }

    fn build_artifacts(&self, store: &mut BlobStore, images: &[BuiltImage]) -> Vec<BuiltArtifact> {
        let mut built = Vec::new();
        for artifact in &self.artifacts {
            let subject = artifact.subject.as_ref().map(|subject_ref| {
                let wanted = normalize_ref(subject_ref);
                images
                    .iter()
                    .find(|i| i.given_ref == *subject_ref || i.full_ref == wanted)
                    .unwrap_or_else(|| {
                        panic!("artifact subject {subject_ref:?} is not an image of this bundle")
                    })
            });
            let config = match &artifact.config {
                Some((media_type, bytes)) => store.add_bytes(media_type, bytes.clone()),
                None => store.add_bytes(OCI_EMPTY, b"{}".to_vec()),
            };
            let mut blob_specs = artifact.blobs.clone();
            if blob_specs.is_empty() {
                blob_specs.push((
                    "application/octet-stream".to_owned(),
                    pseudo_random_bytes(seed_from(&artifact.artifact_type), 256),
                    BTreeMap::new(),
                ));
            }
            let layers: Vec<Descriptor> = blob_specs
                .into_iter()
                .map(|(media_type, bytes, annotations)| {
                    let mut desc = store.add_bytes(&media_type, bytes);
                    desc.annotations.extend(annotations);
                    desc
                })
                .collect();
            let manifest = ManifestJson {
                schema_version: 2,
                media_type: OCI_MANIFEST.to_owned(),
                artifact_type: Some(artifact.artifact_type.clone()),
                config: config.clone(),
                layers: layers.clone(),
                subject: subject.map(|s| Descriptor::new(&s.media_type, &s.digest, s.size)),
                annotations: BTreeMap::from([(
                    "org.opencontainers.image.created".to_owned(),
                    CREATED.to_owned(),
                )]),
            };
            let bytes = serde_json::to_vec(&manifest).expect("serialise an artifact manifest");
            let desc = store.add_bytes(OCI_MANIFEST, bytes.clone());
            let reference = match (&artifact.reference, &artifact.referrers_tag_suffix, subject) {
                (Some(reference), _, _) => Some(reference.clone()),
                (None, Some(suffix), Some(subject)) => Some(format!(
                    "{}:sha256-{}.{suffix}",
                    subject.repository(),
                    hex_of(&subject.digest)
                )),
                (None, Some(_), None) => panic!("referrers_tag needs subject_of"),
                (None, None, _) => None,
            };
            let annotations = match &reference {
                Some(reference) => artifact.naming.annotations(reference),
                None => BTreeMap::new(),
            };
            let mut blobs = Vec::new();
            if config.media_type != OCI_EMPTY {
                blobs.push(config.info());
            }
            blobs.extend(layers.iter().map(Descriptor::info));
            built.push(BuiltArtifact {
                artifact_type: artifact.artifact_type.clone(),
                full_ref: reference.as_deref().map(normalize_ref),
                digest: desc.digest,
                media_type: OCI_MANIFEST.to_owned(),
                size: desc.size,
                manifest: bytes,
                subject: subject.map(|s| s.digest.clone()),
                annotations,
                blobs,
            });
        }
        built
    }

    /// The tar entries, in order.
    fn entries(
        &self,
        store: &BlobStore,
        images: &[BuiltImage],
        artifacts: &[BuiltArtifact],
    ) -> Vec<Entry> {
        let breaks = |b: Breakage| self.breakages.contains(&b);
        let root = &self.layout_root;

        let mut index = IndexJson {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_owned()),
            manifests: Vec::new(),
        };
        for image in images {
            let mut desc = Descriptor::new(&image.media_type, &image.digest, image.size);
            desc.annotations = image.annotations.clone();
            index.manifests.push(desc);
        }
        for artifact in artifacts {
            let mut desc = Descriptor::new(&artifact.media_type, &artifact.digest, artifact.size);
            desc.artifact_type = Some(artifact.artifact_type.clone());
            desc.annotations = artifact.annotations.clone();
            index.manifests.push(desc);
        }
        let mut index_bytes = serde_json::to_vec(&index).expect("serialise index.json");
        if breaks(Breakage::InvalidIndexJson) {
            index_bytes.truncate(index_bytes.len() / 2);
        }

        let first_image = images.first();
        let first_layer = first_image.and_then(|i| i.manifests[0].layers.first());
        let missing = if breaks(Breakage::MissingLayer) {
            Some(
                first_layer
                    .expect("Breakage::MissingLayer needs an image with a layer")
                    .digest
                    .clone(),
            )
        } else {
            None
        };
        let flip_layer = breaks(Breakage::BlobDigestMismatch).then(|| {
            first_layer
                .expect("Breakage::BlobDigestMismatch needs an image with a layer")
                .digest
                .clone()
        });
        let flip_manifest = breaks(Breakage::ManifestDigestMismatch).then(|| {
            first_image
                .expect("Breakage::ManifestDigestMismatch needs an image")
                .digest
                .clone()
        });

        let mut specials = Vec::new();
        if breaks(Breakage::AbsolutePathEntry) {
            specials.push(Entry::RawName {
                name: ESCAPE_TARGET.as_bytes().to_vec(),
                data: b"root:x:0:0:pwned:/root:/bin/sh\n".to_vec(),
            });
        }
        if breaks(Breakage::ParentDirEntry) {
            specials.push(Entry::RawName {
                name: b"../escape".to_vec(),
                data: b"escaped\n".to_vec(),
            });
        }
        if breaks(Breakage::SymlinkEntry) {
            specials.push(Entry::Symlink {
                path: format!("{root}link-to-passwd"),
                target: ESCAPE_TARGET.to_owned(),
            });
        }
        if breaks(Breakage::HardLinkEntry) {
            specials.push(Entry::HardLink {
                path: format!("{root}hardlink-to-passwd"),
                target: ESCAPE_TARGET.to_owned(),
            });
        }

        let mut layout = Vec::new();
        if !breaks(Breakage::MissingOciLayoutFile) {
            layout.push(Entry::File {
                path: format!("{root}{OCI_LAYOUT_FILE}"),
                data: FileData::Bytes(OCI_LAYOUT_CONTENT.as_bytes().to_vec()),
            });
        }
        layout.push(Entry::File {
            path: format!("{root}index.json"),
            data: FileData::Bytes(index_bytes),
        });
        for (i, blob) in store.blobs.iter().enumerate() {
            if missing.as_deref() == Some(blob.digest.as_str()) {
                continue;
            }
            let flip = flip_layer.as_deref() == Some(blob.digest.as_str())
                || flip_manifest.as_deref() == Some(blob.digest.as_str());
            let data = FileData::Blob(i, flip.then_some(blob.size / 2));
            layout.push(Entry::File {
                path: format!("{root}blobs/sha256/{}", hex_of(&blob.digest)),
                data,
            });
        }
        let extras: Vec<Entry> = self
            .files
            .iter()
            .map(|(path, bytes)| Entry::File {
                path: path.clone(),
                data: FileData::Bytes(bytes.clone()),
            })
            .collect();

        let mut body: Vec<Entry> = layout.into_iter().chain(extras).collect();
        if self.directory_entries {
            let mut dirs = BTreeSet::new();
            for entry in &body {
                let path = entry.path();
                let mut end = 0;
                while let Some(slash) = path[end..].find('/') {
                    end += slash + 1;
                    dirs.insert(path[..end].to_owned());
                }
            }
            // BTreeSet order puts every directory before its subdirectories.
            let dirs = dirs.into_iter().map(|path| Entry::Dir { path });
            body = dirs.chain(body).collect();
        }
        if self.order == EntryOrder::BlobsFirst {
            body.sort_by(|a, b| a.path().cmp(b.path()));
        }
        specials.into_iter().chain(body).collect()
    }
}

/// A built, signed bundle in its own temporary directory.
pub struct BuiltBundle {
    dir: TempDir,
    name: String,
    zst: PathBuf,
    sig: PathBuf,
    public_key: PathBuf,
    key_kind: KeyKind,
    layout_root: String,
    images: Vec<BuiltImage>,
    artifacts: Vec<BuiltArtifact>,
    all_blobs: Vec<BlobInfo>,
}

impl BuiltBundle {
    /// The `NAME.zst` file.
    pub fn zst(&self) -> &Path {
        &self.zst
    }

    /// The detached signature `NAME.sig.bin` (DER for ECDSA).
    pub fn sig(&self) -> &Path {
        &self.sig
    }

    /// A copy of the public key of the key it was signed with (SPKI PEM).
    pub fn public_key_pem(&self) -> &Path {
        &self.public_key
    }

    pub fn key_kind(&self) -> KeyKind {
        self.key_kind
    }

    /// The bundle's base name (`acme` for `acme.zst`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The temporary directory holding the bundle files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the layout sits inside the tar (`""` or e.g. `images/`).
    pub fn layout_root(&self) -> &str {
        &self.layout_root
    }

    pub fn images(&self) -> &[BuiltImage] {
        &self.images
    }

    /// The image given as `reference` to [`Image::new`], or whose normalised
    /// reference is `normalize_ref(reference)`. Panics if there is none.
    pub fn image(&self, reference: &str) -> &BuiltImage {
        let wanted = normalize_ref(reference);
        self.images
            .iter()
            .find(|i| i.given_ref == reference || i.full_ref == wanted)
            .unwrap_or_else(|| {
                let known: Vec<&str> = self.images.iter().map(|i| i.full_ref.as_str()).collect();
                panic!(
                    "bundle {} has no image {reference:?}; it has {known:?}",
                    self.name
                )
            })
    }

    pub fn artifacts(&self) -> &[BuiltArtifact] {
        &self.artifacts
    }

    /// Every blob file of the layout (manifests, indexes, configs, layers),
    /// each once, sorted by digest.
    pub fn blobs(&self) -> &[BlobInfo] {
        &self.all_blobs
    }

    /// The distinct config and layer blobs of all images and artifacts (what
    /// a registry receives through blob uploads), sorted by digest.
    pub fn content_blobs(&self) -> Vec<BlobInfo> {
        let mut seen = BTreeMap::new();
        for blob in self
            .images
            .iter()
            .flat_map(|i| &i.blobs)
            .chain(self.artifacts.iter().flat_map(|a| &a.blobs))
        {
            seen.entry(blob.digest.clone())
                .or_insert_with(|| blob.clone());
        }
        seen.into_values().collect()
    }

    /// Number of distinct config and layer blobs of the whole bundle.
    pub fn unique_blob_count(&self) -> usize {
        self.content_blobs().len()
    }

    /// Total bytes of the distinct config and layer blobs of the whole bundle.
    pub fn unique_blob_bytes(&self) -> u64 {
        self.content_blobs().iter().map(|b| b.size).sum()
    }

    /// XORs the byte at `offset` of the `.zst` with 0xff, after signing (so
    /// the signature no longer matches).
    pub fn flip_byte(&self, offset: u64) {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.zst)
            .expect("open the bundle to flip a byte");
        let len = file.metadata().expect("stat the bundle").len();
        assert!(
            offset < len,
            "offset {offset} is past the end of the {len}-byte bundle"
        );
        let mut byte = [0u8; 1];
        file.seek(SeekFrom::Start(offset))
            .expect("seek in the bundle");
        file.read_exact(&mut byte)
            .expect("read a byte of the bundle");
        byte[0] ^= 0xff;
        file.seek(SeekFrom::Start(offset))
            .expect("seek in the bundle");
        file.write_all(&byte).expect("write a byte of the bundle");
        file.sync_all().expect("flush the changed bundle");
    }

    /// Flips the byte in the middle of the `.zst`, after signing.
    pub fn tamper(&self) {
        let len = fs::metadata(&self.zst).expect("stat the bundle").len();
        self.flip_byte(len / 2);
    }

    /// Replaces the signature with one made by `key` (e.g. a key airlock does
    /// not trust); [`BuiltBundle::public_key_pem`] stays the original key.
    pub fn sign_with(&self, key: &TestKey) {
        key.sign(&self.zst, &self.sig);
    }

    /// Copies `NAME.zst` and `NAME.sig.bin` into `dir` (e.g. a drop
    /// directory); returns the two new paths. The signature is copied first
    /// and the bundle written under a temporary name then renamed, so a
    /// watcher never sees a half-written `.zst`.
    pub fn copy_into(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let zst = dir.join(self.zst.file_name().expect("bundle file name"));
        let sig = dir.join(self.sig.file_name().expect("signature file name"));
        fs::copy(&self.sig, &sig).expect("copy the signature into the directory");
        let tmp = dir.join(format!(".{}.zst.partial", self.name));
        fs::copy(&self.zst, &tmp).expect("copy the bundle into the directory");
        fs::rename(&tmp, &zst).expect("rename the copied bundle into place");
        (zst, sig)
    }

    /// Unpacks the bundle with the real tools (`zstd -dc FILE | tar -x -C DEST`)
    /// and returns the layout directory (`DEST/<layout root>`).
    pub fn unpack_with_cli(&self, dest: &Path) -> PathBuf {
        unpack_with_cli(&self.zst, dest);
        dest.join(&self.layout_root)
    }
}

impl std::fmt::Debug for BuiltBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltBundle")
            .field("zst", &self.zst)
            .field(
                "images",
                &self.images.iter().map(|i| &i.full_ref).collect::<Vec<_>>(),
            )
            .field("artifacts", &self.artifacts.len())
            .finish()
    }
}

/// A one-image bundle (`quay.io/acme/broken:1.0`, one small layer) broken
/// with `breakage` and then signed with `key`.
pub fn broken_bundle(breakage: Breakage, key: &TestKey) -> BuiltBundle {
    BundleBuilder::new(&format!(
        "broken-{}",
        format!("{breakage:?}").to_lowercase()
    ))
    .image(Image::new("quay.io/acme/broken:1.0").layers(&[Layer::gzip_tar(7, 1024)]))
    .break_with(breakage)
    .build(key)
}

/// `zstd -dc ZST | tar -x -C DEST` with the real tools; panics with their
/// stderr if either fails. `dest` must exist.
pub fn unpack_with_cli(zst: &Path, dest: &Path) {
    let mut zstd = tools::command("zstd")
        .args(["-dc", "--quiet"])
        .arg(zst)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zstd -dc");
    let zstd_out = zstd.stdout.take().expect("zstd's stdout pipe");
    let tar = tools::command("tar")
        .arg("-x")
        .arg("-C")
        .arg(dest)
        .stdin(Stdio::from(zstd_out))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tar -x");
    let tar_out = tar.wait_with_output().expect("wait for tar -x");
    let zstd_out = zstd.wait_with_output().expect("wait for zstd -dc");
    assert!(
        zstd_out.status.success(),
        "zstd -dc {} failed ({}): {}",
        zst.display(),
        zstd_out.status,
        tools::clip(&zstd_out.stderr)
    );
    assert!(
        tar_out.status.success(),
        "tar -x of {} into {} failed ({}): {}",
        zst.display(),
        dest.display(),
        tar_out.status,
        tools::clip(&tar_out.stderr)
    );
}

// ---------------------------------------------------------------------------
// Internals: JSON shapes (field order as producers write them)

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

impl Descriptor {
    fn new(media_type: &str, digest: &str, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            artifact_type: None,
            digest: digest.to_owned(),
            size,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    fn info(&self) -> BlobInfo {
        BlobInfo {
            digest: self.digest.clone(),
            size: self.size,
            media_type: self.media_type.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

impl Platform {
    fn parse(platform: &str) -> Platform {
        let mut parts = platform.split('/');
        let os = parts.next().filter(|s| !s.is_empty());
        let arch = parts.next().filter(|s| !s.is_empty());
        let (Some(os), Some(arch)) = (os, arch) else {
            panic!("a platform is os/arch[/variant], got {platform:?}");
        };
        Platform {
            architecture: arch.to_owned(),
            os: os.to_owned(),
            variant: parts.next().map(str::to_owned),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestJson {
    schema_version: u32,
    media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexJson {
    schema_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<Descriptor>,
}

// ---------------------------------------------------------------------------
// Internals: blobs

#[derive(Debug, Clone)]
enum BlobData {
    Bytes(Vec<u8>),
    /// `size` bytes of `PseudoRandom::new(seed, size)`, generated when written.
    Stream {
        seed: u64,
    },
    /// `size` zero bytes, generated when written.
    Zeros,
}

#[derive(Debug, Clone)]
struct StoredBlob {
    digest: String,
    size: u64,
    media_type: String,
    data: BlobData,
}

impl StoredBlob {
    fn info(&self) -> BlobInfo {
        BlobInfo {
            digest: self.digest.clone(),
            size: self.size,
            media_type: self.media_type.clone(),
        }
    }
}

/// The layout's blobs, each once, in the order they were made.
#[derive(Debug, Default)]
struct BlobStore {
    blobs: Vec<StoredBlob>,
    by_digest: HashMap<String, usize>,
    /// (seed, size) → digest of streamed layers, so each is hashed once.
    stream_digests: HashMap<(u64, u64), String>,
    zero_digests: HashMap<u64, String>,
    /// (seed, size) → (gzip bytes, diff_id) of small layers.
    gzip_layers: HashMap<(u64, usize), (Vec<u8>, String)>,
}

impl BlobStore {
    fn add_bytes(&mut self, media_type: &str, bytes: Vec<u8>) -> Descriptor {
        let digest = sha256_digest(&bytes);
        let size = bytes.len() as u64;
        self.insert(StoredBlob {
            digest: digest.clone(),
            size,
            media_type: media_type.to_owned(),
            data: BlobData::Bytes(bytes),
        });
        Descriptor::new(media_type, &digest, size)
    }

    fn insert(&mut self, blob: StoredBlob) {
        if !self.by_digest.contains_key(&blob.digest) {
            self.by_digest.insert(blob.digest.clone(), self.blobs.len());
            self.blobs.push(blob);
        }
    }

    /// Adds a layer; returns its descriptor and diff_id.
    fn add_layer(&mut self, layer: &Layer, format: ManifestFormat) -> (Descriptor, String) {
        match layer.kind {
            LayerKind::GzipTar { seed, size } => {
                let media_type = match format {
                    ManifestFormat::Oci => OCI_LAYER_GZIP,
                    ManifestFormat::Docker => DOCKER_LAYER_GZIP,
                };
                let (gz, diff_id) = self
                    .gzip_layers
                    .entry((seed, size))
                    .or_insert_with(|| {
                        let tar = layer_tar(seed, size);
                        let diff_id = sha256_digest(&tar);
                        (gzip(&tar), diff_id)
                    })
                    .clone();
                (self.add_bytes(media_type, gz), diff_id)
            }
            LayerKind::Uncompressed { seed, size } => {
                let media_type = match format {
                    ManifestFormat::Oci => OCI_LAYER_TAR,
                    ManifestFormat::Docker => DOCKER_LAYER_TAR,
                };
                let digest = self
                    .stream_digests
                    .entry((seed, size))
                    .or_insert_with(|| sha256_digest_of_reader(PseudoRandom::new(seed, size)))
                    .clone();
                self.insert(StoredBlob {
                    digest: digest.clone(),
                    size,
                    media_type: media_type.to_owned(),
                    data: BlobData::Stream { seed },
                });
                (Descriptor::new(media_type, &digest, size), digest)
            }
            LayerKind::Zeros { size } => {
                let digest = self
                    .zero_digests
                    .entry(size)
                    .or_insert_with(|| sha256_digest_of_reader(io::repeat(0).take(size)))
                    .clone();
                self.insert(StoredBlob {
                    digest: digest.clone(),
                    size,
                    media_type: OCI_LAYER_TAR.to_owned(),
                    data: BlobData::Zeros,
                });
                (Descriptor::new(OCI_LAYER_TAR, &digest, size), digest)
            }
        }
    }
}

fn build_image_manifest(
    store: &mut BlobStore,
    full_ref: &str,
    platform: &str,
    layers: &[Layer],
    format: ManifestFormat,
    manifest_type: &str,
) -> BuiltManifest {
    let parsed = Platform::parse(platform);
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        let (desc, diff_id) = store.add_layer(layer, format);
        layer_descs.push(desc);
        diff_ids.push(diff_id);
    }
    let mut config = serde_json::json!({
        "created": CREATED,
        "architecture": parsed.architecture,
        "os": parsed.os,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/app/run"],
            "Labels": { "dev.airlock.test.image": full_ref },
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": (0..layers.len())
            .map(|i| serde_json::json!({ "created": CREATED, "created_by": format!("airlock test layer {i}") }))
            .collect::<Vec<_>>(),
    });
    if let Some(variant) = &parsed.variant {
        config["variant"] = serde_json::Value::String(variant.clone());
    }
    let config_type = match format {
        ManifestFormat::Oci => OCI_CONFIG,
        ManifestFormat::Docker => DOCKER_CONFIG,
    };
    let config_bytes = serde_json::to_vec(&config).expect("serialise an image config");
    let config_desc = store.add_bytes(config_type, config_bytes);
    let manifest = ManifestJson {
        schema_version: 2,
        media_type: manifest_type.to_owned(),
        artifact_type: None,
        config: config_desc.clone(),
        layers: layer_descs.clone(),
        subject: None,
        annotations: BTreeMap::new(),
    };
    let bytes = serde_json::to_vec(&manifest).expect("serialise an image manifest");
    let desc = store.add_bytes(manifest_type, bytes.clone());
    BuiltManifest {
        platform: platform.to_owned(),
        digest: desc.digest,
        media_type: manifest_type.to_owned(),
        size: desc.size,
        manifest: bytes,
        config: config_desc.info(),
        layers: layer_descs.iter().map(Descriptor::info).collect(),
    }
}

/// A small real tar: `app/`, `app/seed.txt`, `app/data.bin` (`size` bytes).
fn layer_tar(seed: u64, size: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::with_capacity(size + 4096));
    let mut dir = tar_header(tar::EntryType::Directory, 0o755, 0);
    builder
        .append_data(&mut dir, "app/", io::empty())
        .expect("write a layer's directory entry");
    let text = format!("airlock test layer, seed {seed}\n");
    let mut header = tar_header(tar::EntryType::Regular, 0o644, text.len() as u64);
    builder
        .append_data(&mut header, "app/seed.txt", text.as_bytes())
        .expect("write a layer's text file");
    let mut header = tar_header(tar::EntryType::Regular, 0o644, size as u64);
    builder
        .append_data(
            &mut header,
            "app/data.bin",
            PseudoRandom::new(seed, size as u64),
        )
        .expect("write a layer's data file");
    builder.into_inner().expect("finish a layer's tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    // GzBuilder writes mtime 0, so the output is deterministic.
    let mut encoder = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip a layer");
    encoder.finish().expect("finish gzipping a layer")
}

fn tar_header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header
}

// ---------------------------------------------------------------------------
// Internals: tar entries

#[derive(Debug)]
enum FileData {
    Bytes(Vec<u8>),
    /// Blob `index` of the store, with the byte at the offset flipped.
    Blob(usize, Option<u64>),
}

#[derive(Debug)]
enum Entry {
    Dir {
        path: String,
    },
    File {
        path: String,
        data: FileData,
    },
    /// A regular file whose name is written into the header as is (for names
    /// `tar::Header::set_path` refuses: absolute, `..`).
    RawName {
        name: Vec<u8>,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
    HardLink {
        path: String,
        target: String,
    },
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::Dir { path }
            | Entry::File { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::HardLink { path, .. } => path,
            Entry::RawName { .. } => "",
        }
    }
}

/// A reader that XORs one byte at `offset` with 0x01.
struct FlipAt<R> {
    inner: R,
    pos: u64,
    offset: Option<u64>,
}

impl<R: Read> Read for FlipAt<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(offset) = self.offset
            && offset >= self.pos
            && offset < self.pos + n as u64
        {
            buf[(offset - self.pos) as usize] ^= 0x01;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Writes `files` (path, content), in order, as regular files of a plain
/// tar at `out`: the archives other tools write (`docker save`, hand-made
/// producers), not a bundle this builder lays out.
pub fn write_plain_tar<P: AsRef<str>>(out: &Path, files: &[(P, Vec<u8>)]) {
    let file =
        std::fs::File::create(out).unwrap_or_else(|err| panic!("create {}: {err}", out.display()));
    let mut builder = tar::Builder::new(file);
    for (path, bytes) in files {
        let path = path.as_ref();
        let mut header = tar_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        builder
            .append_data(&mut header, path, bytes.as_slice())
            .unwrap_or_else(|err| panic!("write the tar entry {path}: {err}"));
    }
    builder
        .finish()
        .unwrap_or_else(|err| panic!("finish {}: {err}", out.display()));
}

fn write_tar<W: Write>(out: W, entries: &[Entry], store: &BlobStore) -> W {
    let mut builder = tar::Builder::new(out);
    for entry in entries {
        match entry {
            Entry::Dir { path } => {
                let mut header = tar_header(tar::EntryType::Directory, 0o755, 0);
                builder
                    .append_data(&mut header, path, io::empty())
                    .unwrap_or_else(|err| panic!("write the tar entry {path}: {err}"));
            }
            Entry::File { path, data } => {
                let result = match data {
                    FileData::Bytes(bytes) => {
                        let mut header =
                            tar_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
                        builder.append_data(&mut header, path, bytes.as_slice())
                    }
                    FileData::Blob(i, flip) => {
                        let blob = &store.blobs[*i];
                        let mut header = tar_header(tar::EntryType::Regular, 0o644, blob.size);
                        let reader: Box<dyn Read> = match &blob.data {
                            BlobData::Bytes(bytes) => Box::new(bytes.as_slice()),
                            BlobData::Stream { seed } => {
                                Box::new(PseudoRandom::new(*seed, blob.size))
                            }
                            BlobData::Zeros => Box::new(io::repeat(0).take(blob.size)),
                        };
                        let reader = FlipAt {
                            inner: reader,
                            pos: 0,
                            offset: *flip,
                        };
                        builder.append_data(&mut header, path, reader)
                    }
                };
                result.unwrap_or_else(|err| panic!("write the tar entry {path}: {err}"));
            }
            Entry::RawName { name, data } => {
                let mut header = tar_header(tar::EntryType::Regular, 0o644, data.len() as u64);
                let slot = &mut header.as_old_mut().name;
                assert!(name.len() < slot.len(), "raw tar name too long");
                slot[..name.len()].copy_from_slice(name);
                header.set_cksum();
                builder
                    .append(&header, data.as_slice())
                    .expect("write a tar entry with a raw name");
            }
            Entry::Symlink { path, target } | Entry::HardLink { path, target } => {
                let kind = if matches!(entry, Entry::Symlink { .. }) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut header = tar_header(kind, 0o777, 0);
                builder
                    .append_link(&mut header, path, target)
                    .unwrap_or_else(|err| panic!("write the link entry {path}: {err}"));
            }
        }
    }
    builder.into_inner().expect("finish the tar stream")
}

fn finish_file(mut out: BufWriter<File>) {
    out.flush().expect("flush the bundle file");
    out.into_inner()
        .map_err(|err| err.into_error())
        .and_then(|file| file.sync_all())
        .expect("write the bundle file to disk");
}
