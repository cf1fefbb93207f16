//! `airlock watch` as a real process against the real registry: bundles
//! dropped into a folder land in the registry, exactly once, whatever happens
//! around them.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer, Naming};
use support::daemon::{Daemon, Site};
use support::keys::{KeyKind, TestKey};
use support::proxy::{Proxy, ProxyRules, Release};
use support::registry::{Registry, RegistryOptions};
use support::skopeo;

fn small_bundle(key: &TestKey, name: &str, reference: &str) -> BuiltBundle {
    BundleBuilder::new(name)
        .image(Image::new(reference).naming(Naming::ContainerdName))
        .build(key)
}

fn assert_landed(bundle: &BuiltBundle, registry: &Registry) {
    for image in bundle.images() {
        let reference = format!("mirror/{}", image.full_ref);
        assert_eq!(
            skopeo::manifest_digest(registry, &reference),
            image.digest,
            "{reference}"
        );
    }
}

fn imported(daemon: &Daemon) -> f64 {
    daemon.metric(r#"airlock_bundles_total{outcome="imported"}"#)
}

/// Completed blob uploads per digest, from the registry's access log.
fn completed_uploads(registry: &Registry) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in registry.settled_requests() {
        let completed = request.method == "PUT"
            && request.path.contains("/blobs/uploads/")
            && request.status == 201;
        if let Some(digest) = request.path.split("digest=").nth(1).filter(|_| completed) {
            let digest = digest
                .split('&')
                .next()
                .unwrap_or(digest)
                .replace("%3A", ":");
            *counts.entry(digest).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn a_dropped_bundle_lands_and_is_counted() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "first", "quay.io/acme/app:1.0");
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(&site.setup(&[]), &registry, key.public_pem());

    bundle.copy_into(site.drop.path());
    daemon.wait_until("the import", |d| imported(d) >= 1.0);

    assert_landed(&bundle, &registry);
    assert_eq!(
        daemon.metric(r#"airlock_signature_verifications_total{result="verified"}"#),
        1.0
    );
    assert_eq!(
        daemon.metric(r#"airlock_bundles_total{outcome="rejected"}"#),
        0.0
    );
    assert!(daemon.metric("airlock_blobs_pushed_total") >= 2.0);
    assert!(daemon.metric("airlock_last_success_timestamp_seconds") > 0.0);
    let imports = daemon.imports();
    let records = imports.as_array().expect("a list");
    assert_eq!(records.len(), 1, "{imports}");
    assert_eq!(records[0]["status"], "imported");
    assert_eq!(
        records[0]["pushed"]["images"][0]["digest"],
        bundle.images()[0].digest.as_str()
    );
    let id = records[0]["id"].as_str().expect("id");
    let (status, _) = daemon
        .get(&format!("/api/v1/imports/{id}"))
        .expect("GET one import");
    assert_eq!(status, 200);
    assert!(
        site.path("first.zst").exists(),
        "on_success defaults to keep"
    );
}

/// How long a dropped bundle may take to land when the watcher sees it at
/// once: the 1 s settle time, a scan, a small import, with room for a loaded
/// machine; far below the rescan interval, which never fires in a test.
const SEEN_AT_ONCE: Duration = Duration::from_secs(20);

#[test]
fn inotify_sees_a_dropped_bundle_without_waiting_for_a_rescan() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "noticed", "quay.io/acme/noticed:1.0");
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(&site.setup(&[]), &registry, key.public_pem());
    assert!(
        daemon.inotify_instances() >= 1,
        "the default mode holds no inotify instance"
    );
    assert!(
        daemon.log_text().contains(r#"mode="inotify""#),
        "{}",
        daemon.log_text()
    );
    // The first scan at start-up has passed an empty folder: only an
    // inotify event can make the daemon look again within the hour.
    daemon.wait_within("the start-up scan", SEEN_AT_ONCE, |d| {
        d.log_text().contains("watching drop folders")
    });
    std::thread::sleep(Duration::from_millis(500));

    bundle.copy_into(site.drop.path());
    daemon.wait_within("the import", SEEN_AT_ONCE, |d| imported(d) >= 1.0);
    assert_landed(&bundle, &registry);
}

#[test]
fn the_signature_may_arrive_first_and_the_bundle_later() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "late", "quay.io/acme/late:1.0");
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(&site.setup(&[]), &registry, key.public_pem());

    std::fs::copy(bundle.sig(), site.path("late.sig.bin")).expect("copy signature");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(imported(&daemon), 0.0);
    std::fs::copy(bundle.zst(), site.path("late.zst")).expect("copy bundle");
    daemon.wait_until("the import", |d| imported(d) >= 1.0);
    assert_landed(&bundle, &registry);
}

#[test]
fn a_bundle_copied_slowly_is_not_touched_until_complete() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("slow")
        .image(Image::new("quay.io/acme/slow:1.0").layers(&[Layer::uncompressed(5, 2 << 20)]))
        .build(&key);
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(&site.setup(&[]), &registry, key.public_pem());

    std::fs::copy(bundle.sig(), site.path("slow.sig.bin")).expect("copy signature");
    let content = std::fs::read(bundle.zst()).expect("read bundle");
    let mut file = std::fs::File::create(site.path("slow.zst")).expect("create");
    // Pieces every 400 ms with a 1 s settle time: never still long enough.
    for piece in content.chunks(content.len() / 8 + 1) {
        file.write_all(piece).expect("write piece");
        file.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(imported(&daemon), 0.0);
        assert!(
            registry.catalog().is_empty(),
            "something was pushed mid-copy"
        );
        assert_eq!(
            daemon.metric(r#"airlock_bundles_total{outcome="rejected"}"#),
            0.0
        );
    }
    drop(file);
    daemon.wait_until("the import", |d| imported(d) >= 1.0);
    assert_landed(&bundle, &registry);
    assert_eq!(
        daemon.metric(r#"airlock_bundles_total{outcome="rejected"}"#),
        0.0
    );
}

#[test]
fn a_tampered_bundle_is_rejected_with_a_reason_file_and_nothing_pushed() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "evil", "quay.io/acme/evil:1.0");
    bundle.tamper();
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(&site.setup(&[]), &registry, key.public_pem());

    bundle.copy_into(site.drop.path());
    daemon.wait_until("the rejection", |d| {
        d.metric(r#"airlock_bundles_total{outcome="rejected"}"#) >= 1.0
    });

    let reason = std::fs::read_to_string(site.path("evil.zst.error.json")).expect("reason file");
    assert!(reason.contains("does not verify"), "{reason}");
    assert_eq!(
        daemon.metric(r#"airlock_signature_verifications_total{result="rejected"}"#),
        1.0
    );
    assert!(registry.catalog().is_empty());
    assert!(registry.stored_blobs().is_empty());
    let imports = daemon.imports();
    assert_eq!(imports[0]["status"], "rejected", "{imports}");
    // Rejected once, never retried.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        daemon.metric(r#"airlock_bundles_total{outcome="rejected"}"#),
        1.0
    );
}

#[test]
fn the_same_bundle_dropped_again_under_another_name_is_not_pushed_twice() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "orig", "quay.io/acme/dup:1.0");
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(&site.setup(&[]), &registry, key.public_pem());
    bundle.copy_into(site.drop.path());
    daemon.wait_until("the import", |d| imported(d) >= 1.0);
    let writes_before = registry.settled_writes();

    std::fs::copy(bundle.sig(), site.path("copy.sig.bin")).expect("copy signature");
    std::fs::copy(bundle.zst(), site.path("copy.zst")).expect("copy bundle");
    daemon.wait_until("the duplicate", |d| {
        d.metric(r#"airlock_bundles_total{outcome="duplicate"}"#) >= 1.0
    });

    let writes_after = registry.settled_writes();
    assert_eq!(
        writes_before, writes_after,
        "the duplicate wrote to the registry"
    );
    assert_eq!(imported(&daemon), 1.0);
    let imports = daemon.imports();
    assert_eq!(
        imports.as_array().map(Vec::len),
        Some(1),
        "one record per content: {imports}"
    );
    assert_eq!(
        imports[0]["names"],
        serde_json::json!(["orig.zst", "copy.zst"])
    );
}

#[test]
fn polling_mode_imports_and_moves_finished_bundles() {
    let key = TestKey::generate(KeyKind::Ed25519);
    let bundle = small_bundle(&key, "polled", "quay.io/acme/polled:1.0");
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(
        &site.setup(&["--poll", "--poll-interval", "200ms", "--on-success", "move"]),
        &registry,
        key.public_pem(),
    );
    assert_eq!(
        daemon.inotify_instances(),
        0,
        "polling mode must not use inotify"
    );
    assert!(
        daemon.log_text().contains(r#"mode="polling""#),
        "{}",
        daemon.log_text()
    );
    bundle.copy_into(site.drop.path());
    daemon.wait_within("the import", SEEN_AT_ONCE, |d| imported(d) >= 1.0);
    assert_landed(&bundle, &registry);
    daemon.wait_until("the move to processed/", |_| {
        site.path("processed/polled.zst").exists() && !site.path("polled.zst").exists()
    });
    assert!(site.path("processed/polled.sig.bin").exists());
}

#[test]
fn restart_after_import_does_not_import_again_and_sigterm_exits_cleanly() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "once", "quay.io/acme/once:1.0");
    let registry = Registry::start();
    let site = Site::new();
    let mut daemon = Daemon::start(&site.setup(&[]), &registry, key.public_pem());
    bundle.copy_into(site.drop.path());
    daemon.wait_until("the import", |d| imported(d) >= 1.0);

    let status = daemon.terminate();
    assert!(status.success(), "SIGTERM should exit 0, got {status}");
    let requests_before = registry.settled_requests().len();
    daemon.restart();
    // The restarted daemon must have looked at the finished bundle before
    // "it did nothing" means anything: it recognises the file it already
    // handled, and counts a copy under another name as a duplicate.
    daemon.wait_until("the finished bundle to be recognised", |d| {
        d.log_text().contains("already handled in an earlier run")
    });
    std::fs::copy(bundle.sig(), site.path("again.sig.bin")).expect("copy signature");
    std::fs::copy(bundle.zst(), site.path("again.zst")).expect("copy bundle");
    daemon.wait_until("the copy to be seen as a duplicate", |d| {
        d.metric(r#"airlock_bundles_total{outcome="duplicate"}"#) >= 1.0
    });
    assert_eq!(imported(&daemon), 0.0, "a fresh process imported again");
    let since_restart = registry.settled_requests()[requests_before..].to_vec();
    assert!(
        since_restart.is_empty(),
        "the restarted daemon talked to the registry about a finished bundle: {since_restart:?}"
    );
    assert_eq!(daemon.imports()[0]["status"], "imported");
    assert!(
        daemon.metric("airlock_last_success_timestamp_seconds") > 0.0,
        "the last success is restored from the state directory"
    );
}

#[test]
fn blob_metrics_move_while_an_import_runs() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("watched")
        .image(Image::new("quay.io/acme/watched:1.0").layers(&[
            Layer::uncompressed(24, 64 << 10),
            Layer::uncompressed(25, 32 << 20),
        ]))
        .build(&key);
    let registry = Registry::start();
    // Blobs over 8 MiB go up in 8 MiB PATCHes: holding the second keeps the
    // import running with one chunk of the large layer sent.
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            hold_patch: Some(2),
            ..ProxyRules::default()
        },
    );
    let site = Site::new();
    let daemon = Daemon::start_at(&site.setup(&[]), &proxy.host(), key.public_pem());
    bundle.copy_into(site.drop.path());
    assert!(
        proxy.wait_for_hold(support::daemon::WAIT_LIMIT),
        "the upload never reached its second PATCH:\n{}",
        daemon.log_text()
    );

    // The bytes count as they are sent; blobs count when committed, which
    // is after the whole bundle was indexed (they are in upload sessions of
    // the staging repository until then).
    daemon.wait_until("the blob metrics to move mid-import", |d| {
        d.metric("airlock_pushed_bytes_total") >= f64::from(8u32 << 20)
    });
    assert_eq!(daemon.metric("airlock_blobs_pushed_total"), 0.0);
    assert_eq!(imported(&daemon), 0.0);
    assert!(!registry.manifest_exists("mirror/quay.io/acme/watched", "1.0"));
    proxy.release(Release::Forward);
    daemon.wait_until("the import", |d| imported(d) >= 1.0);

    assert_landed(&bundle, &registry);
    let blobs = bundle.content_blobs().len() as f64;
    assert_eq!(daemon.metric("airlock_blobs_pushed_total"), blobs);
    assert!(daemon.metric("airlock_pushed_bytes_total") >= f64::from(32u32 << 20));
    assert_eq!(
        daemon.metric(r#"airlock_import_duration_seconds_count{outcome="imported"}"#),
        1.0
    );
}

#[test]
fn sigterm_mid_import_finishes_the_import_then_exits_0() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("stopping")
        .image(Image::new("quay.io/acme/stopping:1.0").layers(&[Layer::uncompressed(23, 32 << 20)]))
        .build(&key);
    let registry = Registry::start();
    // The layer streams in one PATCH, held once 8 MiB went through.
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            hold_patch_after: Some(8 << 20),
            ..ProxyRules::default()
        },
    );
    let site = Site::new();
    let mut daemon = Daemon::start_at(&site.setup(&[]), &proxy.host(), key.public_pem());
    bundle.copy_into(site.drop.path());
    assert!(
        proxy.wait_for_hold(support::daemon::WAIT_LIMIT),
        "the upload never reached its second PATCH:\n{}",
        daemon.log_text()
    );
    assert!(!registry.manifest_exists("mirror/quay.io/acme/stopping", "1.0"));

    daemon.send_sigterm();
    daemon.wait_until("the stop request to be logged", |d| {
        d.log_text().contains("stop requested")
    });
    proxy.release(Release::Forward);
    let status = daemon.wait_for_exit(Duration::from_secs(60));

    assert!(status.success(), "SIGTERM should exit 0, got {status}");
    assert_landed(&bundle, &registry);
    let records: Vec<serde_json::Value> = std::fs::read_dir(site.state.path().join("bundles"))
        .expect("state records")
        .filter_map(Result::ok)
        .map(|e| std::fs::read(e.path()).expect("read a state record"))
        .map(|bytes| serde_json::from_slice(&bytes).expect("a JSON state record"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["status"], "imported", "{records:?}");
}

#[test]
fn kill_9_during_an_import_then_restart_completes_without_pushing_twice() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("big")
        .image(Image::new("quay.io/acme/big:1.0").layers(&[
            Layer::uncompressed(21, 48 << 20),
            Layer::uncompressed(22, 48 << 20),
        ]))
        .image(Image::new("quay.io/acme/small:1.0"))
        .build(&key);
    let registry = Registry::start();
    // The third PATCH is held, so the kill lands mid-upload, never after
    // the import finished.
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            hold_patch: Some(3),
            ..ProxyRules::default()
        },
    );
    let site = Site::new();
    let mut daemon = Daemon::start_at(&site.setup(&[]), &proxy.host(), key.public_pem());
    bundle.copy_into(site.drop.path());
    assert!(
        proxy.wait_for_hold(support::daemon::WAIT_LIMIT),
        "the upload never reached its third PATCH:\n{}",
        daemon.log_text()
    );
    let accepted = registry
        .settled_requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.status == 202)
        .count();
    assert!(accepted >= 1, "no upload was accepted before the kill");
    assert!(
        !registry.manifest_exists("mirror/quay.io/acme/big", "1.0"),
        "the import finished before the kill"
    );
    daemon.kill9();
    proxy.release(Release::Drop);
    let state = std::fs::read_dir(site.state.path().join("bundles"))
        .expect("state records")
        .filter_map(Result::ok)
        .map(|e| std::fs::read_to_string(e.path()).expect("readable record after kill -9"))
        .collect::<Vec<_>>();
    assert!(!state.is_empty(), "the import was recorded before pushing");
    for record in &state {
        serde_json::from_str::<serde_json::Value>(record).expect("a whole JSON record");
    }

    daemon.restart();
    daemon.wait_until("the resumed import", |d| imported(d) >= 1.0);
    assert_landed(&bundle, &registry);
    let twice: Vec<_> = completed_uploads(&registry)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "blobs uploaded completely more than once: {twice:?}"
    );
}

#[test]
fn a_registry_down_for_a_while_is_retried_until_the_import_completes() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "patient", "quay.io/acme/patient:1.0");
    let mut registry = Registry::start();
    let site = Site::new();
    // The daemon takes its own port while the registry still holds its one,
    // so the daemon's listener can never land on the registry's port.
    let daemon = Daemon::start(&site.setup(&[]), &registry, key.public_pem());
    registry.stop();

    bundle.copy_into(site.drop.path());
    daemon.wait_until("a retry", |d| {
        d.metric(r#"airlock_bundles_total{outcome="failed"}"#) >= 1.0
    });
    assert_eq!(daemon.imports()[0]["status"], "retrying");
    registry.restart();
    daemon.wait_until("the import after the registry came back", |d| {
        imported(d) >= 1.0
    });
    assert_landed(&bundle, &registry);
    assert_eq!(
        daemon.metric(r#"airlock_bundles_total{outcome="rejected"}"#),
        0.0
    );
    // Every attempt is timed, the failed ones under their own outcome.
    let failed = daemon.metric(r#"airlock_bundles_total{outcome="failed"}"#);
    assert_eq!(
        daemon.metric(r#"airlock_import_duration_seconds_count{outcome="failed"}"#),
        failed
    );
    assert_eq!(
        daemon.metric(r#"airlock_import_duration_seconds_count{outcome="imported"}"#),
        1.0
    );
}

/// Starts a daemon with `read` limits from the environment, drops `bundle`
/// and returns the reason it was rejected with; nothing may be pushed.
fn rejected_with_read_limits(
    bundle: &BuiltBundle,
    key: &TestKey,
    limits: &[(&str, &str)],
) -> String {
    let registry = Registry::start();
    let site = Site::new();
    let mut setup = site.setup(&[]);
    setup.envs = limits
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let daemon = Daemon::start(&setup, &registry, key.public_pem());
    bundle.copy_into(site.drop.path());
    daemon.wait_until("the rejection", |d| {
        d.metric(r#"airlock_bundles_total{outcome="rejected"}"#) >= 1.0
    });
    assert_eq!(imported(&daemon), 0.0);
    assert!(registry.catalog().is_empty(), "{:?}", registry.catalog());
    let writes = registry.settled_commits_since(0);
    assert!(writes.is_empty(), "{writes:?}");
    let name = bundle
        .zst()
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    std::fs::read_to_string(site.path(&format!("{name}.error.json"))).expect("reason file")
}

#[test]
fn read_max_document_bytes_rejects_a_larger_manifest() {
    let key = TestKey::generate(KeyKind::EcP256);
    // 40 layers make a manifest of about 8 KB.
    let layers: Vec<Layer> = (0..40).map(|i| Layer::gzip_tar(300 + i, 64)).collect();
    let bundle = BundleBuilder::new("wide")
        .image(Image::new("quay.io/acme/wide:1.0").layers(&layers))
        .build(&key);
    let manifest = bundle.image("quay.io/acme/wide:1.0").manifest.len();
    assert!(manifest > 4096, "the manifest is only {manifest} bytes");
    let reason = rejected_with_read_limits(
        &bundle,
        &key,
        &[("AIRLOCK_READ__MAX_DOCUMENT_BYTES", "4096")],
    );
    assert!(reason.contains("at most 4096 bytes"), "{reason}");
}

#[test]
fn read_max_manifests_and_trust_max_bundle_age_reject_from_the_daemon_configuration() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("two-platforms")
        .image(Image::new("quay.io/acme/multi:1.0").platforms(&["linux/amd64", "linux/arm64"]))
        .build(&key);
    let reason = rejected_with_read_limits(&bundle, &key, &[("AIRLOCK_READ__MAX_MANIFESTS", "2")]);
    assert!(
        reason.contains("3 manifests and indexes is over the limit read.max_manifests = 2"),
        "{reason}"
    );
    // The test builder's bundles carry no creation time.
    let reason =
        rejected_with_read_limits(&bundle, &key, &[("AIRLOCK_TRUST__MAX_BUNDLE_AGE", "30d")]);
    assert!(
        reason.contains("no creation time") && reason.contains("trust.max_bundle_age = 30days"),
        "{reason}"
    );
}

#[test]
fn read_max_documents_total_bytes_rejects_a_bundle_over_the_budget() {
    let key = TestKey::generate(KeyKind::EcP256);
    let mut builder = BundleBuilder::new("many");
    for i in 0..25 {
        builder = builder.image(Image::new(&format!("quay.io/acme/app{i}:1.0")));
    }
    let bundle = builder.build(&key);
    let reason = rejected_with_read_limits(
        &bundle,
        &key,
        &[
            ("AIRLOCK_READ__MAX_DOCUMENTS_TOTAL_BYTES", "16384"),
            ("AIRLOCK_READ__MAX_DOCUMENT_BYTES", "16384"),
        ],
    );
    assert!(
        reason.contains("16384-byte memory budget (read.max_documents_total_bytes)"),
        "{reason}"
    );
}

/// Replaces `path` the way a Kubernetes Secret mount is updated: a new file
/// renamed over the old one.
fn rotate(path: &Path, content: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, content).expect("write the new secret");
    std::fs::rename(&next, path).expect("rename the new secret into place");
}

/// Starts a daemon whose registry credentials come from `envs`, drops a
/// bundle, waits for it to fail on the stale credentials, calls `rotate_now`
/// and expects the import to succeed on a later attempt; the trace-level log
/// must hold neither password nor the Basic header made from it.
fn rotated_credentials_are_used(
    registry: &Registry,
    envs: &[(&str, String)],
    rotate_now: impl FnOnce(),
    secrets: &[&str],
) {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "rotated", "quay.io/acme/rotated:1.0");
    let site = Site::new();
    let mut setup = site.setup(&[]);
    setup.envs = envs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .chain([("AIRLOCK_LOG__LEVEL".to_owned(), "trace".to_owned())])
        .collect();
    let daemon = Daemon::start(&setup, registry, key.public_pem());
    bundle.copy_into(site.drop.path());
    daemon.wait_until("an attempt refused with the stale credentials", |d| {
        d.metric(r#"airlock_bundles_total{outcome="failed"}"#) >= 1.0
    });
    assert_eq!(imported(&daemon), 0.0);

    rotate_now();
    daemon.wait_until("the import with the rotated credentials", |d| {
        imported(d) >= 1.0
    });
    assert_landed(&bundle, registry);
    let log = daemon.log_text();
    assert!(
        log.contains("registry credentials changed on disk"),
        "{log}"
    );
    for secret in secrets {
        assert!(!log.contains(secret), "{secret:?} is in the log");
    }
}

#[test]
fn a_rotated_password_file_is_read_again_without_a_restart() {
    let registry =
        Registry::start_with(RegistryOptions::default().with_basic_auth("robot", "rotated-secret"));
    let secrets = tempfile::tempdir().expect("tempdir");
    let password = secrets.path().join("password");
    std::fs::write(&password, "expired-secret\n").expect("write the password");
    rotated_credentials_are_used(
        &registry,
        &[
            ("AIRLOCK_REGISTRY__USERNAME", "robot".to_owned()),
            (
                "AIRLOCK_REGISTRY__PASSWORD_FILE",
                password.display().to_string(),
            ),
        ],
        || rotate(&password, "rotated-secret\n"),
        &[
            "rotated-secret",
            "expired-secret",
            &support::base64(b"robot:rotated-secret"),
            &support::base64(b"robot:expired-secret"),
        ],
    );
}

#[test]
fn a_rotated_auth_file_is_read_again_without_a_restart() {
    let registry =
        Registry::start_with(RegistryOptions::default().with_basic_auth("ci", "rotated-token"));
    let secrets = tempfile::tempdir().expect("tempdir");
    let auth_file = secrets.path().join("config.json");
    let config = |password: &str| {
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            registry.host(),
            support::base64(format!("ci:{password}").as_bytes())
        )
    };
    std::fs::write(&auth_file, config("expired-token")).expect("write config.json");
    rotated_credentials_are_used(
        &registry,
        &[(
            "AIRLOCK_REGISTRY__AUTH_FILE",
            auth_file.display().to_string(),
        )],
        || rotate(&auth_file, &config("rotated-token")),
        &[
            "rotated-token",
            "expired-token",
            &support::base64(b"ci:rotated-token"),
            &support::base64(b"ci:expired-token"),
        ],
    );
}

#[test]
fn a_read_only_drop_folder_works_and_nothing_is_written_there() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = small_bundle(&key, "usb", "quay.io/acme/usb:1.0");
    let bad = small_bundle(&key, "bad", "quay.io/acme/bad:1.0");
    bad.tamper();
    let registry = Registry::start();
    let site = Site::new();
    bundle.copy_into(site.drop.path());
    bad.copy_into(site.drop.path());
    let Some(_mount) = ReadOnlyMount::new(site.drop.path()) else {
        assert!(
            std::env::var_os(SKIP_MOUNT_TESTS).is_some(),
            "cannot make a read-only bind mount (needs root and mount privileges); \
             set {SKIP_MOUNT_TESTS}=1 to skip this test knowingly"
        );
        eprintln!("skipping: {SKIP_MOUNT_TESTS} is set and no read-only bind mount can be made");
        return;
    };
    let before = listing(site.drop.path());
    let daemon = Daemon::start(
        &site.setup(&["--on-success", "move", "--on-reject", "move"]),
        &registry,
        key.public_pem(),
    );
    daemon.wait_until("both outcomes", |d| {
        imported(d) >= 1.0 && d.metric(r#"airlock_bundles_total{outcome="rejected"}"#) >= 1.0
    });
    assert_landed(&bundle, &registry);
    assert_eq!(
        listing(site.drop.path()),
        before,
        "the read-only volume changed"
    );
    assert_eq!(daemon.imports().as_array().map(Vec::len), Some(2));
}

/// Set (to anything) where the tests cannot mount (no root, no
/// CAP_SYS_ADMIN): the read-only drop folder test then skips instead of
/// failing. Nowhere else does a test skip.
const SKIP_MOUNT_TESTS: &str = "AIRLOCK_TEST_SKIP_MOUNT";

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A read-only bind mount of a folder onto itself, undone on drop. Root
/// ignores permission bits, so a real read-only mount is the honest test.
struct ReadOnlyMount {
    path: std::path::PathBuf,
}

impl ReadOnlyMount {
    fn new(path: &Path) -> Option<ReadOnlyMount> {
        let mount = |args: &[&str]| {
            std::process::Command::new("mount")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let target = path.to_str()?;
        if !mount(&["--bind", target, target]) {
            return None;
        }
        if !mount(&["-o", "remount,bind,ro", target]) {
            let _ = std::process::Command::new("umount").arg(target).status();
            return None;
        }
        Some(ReadOnlyMount {
            path: path.to_owned(),
        })
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

/// Bytes process `pid` has read through `read(2)` and friends so far.
fn bytes_read_by(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/<pid>/io");
    io.lines()
        .find_map(|line| line.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("rchar in /proc/<pid>/io")
}

/// What the daemon reads besides the bundle during one import, at most: its
/// state files, the registry's answers and the test's own metric scrapes.
const DAEMON_OTHER_READS_BYTES: u64 = 4 << 20;

#[test]
fn with_imports_single_read_a_dropped_pair_is_imported_reading_the_bundle_once_before_the_upload() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("once")
        .image(
            Image::new("quay.io/acme/once:1.0")
                .naming(Naming::ContainerdName)
                .layers(&[Layer::uncompressed(11, 24 << 20)]),
        )
        .build(&key);
    let size = std::fs::metadata(bundle.zst()).expect("stat").len();
    let registry = Registry::start();
    let site = Site::new();
    let mut setup = site.setup(&[]);
    setup
        .envs
        .push(("AIRLOCK_IMPORTS__SINGLE_READ".to_owned(), "true".to_owned()));
    let daemon = Daemon::start(&setup, &registry, key.public_pem());
    let before = bytes_read_by(daemon.pid());

    bundle.copy_into(site.drop.path());
    daemon.wait_until("the import", |d| imported(d) >= 1.0);

    assert_landed(&bundle, &registry);
    let read = bytes_read_by(daemon.pid()) - before;
    // One pass for the signature and the index together, one that uploads
    // the blobs the registry lacks; the default would add a third.
    assert!(
        read <= 2 * size + DAEMON_OTHER_READS_BYTES,
        "the daemon read {read} bytes for a {size}-byte bundle ({:.2} times)",
        read as f64 / size as f64
    );
    let imports = daemon.imports();
    assert_eq!(imports[0]["status"], "imported", "{imports}");
}
