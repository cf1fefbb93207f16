//! Content digests (`sha256:<hex>`, `sha512:<hex>`) as the OCI image spec defines them.
//!
//! A [`Digest`] is always validated: the algorithm is one airlock can compute and
//! the encoded part has exactly the right length in lowercase hex. That makes it
//! safe to use as a file name (`blobs/<alg>/<hex>`) and as a URL path segment.

pub mod side;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// A digest string that does not follow `<algorithm>:<lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {value:?}: {reason}")]
pub struct InvalidDigest {
    /// The rejected text (truncated to keep log lines short).
    pub value: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// The hash algorithms the OCI image spec registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, used by virtually every producer.
    Sha256,
    /// SHA-512, allowed by the spec and accepted on input.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as it appears in digests and in `blobs/<alg>/`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// Parses the algorithm part of a digest or a `blobs/<alg>` directory name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// A validated content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Builds a digest from an algorithm and its hex encoding, validating both.
    pub fn from_parts(algorithm: Algorithm, hex: &str) -> Result<Self, InvalidDigest> {
        let invalid = |reason| InvalidDigest {
            value: format!("{}:{}", algorithm.as_str(), truncate(hex)),
            reason,
        };
        if hex.len() != algorithm.hex_len() {
            return Err(invalid("wrong length for its algorithm"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("not lowercase hex"));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(sha2::Sha256::digest(bytes)),
        }
    }

    /// The hash algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (hex) part, safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, for humans.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = InvalidDigest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(InvalidDigest {
                value: truncate(s),
                reason: "missing ':' between algorithm and hex",
            });
        };
        let algorithm = Algorithm::parse(alg).ok_or_else(|| InvalidDigest {
            value: truncate(s),
            reason: "unsupported algorithm (sha256 and sha512 are)",
        })?;
        Digest::from_parts(algorithm, hex)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A running hash for one of the supported algorithms, fed as data streams by.
pub enum Hasher {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Feeds more data.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

/// Lets a hasher be the sink of `std::io::copy`, so hashing a reader needs
/// no loop of its own.
impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints_a_sha256_digest() {
        let text = format!("sha256:{EMPTY_SHA256}");
        let digest: Digest = text.parse().expect("valid digest");
        assert_eq!(digest.to_string(), text);
        assert_eq!(digest, Digest::sha256_of(b""));
    }

    #[test]
    fn rejects_digests_that_could_escape_a_path() {
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256",
            "sha256:abc",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn hasher_matches_one_shot_digest() {
        let mut hasher = Hasher::new(Algorithm::Sha256);
        hasher.update(b"hello ");
        hasher.update(b"world");
        assert_eq!(hasher.finish(), Digest::sha256_of(b"hello world"));
    }
}
