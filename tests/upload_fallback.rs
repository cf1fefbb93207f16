//! Upload-mode fallback: a registry (or a proxy in front of it) that refuses
//! chunked uploads gets monolithic ones, and one whose body limit refuses a
//! monolithic `PUT` gets chunks — each for the rest of the import, the
//! refused blob streamed again from the bundle, never buffered whole. The
//! misbehaving side is a small proxy in front of the real registry
//! ([`support::proxy`]); results are checked with skopeo.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::bundle::{BlobInfo, BuiltBundle, BundleBuilder, Image, Layer};
use support::keys::{KeyKind, TestKey};
use support::process::{Background, Finished};
use support::proxy::{ProxiedRequest, Proxy, ProxyRules};
use support::registry::Registry;
use support::{airlock, skopeo};

const MIB: u64 = 1 << 20;

/// `airlock import` into `host`/mirror (plain HTTP), JSON report on stdout,
/// waited for at most two minutes.
fn import(bundle: &BuiltBundle, host: &str, extra: &[&str]) -> Finished {
    Background::spawn(
        airlock()
            .arg("import")
            .arg(bundle.zst())
            .arg("--public-key")
            .arg(bundle.public_key_pem())
            .args(["--registry", &format!("{host}/mirror"), "--plain-http"])
            .args(["--output", "json", "--quiet"])
            .args(extra)
            .env("DOCKER_CONFIG", bundle.dir().join("no-docker-config")),
    )
    .wait(Duration::from_secs(120))
}

fn bundle_with_big_layer(key: &TestKey, name: &str, size: u64) -> (BuiltBundle, BlobInfo) {
    let bundle = BundleBuilder::new(name)
        .image(
            Image::new(&format!("quay.io/acme/{name}:1.0"))
                .layers(&[Layer::uncompressed(77, size), Layer::gzip_tar(78, 64 << 10)]),
        )
        .build(key);
    let layer = bundle
        .blobs()
        .iter()
        .find(|b| b.size == size)
        .cloned()
        .expect("the big layer");
    (bundle, layer)
}

fn assert_landed(bundle: &BuiltBundle, registry: &Registry) {
    for image in bundle.images() {
        let reference = format!("mirror/{}", image.full_ref);
        assert_eq!(
            skopeo::manifest_digest(registry, &reference),
            image.digest,
            "{reference}"
        );
        assert_eq!(skopeo::inspect_raw(registry, &reference), image.manifest);
    }
}

fn puts_of<'a>(requests: &'a [ProxiedRequest], layer: &BlobInfo) -> Vec<&'a ProxiedRequest> {
    let encoded = layer.digest.replace(':', "%3A");
    requests
        .iter()
        .filter(|r| {
            r.method == "PUT"
                && (r.path.contains(&format!("digest={encoded}"))
                    || r.path.contains(&format!("digest={}", layer.digest)))
        })
        .collect()
}

#[test]
fn a_registry_that_refuses_patch_gets_monolithic_uploads() {
    let key = TestKey::generate(KeyKind::EcP256);
    let (bundle, layer) = bundle_with_big_layer(&key, "nopatch", 20 * MIB);
    let registry = Registry::start();
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            refuse_patch: true,
            ..ProxyRules::default()
        },
    );

    let output = import(&bundle, &proxy.host(), &["--upload-mode", "chunked"]);
    let log = &output.stderr;
    assert!(output.success(), "{log}");

    assert_landed(&bundle, &registry);
    let report: Value = serde_json::from_str(&output.stdout).expect("JSON report");
    assert_eq!(
        report["push"]["blobsUploaded"].as_u64(),
        Some(bundle.unique_blob_count() as u64),
        "{report}"
    );
    let seen = proxy.requests();
    let patches: Vec<_> = seen.iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(
        patches.len(),
        1,
        "one refused PATCH, then none: {patches:#?}"
    );
    assert_eq!(patches[0].status, 405);
    let puts = puts_of(&seen, &layer);
    assert_eq!(puts.len(), 1, "{puts:#?}");
    assert_eq!((puts[0].status, puts[0].body_len), (201, 20 * MIB));
    assert!(
        !registry
            .settled_requests()
            .iter()
            .any(|r| r.method == "PATCH"),
        "a PATCH reached the registry"
    );
    assert!(
        log.contains("the registry refused chunked uploads; using monolithic uploads"),
        "{log}"
    );
}

#[test]
fn a_body_limit_that_refuses_a_monolithic_put_gets_chunks() {
    let key = TestKey::generate(KeyKind::EcP256);
    let (bundle, layer) = bundle_with_big_layer(&key, "limited", 40 * MIB);
    let registry = Registry::start();
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            max_put_body: Some(12 * MIB),
            ..ProxyRules::default()
        },
    );

    let output = import(&bundle, &proxy.host(), &["--upload-mode", "monolithic"]);
    let log = &output.stderr;
    assert!(output.success(), "{log}");

    assert_landed(&bundle, &registry);
    let seen = proxy.requests();
    let puts = puts_of(&seen, &layer);
    assert_eq!(puts.len(), 2, "{puts:#?}");
    assert_eq!((puts[0].status, puts[0].body_len), (413, 40 * MIB));
    assert_eq!(puts[1].status, 201);
    assert!(puts[1].body_len <= 8 * MIB, "{puts:#?}");
    let patches = seen
        .iter()
        .filter(|r| r.method == "PATCH" && r.status == 202)
        .count();
    assert_eq!(patches, 4, "40 MiB: four 8 MiB PATCHes and the final PUT");
    assert!(
        seen.iter()
            .all(|r| r.body_len <= 12 * MIB || r.status == 413),
        "{seen:#?}"
    );
    assert!(
        log.contains("the registry refused monolithic uploads; using chunked uploads"),
        "{log}"
    );
}

#[test]
fn a_registry_refusing_both_modes_fails_once_without_ping_pong() {
    let key = TestKey::generate(KeyKind::EcP256);
    let (bundle, layer) = bundle_with_big_layer(&key, "neither", 40 * MIB);
    let registry = Registry::start();
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            refuse_patch: true,
            max_put_body: Some(12 * MIB),
            ..ProxyRules::default()
        },
    );

    let output = import(&bundle, &proxy.host(), &["--upload-mode", "chunked"]);
    let log = &output.stderr;
    assert_eq!(output.code, Some(4), "{log}");
    assert!(log.contains("413"), "{log}");
    let seen = proxy.requests();
    assert_eq!(
        seen.iter().filter(|r| r.method == "PATCH").count(),
        1,
        "{seen:#?}"
    );
    assert_eq!(puts_of(&seen, &layer).len(), 1, "{seen:#?}");
    assert!(
        log.contains("refuses both chunked and monolithic uploads"),
        "{log}"
    );
}
