//! `--image REF[=NAME]`: images pulled from a registry into an OCI image
//! layout that then goes into the bundle like any `--layout`.
//!
//! Everything is fetched with airlock's own registry client (the one import
//! pushes with: token and basic auth, retries, custom CAs), by digest below
//! the top manifest, every platform of an index included. Each manifest and
//! blob is hashed as it is stored and refused if it does not match its
//! digest. Foreign layers (with URLs) are left out, as registries serve them
//! from elsewhere. The entry in the layout's `index.json` is named
//! `org.opencontainers.image.ref.name` and `io.containerd.image.name` =
//! NAME (default: REF), normalised, which is what import reads.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_client::Reference;

use crate::digest::{Digest, Hasher};
use crate::push::registry::{Credentials, RegistryClient, RegistryConfig, auth};
use crate::read::document::{self, Descriptor, Document, OCI_INDEX};
use crate::read::names::{CONTAINERD_NAME, OCI_REF_NAME, parse_full};

use super::error::{Error, Result};

/// How to reach the registries images are pulled from.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Talk plain HTTP (default false).
    pub plain_http: bool,
    /// Extra CA certificates to trust.
    pub ca_certs: Vec<PathBuf>,
    /// A Docker `config.json` with credentials (default: the Docker client's,
    /// when it exists).
    pub auth_file: Option<PathBuf>,
}

/// One `--image` flag: where to pull from and the name to record.
#[derive(Debug, Clone)]
struct Wanted {
    flag: String,
    source: Reference,
    name: Reference,
}

/// Pulls every image into a new OCI layout at `dir` (which must not exist).
pub async fn pull(images: &[String], options: &PullOptions, dir: &Path) -> Result<()> {
    let wanted = images
        .iter()
        .map(|flag| parse(flag))
        .collect::<Result<Vec<_>>>()?;
    let layout = Layout::create(dir)?;
    let mut entries = Vec::new();
    for image in &wanted {
        let client = client(image, options)?;
        let mut puller = Puller {
            image,
            client: &client,
            layout: &layout,
            stored: HashSet::new(),
        };
        let reference = image
            .source
            .digest()
            .or(image.source.tag())
            .unwrap_or("latest")
            .to_owned();
        let (media_type, digest, size) = puller.manifest(&reference, 0).await?;
        let name = image.name.whole();
        entries.push(serde_json::json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": size,
            "annotations": {OCI_REF_NAME: name, CONTAINERD_NAME: name},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries,
    });
    layout.write("index.json", index.to_string().as_bytes())
}

/// `REF` or `REF=NAME`.
fn parse(flag: &str) -> Result<Wanted> {
    let (source, name) = flag.split_once('=').unwrap_or((flag, flag));
    let parsed = |text: &str| {
        parse_full(text).map_err(|reason| Error::InputInvalid {
            flag: "--image",
            path: PathBuf::from(flag),
            reason: format!("{text:?} is not an image reference: {reason}"),
        })
    };
    Ok(Wanted {
        flag: flag.to_owned(),
        source: parsed(source)?,
        name: parsed(name)?,
    })
}

fn client(image: &Wanted, options: &PullOptions) -> Result<RegistryClient> {
    let host = image.source.resolve_registry().to_owned();
    let config_error = |reason: String| Error::InputInvalid {
        flag: "--image",
        path: PathBuf::from(&image.flag),
        reason,
    };
    let credentials = match options.auth_file.clone().or_else(auth::default_auth_file) {
        Some(path) if options.auth_file.is_some() || path.exists() => {
            auth::credentials_from_auth_file(&path, &host)
                .map_err(|e| config_error(e.to_string()))?
        }
        _ => Credentials::Anonymous,
    };
    RegistryClient::new(RegistryConfig {
        host,
        plain_http: options.plain_http,
        ca_certs: options.ca_certs.clone(),
        credentials,
        ..RegistryConfig::default()
    })
    .map_err(|e| config_error(e.to_string()))
}

/// The layout being written.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn create(dir: &Path) -> Result<Self> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(|source| Error::OutputIo {
            action: "create the pull directory",
            path: blobs.clone(),
            source,
        })?;
        let layout = Layout {
            dir: dir.to_owned(),
        };
        layout.write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(layout)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        fs::write(&path, bytes).map_err(|source| Error::OutputIo {
            action: "write",
            path,
            source,
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }
}

struct Puller<'a> {
    image: &'a Wanted,
    client: &'a RegistryClient,
    layout: &'a Layout,
    stored: HashSet<Digest>,
}

impl Puller<'_> {
    fn failed(&self, reason: String) -> Error {
        Error::Pull {
            image: self.image.flag.clone(),
            reason,
        }
    }

    /// Fetches a manifest or index and everything below it; returns its
    /// media type, digest and size.
    async fn manifest(&mut self, reference: &str, depth: usize) -> Result<(String, Digest, u64)> {
        if depth > 8 {
            return Err(self.failed("indexes nest deeper than 8 levels".into()));
        }
        let repository = self.image.source.repository().to_owned();
        let (served_type, bytes) = self
            .client
            .get_manifest(&repository, reference)
            .await
            .map_err(|e| self.failed(e.to_string()))?;
        let digest = Digest::sha256_of(&bytes);
        if let Ok(expected) = reference.parse::<Digest>()
            && expected != digest
        {
            return Err(Error::PulledDigestMismatch {
                image: self.image.flag.clone(),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        let parsed = document::parse(&bytes)
            .map_err(|e| self.failed(format!("manifest {digest} is not usable: {e:?}")))?;
        let media_type = match &parsed {
            Document::Index { media_type, .. } | Document::Manifest { media_type, .. } => {
                media_type.clone()
            }
        }
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            if served_type.is_empty() {
                parsed.media_type().to_owned()
            } else {
                served_type
            }
        });
        match &parsed {
            Document::Index { manifests, .. } => {
                for child in manifests {
                    if self.stored.contains(&child.digest) {
                        continue;
                    }
                    Box::pin(self.manifest(&child.digest.to_string(), depth + 1)).await?;
                }
            }
            Document::Manifest { config, layers, .. } => {
                for blob in config.iter().chain(layers) {
                    if blob.has_urls {
                        continue;
                    }
                    self.blob(blob).await?;
                }
            }
        }
        self.layout
            .write(&format!("blobs/sha256/{}", digest.hex()), &bytes)?;
        self.stored.insert(digest.clone());
        Ok((media_type, digest, bytes.len() as u64))
    }

    /// Fetches one blob into the layout, checking its digest and size.
    async fn blob(&mut self, descriptor: &Descriptor) -> Result<()> {
        let digest = &descriptor.digest;
        if !self.stored.insert(digest.clone()) {
            return Ok(());
        }
        let path = self.layout.blob_path(digest);
        let file = fs::File::create(&path).map_err(|source| Error::OutputIo {
            action: "create",
            path: path.clone(),
            source,
        })?;
        let mut sink = HashingFile {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            hasher: Hasher::new(digest.algorithm()),
        };
        let repository = self.image.source.repository().to_owned();
        let size = self
            .client
            .get_blob(&repository, digest, descriptor.size, &mut sink)
            .await
            .map_err(|e| self.failed(e.to_string()))?;
        sink.file.flush().map_err(|source| Error::OutputIo {
            action: "write",
            path: path.clone(),
            source,
        })?;
        let actual = sink.hasher.finish();
        if actual != *digest || size != descriptor.size {
            return Err(Error::PulledDigestMismatch {
                image: self.image.flag.clone(),
                expected: format!("{digest} ({} bytes)", descriptor.size),
                actual: format!("{actual} ({size} bytes)"),
            });
        }
        Ok(())
    }
}

/// A file that hashes what is written to it.
struct HashingFile {
    file: std::io::BufWriter<fs::File>,
    hasher: Hasher,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_flags_take_an_optional_name() {
        let plain = parse("nginx:1.25").expect("parsed");
        assert_eq!(plain.name.whole(), "docker.io/library/nginx:1.25");
        assert_eq!(plain.source.resolve_registry(), "index.docker.io");
        let renamed = parse("127.0.0.1:5000/acme/app:1.0=quay.io/acme/app:1.0").expect("parsed");
        assert_eq!(renamed.source.registry(), "127.0.0.1:5000");
        assert_eq!(renamed.name.whole(), "quay.io/acme/app:1.0");
        assert!(parse("acme/app:bad tag").is_err());
    }
}
