//! The single error type of the verify stage and how each failure is classed.

use std::io;
use std::path::PathBuf;

use crate::FailureClass;

/// Shorthand used throughout the verify stage.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a bundle from being accepted as verified.
///
/// Key problems are the operator's to fix (Config); anything wrong with the
/// bundle or its signature means the bundle must not be imported (Integrity).
/// Each message is one line naming the file; an underlying I/O or parser
/// error is not repeated in it but chained as [`std::error::Error::source`],
/// so print the chain (e.g. anyhow's `{:#}`) to show it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A trusted key file or key directory could not be read from disk.
    #[error("cannot read trusted key {}", path.display())]
    KeyRead {
        /// The file or directory as given by the operator.
        path: PathBuf,
        /// Why the read failed.
        #[source]
        source: io::Error,
    },

    /// A trusted key file was read but does not hold a public key airlock can
    /// parse (no PEM block, bad base64, bad DER, invalid point, ...).
    #[error("trusted key {label} is not a valid public key: {reason}")]
    KeyMalformed {
        /// The key's label, normally its path.
        label: String,
        /// What is wrong, in a few words.
        reason: String,
        /// The parser's own error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },

    /// A trusted key is a well-formed public key of a kind airlock refuses:
    /// an algorithm or curve `openssl dgst -sha256` bundles are not signed with,
    /// an RSA key below 2048 bits, or a weak (small-order) Ed25519 key.
    #[error("trusted key {label} is not acceptable: {reason}")]
    KeyUnsupported {
        /// The key's label, normally its path.
        label: String,
        /// Which algorithm or property was rejected.
        reason: String,
    },

    /// A keyless entry (`trust.keyless`, `--trusted-root`) cannot be used:
    /// its trusted root is not a Sigstore trusted root, a certificate or
    /// log key in it does not parse, or the identity or issuer is missing.
    #[error("keyless trust {} is not usable: {reason}", path.display())]
    TrustedRoot {
        /// The trusted root file as configured.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The key paths given yielded no key at all; verifying against an empty
    /// set could only ever fail, so it is reported as the misconfiguration it is.
    #[error("no trusted keys found in {paths}")]
    NoTrustedKeys {
        /// The paths that were searched, comma separated.
        paths: String,
    },

    /// The detached signature file does not exist: the bundle is unsigned as
    /// far as airlock can tell, so nothing in it may be imported.
    #[error("signature {} for bundle {} is missing", signature.display(), bundle.display())]
    SignatureMissing {
        /// Where the signature was expected.
        signature: PathBuf,
        /// The bundle it should sign.
        bundle: PathBuf,
    },

    /// No file beside the bundle has any of the names its signature may have
    /// ([`super::signature_candidates`]): the bundle is unsigned as far as
    /// airlock can tell, or its signature has not arrived yet.
    #[error("no signature for bundle {}: none of {looked_for} exists", bundle.display())]
    NoSignature {
        /// The bundle.
        bundle: PathBuf,
        /// The names looked for, comma separated, in rule order.
        looked_for: String,
    },

    /// The signature file exists but could not be read.
    #[error("cannot read signature {}", path.display())]
    SignatureRead {
        /// The signature file.
        path: PathBuf,
        /// Why the read failed.
        #[source]
        source: io::Error,
    },

    /// The signature file's content is not a signature any trusted key could
    /// have produced (empty, oversized, truncated, wrong encoding).
    #[error("signature {} is malformed: {reason}", path.display())]
    SignatureMalformed {
        /// The signature file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// There is no bundle file at the path given: a mistyped path is the
    /// operator's to fix, not a bundle that failed a check.
    #[error("bundle {} does not exist", path.display())]
    BundleMissing {
        /// The path as given.
        path: PathBuf,
    },

    /// The bundle file could not be opened or read to the end.
    #[error("cannot read bundle {}", path.display())]
    BundleRead {
        /// The bundle file.
        path: PathBuf,
        /// Why the read failed.
        #[source]
        source: io::Error,
    },

    /// The bundle file's size is not the one it was expected to have (it
    /// changed after it settled, or while it was hashed).
    #[error("bundle {} changed while it was verified: {actual} bytes instead of {expected}", path.display())]
    SizeChanged {
        /// The bundle file.
        path: PathBuf,
        /// The size it should have.
        expected: u64,
        /// The size found.
        actual: u64,
    },

    /// Verification was stopped before it finished (the daemon is stopping).
    #[error("verification of bundle {} was stopped", path.display())]
    Cancelled {
        /// The bundle file.
        path: PathBuf,
    },

    /// The signature is well-formed but no trusted key verifies it over the
    /// bundle's content: the bundle was altered or signed by someone else.
    #[error(
        "signature {} does not verify {} with {}",
        signature.display(),
        bundle.display(),
        any_of(*keys)
    )]
    NotVerified {
        /// The signature file.
        signature: PathBuf,
        /// The bundle file.
        bundle: PathBuf,
        /// How many trusted keys were tried.
        keys: usize,
        /// The hex SHA-256 of the bundle as it was read, so a caller can
        /// tell whether a later look at the file sees the same bytes.
        bundle_sha256: String,
    },

    /// A Sigstore bundle (`X.sigstore.json`) is well-formed but does not
    /// verify the bundle file; the reason names the check that failed.
    #[error(
        "Sigstore bundle {} does not verify {}: {}",
        .0.signature.display(),
        .0.bundle.display(),
        .0.reason
    )]
    SigstoreNotVerified(Box<SigstoreRejection>),
}

/// A Sigstore bundle that does not verify the bundle file: which check
/// failed is in `reason` (digest, identity, issuer, validity, chain, log).
#[derive(Debug)]
pub struct SigstoreRejection {
    /// The `X.sigstore.json` file.
    pub signature: PathBuf,
    /// The bundle file.
    pub bundle: PathBuf,
    /// The check that failed.
    pub reason: String,
    /// Hex SHA-256 of the bundle as read (empty when the Sigstore bundle
    /// did not parse and the bundle file was not read).
    pub bundle_sha256: String,
}

fn any_of(keys: usize) -> String {
    if keys == 1 {
        "the trusted key".to_owned()
    } else {
        format!("any of {keys} trusted keys")
    }
}

impl Error {
    /// Which class of failure this is, so the CLI picks the exit code and the
    /// daemon knows never to retry an Integrity failure.
    pub fn class(&self) -> FailureClass {
        match self {
            Error::KeyRead { .. }
            | Error::TrustedRoot { .. }
            | Error::KeyMalformed { .. }
            | Error::KeyUnsupported { .. }
            | Error::NoTrustedKeys { .. }
            | Error::BundleMissing { .. } => FailureClass::Config,
            Error::SignatureMissing { .. }
            | Error::NoSignature { .. }
            | Error::SignatureRead { .. }
            | Error::SignatureMalformed { .. }
            | Error::BundleRead { .. }
            | Error::NotVerified { .. }
            | Error::SigstoreNotVerified(_)
            | Error::SizeChanged { .. } => FailureClass::Integrity,
            Error::Cancelled { .. } => FailureClass::Transport,
        }
    }
}
