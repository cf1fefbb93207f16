//! The producer side: make a signed bundle that `airlock import` accepts.
//!
//! [`create`] merges OCI image layouts, docker-save archives, Palette packs,
//! Helm charts and plain files into `NAME.zst`, a zstd-compressed tar, and signs it into
//! `NAME.sig.bin` exactly as `openssl dgst -sha256 -sign` (or `openssl
//! pkeyutl -sign -rawin` for Ed25519) would, so the bundle verifies with
//! airlock and with openssl alike.
//!
//! It streams: the tar is written straight into the zstd encoder and into a
//! temporary file beside the output, each input blob is hashed and compared
//! with its digest as it is copied, and the output's SHA-256 is computed on
//! the way out. Memory does not grow with the size of the inputs. A layout
//! that is broken (a missing blob, a blob whose content does not match its
//! name, a manifest the importer could not parse) is refused before
//! anything is signed, and every temporary file is removed.
//!
//! This module sits beside the import pipeline rather than in it: it uses
//! [`crate::verify`] for key rules and file pairing, and [`crate::read`]'s
//! document parser and limits so that what it accepts is exactly what the
//! importer accepts.

mod docker_save;
mod error;
mod files;
mod hashing;
mod key;
mod layout_source;
mod merge;
mod packs;
mod publish;
mod pull;
mod sign;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use files::FILES_DIR;
pub use key::SigningKey;
pub use packs::{CHARTS_DIR, PACKS_DIR};
pub use pull::PullOptions;
pub use writer::LONG_WINDOW_LOG;

use crate::verify::KeyAlgorithm;

/// The fast default: about as quick as the disk on one core, and typically
/// within a few percent of level 19 on already-compressed image layers.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// The highest level offered: above 19 zstd's "ultra" levels need windows
/// and memory out of proportion to their gain on image layers.
pub const MAX_ZSTD_LEVEL: i32 = 19;

/// `airlock bundle create --help` after the flags: examples, what is
/// written in which order, how each key type signs, and the exit codes.
pub const CREATE_HELP: &str = "\
Examples:
  skopeo copy --all docker://quay.io/acme/app:1.0 oci:./layout:quay.io/acme/app:1.0
  airlock bundle create --output out/acme-2024-06.zst --signing-key signing-key.pem \\
      --layout ./layout --file ./palette-installer-4.6.0.iso
  airlock bundle create -o out/acme.zst --signing-key key.pem \\
      --layout ./images --layout ./more-images --zstd-level 19 --long
  airlock bundle create -o out/mirror.zst --signing-key key.pem \\
      --image quay.io/acme/app:1.0 --image cache.local/acme/db:2=docker.io/acme/db:2
  docker save -o app.tar quay.io/acme/app:1.0
  airlock bundle create -o out/app.zst --signing-key key.pem \\
      --docker-archive app.tar --pack ./packs/nginx --pack edge-1.2.0.tar.gz \\
      --chart nginx-15.0.0.tgz

Writes out/acme-2024-06.zst and out/acme-2024-06.sig.bin (NAME.tar.zst pairs
with NAME.tar.sig.bin). Both are written under hidden temporary names and
renamed into place, the signature first and the bundle last, so a drop
folder never holds a partial bundle. Every blob is hashed and compared with
its name as it is copied: a broken layout is refused (exit 3) and nothing is
left behind.

Images are named by their index.json annotations, as airlock import reads
them: give skopeo the full reference (oci:DIR:quay.io/acme/app:1.0), or
copy from a directory `airlock import --registry oci:DIR` wrote.

Other inputs (at least one input of any kind is needed):
  --image           REF or REF=NAME: pulled from its registry (every platform
                    of an index, each blob checked against its digest) into
                    the bundle's OCI layout, named NAME (default REF). Auth
                    from --image-auth-file (default ~/.docker/config.json when
                    present); --image-plain-http, --image-ca-cert.
  --docker-archive  a docker save / skopeo docker-archive tar, plain or
                    .tar.gz. Carried unchanged under docker-<name>/ (a Docker
                    25 archive's index.json and oci-layout are left out), so
                    airlock import builds the same Docker schema 2 images from
                    it as from the archive itself. Checked first with the
                    importer's own reader (every layer hashed against the
                    config's diff_ids). Images are named by their RepoTags;
                    an archive in which no image has one is refused.
  --pack            a pack directory (pack.json with name and version) is
                    archived into packs/<name>-<version>.tar.gz with sorted
                    entries, owner 0, mtime 0: the same directory always gives
                    the same digest. A pack .tar.gz is copied after checking
                    its pack.json.
  --chart           a chart .tgz is copied to charts/<file> after checking
                    its Chart.yaml has a name and a version.

Signing keys: unencrypted PEM, PKCS#8 (`openssl genpkey`), SEC1
(EC PRIVATE KEY) or PKCS#1 (RSA PRIVATE KEY). ECDSA P-256/P-384 and RSA
2048-4096 sign the SHA-256 computed while the bundle is written, as
`openssl dgst -sha256 -sign` does. Ed25519 signs the whole file as
`openssl pkeyutl -sign -rawin` does; pure Ed25519 hashes the message twice,
so the finished bundle is read back twice (streamed: memory stays constant,
the extra time is two reads of the file).

Exit codes:
  0  success
  2  usage or configuration error (bad flags, unreadable or unacceptable key,
     missing or unwritable output directory, a --pack or --chart without
     name and version)
  3  a --layout or --docker-archive is broken (missing or corrupt blob or
     layer, invalid manifest), a pulled --image does not match its digest, or
     an input would be refused by airlock import. Nothing was written.
  4  an --image registry cannot be reached or does not have the image";

/// The `oci-layout` file every bundle carries.
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// How hard to compress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// zstd level, 1 to [`MAX_ZSTD_LEVEL`].
    pub level: i32,
    /// Long-distance matching with a 2^[`LONG_WINDOW_LOG`] window
    /// (`zstd --long=27`); the importer accepts windows up to 2^31.
    pub long: bool,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            level: DEFAULT_ZSTD_LEVEL,
            long: false,
        }
    }
}

/// What to put in a bundle and where.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The bundle to write, `DIR/NAME.zst`; the signature goes beside it as
    /// [`crate::verify::signature_path_for`] pairs it (`DIR/NAME.sig.bin`).
    pub output: PathBuf,
    /// The private key (PEM) to sign with.
    pub signing_key: PathBuf,
    /// OCI image layout directories, merged in this order.
    pub layouts: Vec<PathBuf>,
    /// Plain files, carried as `files/<name>`.
    pub files: Vec<PathBuf>,
    /// docker-save archives (plain or gzip tar), carried as
    /// `docker-<name>/…` for the importer's docker-save reader.
    pub docker_archives: Vec<PathBuf>,
    /// Palette packs: a directory with `pack.json` (archived into
    /// `packs/<name>-<version>.tar.gz`) or a pack `.tar.gz` (copied).
    pub packs: Vec<PathBuf>,
    /// Helm chart archives, carried as `charts/<file>`.
    pub charts: Vec<PathBuf>,
    /// Compression settings.
    pub compression: Compression,
    /// When the bundle was made, written into `index.json` as the
    /// `org.opencontainers.image.created` annotation (bundles with images
    /// only) for `trust.max_bundle_age` on the importing side.
    pub created: std::time::SystemTime,
}

/// What [`create`] made.
#[derive(Debug, Clone)]
pub struct Created {
    /// The bundle file.
    pub bundle: PathBuf,
    /// Its detached signature.
    pub signature: PathBuf,
    /// `sha256:<hex>` of the bundle file: what `airlock verify` prints and
    /// what `airlock watch` identifies the bundle by.
    pub digest: String,
    /// The bundle file's size in bytes.
    pub size: u64,
    /// Entries in the bundle's `index.json` (images, indexes, artifacts).
    pub images: usize,
    /// Blobs in the bundle (manifests, configs, layers), each once.
    pub blobs: usize,
    /// Plain files under `files/`.
    pub files: usize,
    /// docker-save archives carried under `docker-<name>/` (their images
    /// are counted in `images`).
    pub docker_archives: usize,
    /// Packs under `packs/`.
    pub packs: usize,
    /// Charts under `charts/`.
    pub charts: usize,
    /// The signing key's label (its path).
    pub key_label: String,
    /// The signature algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// `sha256:<hex>` of the public key's SPKI DER, as `airlock verify` shows it.
    pub key_fingerprint: String,
}

impl Created {
    /// What `airlock bundle create` prints: the summary line, then the
    /// signature file and the digest `airlock verify` will show.
    pub fn report(&self) -> String {
        let mut counts = vec![plural(self.images, "image"), plural(self.blobs, "blob")];
        for (n, noun) in [
            (self.docker_archives, "docker archive"),
            (self.packs, "pack"),
            (self.charts, "chart"),
            (self.files, "file"),
        ] {
            if n > 0 {
                counts.push(plural(n, noun));
            }
        }
        format!(
            "Created {} ({}, {:.1} MiB) signed with {} ({}, {})\nsignature {}\ndigest {}\n",
            self.bundle.display(),
            counts.join(", "),
            self.size as f64 / (1024.0 * 1024.0),
            self.key_label,
            self.key_algorithm,
            self.key_fingerprint,
            self.signature.display(),
            self.digest
        )
    }
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Creates and signs a bundle; see the module documentation. Blocking (it
/// reads and compresses everything), so async callers use `spawn_blocking`.
///
/// Everything that can be checked cheaply — the output location, the key,
/// the plain files, each layout's structure — is checked before the first
/// byte is compressed.
pub fn create(options: &CreateOptions) -> Result<Created> {
    if !(1..=MAX_ZSTD_LEVEL).contains(&options.compression.level) {
        return Err(Error::CompressionLevel {
            level: options.compression.level,
            max: MAX_ZSTD_LEVEL,
        });
    }
    let outputs = publish::Outputs::new(&options.output)?;
    let key = SigningKey::from_pem_file(&options.signing_key)?;
    let files = files::check(&options.files)?;
    if options.layouts.is_empty()
        && options.files.is_empty()
        && options.docker_archives.is_empty()
        && options.packs.is_empty()
        && options.charts.is_empty()
    {
        return Err(Error::NoLayout);
    }
    let docker_archives = docker_save::check(&options.docker_archives)?;
    let scratch = outputs.directory();
    let mut carried = packs::packs(&options.packs, scratch)?;
    carried.extend(packs::charts(&options.charts)?);
    check_unique(&carried)?;
    let merged = if options.layouts.is_empty() {
        None
    } else {
        let layouts = options
            .layouts
            .iter()
            .map(|dir| layout_source::LayoutSource::open(dir))
            .collect::<Result<Vec<_>>>()?;
        Some(merge::merge(layouts, options.created)?)
    };
    let mut extra: Vec<&files::ExtraFile> = carried.iter().map(|c| &c.file).collect();
    extra.extend(files.iter());
    extra.sort_by(|a, b| a.entry.cmp(&b.entry));

    let temporary = outputs.temporary("zst")?;
    let inputs = Inputs {
        merged: merged.as_ref(),
        docker_archives: &docker_archives,
        extra: &extra,
    };
    let written = write(&temporary, &inputs, options.compression)?;
    let signature = sign::sign(&key, temporary.as_file(), temporary.path(), &written)?;
    outputs.publish(temporary, &signature)?;

    Ok(Created {
        bundle: outputs.bundle().to_owned(),
        signature: outputs.signature().to_owned(),
        digest: format!("sha256:{}", hex::encode(written.sha256)),
        size: written.size,
        images: merged.as_ref().map_or(0, |m| m.images)
            + docker_archives.iter().map(|d| d.images).sum::<usize>(),
        blobs: merged.as_ref().map_or(0, |m| m.blobs.len()),
        files: files.len(),
        docker_archives: docker_archives.len(),
        packs: options.packs.len(),
        charts: options.charts.len(),
        key_label: key.label().to_owned(),
        key_algorithm: key.algorithm(),
        key_fingerprint: key.fingerprint().to_owned(),
    })
}

/// Two packs or charts that would have the same entry are refused.
fn check_unique(carried: &[packs::Bundled]) -> Result<()> {
    let mut seen: std::collections::HashMap<&str, &Path> = std::collections::HashMap::new();
    for bundled in carried {
        if let Some(first) = seen.insert(&bundled.file.entry, &bundled.file.path) {
            return Err(Error::InputInvalid {
                flag: "--pack/--chart",
                path: bundled.file.path.clone(),
                reason: format!(
                    "would be {} in the bundle, as {} is",
                    bundled.file.entry,
                    first.display()
                ),
            });
        }
    }
    Ok(())
}

/// Everything that goes into the tar.
struct Inputs<'a> {
    merged: Option<&'a merge::Merged>,
    docker_archives: &'a [docker_save::DockerArchive],
    /// Packs, charts and plain files, sorted by entry name.
    extra: &'a [&'a files::ExtraFile],
}

/// Pulls `images` (`REF[=NAME]`) into a temporary OCI layout beside the
/// output, adds it to the layouts, and creates the bundle as [`create`]
/// does; the temporary layout is removed afterwards, whatever happens.
pub async fn create_with_images(
    mut options: CreateOptions,
    images: &[String],
    pull_options: &PullOptions,
) -> Result<Created> {
    let _pulled = if images.is_empty() {
        None
    } else {
        let outputs = publish::Outputs::new(&options.output)?;
        let scratch = tempfile::Builder::new()
            .prefix(".airlock-pull-")
            .tempdir_in(outputs.directory())
            .map_err(|source| Error::OutputIo {
                action: "create a pull directory in",
                path: outputs.directory().to_owned(),
                source,
            })?;
        let layout = scratch.path().join("layout");
        pull::pull(images, pull_options, &layout).await?;
        options.layouts.push(layout);
        Some(scratch)
    };
    tokio::task::spawn_blocking(move || create(&options))
        .await
        .map_err(|e| Error::OutputIo {
            action: "finish",
            path: PathBuf::from("(bundle create)"),
            source: std::io::Error::other(e.to_string()),
        })?
}

/// Writes the tar entries in their fixed order: `oci-layout`, `index.json`,
/// the blobs sorted by path (when there is a layout), each docker-save in
/// its own order, then packs, charts and plain files sorted by name.
/// Putting the small documents first lets a reader of the stream know the
/// layout before the first large blob goes by.
fn write(
    temporary: &tempfile::NamedTempFile,
    inputs: &Inputs<'_>,
    compression: Compression,
) -> Result<writer::Written> {
    let path: &Path = temporary.path();
    // A second handle on the same open file: the writer owns one, the
    // signer later reads the finished bytes through the other.
    let file = temporary
        .as_file()
        .try_clone()
        .map_err(|source| Error::OutputIo {
            action: "open",
            path: path.to_owned(),
            source,
        })?;
    let mut writer = writer::BundleWriter::new(file, path, compression)?;
    if let Some(merged) = inputs.merged {
        writer.add_bytes("oci-layout", OCI_LAYOUT)?;
        writer.add_bytes("index.json", &merged.index_json)?;
        for (digest, blob) in &merged.blobs {
            writer.add_blob(digest, blob)?;
        }
    }
    for archive in inputs.docker_archives {
        archive.for_each(|item| match item {
            docker_save::Item::File(name, size, reader) => {
                writer.add_reader(&name, reader, size, &archive.path)
            }
            docker_save::Item::Link(name, target) => writer.add_link(&name, &target),
        })?;
    }
    for file in inputs.extra {
        writer.add_file(&file.entry, &file.path, file.size)?;
    }
    writer.finish()
}
