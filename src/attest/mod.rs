//! Signed import attestations: for every image an import writes, an in-toto
//! statement saying which bundle it came from, who vouched for that bundle
//! and for the image, and when and by whom it was imported, in a DSSE
//! envelope signed with the site's key and stored the way `cosign attest`
//! stores attestations (`sha256-<hex>.att` in the image's repository), so
//! admission controllers (Kyverno, the Sigstore policy-controller) can
//! demand it with `cosign verify-attestation`'s own checks.
//!
//! Depends on [`crate::plan`] (what was imported), [`crate::push`] (the
//! registry client) and [`crate::trust`] (the image signature verdicts and
//! the DSSE envelope reader); only [`crate::import`] and the CLI use it.

mod statement;
mod store;
mod verify;

use std::path::{Path, PathBuf};

use crate::FailureClass;
use crate::bundle::SigningKey;

pub use statement::{ImportFacts, Importer, PREDICATE_TYPE, envelope, statement};
pub use store::{ATTESTATION_MEDIA_TYPE, attach_all, attestation_tag};
pub use verify::{VerifiedAttestation, verify_image};

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why attestations cannot be made, written or verified.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The attestation key cannot be loaded.
    #[error("attestation key {path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<crate::bundle::Error>,
    },
    /// The attestation key is not ECDSA P-256.
    #[error(
        "attestation key {path} is {algorithm}; attestations are signed with ECDSA P-256, as cosign generates (cosign generate-key-pair, or openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)"
    )]
    NotP256 {
        /// The key file.
        path: PathBuf,
        /// Its algorithm.
        algorithm: String,
    },
    /// Attestations are stored in a registry; an `oci:` target has none.
    #[error(
        "attestations are written to registry targets only, not to an OCI layout directory ({target})"
    )]
    LayoutTarget {
        /// The target.
        target: String,
    },
    /// Reading or writing the registry failed.
    #[error(transparent)]
    Registry(#[from] crate::push::Error),
    /// The image has no attestation at all.
    #[error("{image} ({digest}) has no attestations (no {tag} in {repository})")]
    NoAttestations {
        /// The image as given.
        image: String,
        /// Its digest.
        digest: String,
        /// The attestation tag looked for.
        tag: String,
        /// The repository.
        repository: String,
    },
    /// None of the image's attestations is a valid import attestation.
    #[error("{image} ({digest}) has no valid import attestation: {reasons}")]
    NotAttested {
        /// The image as given.
        image: String,
        /// Its digest.
        digest: String,
        /// Why each attestation failed.
        reasons: String,
    },
    /// The image reference cannot be parsed or resolved.
    #[error("image {image}: {reason}")]
    Image {
        /// The image as given.
        image: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// The failure class (exit code).
    pub fn class(&self) -> FailureClass {
        match self {
            Error::Key { .. } | Error::NotP256 { .. } | Error::LayoutTarget { .. } => {
                FailureClass::Config
            }
            Error::Registry(e) => e.class(),
            Error::NoAttestations { .. } | Error::NotAttested { .. } => FailureClass::Integrity,
            Error::Image { .. } => FailureClass::Config,
        }
    }
}

/// The site's key for signing import attestations (`attestations.signing_key`,
/// `--attestation-key`), ECDSA P-256 like a cosign key.
#[derive(Debug)]
pub struct Attestor {
    key: SigningKey,
    importer: Importer,
}

impl Attestor {
    /// Loads the key (unencrypted PEM: PKCS#8 or SEC1) and finds out who is
    /// importing ([`Importer::detect`]).
    pub fn load(path: &Path) -> Result<Self> {
        let key = SigningKey::from_pem_file(path).map_err(|source| Error::Key {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        if key.algorithm() != crate::verify::KeyAlgorithm::EcdsaP256 {
            return Err(Error::NotP256 {
                path: path.to_owned(),
                algorithm: key.algorithm().to_string(),
            });
        }
        Ok(Self {
            key,
            importer: Importer::detect(),
        })
    }

    /// `sha256:` of the public key's SPKI, as `airlock verify` prints it.
    pub fn fingerprint(&self) -> &str {
        self.key.fingerprint()
    }

    /// Who the attestations name as importer.
    pub fn importer(&self) -> &Importer {
        &self.importer
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        // Checked to be P-256 at load, so a signature always comes back.
        self.key.sign_p256(message).unwrap_or_default()
    }
}
