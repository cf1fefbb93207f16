//! Which tool made a bundle, so that `inspect` can say so and name what
//! airlock does not import in that tool's own words.
//!
//! - A Zarf package has `zarf.yaml` at its root and its images in an OCI
//!   layout under `images/`; its `components/` (manifests, charts, files,
//!   data injections) are deployed by `zarf` itself, so airlock lists them as
//!   not imported.
//! - A Hauler haul is an OCI layout whose `index.json` entries carry Hauler's
//!   `kind` annotation (`dev.hauler/image`, `dev.hauler/chart`,
//!   `dev.hauler/file`); its charts and files are imported into the charts
//!   and installers areas (see [`crate::read::names`]).
//! - Anything else is airlock's own layout (an OCI layout, `packs/`,
//!   `charts/`, `files/`).

use serde::{Deserialize, Serialize};

use crate::read::image::BundleImage;
use crate::read::names::HAULER_KIND;
use crate::read::peek::ScannedFile;

/// The file that makes a bundle a Zarf package.
pub const ZARF_DEFINITION: &str = "zarf.yaml";

/// The prefix of Hauler's `kind` annotation values.
pub const HAULER_KIND_PREFIX: &str = "dev.hauler/";

/// The format of a bundle, by the tool that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "format")]
pub enum Producer {
    /// airlock's documented layout.
    Airlock,
    /// A Zarf package (`zarf.yaml`, `images/`, `components/`).
    Zarf {
        /// `metadata.name` of `zarf.yaml`.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// `metadata.version` of `zarf.yaml`.
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// A Hauler haul (an OCI layout with `kind` annotations).
    Hauler,
}

impl std::fmt::Display for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Producer::Airlock => f.write_str("airlock layout"),
            Producer::Hauler => f.write_str("Hauler haul"),
            Producer::Zarf { name, version } => {
                f.write_str("Zarf package")?;
                if let Some(name) = name {
                    write!(f, " {name}")?;
                }
                if let Some(version) = version {
                    write!(f, " {version}")?;
                }
                Ok(())
            }
        }
    }
}

impl Producer {
    /// Why a file outside the OCI layout is not imported, in the producer's
    /// terms.
    pub fn not_imported_reason(&self, path: &str) -> &'static str {
        match self {
            Producer::Zarf { .. } if path.starts_with("components/") => {
                "Zarf component content; deploy it with zarf"
            }
            Producer::Zarf { .. } if path == ZARF_DEFINITION => {
                "Zarf package definition (read for its name and version)"
            }
            Producer::Zarf { .. } if path == "checksums.txt" => {
                "Zarf checksums (airlock checks every blob against its digest)"
            }
            Producer::Zarf { .. } if path.starts_with("sboms") => {
                "Zarf SBOMs of the package; view them with zarf"
            }
            _ => "outside the OCI layout; no format airlock reads claims it",
        }
    }
}

#[derive(Deserialize)]
struct ZarfPackage {
    metadata: Option<ZarfMetadata>,
}

#[derive(Deserialize)]
struct ZarfMetadata {
    name: Option<String>,
    version: Option<String>,
}

/// Recognises the producer from the files outside the layout and the
/// layout's entries.
pub fn recognise(others: &[ScannedFile], images: &[BundleImage]) -> Producer {
    if let Some(definition) = others.iter().find(|f| f.file.path == ZARF_DEFINITION) {
        let metadata = definition
            .whole()
            .and_then(|bytes| super::yaml::from_slice::<ZarfPackage>(bytes).ok())
            .and_then(|p| p.metadata);
        return Producer::Zarf {
            name: metadata.as_ref().and_then(|m| m.name.clone()),
            version: metadata.and_then(|m| m.version),
        };
    }
    let hauled = images.iter().any(|image| {
        image
            .descriptor
            .annotations
            .get(HAULER_KIND)
            .is_some_and(|kind| kind.starts_with(HAULER_KIND_PREFIX))
    });
    if hauled {
        Producer::Hauler
    } else {
        Producer::Airlock
    }
}
