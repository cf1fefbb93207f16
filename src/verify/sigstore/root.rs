//! The operator's keyless trust: a Sigstore `trusted_root.json` (the CAs
//! standing for Fulcio, the keys of the Rekor logs) with the one signer
//! identity and OIDC issuer a bundle's certificate must name.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::certificate::{EcKey, Parsed};
use super::format::{RawBytes, base64_field};
use crate::verify::error::{Error, Result};

/// What every trusted root's media type starts with
/// (`application/vnd.dev.sigstore.trustedroot+json;version=0.1`, and the
/// `…trustedroot.v0.2+json` of newer clients).
const TRUSTED_ROOT_MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.trustedroot";

/// A `trusted_root.json` of the public Sigstore instance is about 10 KiB;
/// the cap keeps a mistyped path to a huge file out of memory.
const MAX_TRUSTED_ROOT_LEN: u64 = 4 * 1024 * 1024;

/// One `trust.keyless` entry: bundles whose `X.sigstore.json` carries a
/// certificate verify when it chains to `trusted_root` and names
/// `identity` and `issuer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeylessConfig {
    /// The Sigstore `trusted_root.json` (CAs and transparency logs) delivered
    /// to the site. Required.
    pub trusted_root: PathBuf,
    /// The certificate's subject alternative name, an e-mail address or URI,
    /// compared exactly. Required.
    pub identity: String,
    /// The OIDC issuer in the certificate's Fulcio extension, compared
    /// exactly. Required.
    pub issuer: String,
}

/// A loaded [`KeylessConfig`].
#[derive(Debug, Clone)]
pub struct KeylessTrust {
    pub(super) trusted_root: PathBuf,
    pub(super) identity: String,
    pub(super) issuer: String,
    pub(super) authorities: Vec<Authority>,
    pub(super) logs: Vec<Log>,
}

/// A certificate authority: its chain, issuing certificate first.
#[derive(Debug, Clone)]
pub(super) struct Authority {
    pub(super) chain: Vec<Parsed>,
    pub(super) valid: Window,
}

/// A transparency log: its key and the key's id.
#[derive(Debug, Clone)]
pub(super) struct Log {
    pub(super) key_id: Vec<u8>,
    pub(super) key: EcKey,
    pub(super) valid: Window,
}

/// A `validFor` range in Unix seconds; an open end is unbounded.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Window {
    start: Option<u64>,
    end: Option<u64>,
}

impl Window {
    pub(super) fn contains(&self, time: u64) -> bool {
        self.start.is_none_or(|start| start <= time) && self.end.is_none_or(|end| time <= end)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrustedRootFile {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    tlogs: Vec<TlogFile>,
    #[serde(default)]
    certificate_authorities: Vec<AuthorityFile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogFile {
    public_key: PublicKeyFile,
    log_id: super::format::LogId,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublicKeyFile {
    raw_bytes: String,
    valid_for: Option<TimeRange>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthorityFile {
    cert_chain: ChainFile,
    valid_for: Option<TimeRange>,
}

#[derive(Deserialize)]
struct ChainFile {
    certificates: Vec<RawBytes>,
}

#[derive(Deserialize)]
struct TimeRange {
    start: Option<String>,
    end: Option<String>,
}

impl KeylessTrust {
    /// Reads and checks `config.trusted_root`: every CA certificate and log
    /// key must parse, so a damaged file is found at start, not when the
    /// first bundle arrives.
    pub fn load(config: &KeylessConfig) -> Result<Self> {
        let path = &config.trusted_root;
        let invalid = |reason: String| Error::TrustedRoot {
            path: path.clone(),
            reason,
        };
        if config.identity.trim().is_empty() || config.issuer.trim().is_empty() {
            return Err(invalid(
                "a keyless entry needs both an identity and an issuer".into(),
            ));
        }
        let mut bytes = Vec::new();
        let complete = std::io::Read::read_to_end(
            &mut std::io::Read::take(
                std::fs::File::open(path).map_err(|source| Error::KeyRead {
                    path: path.clone(),
                    source,
                })?,
                MAX_TRUSTED_ROOT_LEN + 1,
            ),
            &mut bytes,
        )
        .map_err(|source| Error::KeyRead {
            path: path.clone(),
            source,
        })? as u64
            <= MAX_TRUSTED_ROOT_LEN;
        if !complete {
            return Err(invalid("larger than 4 MiB, not a trusted root".into()));
        }
        let file: TrustedRootFile = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("not a Sigstore trusted root: {e}")))?;
        if !file.media_type.starts_with(TRUSTED_ROOT_MEDIA_TYPE_PREFIX) {
            return Err(invalid(format!(
                "mediaType {:?} is not a trusted root's ({TRUSTED_ROOT_MEDIA_TYPE_PREFIX}…)",
                file.media_type
            )));
        }
        let authorities = file
            .certificate_authorities
            .iter()
            .enumerate()
            .map(|(i, ca)| {
                authority(ca).map_err(|e| invalid(format!("certificateAuthorities[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let logs = file
            .tlogs
            .iter()
            .enumerate()
            .map(|(i, log)| transparency_log(log).map_err(|e| invalid(format!("tlogs[{i}]: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        if authorities.is_empty() || logs.is_empty() {
            return Err(invalid(
                "it needs at least one certificate authority and one transparency log".into(),
            ));
        }
        Ok(Self {
            trusted_root: path.clone(),
            identity: config.identity.clone(),
            issuer: config.issuer.clone(),
            authorities,
            logs,
        })
    }

    /// The trusted root file, for messages.
    pub fn trusted_root(&self) -> &Path {
        &self.trusted_root
    }
}

fn authority(file: &AuthorityFile) -> std::result::Result<Authority, String> {
    let chain = file
        .cert_chain
        .certificates
        .iter()
        .map(|raw| Parsed::from_der(raw.decode("rawBytes")?))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err("certChain holds no certificate".into());
    }
    Ok(Authority {
        chain,
        valid: window(file.valid_for.as_ref())?,
    })
}

fn transparency_log(file: &TlogFile) -> std::result::Result<Log, String> {
    let der = base64_field(&file.public_key.raw_bytes, "publicKey.rawBytes")?;
    Ok(Log {
        key_id: base64_field(&file.log_id.key_id, "logId.keyId")?,
        key: EcKey::from_spki_der(&der)?,
        valid: window(file.public_key.valid_for.as_ref())?,
    })
}

fn window(range: Option<&TimeRange>) -> std::result::Result<Window, String> {
    let Some(range) = range else {
        return Ok(Window::default());
    };
    Ok(Window {
        start: range.start.as_deref().map(unix_seconds).transpose()?,
        end: range.end.as_deref().map(unix_seconds).transpose()?,
    })
}

/// An RFC 3339 UTC time (`2022-04-13T20:06:15.000Z`) in Unix seconds.
fn unix_seconds(text: &str) -> std::result::Result<u64, String> {
    let time = humantime::parse_rfc3339(text)
        .map_err(|e| format!("validFor time {text:?} is not RFC 3339 UTC: {e}"))?;
    Ok(time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}
