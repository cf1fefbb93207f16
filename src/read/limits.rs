//! How much a bundle may make airlock read: caps against endless data.
//!
//! A signed bundle is trusted to be what its producer made, not to be
//! small. Every quantity an attacker (or a broken producer) can inflate
//! without making the bundle file big has a cap here: the decompressed
//! size (absolute and relative to the file), tar entries, manifests, index
//! nesting, path length and the size of every JSON or YAML document airlock
//! keeps. Exceeding any of them is an integrity failure ([`Exceeded`]) that
//! names the limit's configuration key, the value found and the cap.
//!
//! Depends on nothing else in the crate: the reader asks [`ReadLimits`]
//! whether a value is allowed, and wraps the decompressor in a [`Meter`].

use std::io::{self, Read};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The most decompressed bytes one bundle may hold: 1 TiB, several times
/// the largest air-gap bundles seen in the field (a full platform release
/// with its images is tens of GB), and still a bound on how long a
/// signed bundle can keep an import busy (about an hour of hashing).
pub const DEFAULT_MAX_UNCOMPRESSED_BYTES: u64 = 1 << 40;

/// The most decompressed bytes per byte of bundle file. Image layers are
/// already gzip-compressed, so real bundles expand by 1 to 3 times; text
/// compresses 10 times at most. A zstd bomb expands by 30,000 times.
pub const DEFAULT_MAX_EXPANSION_RATIO: u64 = 100;

/// Decompressed bytes allowed whatever the ratio, so a small bundle of
/// zero-filled test layers is not refused: 1 GiB decompresses in about a
/// second, which bounds the time a bomb costs before the ratio refuses it.
pub const EXPANSION_RATIO_FREE_BYTES: u64 = 1 << 30;

/// Largest manifest or index airlock keeps in memory. Registries are only
/// required to accept manifests up to 4 MiB, so a bigger one could not be
/// pushed anyway. Also the largest JSON or YAML file kept from outside the
/// layout (pack and chart metadata, docker-save manifests).
pub const DEFAULT_MAX_DOCUMENT_BYTES: u64 = 4 << 20;

/// Memory budget for all JSON documents of one bundle together: about 60,000
/// typical manifests, far more than the 10,000-image bundles seen in the field.
pub const DEFAULT_MAX_DOCUMENTS_TOTAL_BYTES: u64 = 256 << 20;

/// Tar entries (files, directories, links) one bundle may hold: 20 times
/// the 50,000 blobs of a 10,000-image bundle. Each costs a little
/// bookkeeping (its path, size and digest), so a bundle of millions of empty
/// entries is refused instead of filling memory with them.
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;

/// Distinct manifests and indexes one bundle's layout may hold: 10 per
/// image of a 10,000-image bundle (multi-platform indexes, signatures,
/// attestations). Each is parsed and walked, and planned and pushed later.
pub const DEFAULT_MAX_MANIFESTS: u64 = 100_000;

/// How deep image indexes may nest below `index.json`: real images use one
/// level (an index of platform manifests), artifacts two; deeper nesting
/// only serves to make the walk expensive.
pub const DEFAULT_MAX_INDEX_DEPTH: u64 = 8;

/// The longest tar entry path (or link target), in bytes: Linux's
/// `PATH_MAX`. Blob paths are under 100 bytes.
pub const DEFAULT_MAX_PATH_BYTES: u64 = 4096;

/// Caps on what one bundle may make airlock read (`read:` in the daemon's
/// configuration, `--max-*` flags on the command line). Each field
/// documents its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a map (the read section)")]
pub struct ReadLimits {
    /// Decompressed bytes in the bundle (default
    /// [`DEFAULT_MAX_UNCOMPRESSED_BYTES`]).
    pub max_uncompressed_bytes: u64,
    /// Decompressed bytes per byte of bundle file, enforced once more than
    /// [`EXPANSION_RATIO_FREE_BYTES`] are decompressed (default
    /// [`DEFAULT_MAX_EXPANSION_RATIO`]).
    pub max_expansion_ratio: u64,
    /// Tar entries in the bundle (default [`DEFAULT_MAX_ENTRIES`]).
    pub max_entries: u64,
    /// Distinct manifests and indexes in the layout (default
    /// [`DEFAULT_MAX_MANIFESTS`]).
    pub max_manifests: u64,
    /// Levels of indexes below `index.json` (default
    /// [`DEFAULT_MAX_INDEX_DEPTH`]).
    pub max_index_depth: u64,
    /// Bytes in a tar entry's path or link target (default
    /// [`DEFAULT_MAX_PATH_BYTES`]).
    pub max_path_bytes: u64,
    /// Largest single JSON or YAML document kept (default
    /// [`DEFAULT_MAX_DOCUMENT_BYTES`]).
    pub max_document_bytes: u64,
    /// All documents kept together (default
    /// [`DEFAULT_MAX_DOCUMENTS_TOTAL_BYTES`]).
    pub max_documents_total_bytes: u64,
    /// The oldest a bundle may be, by the creation time in its
    /// `index.json` (`org.opencontainers.image.created`): against a freeze
    /// attack, where old but validly signed bundles keep being delivered.
    /// Set from `trust.max_bundle_age` or `--max-bundle-age`, not under
    /// `read:` (default: none, any age).
    #[serde(skip)]
    pub max_bundle_age: Option<Duration>,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_uncompressed_bytes: DEFAULT_MAX_UNCOMPRESSED_BYTES,
            max_expansion_ratio: DEFAULT_MAX_EXPANSION_RATIO,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_manifests: DEFAULT_MAX_MANIFESTS,
            max_index_depth: DEFAULT_MAX_INDEX_DEPTH,
            max_path_bytes: DEFAULT_MAX_PATH_BYTES,
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            max_documents_total_bytes: DEFAULT_MAX_DOCUMENTS_TOTAL_BYTES,
            max_bundle_age: None,
        }
    }
}

/// One of the caps of [`ReadLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`ReadLimits::max_uncompressed_bytes`].
    UncompressedBytes,
    /// [`ReadLimits::max_expansion_ratio`].
    ExpansionRatio,
    /// [`ReadLimits::max_entries`].
    Entries,
    /// [`ReadLimits::max_manifests`].
    Manifests,
    /// [`ReadLimits::max_index_depth`].
    IndexDepth,
    /// [`ReadLimits::max_path_bytes`].
    PathBytes,
    /// [`ReadLimits::max_document_bytes`].
    DocumentBytes,
}

impl Limit {
    /// The configuration key that sets it.
    pub fn key(self) -> &'static str {
        match self {
            Limit::UncompressedBytes => "read.max_uncompressed_bytes",
            Limit::ExpansionRatio => "read.max_expansion_ratio",
            Limit::Entries => "read.max_entries",
            Limit::Manifests => "read.max_manifests",
            Limit::IndexDepth => "read.max_index_depth",
            Limit::PathBytes => "read.max_path_bytes",
            Limit::DocumentBytes => "read.max_document_bytes",
        }
    }

    /// What it counts, for messages.
    fn counts(self) -> &'static str {
        match self {
            Limit::UncompressedBytes => "decompressed bytes",
            Limit::ExpansionRatio => "decompressed bytes per compressed byte",
            Limit::Entries => "tar entries",
            Limit::Manifests => "manifests and indexes",
            Limit::IndexDepth => "levels of nested indexes",
            Limit::PathBytes => "bytes in a path",
            Limit::DocumentBytes => "bytes in one document",
        }
    }
}

/// A cap of [`ReadLimits`] that a bundle exceeds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value} {} is over the limit {} = {max}{}", .limit.counts(), .limit.key(), stopped_note(*.at_least))]
pub struct Exceeded {
    /// Which cap.
    pub limit: Limit,
    /// The value found (or reached when reading stopped).
    pub value: u64,
    /// Whether reading stopped at `value`, so the real value is larger.
    pub at_least: bool,
    /// The cap.
    pub max: u64,
}

fn stopped_note(stopped: bool) -> &'static str {
    if stopped {
        " (reading stopped there)"
    } else {
        ""
    }
}

impl ReadLimits {
    fn max(&self, limit: Limit) -> u64 {
        match limit {
            Limit::UncompressedBytes => self.max_uncompressed_bytes,
            Limit::ExpansionRatio => self.max_expansion_ratio,
            Limit::Entries => self.max_entries,
            Limit::Manifests => self.max_manifests,
            Limit::IndexDepth => self.max_index_depth,
            Limit::PathBytes => self.max_path_bytes,
            Limit::DocumentBytes => self.max_document_bytes,
        }
    }

    /// Checks a counted or measured `value` against its cap.
    pub fn check(&self, limit: Limit, value: u64) -> Result<(), Exceeded> {
        let max = self.max(limit);
        if value > max {
            return Err(Exceeded {
                limit,
                value,
                at_least: false,
                max,
            });
        }
        Ok(())
    }

    /// The most `compressed_bytes` may expand to, and the limit that says
    /// so: no entry larger than this can be read whole.
    pub fn expansion_cap(&self, compressed_bytes: u64) -> (Limit, u64) {
        let by_ratio = self
            .max_expansion_ratio
            .saturating_mul(compressed_bytes)
            .max(EXPANSION_RATIO_FREE_BYTES);
        if by_ratio < self.max_uncompressed_bytes {
            (Limit::ExpansionRatio, by_ratio)
        } else {
            (Limit::UncompressedBytes, self.max_uncompressed_bytes)
        }
    }

    /// Wraps a decompressing reader so it fails once it has produced more
    /// than the caps allow for `compressed_bytes` of input.
    pub fn meter<R>(&self, inner: R, compressed_bytes: u64) -> Meter<R> {
        let (limit, cap) = self.expansion_cap(compressed_bytes);
        Meter {
            inner,
            produced: 0,
            cap,
            limit,
            compressed_bytes: compressed_bytes.max(1),
            max_ratio: self.max_expansion_ratio,
        }
    }
}

/// Why `trust.max_bundle_age` refuses a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    /// The bundle says when it was made, longer ago than allowed.
    #[error(
        "it was created {created}, {} ago, more than trust.max_bundle_age = {}",
        humantime::format_duration(*.age),
        humantime::format_duration(*.max)
    )]
    TooOld {
        /// The creation time, as the bundle gives it.
        created: String,
        /// How long ago that is (whole seconds).
        age: Duration,
        /// The limit.
        max: Duration,
    },
    /// The bundle does not say when it was made, so its age is unknown.
    #[error(
        "it has no creation time (org.opencontainers.image.created on its index.json) and trust.max_bundle_age = {} is set",
        humantime::format_duration(*.max)
    )]
    NoCreationTime {
        /// The limit.
        max: Duration,
    },
    /// The creation time is not an RFC 3339 time.
    #[error(
        "its creation time {created:?} is not an RFC 3339 time, and trust.max_bundle_age is set"
    )]
    Unreadable {
        /// The annotation's value.
        created: String,
    },
}

impl ReadLimits {
    /// Checks a bundle's creation time (the `index.json` annotation, if
    /// any) against [`ReadLimits::max_bundle_age`] at `now`. A creation
    /// time in the future passes: only age is judged, and clocks differ.
    pub fn check_age(&self, created: Option<&str>, now: SystemTime) -> Result<(), Stale> {
        let Some(max) = self.max_bundle_age else {
            return Ok(());
        };
        let Some(created) = created else {
            return Err(Stale::NoCreationTime { max });
        };
        let time = humantime::parse_rfc3339_weak(created).map_err(|_| Stale::Unreadable {
            created: created.to_owned(),
        })?;
        let age = now.duration_since(time).unwrap_or_default();
        if age > max {
            return Err(Stale::TooOld {
                created: created.to_owned(),
                age: Duration::from_secs(age.as_secs()),
                max,
            });
        }
        Ok(())
    }
}

/// A reader of decompressed data that fails with [`Exceeded`] (inside an
/// [`io::Error`]) as soon as it would pass its cap, so a bomb costs at most
/// the cap's worth of decompression, never its full expansion.
pub struct Meter<R> {
    inner: R,
    produced: u64,
    cap: u64,
    limit: Limit,
    compressed_bytes: u64,
    max_ratio: u64,
}

impl<R> Meter<R> {
    /// The reader being metered.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn exceeded(&self) -> Exceeded {
        match self.limit {
            Limit::ExpansionRatio => Exceeded {
                limit: Limit::ExpansionRatio,
                value: self.produced / self.compressed_bytes,
                at_least: true,
                max: self.max_ratio,
            },
            limit => Exceeded {
                limit,
                value: self.produced,
                at_least: true,
                max: self.cap,
            },
        }
    }
}

impl<R: Read> Read for Meter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Never hand out more than the cap allows, plus one byte to see
        // whether there is more: reading stops at the cap, not after the
        // next (possibly huge) buffer.
        let room = (self.cap - self.produced).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.produced += n as u64;
        if self.produced > self.cap {
            return Err(io::Error::new(io::ErrorKind::InvalidData, self.exceeded()));
        }
        Ok(n)
    }
}

/// The [`Exceeded`] an I/O error carries, however deeply the tar reader
/// wrapped it.
pub fn exceeded_in(error: &io::Error) -> Option<Exceeded> {
    let mut current: &(dyn std::error::Error + 'static) = error.get_ref()?;
    for _ in 0..16 {
        if let Some(exceeded) = current.downcast_ref::<Exceeded>() {
            return Some(exceeded.clone());
        }
        if let Some(io) = current.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
        {
            current = inner;
            continue;
        }
        current = current.source()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_stops_at_the_ratio_cap_and_names_it() {
        let limits = ReadLimits::default();
        let zeros = io::repeat(0).take(EXPANSION_RATIO_FREE_BYTES * 2);
        let mut meter = limits.meter(zeros, 1000);
        let error = io::copy(&mut meter, &mut io::sink()).expect_err("capped");
        let exceeded = exceeded_in(&error).expect("carries the limit");
        assert_eq!(exceeded.limit, Limit::ExpansionRatio);
        assert_eq!(exceeded.max, DEFAULT_MAX_EXPANSION_RATIO);
        assert!(meter.produced <= EXPANSION_RATIO_FREE_BYTES + 1);
        assert!(
            error.to_string().contains("read.max_expansion_ratio"),
            "{error}"
        );
    }

    #[test]
    fn a_meter_lets_through_exactly_the_cap() {
        let limits = ReadLimits {
            max_uncompressed_bytes: 10,
            ..ReadLimits::default()
        };
        let mut out = Vec::new();
        limits
            .meter(&[7u8; 10][..], 10)
            .read_to_end(&mut out)
            .expect("at the cap");
        assert_eq!(out.len(), 10);
        let error = limits
            .meter(&[7u8; 11][..], 10)
            .read_to_end(&mut out)
            .expect_err("over the cap");
        let exceeded = exceeded_in(&error).expect("carries the limit");
        assert_eq!(
            (exceeded.limit, exceeded.value, exceeded.max),
            (Limit::UncompressedBytes, 11, 10)
        );
    }

    #[test]
    fn a_limit_wrapped_twice_is_still_found() {
        let inner = io::Error::new(
            io::ErrorKind::InvalidData,
            Exceeded {
                limit: Limit::Entries,
                value: 2,
                at_least: false,
                max: 1,
            },
        );
        let outer = io::Error::other(inner);
        assert_eq!(exceeded_in(&outer).map(|e| e.limit), Some(Limit::Entries));
        assert!(exceeded_in(&io::Error::other("plain")).is_none());
    }

    #[test]
    fn bundle_age_is_judged_only_when_a_maximum_is_set() {
        let now = humantime::parse_rfc3339("2026-11-29T12:00:00Z").expect("now");
        let off = ReadLimits::default();
        assert_eq!(off.check_age(None, now), Ok(()));
        let day = ReadLimits {
            max_bundle_age: Some(Duration::from_secs(86_400)),
            ..ReadLimits::default()
        };
        assert_eq!(day.check_age(Some("2026-11-28T12:00:00Z"), now), Ok(()));
        assert_eq!(day.check_age(Some("2026-12-01T00:00:00Z"), now), Ok(()));
        let error = day
            .check_age(Some("2026-11-28T11:59:59Z"), now)
            .expect_err("a second too old");
        assert_eq!(
            error.to_string(),
            "it was created 2026-11-28T11:59:59Z, 1day 1s ago, more than trust.max_bundle_age = 1day"
        );
        assert!(matches!(
            day.check_age(None, now),
            Err(Stale::NoCreationTime { .. })
        ));
        assert!(matches!(
            day.check_age(Some("yesterday"), now),
            Err(Stale::Unreadable { .. })
        ));
    }

    #[test]
    fn check_passes_the_cap_and_refuses_one_more() {
        let limits = ReadLimits::default();
        assert!(limits.check(Limit::PathBytes, 4096).is_ok());
        let error = limits.check(Limit::PathBytes, 4097).expect_err("over");
        assert_eq!(
            error.to_string(),
            "4097 bytes in a path is over the limit read.max_path_bytes = 4096"
        );
    }
}
