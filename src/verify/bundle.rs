//! Verifying a bundle file and the proof that results.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::digest::side::{Blake3, SideHash};
use sha2::{Digest as _, Sha256};

use super::check::{self, Checks};
use super::digest;
use super::error::{Error, Result};
use super::file::{BundleFile, Symlinks};
use super::keys::TrustedKey;
use super::keyset::TrustedKeys;
use super::signature;
use super::sigstore::{self, CertificateIdentity, format::Bundle as SigstoreBundle};

/// A bundle whose signature verified under a trusted key.
///
/// Its fields are private so that no code outside this module can make one
/// up: holding a `VerifiedBundle` is the proof the later stages require.
/// It carries the open file that was verified, so later passes read the same
/// file (never the path again) and no more than the bytes that were hashed,
/// and records their SHA-256 so a reader can check the content did not change
/// in place.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    file: BundleFile,
    path: PathBuf,
    signature_path: PathBuf,
    sha256: String,
    /// BLAKE3 of the same bytes, when the verifying read took it
    /// ([`VerifyOptions::bind`]).
    blake3: Option<String>,
    size: u64,
    key: VerifiedBy,
}

impl VerifiedBundle {
    /// The bundle file's path as given, for messages: read it through
    /// [`VerifiedBundle::file`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file that was verified.
    pub fn file(&self) -> &BundleFile {
        &self.file
    }

    /// The detached signature that vouched for it.
    pub fn signature_path(&self) -> &Path {
        &self.signature_path
    }

    /// Lower-case hex SHA-256 of the whole bundle file, without a prefix.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// What a later read of the file must hash its bytes to, to be sure it
    /// read the bytes whose signature verified: their BLAKE3 when the
    /// verifying read took it, else their SHA-256.
    pub fn binding(&self) -> Binding<'_> {
        match &self.blake3 {
            Some(hex) => Binding::Blake3(hex),
            None => Binding::Sha256(&self.sha256),
        }
    }

    /// The bundle's digest in OCI notation, `sha256:<hex>`, for reports.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.sha256)
    }

    /// Bytes hashed, i.e. the bundle file's size when it was verified.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Which trusted key (or keyless signer) verified the signature.
    pub fn key(&self) -> &VerifiedBy {
        &self.key
    }
}

/// The hash (lower-case hex) that ties a later read of a verified bundle's
/// file to the read that verified it. BLAKE3 is taken alongside the
/// signature's SHA-256 on a thread of its own, and is some three times
/// faster to take again, on another thread, while the file is decompressed:
/// the second read then takes the time of decompressing and indexing, not
/// of hashing. Both are collision-resistant, which is all the tie needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding<'a> {
    /// The file's SHA-256 (the signature's digest).
    Sha256(&'a str),
    /// The file's BLAKE3.
    Blake3(&'a str),
}

/// The key that verified a bundle, as reports and audit logs show it; with
/// several rotated keys configured this says which one is still in use.
/// A keyless Sigstore signature is shown the same way, by its certificate:
/// the label names identity, issuer and log index, the fingerprint is the
/// certificate key's, and `certificate` holds them apart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifiedBy {
    /// The key's label: its file path as configured; for a keyless
    /// signature `IDENTITY (issuer ISSUER, Rekor log index N)`.
    pub label: String,
    /// `sha256:<hex>` of the key's SPKI DER (the certificate's key when
    /// keyless).
    pub fingerprint: String,
    /// The algorithm, e.g. `ECDSA P-256` or `RSA-4096`.
    pub algorithm: String,
    /// The certificate identity, issuer and log entry of a keyless
    /// signature; absent for a trusted key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateIdentity>,
}

impl From<&TrustedKey> for VerifiedBy {
    fn from(key: &TrustedKey) -> Self {
        Self {
            label: key.label().to_owned(),
            fingerprint: key.fingerprint().to_owned(),
            algorithm: key.algorithm().to_string(),
            certificate: None,
        }
    }
}

/// How a bundle file is opened for verification.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Whether a symbolic link at the bundle's path is followed (default
    /// [`Symlinks::Follow`]; the daemon refuses them unless
    /// `drop.follow_symlinks`).
    pub symlinks: Symlinks,
    /// The size the file must have, e.g. the one the daemon saw it settle at
    /// (default: whatever it has when opened). A file of another size is
    /// refused before anything is read.
    pub expected_size: Option<u64>,
    /// Whether to take the file's BLAKE3 too, for a later read to compare
    /// its bytes with ([`VerifiedBundle::binding`]; default false: a read
    /// that only verifies does not need it).
    pub bind: bool,
}

/// Verifies that `signature` is a signature over the whole `bundle` file by
/// any one of `keys` (or, for a Sigstore bundle, its keyless signers). Reads the bundle once; blocking, so async callers run
/// it in `spawn_blocking`.
pub fn verify_bundle(
    bundle: &Path,
    signature: &Path,
    keys: &TrustedKeys,
) -> Result<VerifiedBundle> {
    verify_bundle_with_progress(
        bundle,
        signature,
        keys,
        VerifyOptions::default(),
        &mut |_| ControlFlow::Continue(()),
    )
}

/// [`verify_bundle`] with `options`, calling `on_bytes` after each chunk with
/// the number of bytes just hashed (not the running total, so it maps onto a
/// progress bar's `inc`), because hashing a multi-gigabyte bundle takes long
/// enough that a terminal user wants to see it moving. `on_bytes` returning
/// `Break` stops verification with [`Error::Cancelled`] (a stopping daemon).
pub fn verify_bundle_with_progress(
    bundle: &Path,
    signature: &Path,
    keys: &TrustedKeys,
    options: VerifyOptions,
    on_bytes: &mut dyn FnMut(u64) -> ControlFlow<()>,
) -> Result<VerifiedBundle> {
    verify_bundle_by_any(bundle, &[signature.to_owned()], keys, options, on_bytes)
}

/// Verifies `bundle` against several candidate signatures in one read: the
/// first of `signatures` (in the order given, normally the naming rule's,
/// see [`super::signatures_beside`]) that a trusted key verifies wins.
/// Candidates with identical content count once; one that differs from the
/// winner is named in a warning, so an operator sees a stray or stale file.
/// With no candidate at all the bundle is unsigned
/// ([`Error::NoSignature`]); when none verifies, the error is the first
/// candidate's.
pub fn verify_bundle_by_any(
    bundle: &Path,
    signatures: &[PathBuf],
    keys: &TrustedKeys,
    options: VerifyOptions,
    on_bytes: &mut dyn FnMut(u64) -> ControlFlow<()>,
) -> Result<VerifiedBundle> {
    let pending = PendingBundle::open(bundle, signatures, keys, options)?;
    let mut hasher = pending.hasher()?;
    if options.bind {
        hasher.blake3 = Some(
            SideHash::spawn(Blake3::default(), |hash, bytes| hash.update(bytes))
                .map_err(|source| bundle_error(bundle, source))?,
        );
    }
    pending.finish(hasher, on_bytes)
}

/// A bundle opened for verification, its signature candidates read, whose
/// bytes are still to be hashed: by [`verify_bundle_by_any`]'s own read, or,
/// for an import that reads the file once, by the reader that decompresses
/// it, which hands every byte it reads to the [`BundleHasher`]. Either way
/// only [`PendingBundle::finish`] turns it into a [`VerifiedBundle`], after
/// the whole file was hashed.
#[derive(Debug)]
pub struct PendingBundle<'k> {
    file: BundleFile,
    path: PathBuf,
    signatures: Vec<PathBuf>,
    keys: &'k TrustedKeys,
    candidates: Vec<(PathBuf, Vec<u8>)>,
}

/// The running hash of a [`PendingBundle`]'s bytes, fed from its first byte
/// in file order, and the signature candidates it will be checked against.
pub struct BundleHasher<'p> {
    usable: Vec<(&'p PathBuf, Candidate<'p>)>,
    malformed: Option<Error>,
    sha256: Sha256,
    /// The file's BLAKE3, taken on a thread of its own.
    blake3: Option<SideHash<Blake3>>,
    size: u64,
}

impl BundleHasher<'_> {
    /// Hashes the next bytes of the file.
    pub fn update(&mut self, chunk: &[u8]) {
        if let Some(blake3) = &self.blake3 {
            blake3.feed(chunk);
        }
        self.sha256.update(chunk);
        self.size += chunk.len() as u64;
        for (_, candidate) in &mut self.usable {
            if let Candidate::Detached(checks) = candidate {
                checks.update(chunk);
            }
        }
    }
}

impl<'k> PendingBundle<'k> {
    /// Opens `bundle` (a regular file; of `options.expected_size` when
    /// given) and reads its candidate `signatures`.
    pub fn open(
        bundle: &Path,
        signatures: &[PathBuf],
        keys: &'k TrustedKeys,
        options: VerifyOptions,
    ) -> Result<Self> {
        // Open the bundle first so a mistyped bundle path is reported as such
        // rather than as a missing signature.
        let file = BundleFile::open(bundle, options.symlinks).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::BundleMissing {
                    path: bundle.to_owned(),
                }
            } else {
                bundle_error(bundle, source)
            }
        })?;
        if let Some(expected) = options.expected_size
            && expected != file.size()
        {
            return Err(Error::SizeChanged {
                path: bundle.to_owned(),
                expected,
                actual: file.size(),
            });
        }
        let candidates = read_distinct(bundle, signatures, options.symlinks)?;
        Ok(PendingBundle {
            file,
            path: bundle.to_owned(),
            signatures: signatures.to_vec(),
            keys,
            candidates,
        })
    }

    /// The open file: read it through [`BundleFile::reader`] from byte 0,
    /// handing every byte to the hasher in order.
    pub fn file(&self) -> &BundleFile {
        &self.file
    }

    /// The bundle's path as given, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A hasher for the file's bytes; fails when no trusted key can even
    /// parse any candidate, since reading the bundle would then be wasted.
    pub fn hasher(&self) -> Result<BundleHasher<'_>> {
        let mut usable = Vec::new();
        let mut malformed = None;
        for (path, bytes) in &self.candidates {
            match candidate(self.keys, path, bytes) {
                Ok(candidate) => usable.push((path, candidate)),
                Err(error) if malformed.is_none() => malformed = Some(error),
                Err(error) => tracing::warn!(bundle = %self.path.display(), "ignored: {error}"),
            }
        }
        if usable.is_empty() {
            return Err(malformed.unwrap_or_else(|| no_signature(&self.path)));
        }
        Ok(BundleHasher {
            usable,
            malformed,
            sha256: Sha256::new(),
            blake3: None,
            size: 0,
        })
    }

    /// Hashes what `hasher` has not seen yet, up to the file's size when it
    /// was opened (all of it, for [`verify_bundle_by_any`]; what a
    /// decompressor left unread after the archive ended, or everything after
    /// the point where a broken archive stopped it), then checks the
    /// signature over the whole file. `on_bytes` as in
    /// [`verify_bundle_with_progress`].
    pub fn finish(
        &self,
        mut hasher: BundleHasher<'_>,
        on_bytes: &mut dyn FnMut(u64) -> ControlFlow<()>,
    ) -> Result<VerifiedBundle> {
        let mut cancelled = false;
        let mut rest = self.file.reader_from(hasher.size);
        digest::read_chunks(&mut rest, |chunk| {
            hasher.update(chunk);
            cancelled = on_bytes(chunk.len() as u64).is_break();
            !cancelled
        })
        .map_err(|source| bundle_error(&self.path, source))?;
        if cancelled {
            return Err(Error::Cancelled {
                path: self.path.clone(),
            });
        }
        if hasher.size != self.file.size() {
            return Err(Error::SizeChanged {
                path: self.path.clone(),
                expected: self.file.size(),
                actual: hasher.size,
            });
        }
        let sha256: [u8; 32] = hasher.sha256.finalize().into();
        let blake3 = hasher.blake3.map(|side| side.finish().finish());
        let (signature, key) = check_candidates(
            &self.path,
            &self.signatures,
            self.keys,
            hasher.usable,
            hasher.malformed,
            &sha256,
        )?;
        Ok(VerifiedBundle {
            file: self.file.clone(),
            path: self.path.clone(),
            signature_path: signature.clone(),
            sha256: hex::encode(sha256),
            blake3,
            size: hasher.size,
            key,
        })
    }
}

/// Checks the signature candidates against the SHA-256 of the whole bundle
/// file: the first, in the order given, that verifies wins; others that
/// differ from it are named in a warning. When none verifies, the error is
/// the first malformed candidate's, or else that the first candidate does
/// not verify (for a Sigstore bundle, naming the check that failed).
fn check_candidates<'p>(
    bundle: &Path,
    signatures: &[PathBuf],
    keys: &TrustedKeys,
    usable: Vec<(&'p PathBuf, Candidate<'p>)>,
    malformed: Option<Error>,
    sha256: &[u8; 32],
) -> Result<(&'p PathBuf, VerifiedBy)> {
    let mut winner: Option<(&PathBuf, VerifiedBy)> = None;
    let mut losers = Vec::new();
    for (path, candidate) in usable {
        if winner.is_some() {
            losers.push((path, None));
            continue;
        }
        match candidate.finish(sha256, keys) {
            Ok(by) => winner = Some((path, by)),
            Err(reason) => losers.push((path, reason)),
        }
    }
    let Some((signature, key)) = winner else {
        let (first, reason) = losers
            .first()
            .map_or((&signatures[0], None), |(p, r)| (*p, r.clone()));
        for (other, reason) in losers.iter().skip(1) {
            let reason = reason.as_deref().unwrap_or("wrong key or changed bundle");
            tracing::warn!(bundle = %bundle.display(), signature = %other.display(), "this signature does not verify the bundle either: {reason}");
        }
        let bundle_sha256 = hex::encode(sha256);
        return Err(malformed.unwrap_or_else(|| match reason {
            Some(reason) => Error::SigstoreNotVerified(Box::new(super::SigstoreRejection {
                signature: first.clone(),
                bundle: bundle.to_owned(),
                reason,
                bundle_sha256,
            })),
            None => Error::NotVerified {
                signature: first.clone(),
                bundle: bundle.to_owned(),
                keys: keys.len(),
                bundle_sha256,
            },
        }));
    };
    for (other, _) in losers {
        tracing::warn!(
            bundle = %bundle.display(),
            verified_by = %signature.display(),
            ignored = %other.display(),
            "two signature files for one bundle differ; the one that verifies is used, the other is ignored"
        );
    }
    Ok((signature, key))
}

/// One signature file, ready to be checked once the bundle is hashed.
enum Candidate<'a> {
    /// A bare signature, matched against every trusted key.
    Detached(Checks<'a>),
    /// A Sigstore bundle (`X.sigstore.json`).
    Sigstore(Box<SigstoreBundle>),
}

impl Candidate<'_> {
    /// Who verified the bundle whose SHA-256 is `sha256`, or why not: `None`
    /// for a bare signature no key verifies, the failed check for a Sigstore
    /// bundle.
    fn finish(self, sha256: &[u8; 32], keys: &TrustedKeys) -> Result<VerifiedBy, Option<String>> {
        match self {
            Candidate::Detached(checks) => checks.finish(sha256).map(VerifiedBy::from).ok_or(None),
            Candidate::Sigstore(parsed) => sigstore::verify(&parsed, sha256, keys).map_err(Some),
        }
    }
}

/// Parses one signature file: a Sigstore bundle when it is JSON, else a bare
/// signature some trusted key could have made.
fn candidate<'a>(keys: &'a TrustedKeys, path: &Path, bytes: &'a [u8]) -> Result<Candidate<'a>> {
    let malformed = |reason: String| Error::SignatureMalformed {
        path: path.to_owned(),
        reason,
    };
    if sigstore::looks_like_bundle(path, bytes) {
        return SigstoreBundle::parse(bytes)
            .map(|parsed| Candidate::Sigstore(Box::new(parsed)))
            .map_err(malformed);
    }
    if keys.is_empty() {
        return Err(malformed(
            "it is a bare signature, but no trusted public key is configured (only keyless signers, which need a Sigstore bundle)".into(),
        ));
    }
    let checks = Checks::new(keys, bytes);
    if checks.is_empty() {
        return Err(malformed(no_format_matches(keys, bytes.len())));
    }
    Ok(Candidate::Detached(checks))
}

fn bundle_error(bundle: &Path, source: std::io::Error) -> Error {
    Error::BundleRead {
        path: bundle.to_owned(),
        source,
    }
}

/// Reads every candidate, keeping the first path of each distinct content.
/// A candidate that cannot be read is an error when it is the only one, and
/// otherwise only a warning, so a stray unreadable file beside a good
/// signature does not block the bundle.
fn read_distinct(
    bundle: &Path,
    signatures: &[PathBuf],
    symlinks: Symlinks,
) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    if let [only] = signatures {
        return Ok(vec![(
            only.clone(),
            signature::read(only, bundle, symlinks)?,
        )]);
    }
    let mut distinct: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let mut first_error = None;
    for path in signatures {
        match signature::read(path, bundle, symlinks) {
            Ok(bytes) if distinct.iter().any(|(_, seen)| *seen == bytes) => {}
            Ok(bytes) => distinct.push((path.clone(), bytes)),
            Err(error) if first_error.is_none() => first_error = Some(error),
            Err(error) => tracing::warn!(bundle = %bundle.display(), "ignored: {error}"),
        }
    }
    match (distinct.is_empty(), first_error) {
        (true, Some(error)) => Err(error),
        (true, None) => Err(no_signature(bundle)),
        (false, Some(error)) => {
            tracing::warn!(bundle = %bundle.display(), "ignored: {error}");
            Ok(distinct)
        }
        (false, None) => Ok(distinct),
    }
}

fn no_signature(bundle: &Path) -> Error {
    let looked_for = super::signature_candidates(bundle)
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(", ");
    Error::NoSignature {
        bundle: bundle.to_owned(),
        looked_for,
    }
}

fn no_format_matches(keys: &TrustedKeys, len: usize) -> String {
    let mut expected: Vec<String> = Vec::new();
    for key in keys {
        let format = check::expected_format(key.algorithm());
        if !expected.contains(&format) {
            expected.push(format);
        }
    }
    format!(
        "its {len} bytes are not {} (truncated or not a signature?)",
        expected.join(" or ")
    )
}
