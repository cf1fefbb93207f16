//! Matching one signature against every trusted key during a single read.
//!
//! ECDSA and RSA (as `openssl dgst -sha256` uses them) sign the SHA-256 of the
//! file, so one SHA-256 shared by all of them is enough. Pure Ed25519 hashes
//! `R || A || M` with SHA-512 instead; R and A are known before the message
//! is read, so each Ed25519 key keeps its own SHA-512 state fed from the same
//! buffers.

use ecdsa::signature::hazmat::PrehashVerifier;
use ed25519_dalek::StreamVerifier;
use rsa::Pkcs1v15Sign;
use rsa::traits::PublicKeyParts;
use sha2::{Digest as _, Sha256};

use super::keys::{KeyAlgorithm, PublicKey, TrustedKey};
use super::keyset::TrustedKeys;

/// One key with the signature decoded the way that key's algorithm needs it.
enum Check<'a> {
    P256(&'a p256::ecdsa::VerifyingKey, p256::ecdsa::Signature),
    P384(&'a p384::ecdsa::VerifyingKey, p384::ecdsa::Signature),
    Rsa(&'a rsa::RsaPublicKey, &'a [u8]),
    // Boxed: a SHA-512 state plus an expanded point dwarfs the other variants.
    Ed25519(Box<StreamVerifier>),
}

/// The keys the signature could belong to, in trust order.
pub(super) struct Checks<'a> {
    pending: Vec<(&'a TrustedKey, Check<'a>)>,
}

impl<'a> Checks<'a> {
    /// Keeps only keys whose algorithm can parse `signature`; the others can
    /// never verify it, and dropping them early spares their hashing.
    pub(super) fn new(keys: &'a TrustedKeys, signature: &'a [u8]) -> Self {
        let pending = keys
            .iter()
            .filter_map(|key| Some((key, check_for(key, signature)?)))
            .collect();
        Self { pending }
    }

    /// True when no key can even parse the signature, so reading the bundle
    /// would be wasted.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Feeds a chunk of the bundle to the keys that hash the message themselves.
    pub(super) fn update(&mut self, chunk: &[u8]) {
        for (_, check) in &mut self.pending {
            if let Check::Ed25519(stream) = check {
                stream.update(chunk);
            }
        }
    }

    /// The first key, in trust order, under which the signature verifies.
    pub(super) fn finish(self, sha256: &[u8; 32]) -> Option<&'a TrustedKey> {
        self.pending
            .into_iter()
            .find_map(|(key, check)| verifies(check, sha256).then_some(key))
    }
}

fn check_for<'a>(key: &'a TrustedKey, signature: &'a [u8]) -> Option<Check<'a>> {
    match key.public() {
        PublicKey::P256(public) => Some(Check::P256(
            public,
            p256::ecdsa::Signature::from_der(signature).ok()?,
        )),
        PublicKey::P384(public) => Some(Check::P384(
            public,
            p384::ecdsa::Signature::from_der(signature).ok()?,
        )),
        PublicKey::Rsa(public) => {
            (signature.len() == public.size()).then_some(Check::Rsa(public, signature))
        }
        PublicKey::Ed25519(public) => {
            let signature = ed25519_dalek::Signature::from_slice(signature).ok()?;
            // Rejects a non-canonical s (s >= L) before any hashing, as RFC 8032 requires.
            let stream = public.verify_stream(&signature).ok()?;
            Some(Check::Ed25519(Box::new(stream)))
        }
    }
}

fn verifies(check: Check<'_>, sha256: &[u8; 32]) -> bool {
    match check {
        Check::P256(public, signature) => public.verify_prehash(sha256, &signature).is_ok(),
        // bits2field left-pads the 32-byte digest to the 48-byte field, which
        // is the same integer OpenSSL uses for a SHA-256 P-384 signature.
        Check::P384(public, signature) => public.verify_prehash(sha256, &signature).is_ok(),
        Check::Rsa(public, signature) => public
            .verify(Pkcs1v15Sign::new::<Sha256>(), sha256, signature)
            .is_ok(),
        // Cofactorless [s]B = R + [k]A, comparing the encoding of R as OpenSSL does.
        Check::Ed25519(stream) => stream.finalize_and_verify().is_ok(),
    }
}

/// The first key, in trust order, under which `signature` verifies over
/// `message`, a small document held in memory (a cosign payload, a DSSE
/// pre-authentication encoding): the same algorithms as a bundle's
/// signature, each as `openssl dgst -sha256` makes it.
pub fn verify_message(keys: &TrustedKeys, message: &[u8], signature: &[u8]) -> Option<TrustedKey> {
    let mut checks = Checks::new(keys, signature);
    checks.update(message);
    checks.finish(&Sha256::digest(message).into()).cloned()
}

/// The first key under which `signature` verifies over a message known only
/// by its SHA-256 (a Sigstore bundle's `messageSignature` over an image
/// manifest). Pure Ed25519 needs the message itself and never verifies here.
pub fn verify_sha256(
    keys: &TrustedKeys,
    sha256: &[u8; 32],
    signature: &[u8],
) -> Option<TrustedKey> {
    let pending = Checks::new(keys, signature)
        .pending
        .into_iter()
        .filter(|(_, check)| !matches!(check, Check::Ed25519(_)))
        .collect();
    Checks { pending }.finish(sha256).cloned()
}

/// How a signature for `algorithm` must look, for the error shown when a
/// signature file matches no key's format.
pub(super) fn expected_format(algorithm: KeyAlgorithm) -> String {
    match algorithm {
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
            format!("a DER-encoded {algorithm} signature")
        }
        KeyAlgorithm::Rsa { bits } => format!("a {}-byte {algorithm} signature", bits.div_ceil(8)),
        KeyAlgorithm::Ed25519 => "a 64-byte Ed25519 signature with canonical s".to_owned(),
    }
}
