//! The formats a bundle may hold besides (or instead of) an OCI image layout.
//! Each turns files found by the index pass ([`super::peek::ScannedFile`])
//! into OCI content through [`super::artifact::Assembly`], so planning and
//! pushing treat it like any image of the layout:
//!
//! - [`pack`]: Palette packs (`packs/*.tar.gz`) into the pack area;
//! - [`installer`]: installers and other files (`files/`) into `installers/`;
//! - [`chart`]: Helm charts (`charts/*.tgz`, and charts inside packs) into
//!   `charts/`, exactly as `helm push` would;
//! - [`docker_archive`]: `docker save` archives as Docker schema 2 images;
//! - [`producer`]: which tool made the bundle (Zarf, Hauler), and why the
//!   files no format claims are not imported.
//!
//! A format may only fail with [`super::Error::InvalidContent`] naming the
//! item, before anything is pushed.

pub mod chart;
pub mod docker_archive;
pub mod installer;
pub mod pack;
pub mod producer;
pub mod yaml;
