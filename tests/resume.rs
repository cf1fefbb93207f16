//! Interrupted blob uploads continue from the offset the registry
//! acknowledges: across processes (the daemon's upload journal in
//! `state_dir/uploads/`) and within one (a failed `PATCH` followed by a `GET`
//! on the session).
//!
//! What the registry received is read from its access log. The log has no
//! `Content-Range`, but distribution signs the upload state into each upload
//! URL's `_state` query, so the start offset of every `PATCH` and final `PUT`
//! is read from there ([`support::registry::LoggedRequest::upload_state`]).
//!
//! A proxy in front of the registry holds one chosen `PATCH`, so the kill or
//! the registry restart lands between two acknowledged chunks, with the next
//! one in flight. The proxy buffers request bodies (as nginx does by
//! default): docker-registry 2.8 keeps the bytes of a `PATCH` cut off
//! mid-body and then refuses to continue that session (its `GET` answers 404,
//! "upload resumed at wrong offset"), so against a bare 2.8 a kill mid-`PATCH`
//! can only start the blob over — which the last test here covers.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::bundle::{BlobInfo, BuiltBundle, BundleBuilder, Image, Layer};
use support::daemon::{Daemon, Site, WAIT_LIMIT};
use support::keys::{KeyKind, TestKey};
use support::process::Background;
use support::proxy::{Proxy, ProxyRules, Release};
use support::registry::{LoggedRequest, Registry};
use support::{airlock, skopeo};

const MIB: u64 = 1 << 20;
/// airlock's chunk size (`push::DEFAULT_CHUNK_BYTES`).
const CHUNK: u64 = 8 * MIB;

/// What the resume tests read of a site's state directory.
trait UploadJournal {
    fn journal(&self) -> Vec<Value>;
}

impl UploadJournal for Site {
    /// The upload journal's records (`state_dir/uploads/*.json`).
    fn journal(&self) -> Vec<Value> {
        let dir = self.state.path().join("uploads");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| {
                let text = std::fs::read_to_string(e.path()).expect("read upload record");
                serde_json::from_str(&text).expect("an upload record is whole JSON")
            })
            .collect()
    }
}

/// Most tests here resume the uploads of the stream pass: the pass that
/// reads the bundle a third time when the registry's staging repository is
/// off (or refused). The index pass's sessions in the staging repository are
/// resumed by the same code:
/// `a_daemon_killed_while_indexing_continues_its_staging_session`.
const STREAM_PASS: [&str; 4] = ["--upload-mode", "chunked", "--staging-repository", ""];

fn big_bundle(key: &TestKey, name: &str, reference: &str, size: u64) -> BuiltBundle {
    BundleBuilder::new(name)
        .image(Image::new(reference).layers(&[Layer::uncompressed(seed(name), size)]))
        .build(key)
}

fn seed(name: &str) -> u64 {
    name.bytes()
        .fold(17, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

fn layer_of(bundle: &BuiltBundle, size: u64) -> BlobInfo {
    bundle
        .blobs()
        .iter()
        .find(|b| b.size == size)
        .cloned()
        .expect("the big layer is in the bundle")
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

/// The requests that carried bytes of `layer`: every `PATCH` (only blobs
/// larger than a chunk are PATCHed, and the tests have one such blob) and
/// the final `PUT` naming its digest. With (session, start offset).
fn layer_writes<'a>(
    requests: &'a [LoggedRequest],
    layer: &BlobInfo,
) -> Vec<(&'a LoggedRequest, String, u64)> {
    requests
        .iter()
        .filter(|r| {
            r.path.contains("/blobs/uploads/")
                && (r.method == "PATCH"
                    || (r.method == "PUT" && r.digest_param().as_deref() == Some(&layer.digest)))
        })
        .map(|r| {
            let state = r
                .upload_state()
                .unwrap_or_else(|| panic!("no _state in {}", r.path));
            (r, state.uuid, state.offset)
        })
        .collect()
}

fn accepted_patches(requests: &[LoggedRequest]) -> u64 {
    requests
        .iter()
        .filter(|r| r.method == "PATCH" && r.status == 202)
        .count() as u64
}

fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

#[test]
fn a_daemon_killed_mid_blob_sends_only_the_rest_after_a_restart() {
    const LAYER: u64 = 80 * MIB;
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = big_bundle(&key, "huge", "quay.io/acme/huge:1.0", LAYER);
    let layer = layer_of(&bundle, LAYER);
    let registry = Registry::start();
    // 80 MiB in 8 MiB chunks: nine PATCHes and the final PUT. Hold the
    // ninth: the registry has acknowledged 64 MiB when airlock is killed.
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            hold_patch: Some(9),
            ..ProxyRules::default()
        },
    );
    let site = Site::new();
    let mut daemon = Daemon::start_at(&site.setup(&STREAM_PASS), &proxy.host(), key.public_pem());
    bundle.copy_into(site.drop.path());

    assert!(
        proxy.wait_for_hold(WAIT_LIMIT),
        "the ninth PATCH never came; daemon log:\n{}",
        daemon.log_text()
    );
    let before_kill = registry.settled_requests();
    let acknowledged = accepted_patches(&before_kill) * CHUNK;
    assert_eq!(acknowledged, 64 * MIB, "{before_kill:#?}");
    let journal = site.journal();
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(journal[0]["digest"], layer.digest.as_str());
    assert_eq!(journal[0]["offset"].as_u64(), Some(acknowledged));
    assert_eq!(journal[0]["size"].as_u64(), Some(LAYER));
    // Where the upload stands and nothing else (no headers, no credentials).
    let fields: BTreeSet<&str> = journal[0]
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "digest",
            "location",
            "offset",
            "registry",
            "repository",
            "size"
        ])
    );
    assert_eq!(journal[0]["registry"], proxy.host().as_str());
    let sessions_before: BTreeSet<String> = layer_writes(&before_kill, &layer)
        .into_iter()
        .map(|(_, uuid, _)| uuid)
        .collect();
    assert_eq!(sessions_before.len(), 1, "{sessions_before:?}");

    // What the attempt pushed so far is on record (written within a quarter
    // second of each change) before it is killed.
    let committed = completed_blobs(&before_kill).len() as u64;
    assert!(committed > 0, "no blob was complete before the kill");
    daemon.wait_until("the attempt's counts on record", |d| {
        d.imports()[0]["pushed"]["blobsUploaded"].as_u64() == Some(committed)
    });
    daemon.kill9();
    // The request in flight dies with airlock; the registry never sees it.
    proxy.release(Release::Drop);
    let restart_at = registry.settled_requests().len();
    daemon.restart();
    daemon.wait_until("the import after the restart", |d| imported(d) >= 1.0);

    assert_landed(&bundle, &registry);
    let requests = registry.settled_requests();
    let after: Vec<_> = layer_writes(&requests[restart_at..], &layer);
    let first_offset = after
        .iter()
        .map(|(_, _, offset)| *offset)
        .min()
        .expect("the layer was completed after the restart");
    let sent_after = LAYER - first_offset;
    let resent = acknowledged.saturating_sub(first_offset);
    eprintln!(
        "resume after kill -9: {} of {} MiB acknowledged before the kill; after the restart \
         {} requests sent {} MiB ({:.1} % of the layer), of which {} MiB ({:.1} %) were sent twice",
        acknowledged / MIB,
        LAYER / MIB,
        after.len(),
        sent_after / MIB,
        100.0 * sent_after as f64 / LAYER as f64,
        resent / MIB,
        100.0 * resent as f64 / LAYER as f64,
    );
    assert!(
        sent_after * 4 < LAYER,
        "after the restart {sent_after} bytes of the {LAYER}-byte layer were sent: {after:#?}"
    );
    assert_eq!(resent, 0, "acknowledged bytes were sent again: {after:#?}");
    assert!(
        after
            .iter()
            .all(|(_, uuid, _)| sessions_before.contains(uuid)),
        "the restart opened a new upload session: {after:#?}"
    );
    // Only the rest: one PATCH (64–72 MiB) and the final PUT (72–80 MiB).
    assert_eq!(after.len(), 2, "{after:#?}");
    assert!(
        daemon
            .log_text()
            .contains("resuming an interrupted upload from the offset the registry acknowledges"),
        "{}",
        daemon.log_text()
    );
    assert!(
        site.journal().is_empty(),
        "the record outlived its upload: {:?}",
        site.journal()
    );
    // The record counts what both attempts uploaded: the blobs the killed
    // attempt completed are uploaded ones, not ones the second attempt found
    // present (the registry was empty before the import).
    let imports = daemon.imports();
    let pushed = &imports[0]["pushed"];
    assert_eq!(
        pushed["blobsUploaded"].as_u64(),
        Some(completed_blobs(&requests).len() as u64),
        "{imports:#}"
    );
    assert_eq!(pushed["blobsPresent"].as_u64(), Some(0), "{imports:#}");
    // Bytes sent for completed uploads: the blobs the killed attempt
    // completed, and what the second attempt sent (the big layer from the
    // offset it resumed at).
    let completed_before = completed_blobs(&before_kill);
    let before: u64 = bundle
        .blobs()
        .iter()
        .filter(|b| completed_before.contains(&b.digest))
        .map(|b| b.size)
        .sum();
    assert_eq!(
        pushed["bytesUploaded"].as_u64(),
        Some(before + sent_after),
        "{imports:#}"
    );
}

/// The blobs whose uploads the registry completed.
fn completed_blobs(requests: &[LoggedRequest]) -> BTreeSet<String> {
    requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/") && r.status == 201)
        .filter_map(LoggedRequest::digest_param)
        .collect()
}

#[test]
fn a_journaled_session_the_registry_purged_starts_the_blob_over() {
    const LAYER: u64 = 64 * MIB;
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = big_bundle(&key, "purged", "quay.io/acme/purged:1.0", LAYER);
    let layer = layer_of(&bundle, LAYER);
    let registry = Registry::start();
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            hold_patch: Some(3),
            ..ProxyRules::default()
        },
    );
    let site = Site::new();
    let mut daemon = Daemon::start_at(&site.setup(&STREAM_PASS), &proxy.host(), key.public_pem());
    bundle.copy_into(site.drop.path());
    assert!(
        proxy.wait_for_hold(WAIT_LIMIT),
        "the third PATCH never came; daemon log:\n{}",
        daemon.log_text()
    );
    assert_eq!(
        site.journal().len(),
        1,
        "a 64 MiB blob is journaled (64 MiB or more)"
    );
    daemon.kill9();
    proxy.release(Release::Drop);
    // What the registry's upload purging does to an abandoned session.
    let uploads = registry
        .storage_dir()
        .join("docker/registry/v2/repositories/mirror/quay.io/acme/purged/_uploads");
    std::fs::remove_dir_all(&uploads).expect("remove the registry's upload sessions");

    let restart_at = registry.settled_requests().len();
    daemon.restart();
    daemon.wait_until("the import after the restart", |d| imported(d) >= 1.0);

    assert_landed(&bundle, &registry);
    let requests = registry.settled_requests();
    let after = layer_writes(&requests[restart_at..], &layer);
    assert_eq!(
        after.iter().map(|(_, _, offset)| *offset).min(),
        Some(0),
        "the blob should start over: {after:#?}"
    );
    let log = daemon.log_text();
    assert!(
        log.contains("the registry no longer holds the interrupted upload session"),
        "{log}"
    );
    assert!(site.journal().is_empty(), "{:?}", site.journal());
}

/// `airlock import` through `host` (plain HTTP) in the background.
fn spawn_import(bundle: &BuiltBundle, host: &str, extra: &[&str]) -> Background {
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
}

#[test]
fn a_registry_restarted_mid_blob_is_resumed_by_the_running_import() {
    const LAYER: u64 = 40 * MIB;
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = big_bundle(&key, "restart", "quay.io/acme/restart:1.0", LAYER);
    let layer = layer_of(&bundle, LAYER);
    let mut registry = Registry::start();
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            hold_patch: Some(3),
            ..ProxyRules::default()
        },
    );
    let mut import = spawn_import(
        &bundle,
        &proxy.host(),
        &[&STREAM_PASS[..], &["--log", "info"]].concat(),
    );
    assert!(
        proxy.wait_for_hold(Duration::from_secs(60)),
        "the third PATCH never came; stderr:\n{}",
        import.stderr()
    );
    let acknowledged = accepted_patches(&registry.settled_requests()) * CHUNK;
    assert_eq!(acknowledged, 16 * MIB);

    // The registry goes down with the third chunk in flight (the proxy
    // answers it 502) and comes back with the same storage and secret.
    registry.stop();
    proxy.release(Release::Forward);
    wait_until(
        "the 502 for the chunk in flight",
        Duration::from_secs(30),
        || {
            proxy
                .requests()
                .iter()
                .any(|r| r.method == "PATCH" && r.status == 502)
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    registry.restart();

    let finished = import.wait(Duration::from_secs(120));
    let stderr = &finished.stderr;
    assert!(finished.success(), "stderr:\n{stderr}");
    let report: Value = serde_json::from_str(&finished.stdout).expect("the import report is JSON");
    assert_eq!(report["push"]["images"].as_array().map(Vec::len), Some(1));
    assert_landed(&bundle, &registry);
    assert!(
        stderr.contains("chunk upload failed; asking the registry how much it kept"),
        "{stderr}"
    );
    assert!(
        stderr.contains("resuming the upload from the offset the registry acknowledges"),
        "{stderr}"
    );
    let requests = registry.settled_requests();
    let writes = layer_writes(&requests, &layer);
    let sessions: BTreeSet<&str> = writes.iter().map(|(_, uuid, _)| uuid.as_str()).collect();
    assert_eq!(
        sessions.len(),
        1,
        "one upload session throughout: {writes:#?}"
    );
    let offsets: Vec<u64> = writes.iter().map(|(_, _, offset)| *offset).collect();
    let expected: Vec<u64> = (0..LAYER / CHUNK).map(|i| i * CHUNK).collect();
    assert_eq!(
        offsets, expected,
        "each chunk sent once, in order: {writes:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("/blobs/uploads/") && r.status == 204),
        "the import asked the registry for the session's Range"
    );
}

#[test]
fn a_session_the_registry_dropped_fails_the_running_import_as_a_registry_failure() {
    const LAYER: u64 = 24 * MIB;
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = big_bundle(&key, "lost", "quay.io/acme/lost:1.0", LAYER);
    let registry = Registry::start();
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            hold_patch: Some(2),
            ..ProxyRules::default()
        },
    );
    let mut import = spawn_import(&bundle, &proxy.host(), &STREAM_PASS);
    assert!(
        proxy.wait_for_hold(Duration::from_secs(60)),
        "the second PATCH never came; stderr:\n{}",
        import.stderr()
    );
    let uploads = registry
        .storage_dir()
        .join("docker/registry/v2/repositories/mirror/quay.io/acme/lost/_uploads");
    std::fs::remove_dir_all(&uploads).expect("remove the registry's upload sessions");
    proxy.release(Release::Drop);

    let finished = import.wait(Duration::from_secs(120));
    let stderr = &finished.stderr;
    assert_eq!(
        finished.code,
        Some(4),
        "a transient registry failure; stderr:\n{stderr}"
    );
    assert!(stderr.contains("lost the upload session"), "{stderr}");
    // Not restarted mid-stream: the first chunk, then nothing more.
    let requests = registry.settled_requests();
    let writes = layer_writes(&requests, &layer_of(&bundle, LAYER));
    let offsets: Vec<u64> = writes.iter().map(|(_, _, offset)| *offset).collect();
    assert_eq!(offsets, vec![0], "{writes:#?}");
}

#[test]
fn a_daemon_killed_while_indexing_commits_nothing_and_sends_the_cut_off_blob_once_after_a_restart()
{
    const LAYER: u64 = 80 * MIB;
    const AT_KILL: u64 = 64 * MIB;
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = big_bundle(&key, "indexing", "quay.io/acme/indexing:1.0", LAYER);
    let layer = layer_of(&bundle, LAYER);
    let registry = Registry::start();
    // The index pass streams the 80 MiB into one PATCH and commits nothing;
    // the proxy holds that PATCH once 64 MiB of it reached the registry.
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            hold_patch_after: Some(AT_KILL),
            ..ProxyRules::default()
        },
    );
    let site = Site::new();
    let mut daemon = Daemon::start_at(
        &site.setup(&["--upload-mode", "chunked"]),
        &proxy.host(),
        key.public_pem(),
    );
    bundle.copy_into(site.drop.path());

    assert!(
        proxy.wait_for_hold(WAIT_LIMIT),
        "the layer's PATCH never came; daemon log:\n{}",
        daemon.log_text()
    );
    let before_kill = registry.settled_requests();
    assert!(
        proxy
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH")
            .all(|r| r
                .path
                .starts_with("/v2/mirror/airlock-staging/blobs/uploads/")),
        "the index pass sends into the staging repository: {:#?}",
        proxy.requests()
    );
    assert!(
        completed_blobs(&before_kill).is_empty(),
        "a blob was committed before the bundle was indexed whole: {before_kill:#?}"
    );
    // The session is journaled when it opens, before any byte is sent.
    let journal = site.journal();
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(journal[0]["repository"], "mirror/airlock-staging");
    assert_eq!(journal[0]["digest"], layer.digest.as_str());
    let journaled = journal[0]["location"]
        .as_str()
        .and_then(|location| location.split("/blobs/uploads/").nth(1))
        .and_then(|rest| rest.split('?').next())
        .expect("the journal names the session")
        .to_owned();
    // The layer's first chunk went in a PATCH of its own (the import's
    // probe of chunked uploads), acknowledged and journaled; the proxy holds
    // the PATCH streaming the rest.
    let acknowledged = journal[0]["offset"].as_u64().expect("a journaled offset");
    assert_eq!(acknowledged, CHUNK, "{journal:?}");

    daemon.kill9();
    proxy.release(Release::Drop);
    // The registry read 64 MiB more into the session. Docker's registry 2.8
    // signs the offset into each `Location` (`_state`), and the journaled
    // one says 8 MiB: it refuses to go on from there ("upload resumed at wrong
    // offset") and drops the session, so the restart sends the layer again
    // whole, into a new session, and commits it once.
    let data = registry
        .storage_dir()
        .join("docker/registry/v2/repositories/mirror/airlock-staging/_uploads")
        .join(&journaled)
        .join("data");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&data).map_or(0, |m| m.len()) < acknowledged + AT_KILL
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::metadata(&data).map_or(0, |m| m.len()),
        acknowledged + AT_KILL,
        "the registry's session holds what the proxy let through"
    );
    let restart_at = registry.settled_requests().len();
    daemon.restart();
    daemon.wait_until("the import after the restart", |d| imported(d) >= 1.0);

    assert_landed(&bundle, &registry);
    let log = daemon.log_text();
    assert!(
        log.contains("the registry no longer holds the interrupted upload session; sending the blob from the start"),
        "the journaled session was asked about: {log}"
    );
    let requests = registry.settled_requests();
    let after: Vec<_> = layer_writes(&requests[restart_at..], &layer);
    // The whole layer again: the probe's first chunk, the rest in one
    // PATCH, and the commit, which carries no bytes.
    let offsets: Vec<u64> = after.iter().map(|(_, _, offset)| *offset).collect();
    assert_eq!(offsets, vec![0, CHUNK, LAYER], "{after:#?}");
    assert!(
        after.iter().all(|(_, uuid, _)| *uuid != journaled),
        "the dropped session was used again: {after:#?}"
    );
    assert_eq!(
        completed_blobs(&requests)
            .iter()
            .filter(|digest| **digest == layer.digest)
            .count(),
        1,
        "the layer was committed once"
    );
    assert!(
        site.journal().is_empty(),
        "the record outlived its upload: {:?}",
        site.journal()
    );
    // Only the refused session stays, until the registry purges stale
    // uploads (distribution: a week by default).
    let open: Vec<String> = registry
        .open_upload_sessions()
        .iter()
        .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
        .collect();
    assert_eq!(open, vec![journaled.clone()], "upload sessions left open");
    // Bytes sent: the layer and the small blobs, all after the restart (the
    // killed attempt committed nothing).
    let completed_after = completed_blobs(&requests[restart_at..]);
    let others: u64 = bundle
        .blobs()
        .iter()
        .filter(|b| b.digest != layer.digest && completed_after.contains(&b.digest))
        .map(|b| b.size)
        .sum();
    let imports = daemon.imports();
    assert_eq!(
        imports[0]["pushed"]["bytesUploaded"].as_u64(),
        Some(LAYER + others),
        "{imports:#}"
    );
}
