//! A watch on a tar stream's headers, below the tar parser.
//!
//! The `tar` crate reads a GNU long name or long link entry (`L`, `K`) and a
//! PAX extended header (`x`, `g`) whole into memory before the entry it
//! describes, whatever its size: a signed bundle of a few kilobytes can hold
//! a "file name" of a gigabyte. [`TarGuard`] follows the stream's structure
//! as the bytes pass to the parser (header blocks, entry sizes, the PAX
//! `size` of the next entry) and fails the read at the header of an
//! extension larger than [`MAX_HEADER_EXTENSION_BYTES`], before the parser
//! allocates for it.

use std::io::{self, Read};

/// The largest long name, long link or PAX header accepted: path names are
/// at most 4 KiB on Linux, and PAX records of real archives (times, owner
/// names, a few extended attributes) stay far below this.
pub const MAX_HEADER_EXTENSION_BYTES: u64 = 1 << 20;

const BLOCK: u64 = 512;

/// Passes a tar stream through unchanged, failing at an oversized header
/// extension.
pub struct TarGuard<R> {
    inner: R,
    /// Bytes passed so far.
    offset: u64,
    /// Where the next header block starts.
    next_header: u64,
    /// The header block being assembled.
    header: Vec<u8>,
    /// A PAX header's records being collected, with the bytes still due.
    pax: Option<(Vec<u8>, u64)>,
    /// The size a PAX header gave the next entry.
    pax_size: Option<u64>,
    /// Past the end-of-archive block: the rest is not parsed.
    ended: bool,
}

impl<R> TarGuard<R> {
    /// Watches `inner`, which must start at a header block.
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            offset: 0,
            next_header: 0,
            header: Vec::with_capacity(BLOCK as usize),
            pax: None,
            pax_size: None,
            ended: false,
        }
    }

    /// The stream being watched.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn observe(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() && !self.ended {
            if self.offset < self.next_header {
                let skip = (self.next_header - self.offset).min(bytes.len() as u64) as usize;
                if let Some((records, due)) = &mut self.pax {
                    let take = (*due).min(skip as u64) as usize;
                    records.extend_from_slice(&bytes[..take]);
                    *due -= take as u64;
                    if *due == 0 {
                        self.pax_size = pax_size(records);
                        self.pax = None;
                    }
                }
                self.offset += skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (BLOCK as usize - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            self.offset += take as u64;
            bytes = &bytes[take..];
            if self.header.len() == BLOCK as usize {
                let header = std::mem::take(&mut self.header);
                self.on_header(&header)?;
            }
        }
        Ok(())
    }

    fn on_header(&mut self, header: &[u8]) -> io::Result<()> {
        if header.iter().all(|b| *b == 0) {
            self.ended = true;
            return Ok(());
        }
        let kind = header[156];
        let mut size = entry_size(&header[124..136])?;
        let extension = matches!(kind, b'L' | b'K' | b'x' | b'g');
        if !extension && let Some(pax) = self.pax_size.take() {
            size = pax;
        }
        if extension && size > MAX_HEADER_EXTENSION_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a tar header extension of {size} bytes (more than {MAX_HEADER_EXTENSION_BYTES})"
                ),
            ));
        }
        if kind == b'S' {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "GNU sparse tar entries are not supported",
            ));
        }
        if kind == b'x' {
            self.pax = (size > 0).then(|| (Vec::with_capacity(size as usize), size));
        }
        let data = size.div_ceil(BLOCK) * BLOCK;
        self.next_header = self
            .offset
            .checked_add(data)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "tar entry size overflow"))?;
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

/// A header's size field: octal text, or GNU base-256 when the high bit of
/// its first byte is set.
fn entry_size(field: &[u8]) -> io::Result<u64> {
    if field[0] & 0x80 != 0 {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for byte in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(*byte)))
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "tar size overflow"))?;
        }
        return Ok(value);
    }
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "tar size is not octal"))
}

/// The `size` record of PAX extended header records (`<len> size=<n>\n`).
fn pax_size(records: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(records);
    text.lines().find_map(|line| {
        let (_, record) = line.split_once(' ')?;
        record.strip_prefix("size=")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().expect("finish the tar")
    }

    fn paths(bytes: &[u8]) -> io::Result<Vec<String>> {
        let mut archive = tar::Archive::new(TarGuard::new(bytes));
        let mut paths = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            paths.push(entry.path()?.display().to_string());
            io::copy(&mut entry, &mut io::sink())?;
        }
        Ok(paths)
    }

    #[test]
    fn ordinary_archives_pass_unchanged_long_names_and_pax_included() {
        let long = format!("dir/{}", "n".repeat(300));
        let bytes = archive(|b| {
            let mut header = tar::Header::new_gnu();
            header.set_size(5);
            header.set_mode(0o644);
            b.append_data(&mut header, &long, &b"hello"[..])
                .expect("long name");
            b.append_pax_extensions([("comment", &b"x"[..])])
                .expect("pax");
            let mut header = tar::Header::new_ustar();
            header.set_size(3);
            header.set_mode(0o644);
            b.append_data(&mut header, "short", &b"abc"[..])
                .expect("short");
        });
        assert_eq!(paths(&bytes).expect("reads"), [long, "short".to_owned()]);
    }

    #[test]
    fn an_oversized_long_name_is_refused_at_its_header() {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_size(MAX_HEADER_EXTENSION_BYTES + 1);
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        // Only the start of the announced name follows: the guard must fail
        // at the header, before the name is read.
        bytes.extend_from_slice(&[b'a'; 4096]);
        let error = paths(&bytes).expect_err("refused");
        assert!(error.to_string().contains("header extension"), "{error}");
    }

    #[test]
    fn sizes_are_read_as_octal_or_base_256() {
        assert_eq!(entry_size(b"00000001750\0").expect("octal"), 1000);
        let mut base256 = [0u8; 12];
        base256[0] = 0x80;
        base256[11] = 0x02;
        base256[10] = 0x01;
        assert_eq!(entry_size(&base256).expect("base-256"), 258);
        assert_eq!(pax_size(b"20 size=8589934592\n"), Some(8_589_934_592));
    }
}
