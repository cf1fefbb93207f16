//! The summary of an import of several bundles: one row per bundle with what
//! it brought and how long it took, or why it failed.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::human_bytes;
use crate::FailureClass;
use crate::import::ImportReport;

/// One bundle of a several-bundle import.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportRow {
    /// The bundle file.
    pub bundle: String,
    /// Whether everything in it was imported.
    pub imported: bool,
    /// Images pushed or already up to date.
    pub images: usize,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Seconds the bundle took, verification included.
    pub seconds: f64,
    /// What the import did (absent when it failed before pushing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<ImportReport>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failure's class, for the exit code (not serialized).
    #[serde(skip)]
    pub class: Option<FailureClass>,
}

impl ImportRow {
    /// The row of `bundle` from its report and failure.
    pub fn new(
        bundle: &Path,
        took: Duration,
        (report, failure): (Option<ImportReport>, Option<(FailureClass, String)>),
    ) -> Self {
        let (class, error) = failure.unzip();
        ImportRow {
            bundle: bundle.display().to_string(),
            imported: class.is_none(),
            images: report.as_ref().map_or(0, |r| r.push.images.len()),
            bytes_uploaded: report.as_ref().map_or(0, |r| r.push.bytes_uploaded),
            seconds: took.as_secs_f64(),
            report,
            error,
            class,
        }
    }
}

/// The table: bundle, result, images, bytes uploaded, time; then a total.
pub fn import_table(rows: &[ImportRow]) -> String {
    let width = rows
        .iter()
        .map(|r| r.bundle.len())
        .chain(std::iter::once("BUNDLE".len()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:<8}  {:>6}  {:>10}  {:>7}",
        "BUNDLE", "RESULT", "IMAGES", "UPLOADED", "TIME"
    );
    for row in rows {
        let result = if row.imported { "imported" } else { "FAILED" };
        let _ = writeln!(
            out,
            "{:<width$}  {:<8}  {:>6}  {:>10}  {:>6.1}s",
            row.bundle,
            result,
            row.images,
            human_bytes(row.bytes_uploaded),
            row.seconds
        );
    }
    let imported = rows.iter().filter(|r| r.imported).count();
    let _ = writeln!(
        out,
        "{imported} of {} bundle(s) imported: {} image(s), {} uploaded in {:.1}s",
        rows.len(),
        rows.iter().map(|r| r.images).sum::<usize>(),
        human_bytes(rows.iter().map(|r| r.bytes_uploaded).sum()),
        rows.iter().map(|r| r.seconds).sum::<f64>()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_bundle_is_a_failed_row_and_not_counted_as_imported() {
        let rows = vec![ImportRow::new(
            Path::new("drop/bad.zst"),
            Duration::from_millis(1500),
            (
                None,
                Some((FailureClass::Integrity, "signature does not verify".into())),
            ),
        )];
        let table = import_table(&rows);
        assert!(table.contains("drop/bad.zst  FAILED"), "{table}");
        assert!(table.contains("0 of 1 bundle(s) imported"), "{table}");
        assert_eq!(rows[0].class, Some(FailureClass::Integrity));
    }
}
