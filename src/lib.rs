//! airlock: verify signed air-gap bundles and push what they hold into an OCI registry.
//!
//! The modules follow the pipeline, and each may only depend on the ones before it:
//!
//! ```text
//! verify ──► read ──► plan ──► push ──► report
//! ```
//!
//! * [`verify`] checks the detached signature of a bundle file and yields a
//!   [`verify::VerifiedBundle`], the only thing [`read`] accepts.
//! * [`read`] streams the zstd-compressed tar, checks that every blob is whole
//!   and indexes the OCI image layout inside it.
//! * [`plan`] decides where every image lands in the target and in which order
//!   its blobs, manifests and tags are written.
//! * [`push`] streams the blobs from the bundle into the target (a registry or
//!   an OCI layout directory), then writes manifests and tags.
//! * [`report`] turns the outcome into what people and programs read.
//!
//! [`bundle`] is the producer side, outside the pipeline: it makes the signed
//! bundles the pipeline consumes.
//!
//! [`daemon`] runs the pipeline as a service; it alone uses [`cluster`] (the
//! Kubernetes API: Events and per-bundle Leases shared by replicas).

pub mod failure;
pub mod verify;

pub use failure::FailureClass;
pub mod attest;
pub mod bundle;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod durable;
pub mod http;
pub mod import;
pub mod metrics;
pub mod plan;
pub mod progress;
pub mod push;
pub mod read;
pub mod report;
pub mod state;
pub mod trust;
pub mod watch;
