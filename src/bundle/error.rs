//! The single error type of the producer side and how each failure is classed.

use std::io;
use std::path::PathBuf;

use crate::FailureClass;
use crate::digest::Digest;

/// Shorthand used throughout the producer side.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a bundle from being created.
///
/// Bad flags, keys and output locations are the operator's to fix (Config,
/// exit 2); a layout that is not whole, or that `airlock import` would
/// refuse, must not be signed (Integrity, exit 3). Each message is one line
/// naming the file; an underlying I/O or parser error is chained as
/// [`std::error::Error::source`] rather than repeated.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The signing key file could not be read.
    #[error("cannot read signing key {}", path.display())]
    KeyRead {
        /// The key file as given.
        path: PathBuf,
        /// Why the read failed.
        #[source]
        source: io::Error,
    },

    /// The signing key file does not hold a private key airlock can parse.
    #[error("signing key {label} is not a usable private key: {reason}")]
    KeyMalformed {
        /// The key's label, normally its path.
        label: String,
        /// What is wrong, in a few words.
        reason: String,
        /// The parser's own error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },

    /// A well-formed private key of a kind `airlock verify` would not accept,
    /// so signing with it would only produce bundles nobody can import.
    #[error("signing key {label} is not acceptable: {reason}")]
    KeyUnsupported {
        /// The key's label, normally its path.
        label: String,
        /// Which algorithm or property was rejected.
        reason: String,
    },

    /// The signing primitive itself failed, or its result did not verify.
    #[error("signing {} with {label} failed: {reason}", bundle.display())]
    SignFailed {
        /// The bundle being signed.
        bundle: PathBuf,
        /// The key's label.
        label: String,
        /// What went wrong.
        reason: String,
    },

    /// The zstd level is outside what airlock offers.
    #[error("zstd level {level} is outside 1..={max}")]
    CompressionLevel {
        /// The level asked for.
        level: i32,
        /// The highest level offered.
        max: i32,
    },

    /// `--output` names something that cannot become a bundle.
    #[error("output {}: {reason}", path.display())]
    OutputInvalid {
        /// The output path as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Creating, writing, syncing or renaming an output file failed.
    #[error("cannot {action} {}", path.display())]
    OutputIo {
        /// What was being done, e.g. "write the bundle".
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// A `--layout` or `--file` path does not exist or cannot be opened.
    #[error("cannot open {flag} {}", path.display())]
    InputMissing {
        /// `--layout` or `--file`.
        flag: &'static str,
        /// The path as given.
        path: PathBuf,
        /// Why it could not be opened.
        #[source]
        source: io::Error,
    },

    /// A `--layout` or `--file` path exists but is the wrong kind of thing,
    /// or two inputs would collide inside the bundle.
    #[error("{flag} {}: {reason}", path.display())]
    InputInvalid {
        /// `--layout` or `--file`.
        flag: &'static str,
        /// The path as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Nothing to bundle was given.
    #[error(
        "nothing to bundle: give at least one --layout, --image, --docker-archive, --pack, --chart or --file"
    )]
    NoLayout,

    /// Pulling an `--image` from its registry failed.
    #[error("--image {image}: {reason}")]
    Pull {
        /// The flag's value.
        image: String,
        /// What failed (the registry's answer or the connection error).
        reason: String,
    },

    /// A pulled manifest or blob does not match its digest.
    #[error("--image {image}: the registry sent {actual} for {expected}")]
    PulledDigestMismatch {
        /// The flag's value.
        image: String,
        /// The digest (and size) asked for.
        expected: String,
        /// What arrived.
        actual: String,
    },

    /// A `--docker-archive` is not a docker-save airlock import would
    /// accept (no manifest.json, a config or layer it names is missing, no
    /// image has a name, an entry leaves the archive).
    #[error("--docker-archive {}: {reason}", path.display())]
    DockerArchive {
        /// The archive as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The directory is not an OCI image layout (no `oci-layout` or
    /// `index.json`, or they are not what the image spec says).
    #[error("{} is not an OCI image layout: {reason}", dir.display())]
    NotALayout {
        /// The layout directory.
        dir: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },

    /// A file inside a layout could not be read.
    #[error("cannot read {}", path.display())]
    LayoutRead {
        /// The file (or directory) inside the layout.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// `index.json` or a manifest is not a valid OCI document.
    #[error("{} is not a valid manifest or index: {reason}", path.display())]
    InvalidDocument {
        /// The document's file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Something under `blobs/` is not `blobs/<sha256|sha512>/<hex>` as a
    /// regular file; `airlock import` would not treat it as a blob.
    #[error("{} does not belong in a layout's blobs directory: {reason}", path.display())]
    StrayBlobFile {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A descriptor names a blob the layout does not hold.
    #[error("{}: {referenced_by} names blob {digest}, which the layout does not hold", dir.display())]
    MissingBlob {
        /// The layout directory.
        dir: PathBuf,
        /// The missing blob.
        digest: Digest,
        /// The document naming it.
        referenced_by: String,
    },

    /// A descriptor's size disagrees with the blob file's size.
    #[error(
        "{}: {referenced_by} says blob {digest} has {declared} bytes, the file has {actual}",
        dir.display()
    )]
    SizeMismatch {
        /// The layout directory.
        dir: PathBuf,
        /// The blob.
        digest: Digest,
        /// The size the descriptor declares.
        declared: u64,
        /// The file's size.
        actual: u64,
        /// The document declaring it.
        referenced_by: String,
    },

    /// A blob's content does not hash to the digest its file name promises.
    #[error("blob {} does not match its digest (content hashes to {actual})", path.display())]
    BlobDigestMismatch {
        /// The blob file.
        path: PathBuf,
        /// What the content hashes to.
        actual: Digest,
    },

    /// An input file changed size while it was being copied into the bundle.
    #[error("{} changed while it was being bundled ({expected} bytes expected, {actual} read)", path.display())]
    InputChanged {
        /// The input file.
        path: PathBuf,
        /// Its size when the copy started.
        expected: u64,
        /// Bytes actually read.
        actual: u64,
    },

    /// The same blob has different sizes in two layouts: one copy is broken.
    #[error(
        "blob {digest} has {first_size} bytes in {} but {second_size} in {}",
        first.display(),
        second.display()
    )]
    BlobSizeConflict {
        /// The blob.
        digest: Digest,
        /// The first layout's file.
        first: PathBuf,
        /// Its size.
        first_size: u64,
        /// The second layout's file.
        second: PathBuf,
        /// Its size.
        second_size: u64,
    },

    /// Two layouts name different images with the same reference; the import
    /// would refuse the bundle, so it is refused here already.
    #[error(
        "{name} is {first_digest} in {} but {second_digest} in {}",
        first.display(),
        second.display()
    )]
    ConflictingNames {
        /// The contested reference.
        name: String,
        /// The layout naming it first.
        first: PathBuf,
        /// Its digest there (as text: keeps the error small).
        first_digest: String,
        /// The layout naming it again.
        second: PathBuf,
        /// Its digest there.
        second_digest: String,
    },

    /// Manifests nest deeper than any real producer writes them.
    #[error("{}: manifest {digest} nests indexes more than {limit} deep", dir.display())]
    NestingTooDeep {
        /// The layout directory.
        dir: PathBuf,
        /// Where the limit was hit.
        digest: Digest,
        /// The limit.
        limit: usize,
    },

    /// No `index.json` entry has a name `airlock import` could tag it with,
    /// so importing the bundle would fail with "nothing to import".
    #[error("nothing in {layouts} has an image name airlock import can use: {reasons}")]
    NothingNamed {
        /// The layout directories, comma separated.
        layouts: String,
        /// Why each entry has no name.
        reasons: String,
    },

    /// The bundle would exceed a limit `airlock import` enforces.
    #[error("{} would be refused by airlock import: {reason}", path.display())]
    ImportLimit {
        /// The layout or document responsible.
        path: PathBuf,
        /// Which limit and by how much.
        reason: String,
    },

    /// The bundle file changed between being written and being signed.
    #[error("{} changed while it was being signed; nothing was signed", path.display())]
    BundleChanged {
        /// The temporary bundle file.
        path: PathBuf,
    },
}

impl Error {
    /// Which class of failure this is, so the CLI picks the exit code: 2 for
    /// what the operator must fix in the invocation or environment, 3 for
    /// input content that must not be signed.
    pub fn class(&self) -> FailureClass {
        match self {
            Error::KeyRead { .. }
            | Error::KeyMalformed { .. }
            | Error::KeyUnsupported { .. }
            | Error::SignFailed { .. }
            | Error::CompressionLevel { .. }
            | Error::OutputInvalid { .. }
            | Error::OutputIo { .. }
            | Error::InputMissing { .. }
            | Error::InputInvalid { .. }
            | Error::NoLayout => FailureClass::Config,
            Error::NotALayout { .. }
            | Error::DockerArchive { .. }
            | Error::LayoutRead { .. }
            | Error::InvalidDocument { .. }
            | Error::StrayBlobFile { .. }
            | Error::MissingBlob { .. }
            | Error::SizeMismatch { .. }
            | Error::BlobDigestMismatch { .. }
            | Error::InputChanged { .. }
            | Error::BlobSizeConflict { .. }
            | Error::ConflictingNames { .. }
            | Error::NestingTooDeep { .. }
            | Error::NothingNamed { .. }
            | Error::ImportLimit { .. }
            | Error::BundleChanged { .. }
            | Error::PulledDigestMismatch { .. } => FailureClass::Integrity,
            Error::Pull { .. } => FailureClass::Transport,
        }
    }
}
