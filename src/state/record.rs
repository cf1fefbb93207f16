//! What airlock remembers about each bundle, keyed by its content digest.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::push::PushedImage;
use crate::verify::VerifiedBy;

/// Where a bundle is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A settled file without its partner (a bundle without its signature,
    /// or a signature without its bundle); never stored, only listed.
    Waiting,
    /// Seen, settled, waiting for a free import slot.
    Queued,
    /// Being verified and pushed (also what a crash leaves behind).
    Importing,
    /// A transient failure; will be retried after a backoff.
    Retrying,
    /// Everything is in the target.
    Imported,
    /// A permanent failure (signature, integrity); never retried.
    Rejected,
    /// Imported except what a policy held back (a pack whose images are
    /// missing, a tag already at other content); never retried, disposed of
    /// like a rejected bundle.
    Partial,
    /// The files were removed from the drop folder before the import
    /// finished; nothing more happens unless the content is dropped again.
    Removed,
}

impl Status {
    /// Whether the outcome is settled for good: the content is never
    /// imported again (imported) or never retried (rejected).
    pub fn is_final(self) -> bool {
        matches!(self, Status::Imported | Status::Rejected | Status::Partial)
    }

    /// Whether an attempt is under way or due (queued, importing,
    /// retrying): what a stop interrupts.
    pub fn is_pending(self) -> bool {
        matches!(self, Status::Queued | Status::Importing | Status::Retrying)
    }

    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Queued => "queued",
            Status::Importing => "importing",
            Status::Retrying => "retrying",
            Status::Imported => "imported",
            Status::Rejected => "rejected",
            Status::Partial => "partial",
            Status::Removed => "removed",
        }
    }
}

/// What was pushed by an import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pushed {
    /// Images and where they landed.
    pub images: Vec<PushedImageRecord>,
    /// Blobs uploaded.
    pub blobs_uploaded: u64,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Blobs mounted from another repository.
    pub blobs_mounted: u64,
    /// Blobs already present.
    pub blobs_present: u64,
    /// The bundle's Palette packs, with the images each declared that were
    /// neither in the bundle nor in the target at import time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<PackRecord>,
    /// Images not pushed because their tag already pointed at other content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_tags: Vec<crate::plan::HeldTag>,
    /// Images not pushed because their signatures did not satisfy their
    /// `trust.image_signatures` rule, with the verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_signatures: Vec<crate::trust::SignatureVerdict>,
}

/// One pack of an import, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackRecord {
    /// `pack.json` name.
    pub name: String,
    /// `pack.json` version.
    pub version: String,
    /// Where it landed (`None` when its name could not be placed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<String>,
    /// Declared images neither in the bundle nor in the target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_images: Vec<String>,
    /// Whether the pack image policy held it back.
    #[serde(default)]
    pub held_back: bool,
}

impl From<&crate::import::ImportedPack> for PackRecord {
    fn from(pack: &crate::import::ImportedPack) -> Self {
        PackRecord {
            name: pack.name.clone(),
            version: pack.version.clone(),
            target_ref: pack.target_ref.clone(),
            missing_images: pack.missing_images.clone(),
            held_back: pack.held_back,
        }
    }
}

impl Pushed {
    /// What an attempt pushed so far, read from its progress counters (no
    /// images: those are known when the push ends).
    pub fn so_far(progress: &crate::progress::Progress) -> Self {
        Pushed {
            images: Vec::new(),
            blobs_uploaded: progress.blobs_uploaded(),
            bytes_uploaded: progress.uploaded_blob_bytes(),
            blobs_mounted: progress.blobs_mounted(),
            blobs_present: progress.blobs_present(),
            ..Pushed::default()
        }
    }

    /// The counts alone, without images: what an interrupted attempt leaves
    /// to the next one.
    #[must_use]
    pub fn counts(&self) -> Self {
        Pushed {
            images: Vec::new(),
            packs: Vec::new(),
            held_tags: Vec::new(),
            held_signatures: Vec::new(),
            ..self.clone()
        }
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == Pushed::default()
    }

    /// This attempt's counts added to what `earlier`, interrupted attempts of
    /// the same import did. The blobs they uploaded or mounted are in the
    /// target now, so this attempt found them present: they count as
    /// uploaded (or mounted) by the import, not as present before it.
    #[must_use]
    pub fn after(self, earlier: &Pushed) -> Self {
        let moved = earlier.blobs_uploaded + earlier.blobs_mounted;
        Pushed {
            blobs_uploaded: self.blobs_uploaded + earlier.blobs_uploaded,
            bytes_uploaded: self.bytes_uploaded + earlier.bytes_uploaded,
            blobs_mounted: self.blobs_mounted + earlier.blobs_mounted,
            blobs_present: self.blobs_present.saturating_sub(moved),
            images: self.images,
            packs: self.packs,
            held_tags: self.held_tags,
            held_signatures: self.held_signatures,
        }
    }
}

/// One image as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushedImageRecord {
    /// The source reference.
    pub source: String,
    /// The target reference.
    pub target: String,
    /// The manifest digest.
    pub digest: String,
    /// For an index rewritten to the selected platforms, its digest in the
    /// bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewritten_from: Option<String>,
}

impl From<&PushedImage> for PushedImageRecord {
    fn from(image: &PushedImage) -> Self {
        PushedImageRecord {
            source: image.source.clone(),
            target: image.target.clone(),
            digest: image.digest.to_string(),
            rewritten_from: image.rewritten_from.as_ref().map(ToString::to_string),
        }
    }
}

/// Why a bundle failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// `config`, `integrity` or `transport`.
    pub class: String,
    /// The one-line reason.
    pub message: String,
    /// When it happened.
    #[serde(with = "crate::state::time")]
    pub at: SystemTime,
}

/// The two files a verification failure was judged on. A bad signature says
/// nothing about the content (the same bytes may arrive again with a good
/// one), so such a rejection is recorded against the pair, never against the
/// content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pair {
    /// Hex SHA-256 of the `.zst` file.
    pub bundle: String,
    /// Hex SHA-256 of the signature file.
    pub signature: String,
}

impl Pair {
    /// The record id of a rejected pair: the hex SHA-256 of
    /// `<bundle hex>:<signature hex>`, so it has the shape of a bundle id.
    pub fn id(&self) -> String {
        let mut hasher = crate::digest::Hasher::new(crate::digest::Algorithm::Sha256);
        hasher.update(self.bundle.as_bytes());
        hasher.update(b":");
        hasher.update(self.signature.as_bytes());
        hasher.finish().hex().to_owned()
    }
}

/// The durable record of one bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleRecord {
    /// The bundle's id: the hex SHA-256 of its `.zst` file.
    pub id: String,
    /// The file names it arrived under (a bundle dropped again under
    /// another name adds a name, not a record).
    pub names: Vec<String>,
    /// Size of the `.zst` file.
    pub size: u64,
    /// Where it is in its life.
    pub status: Status,
    /// Import attempts so far.
    pub attempts: u32,
    /// When it was first seen settled.
    #[serde(with = "crate::state::time")]
    pub first_seen: SystemTime,
    /// When the current or last attempt started.
    #[serde(with = "crate::state::time::option", default)]
    pub started: Option<SystemTime>,
    /// When it reached its final state.
    #[serde(with = "crate::state::time::option", default)]
    pub finished: Option<SystemTime>,
    /// Which key verified it.
    pub verified_by: Option<VerifiedBy>,
    /// What was pushed (once imported).
    pub pushed: Option<Pushed>,
    /// The last failure, if any.
    pub error: Option<Failure>,
    /// For a rejected signature: the bundle and signature it was judged on
    /// (the record's id is then [`Pair::id`], not the content digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<Pair>,
}

impl BundleRecord {
    /// A new record of content `id` first seen now under `name`.
    pub fn new(id: String, name: &str, size: u64, now: SystemTime) -> Self {
        BundleRecord {
            id,
            names: vec![name.to_owned()],
            size,
            status: Status::Queued,
            attempts: 0,
            first_seen: now,
            started: None,
            finished: None,
            verified_by: None,
            pushed: None,
            error: None,
            pair: None,
        }
    }

    /// Adds a name the content arrived under; true when it was new.
    pub fn add_name(&mut self, name: &str) -> bool {
        let new = !self.names.iter().any(|n| n == name);
        if new {
            self.names.push(name.to_owned());
        }
        new
    }
}

/// A drop-folder file waiting for its partner, as `/api/v1/imports` lists
/// it beside the bundle records. It has no id: its content is only read
/// once both files are there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitingRecord {
    /// Always [`Status::Waiting`].
    pub status: Status,
    /// The file's name, as `names` of a bundle record.
    pub names: Vec<String>,
    /// The file's path.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Since when it has been as it is.
    #[serde(with = "crate::state::time")]
    pub first_seen: SystemTime,
    /// What is missing: the partner's possible file names, in the order
    /// they are looked for.
    pub missing: Vec<String>,
}
