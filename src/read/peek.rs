//! What the index pass keeps of files outside the OCI layout: every file is
//! hashed (it may become a layer: a pack archive, an installer, a docker-save
//! layer), small JSON and YAML files are kept whole (sidecars, docker-save
//! manifests and configs), and pack and chart archives are opened on the fly
//! to keep the few members that describe them (`pack.json`, `values.yaml`,
//! `Chart.yaml`, charts inside packs).
//!
//! Nothing here judges the content: a pack archive that is not gzip is only
//! marked [`Peek::Unreadable`], so the format that claims the file can name it
//! in a clear error.

use std::io::{self, Read};
use std::path::Path;

use bytes::Bytes;

use super::{Error, ExtraFile, ReadLimits, Result, corrupt};
use crate::digest::{Algorithm, Hasher};

/// The two magic bytes that open a gzip member.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Buffer for hashing file contents as they stream by.
const HASH_BUFFER_BYTES: usize = 256 << 10;

/// Entries airlock walks in one pack or chart archive: charts with
/// thousands of templates stay far below it, and a crafted archive of
/// empty entries cannot keep the index pass busy for long.
pub const MAX_ARCHIVE_ENTRIES: usize = 100_000;

/// A file outside the OCI layout, as the index pass saw it.
#[derive(Debug, Clone)]
pub struct ScannedFile {
    /// Its path, size and digest.
    pub file: ExtraFile,
    /// Whether its content starts like gzip.
    pub gzip: bool,
    /// The digest of its decompressed content, for gzip files that may be
    /// docker-save layers (whose config lists uncompressed digests).
    pub uncompressed: Option<crate::digest::Digest>,
    /// What was kept of its content.
    pub peek: Peek,
    /// The whole content, when the index kept it for the push to send from
    /// memory rather than read the bundle again
    /// ([`BlobStage::leave_in_memory`](super::BlobStage::leave_in_memory)).
    pub kept: Option<Bytes>,
}

/// What the index pass kept of a file's content.
#[derive(Debug, Clone)]
pub enum Peek {
    /// Nothing: the file is only hashed.
    Nothing,
    /// The whole file, which is small and JSON or YAML.
    Whole(Bytes),
    /// Selected members of a gzip-compressed tar (a pack or chart archive).
    Members(Vec<Member>),
    /// A pack or chart archive that is not a readable gzip-compressed tar.
    Unreadable(String),
}

/// A member kept from inside a pack or chart archive.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its path inside the archive, without a leading `./`.
    pub path: String,
    /// Its content.
    pub bytes: Bytes,
}

impl ScannedFile {
    /// The kept member at `path` (exactly) inside the archive.
    pub fn member(&self, path: &str) -> Option<&Member> {
        match &self.peek {
            Peek::Members(members) => members.iter().find(|m| m.path == path),
            _ => None,
        }
    }

    /// The kept members of an archive (empty for other files).
    pub fn members(&self) -> &[Member] {
        match &self.peek {
            Peek::Members(members) => members,
            _ => &[],
        }
    }

    /// The whole content, when the file was small enough to keep.
    pub fn whole(&self) -> Option<&Bytes> {
        match &self.peek {
            Peek::Whole(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The file name (the last path component).
    pub fn file_name(&self) -> &str {
        self.file.path.rsplit('/').next().unwrap_or(&self.file.path)
    }
}

/// Whether a file at `path` is kept whole when small: JSON and YAML
/// documents, and docker-save's `repositories`.
fn keeps_whole(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "repositories"
        || [".json", ".yaml", ".yml"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

/// Whether a file at `path` is a pack or chart archive worth opening.
fn opens_archive(path: &str) -> bool {
    let top = path.split('/').next().unwrap_or_default();
    matches!(top, "packs" | "charts") && (path.ends_with(".tar.gz") || path.ends_with(".tgz"))
}

/// Whether a member of a pack or chart archive is kept: its descriptive
/// files at the archive root or one directory down, and charts inside packs.
fn keeps_member(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let describes = |name: &str| matches!(name, "pack.json" | "values.yaml" | "Chart.yaml");
    let chart = |dir: &str, name: &str| dir == "charts" && name.ends_with(".tgz");
    match parts.as_slice() {
        [name] => describes(name),
        [first, name] => describes(name) || chart(first, name),
        [_, dir, name] => chart(dir, name),
        _ => false,
    }
}

/// Hashes one file outside the layout and keeps what describes it. `retained`
/// counts bytes kept in memory against [`ReadLimits::max_documents_total_bytes`].
pub fn scan_file(
    entry: &mut impl Read,
    path: String,
    size: u64,
    limits: ReadLimits,
    retained: &mut u64,
    bundle: &Path,
) -> Result<ScannedFile> {
    let over_budget = || Error::DocumentBudgetExceeded {
        path: bundle.display().to_string(),
        limit: limits.max_documents_total_bytes,
    };
    // What may still be kept is known before anything is read, so a file or
    // an archive's members are refused before they are held, not after.
    let room = limits.max_documents_total_bytes.saturating_sub(*retained);
    let mut reader = HashingReader::new(entry);
    let mut uncompressed = None;
    let peek = if size <= limits.max_document_bytes && keeps_whole(&path) {
        if size > room {
            return Err(over_budget());
        }
        let mut bytes = Vec::with_capacity(size as usize);
        reader
            .read_to_end(&mut bytes)
            .map_err(|source| corrupt(bundle, source))?;
        Peek::Whole(Bytes::from(bytes))
    } else if opens_archive(&path) {
        open_archive(&mut reader, limits, room, size)
            .map_err(|source| corrupt(bundle, source))?
            .ok_or_else(over_budget)?
    } else {
        if may_be_layer(&path) {
            uncompressed = hash_if_gzip(&mut reader, &limits, size)
                .map_err(|source| corrupt(bundle, source))?;
        }
        Peek::Nothing
    };
    reader.drain().map_err(|source| corrupt(bundle, source))?;
    *retained += match &peek {
        Peek::Whole(bytes) => bytes.len() as u64,
        Peek::Members(members) => members.iter().map(|m| m.bytes.len() as u64).sum(),
        Peek::Nothing | Peek::Unreadable(_) => 0,
    };
    if *retained > limits.max_documents_total_bytes {
        return Err(over_budget());
    }
    let (digest, gzip) = reader.finish();
    Ok(ScannedFile {
        file: ExtraFile { path, size, digest },
        gzip,
        uncompressed,
        peek,
        kept: None,
    })
}

/// Whether a file at `path` may be a gzip-compressed docker-save layer, whose
/// uncompressed digest is then computed on the way (the manifest naming it
/// may come later in the tar). Files under `packs/`, `charts/` and `files/`
/// are other formats' and never layers.
fn may_be_layer(path: &str) -> bool {
    let top = path.split('/').next().unwrap_or_default();
    !matches!(top, "packs" | "charts" | "files") && !keeps_whole(path)
}

/// Hashes the decompressed content when the file starts like gzip. An `Err`
/// is a failure to read the bundle itself; content that is not valid gzip
/// after its magic bytes has no uncompressed digest.
fn hash_if_gzip<R: Read>(
    reader: &mut HashingReader<R>,
    limits: &ReadLimits,
    size: u64,
) -> io::Result<Option<crate::digest::Digest>> {
    let mut magic = [0u8; 2];
    let read = read_up_to(&mut *reader, &mut magic);
    if let Some(error) = reader.failure.take() {
        return Err(error);
    }
    if read? < 2 || magic != GZIP_MAGIC {
        return Ok(None);
    }
    // A gzip bomb inside the bundle is held to the same caps as the bundle,
    // relative to its own compressed size.
    let mut gzip = limits.meter(
        flate2::read::MultiGzDecoder::new(io::Cursor::new(magic).chain(&mut *reader)),
        size,
    );
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    let decoded = loop {
        match gzip.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(error) if super::limits::exceeded_in(&error).is_some() => return Err(error),
            Err(_) => break false,
        }
    };
    if let Some(error) = reader.failure.take() {
        return Err(error);
    }
    Ok(decoded.then(|| hasher.finish()))
}

/// Reads until `buf` is full or the content ends; returns how much was read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Why the members of an archive were not kept.
enum NotKept {
    /// The archive is damaged or not a gzip-compressed tar.
    Unreadable(String),
    /// Its members would pass the memory budget for kept documents.
    OverBudget,
}

/// Reads the members airlock wants from a gzip-compressed tar, keeping at
/// most `room` bytes of them. An `Err` is a failure to read the bundle
/// itself; a damaged archive is [`Peek::Unreadable`]; `None` means the
/// members would pass the budget.
fn open_archive<R: Read>(
    reader: &mut HashingReader<R>,
    limits: ReadLimits,
    room: u64,
    compressed_size: u64,
) -> io::Result<Option<Peek>> {
    let result = read_members(&mut *reader, limits, room, compressed_size);
    if let Some(error) = reader.failure.take() {
        return Err(error);
    }
    Ok(match result {
        Ok(members) => Some(Peek::Members(members)),
        Err(NotKept::Unreadable(reason)) => Some(Peek::Unreadable(reason)),
        Err(NotKept::OverBudget) => None,
    })
}

fn read_members(
    reader: &mut impl Read,
    limits: ReadLimits,
    room: u64,
    compressed_size: u64,
) -> Result<Vec<Member>, NotKept> {
    let unreadable = NotKept::Unreadable;
    let mut magic = [0u8; 2];
    reader
        .read_exact(&mut magic)
        .map_err(|e| unreadable(format!("cannot read it: {e}")))?;
    if magic != GZIP_MAGIC {
        return Err(unreadable("it is not gzip-compressed".into()));
    }
    let gzip = limits.meter(
        flate2::read::GzDecoder::new(io::Cursor::new(magic).chain(reader)),
        compressed_size,
    );
    let mut archive = tar::Archive::new(super::tar_guard::TarGuard::new(gzip));
    let entries = archive
        .entries()
        .map_err(|e| unreadable(format!("it is not a tar archive: {e}")))?;
    let mut members = Vec::new();
    let mut kept = 0u64;
    for (seen, entry) in entries.enumerate() {
        if seen >= MAX_ARCHIVE_ENTRIES {
            return Err(unreadable(format!(
                "it holds more than {MAX_ARCHIVE_ENTRIES} entries"
            )));
        }
        let mut entry =
            entry.map_err(|e| unreadable(format!("it is not a readable tar.gz: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let path = String::from_utf8_lossy(&raw);
        let path = path.trim_start_matches("./").to_owned();
        if !keeps_member(&path) {
            continue;
        }
        if entry.size() > limits.max_document_bytes {
            return Err(unreadable(format!(
                "its {path} is {} bytes, over the limit read.max_document_bytes = {}",
                entry.size(),
                limits.max_document_bytes
            )));
        }
        kept += entry.size();
        if kept > room {
            return Err(NotKept::OverBudget);
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        (&mut entry)
            .take(limits.max_document_bytes)
            .read_to_end(&mut bytes)
            .map_err(|e| unreadable(format!("it is not a readable tar.gz: {e}")))?;
        members.push(Member {
            path,
            bytes: Bytes::from(bytes),
        });
    }
    Ok(members)
}

/// Hashes everything read through it, remembers whether the content starts
/// like gzip, and keeps a read error of the underlying entry apart from
/// errors of the formats parsed on top of it.
struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    first: Vec<u8>,
    failure: Option<io::Error>,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(Algorithm::Sha256),
            first: Vec::with_capacity(2),
            failure: None,
        }
    }

    /// Reads what is left, so the digest covers the whole file.
    fn drain(&mut self) -> io::Result<()> {
        let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
        loop {
            if self.read(&mut buffer)? == 0 {
                return Ok(());
            }
        }
    }

    fn finish(self) -> (crate::digest::Digest, bool) {
        (self.hasher.finish(), self.first == GZIP_MAGIC)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                let wanted = 2usize.saturating_sub(self.first.len()).min(n);
                self.first.extend_from_slice(&buf[..wanted]);
                Ok(n)
            }
            Err(error) => {
                let copy = io::Error::new(error.kind(), error.to_string());
                self.failure = Some(error);
                Err(copy)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptive_members_are_kept_at_the_root_or_one_level_down() {
        assert!(keeps_member("pack.json"));
        assert!(keeps_member("nginx-1.0/pack.json"));
        assert!(keeps_member("nginx/Chart.yaml"));
        assert!(keeps_member("charts/nginx-1.0.tgz"));
        assert!(!keeps_member("a/b/pack.json"));
        assert!(!keeps_member("nginx/templates/deployment.yaml"));
    }

    #[test]
    fn only_pack_and_chart_archives_are_opened() {
        assert!(opens_archive("packs/nginx-1.0.tar.gz"));
        assert!(opens_archive("charts/nginx-1.0.tgz"));
        assert!(!opens_archive("files/palette-4.6.0.tar.gz"));
        assert!(!opens_archive("packs/README.md"));
    }

    #[test]
    fn a_pack_that_is_not_gzip_is_unreadable_not_an_error() {
        let limits = ReadLimits::default();
        let mut retained = 0;
        let scanned = scan_file(
            &mut &b"plain text"[..],
            "packs/broken-1.0.tar.gz".into(),
            10,
            limits,
            &mut retained,
            Path::new("x.zst"),
        )
        .expect("scanned");
        assert!(matches!(scanned.peek, Peek::Unreadable(_)));
        assert_eq!(
            scanned.file.digest,
            crate::digest::Digest::sha256_of(b"plain text")
        );
        assert!(!scanned.gzip);
        assert!(scanned.uncompressed.is_none());
    }

    #[test]
    fn gzip_files_outside_other_formats_get_their_uncompressed_digest() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, b"layer content").expect("gzip");
        let layer = gz.finish().expect("gzip");
        let scan = |path: &str| {
            scan_file(
                &mut &layer[..],
                path.into(),
                layer.len() as u64,
                ReadLimits::default(),
                &mut 0,
                Path::new("x.zst"),
            )
            .expect("scanned")
        };
        let scanned = scan("abc/layer.tar");
        assert!(scanned.gzip);
        assert_eq!(
            scanned.file.digest,
            crate::digest::Digest::sha256_of(&layer)
        );
        assert_eq!(
            scanned.uncompressed,
            Some(crate::digest::Digest::sha256_of(b"layer content"))
        );
        assert!(scan("files/tool-1.0.tar.gz").uncompressed.is_none());
    }

    #[test]
    fn members_of_a_gzip_tar_are_kept_and_the_whole_file_hashed() {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, body) in [
            ("nginx/pack.json", &br#"{"name":"nginx"}"#[..]),
            ("nginx/templates/a.yaml", b"kind: x"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, path, body).expect("append");
        }
        let tar = tar.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).expect("gzip");
        let archive = gz.finish().expect("gzip");
        let mut retained = 0;
        let scanned = scan_file(
            &mut &archive[..],
            "packs/nginx-1.0.tar.gz".into(),
            archive.len() as u64,
            ReadLimits::default(),
            &mut retained,
            Path::new("x.zst"),
        )
        .expect("scanned");
        assert!(scanned.gzip);
        assert_eq!(
            scanned.file.digest,
            crate::digest::Digest::sha256_of(&archive)
        );
        assert_eq!(scanned.members().len(), 1);
        assert!(scanned.member("nginx/pack.json").is_some());
        assert_eq!(retained, 16);

        // With room for less than the member, it is refused before it is kept.
        let mut nearly_full = ReadLimits::default().max_documents_total_bytes - 10;
        let refused = scan_file(
            &mut &archive[..],
            "packs/nginx-1.0.tar.gz".into(),
            archive.len() as u64,
            ReadLimits::default(),
            &mut nearly_full,
            Path::new("x.zst"),
        );
        assert!(
            matches!(refused, Err(Error::DocumentBudgetExceeded { .. })),
            "{refused:?}"
        );
    }
}
