//! The producer side: make a signed bundle that `airlock import` accepts.
//!
//! [`create`] merges one or more OCI image layouts (and optional plain
//! files) into `NAME.zst`, a zstd-compressed tar, and signs it into
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

mod error;
mod files;
mod hashing;
mod key;
mod layout_source;
mod merge;
mod publish;
mod sign;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use files::FILES_DIR;
pub use key::SigningKey;
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
      --layout ./layout --file ./installer.iso
  airlock bundle create -o out/acme.zst --signing-key key.pem \\
      --layout ./images --layout ./more-images --zstd-level 19 --long

Writes out/acme-2024-06.zst and out/acme-2024-06.sig.bin (NAME.tar.zst pairs
with NAME.tar.sig.bin). Both are written under hidden temporary names and
renamed into place, the signature first and the bundle last, so a drop
folder never holds a partial bundle. Every blob is hashed and compared with
its name as it is copied: a broken layout is refused (exit 3) and nothing is
left behind.

Images are named by their index.json annotations, as airlock import reads
them: give skopeo the full reference (oci:DIR:quay.io/acme/app:1.0), or
copy from a directory `airlock import --registry oci:DIR` wrote.

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
     missing or unwritable output directory)
  3  a --layout is broken (missing or corrupt blob, invalid manifest) or would
     be refused by airlock import. Nothing was written.";

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
    /// Compression settings.
    pub compression: Compression,
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
        if self.files > 0 {
            counts.push(plural(self.files, "file"));
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
    if options.layouts.is_empty() {
        return Err(Error::NoLayout);
    }
    let layouts = options
        .layouts
        .iter()
        .map(|dir| layout_source::LayoutSource::open(dir))
        .collect::<Result<Vec<_>>>()?;
    let merged = merge::merge(layouts)?;

    let temporary = outputs.temporary("zst")?;
    let written = write(&temporary, &merged, &files, options.compression)?;
    let signature = sign::sign(&key, temporary.as_file(), temporary.path(), &written)?;
    outputs.publish(temporary, &signature)?;

    Ok(Created {
        bundle: outputs.bundle().to_owned(),
        signature: outputs.signature().to_owned(),
        digest: format!("sha256:{}", hex::encode(written.sha256)),
        size: written.size,
        images: merged.images,
        blobs: merged.blobs.len(),
        files: files.len(),
        key_label: key.label().to_owned(),
        key_algorithm: key.algorithm(),
        key_fingerprint: key.fingerprint().to_owned(),
    })
}

/// Writes the tar entries in their fixed order: `oci-layout`, `index.json`,
/// the blobs sorted by path, then the plain files sorted by name. Putting
/// the small documents first lets a reader of the stream know the layout
/// before the first large blob goes by.
fn write(
    temporary: &tempfile::NamedTempFile,
    merged: &merge::Merged,
    files: &[files::ExtraFile],
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
    writer.add_bytes("oci-layout", OCI_LAYOUT)?;
    writer.add_bytes("index.json", &merged.index_json)?;
    for (digest, blob) in &merged.blobs {
        writer.add_blob(digest, blob)?;
    }
    for file in files {
        writer.add_file(&file.entry, &file.path, file.size)?;
    }
    writer.finish()
}
