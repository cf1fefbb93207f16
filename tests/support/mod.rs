//! Support code shared by airlock's integration tests.
//!
//! Every integration test crate does `mod support;` and uses what it needs:
//!
//! * [`registry`]: a real CNCF distribution registry (`docker-registry`) per test,
//!   plain, with basic auth, or with TLS from a throwaway CA.
//! * [`skopeo`]: an independent client to read back what airlock pushed.
//! * [`keys`]: signing keys generated with the openssl CLI at test time.
//! * [`bundle`]: builds real signed bundles (zstd tar of an OCI image layout)
//!   deterministically from seeds, including deliberately broken ones.
//! * [`tools`]: running the external tools with clear failure messages.
//! * [`process`]: a command in the background, waited for with a limit.
//! * [`proxy`]: a misbehaving HTTP proxy in front of a registry (refuses
//!   `PATCH`, limits `PUT` bodies, holds a chosen `PATCH`).
//! * [`token`]: a token service for the registry's token auth mode (JWTs
//!   it trusts, scoped per repository, with a lifetime the test sets).
//! * [`hostile`]: a server that answers as a test's handler says (foreign
//!   redirects, challenges, endless bodies) and records what it received.
//!
//! Everything is synchronous and per test: each test gets its own temporary
//! directories and its own registry, so tests can run in parallel threads.
#![allow(dead_code)]

pub mod bundle;
pub mod chart;
pub mod cosign;
pub mod daemon;
pub mod fake_apiserver;
pub mod hostile;
pub mod keys;
pub mod pack;
pub mod process;
pub mod proxy;
pub mod registry;
pub mod skopeo;
pub mod token;
pub mod tools;

use std::process::Command;

/// The `airlock` binary built by cargo for this test run.
pub fn airlock() -> Command {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
}

/// Standard base64 with padding (RFC 4648), to write Docker config files
/// and to look for an encoded secret in logs, without airlock's own code.
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
