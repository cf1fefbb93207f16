//! What people and programs read: inspection listings, import summaries
//! (text or JSON) and live progress on a terminal.
//!
//! Depends on every stage before it for their result types; nothing depends
//! on it but the CLI and the daemon.

pub mod batch;
pub mod inspect;
pub mod progress;

use std::fmt::Write as _;

use crate::import::ImportReport;

/// Output format for commands that report results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned text for people.
    #[default]
    Text,
    /// One JSON document for programs.
    Json,
}

/// Longest cause text shown; parsers sometimes quote whole headers.
const MAX_CAUSE_CHARS: usize = 160;

/// An error and its causes on one line, without repeating a cause that the
/// message already includes. Control characters from quoted input become
/// spaces so the reason always fits on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = one_line(&error.to_string(), usize::MAX);
    let mut source = error.source();
    while let Some(cause) = source {
        let text = one_line(&cause.to_string(), MAX_CAUSE_CHARS);
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn one_line(text: &str, max_chars: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut words = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() > max_chars {
        words = words.chars().take(max_chars).collect::<String>() + "…";
    }
    words
}

/// Formats a byte count with binary units (`1.5 MiB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The text summary of an import.
pub fn import_text(report: &ImportReport) -> String {
    let mut out = String::new();
    let push = &report.push;
    let _ = writeln!(
        out,
        "Verified OK with {} ({}, {})",
        report.verified_by.label, report.verified_by.algorithm, report.verified_by.fingerprint
    );
    let _ = writeln!(
        out,
        "Imported {} image(s) from {} into {} in {:.1}s",
        push.images.len(),
        report.bundle,
        report.target,
        push.duration.as_secs_f64()
    );
    for image in &push.images {
        let _ = writeln!(
            out,
            "  {} -> {}  {}",
            image.source, image.target, image.digest
        );
        if let Some(original) = &image.rewritten_from {
            let _ = writeln!(
                out,
                "    index rewritten to the selected platforms (in the bundle: {original})"
            );
        }
    }
    if push.referrers_indexes > 0 {
        let _ = writeln!(
            out,
            "Referrers indexes (sha256-<subject> tags) written: {}",
            push.referrers_indexes
        );
    }
    let _ = writeln!(
        out,
        "Blobs: {} uploaded ({}), {} mounted, {} already present. Manifests: {} pushed, {} image(s) already up to date.",
        push.blobs_uploaded,
        human_bytes(push.bytes_uploaded),
        push.blobs_mounted,
        push.blobs_present,
        push.manifests_pushed,
        push.manifests_present
    );
    for pack in report.packs.iter().filter(|p| !p.missing_images.is_empty()) {
        let verdict = if pack.held_back {
            "held back"
        } else {
            "imported"
        };
        let _ = writeln!(
            out,
            "Pack {} {} ({}) {verdict}; images neither in the bundle nor in the target: {}",
            pack.name,
            pack.version,
            pack.item,
            pack.missing_images.join(", ")
        );
    }
    for verdict in report.image_signatures.iter().filter(|v| v.held_back) {
        let _ = writeln!(
            out,
            "Image held back (image signature policy {}): {verdict}",
            verdict.policy.as_str()
        );
    }
    for held in &report.held_tags {
        let _ = writeln!(
            out,
            "Tag held back (on-existing-tag {}): {held}",
            held.policy.as_str()
        );
    }
    for skipped in &report.skipped {
        let _ = writeln!(
            out,
            "Not imported: index.json entry {} ({}): {}",
            skipped.position, skipped.digest, skipped.reason
        );
    }
    for extra in &report.extra_files {
        let _ = writeln!(
            out,
            "Not imported: {} ({}): {}",
            extra.path,
            human_bytes(extra.size),
            report.producer.not_imported_reason(&extra.path)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_naturally() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(300 << 20), "300.0 MiB");
    }
}
