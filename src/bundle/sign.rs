//! Signing a finished bundle file exactly as the producer-side openssl
//! commands do, so `openssl dgst -sha256 -verify` (or `pkeyutl -verify
//! -rawin` for Ed25519) and `airlock verify` both accept the result.
//!
//! ECDSA and RSA (`openssl dgst -sha256 -sign`) sign the SHA-256 of the file,
//! which the writer computed while the bundle streamed to disk, so signing
//! costs no extra read. Pure Ed25519 (`openssl pkeyutl -sign -rawin`) hashes
//! the whole message twice (once for the nonce, once for the challenge), so
//! the finished file is read back twice, streaming: memory stays constant and
//! the cost is two sequential reads, usually from the page cache.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use ecdsa::signature::hazmat::{PrehashSigner as _, PrehashVerifier as _};
use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign_byupdate};
use ed25519_dalek::{Sha512, SignatureError};
use rsa::Pkcs1v15Sign;
use sha2::{Digest as _, Sha256};

use super::error::{Error, Result};
use super::key::{Secret, SigningKey};
use super::writer::Written;

/// Read size for the Ed25519 passes: large enough that syscalls vanish next
/// to hashing, small enough to stay in cache.
const READ_CHUNK: usize = 1024 * 1024;

/// Signs the bundle whose bytes are in `file` (at `path`, for messages) and
/// whose SHA-256 and size the writer recorded in `written`. Returns the raw
/// signature bytes (DER for ECDSA), as `openssl` writes them to `X.sig.bin`.
///
/// ECDSA and RSA signatures are checked against the public key before they
/// are returned (a microsecond-scale check on the digest at hand), so a
/// faulty computation is never published. An Ed25519 check would need a
/// third read of the file; its deterministic signing is relied on instead.
pub(super) fn sign(
    key: &SigningKey,
    file: &File,
    path: &Path,
    written: &Written,
) -> Result<Vec<u8>> {
    let failed = |reason: String| Error::SignFailed {
        bundle: path.to_owned(),
        label: key.label().to_owned(),
        reason,
    };
    let digest = &written.sha256;
    match key.secret() {
        // RFC 6979 deterministic nonces: the same bundle and key always give
        // the same signature, and no RNG failure can leak the key.
        Secret::P256(secret) => {
            let signature: p256::ecdsa::Signature = secret
                .sign_prehash(digest)
                .map_err(|e| failed(e.to_string()))?;
            secret
                .verifying_key()
                .verify_prehash(digest, &signature)
                .map_err(|e| failed(format!("the signature does not verify: {e}")))?;
            Ok(signature.to_der().as_bytes().to_vec())
        }
        // The 32-byte digest is left-padded to the 48-byte field, the same
        // integer OpenSSL uses for `-sha256` with a P-384 key.
        Secret::P384(secret) => {
            let signature: p384::ecdsa::Signature = secret
                .sign_prehash(digest)
                .map_err(|e| failed(e.to_string()))?;
            secret
                .verifying_key()
                .verify_prehash(digest, &signature)
                .map_err(|e| failed(format!("the signature does not verify: {e}")))?;
            Ok(signature.to_der().as_bytes().to_vec())
        }
        // PKCS#1 v1.5 is deterministic; the RNG only blinds the private-key
        // operation against timing attacks.
        Secret::Rsa(secret) => {
            let signature = secret
                .sign_with_rng(
                    &mut rsa::rand_core::OsRng,
                    Pkcs1v15Sign::new::<Sha256>(),
                    digest,
                )
                .map_err(|e| failed(e.to_string()))?;
            secret
                .to_public_key()
                .verify(Pkcs1v15Sign::new::<Sha256>(), digest, &signature)
                .map_err(|e| failed(format!("the signature does not verify: {e}")))?;
            Ok(signature)
        }
        Secret::Ed25519(secret) => sign_ed25519(secret, file, path, written, &failed),
    }
}

/// Pure Ed25519 over the whole file, streamed: `raw_sign_byupdate` asks for
/// the message twice, and each time the file is read from its start.
///
/// Both passes must feed identical bytes: a nonce derived from one message
/// and a challenge from another would let anyone holding two such signatures
/// compute the private key. So each pass hashes what it reads with SHA-256
/// and compares it with the digest recorded while writing; on any
/// difference the pass fails and no signature is produced.
fn sign_ed25519(
    secret: &ed25519_dalek::SigningKey,
    file: &File,
    path: &Path,
    written: &Written,
    failed: &dyn Fn(String) -> Error,
) -> Result<Vec<u8>> {
    let expanded = ExpandedSecretKey::from(secret.as_bytes());
    let verifying = secret.verifying_key();
    let problem: RefCell<Option<Error>> = RefCell::new(None);
    let feed = |hasher: &mut Sha512| -> std::result::Result<(), SignatureError> {
        let outcome = feed_file(file, hasher).map_err(|source| Error::OutputIo {
            action: "read back the bundle for signing",
            path: path.to_owned(),
            source,
        });
        match outcome {
            Ok((sha256, size)) if sha256 == written.sha256 && size == written.size => Ok(()),
            Ok(_) => {
                problem.replace(Some(Error::BundleChanged {
                    path: path.to_owned(),
                }));
                Err(SignatureError::new())
            }
            Err(e) => {
                problem.replace(Some(e));
                Err(SignatureError::new())
            }
        }
    };
    let signed = raw_sign_byupdate::<Sha512, _>(&expanded, feed, &verifying);
    if let Some(problem) = problem.into_inner() {
        return Err(problem);
    }
    let signature = signed.map_err(|e| failed(e.to_string()))?;
    Ok(signature.to_bytes().to_vec())
}

/// Feeds the whole file to `hasher`; returns its SHA-256 and length so the
/// caller can prove every pass saw the bytes that were written.
fn feed_file(mut file: &File, hasher: &mut Sha512) -> io::Result<([u8; 32], u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut check = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        check.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((check.finalize().into(), size))
}
