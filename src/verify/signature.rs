//! Reading a detached signature file, raw or base64.

use std::io::{self, Read};
use std::path::Path;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::error::{Error, Result};
use super::file::{BundleFile, Symlinks};

/// The largest signature airlock produces is 512 bytes (RSA-4096), about 700
/// as base64; anything far bigger is not a signature.
const MAX_SIGNATURE_FILE_LEN: u64 = 64 * 1024;

/// cosign writes padded standard base64, but hand-made files sometimes drop
/// the padding; neither changes the decoded bytes.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Reads the signature that should cover `bundle` and returns its raw bytes.
/// Like the bundle, it must be a regular file (a FIFO would block the read).
pub(super) fn read(signature: &Path, bundle: &Path, symlinks: Symlinks) -> Result<Vec<u8>> {
    let read_error = |source| Error::SignatureRead {
        path: signature.to_owned(),
        source,
    };
    let file = BundleFile::open(signature, symlinks).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Error::SignatureMissing {
            signature: signature.to_owned(),
            bundle: bundle.to_owned(),
        },
        _ => read_error(source),
    })?;
    let mut raw = Vec::new();
    file.reader()
        .take(MAX_SIGNATURE_FILE_LEN + 1)
        .read_to_end(&mut raw)
        .map_err(read_error)?;
    let malformed = |reason: &str| Error::SignatureMalformed {
        path: signature.to_owned(),
        reason: reason.to_owned(),
    };
    if raw.len() as u64 > MAX_SIGNATURE_FILE_LEN {
        return Err(malformed("larger than 64 KiB, no supported signature is"));
    }
    if raw.trim_ascii().is_empty() {
        return Err(malformed("the file is empty"));
    }
    Ok(decode(raw))
}

/// Returns the signature bytes, base64-decoded if the file is base64 text.
///
/// A binary signature is taken for base64 only if every byte is a base64
/// character, which a DER ECDSA signature never is (its third byte is 0x02)
/// and a 64-byte Ed25519 or 256+-byte RSA signature is with probability below
/// 2^-120. Even then a misreading can only reject a bundle, never accept one.
pub(super) fn decode(raw: Vec<u8>) -> Vec<u8> {
    decode_base64_text(&raw).unwrap_or(raw)
}

fn decode_base64_text(raw: &[u8]) -> Option<Vec<u8>> {
    let text = raw.trim_ascii();
    let is_base64_text = text.iter().all(|&b| {
        b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') || b.is_ascii_whitespace()
    });
    if text.is_empty() || !is_base64_text {
        return None;
    }
    // `openssl base64` without -A wraps lines at 64 columns.
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    BASE64
        .decode(compact)
        .ok()
        .filter(|bytes| !bytes.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_der_signature_is_left_alone() {
        let der = vec![0x30, 0x44, 0x02, 0x20, 0x41, 0x42];
        assert_eq!(decode(der.clone()), der);
    }

    #[test]
    fn cosign_base64_with_trailing_newline_is_decoded() {
        let bytes: Vec<u8> = (0u8..=255).collect();
        let mut text = base64::engine::general_purpose::STANDARD
            .encode(&bytes)
            .into_bytes();
        text.extend_from_slice(b"\n");
        assert_eq!(decode(text), bytes);
    }

    #[test]
    fn line_wrapped_base64_with_crlf_is_decoded() {
        let bytes: Vec<u8> = (0u8..200).collect();
        let one_line = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let wrapped = one_line
            .as_bytes()
            .chunks(64)
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect::<Vec<_>>()
            .join("\r\n");
        assert_eq!(decode(format!("  {wrapped}\r\n\t").into_bytes()), bytes);
    }

    #[test]
    fn unpadded_base64_is_decoded() {
        let bytes = b"sixty-four bytes or thereabouts of signature material!!".to_vec();
        let text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes);
        assert_eq!(decode(text.into_bytes()), bytes);
    }

    #[test]
    fn text_that_is_not_valid_base64_stays_raw() {
        let raw = b"abcde".to_vec(); // 5 mod 4 == 1 can never be base64
        assert_eq!(decode(raw.clone()), raw);
    }

    #[test]
    fn empty_or_blank_signature_file_is_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let sig = dir.path().join("x.sig.bin");
        std::fs::write(&sig, b" \n").unwrap();
        let err = read(&sig, Path::new("x.zst"), Symlinks::Follow).unwrap_err();
        assert!(matches!(err, Error::SignatureMalformed { .. }), "{err}");
    }

    #[test]
    fn missing_signature_file_is_an_integrity_failure() {
        let dir = tempfile::tempdir().unwrap();
        let sig = dir.path().join("x.sig.bin");
        let err = read(&sig, Path::new("x.zst"), Symlinks::Follow).unwrap_err();
        assert!(matches!(err, Error::SignatureMissing { .. }), "{err}");
        assert_eq!(err.class(), crate::FailureClass::Integrity);
    }

    #[test]
    fn oversized_signature_file_is_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let sig = dir.path().join("x.sig.bin");
        std::fs::write(&sig, vec![0u8; 70 * 1024]).unwrap();
        let err = read(&sig, Path::new("x.zst"), Symlinks::Follow).unwrap_err();
        assert!(matches!(err, Error::SignatureMalformed { .. }), "{err}");
    }
}
