//! Faults survived, nothing lost: `airlock watch` against the real registry
//! while the registry is killed and restarted at random points, the daemon
//! is SIGKILLed at random points, a proxy in front of the registry resets
//! connections, stalls answers past the timeout and answers 500/502/503/429,
//! and the state directory fills up. Every test ends with
//! skopeo reading back that the registry holds exactly the bundles' images,
//! byte for byte, and nothing else, and with the daemon's records saying
//! each bundle was imported.
//!
//! Randomness comes from one seed per test, printed at its start;
//! `AIRLOCK_FAULT_SEED=N` replays it. Every loop is bounded by count and
//! time. `AIRLOCK_SOAK_FULL=1` runs more bundles and more faults.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer};
use support::daemon::{Daemon, DaemonSetup, Site};
use support::keys::{KeyKind, TestKey};
use support::proxy::{FaultPlan, Proxy, ProxyRules};
use support::registry::Registry;
use support::skopeo;

const PREFIX: &str = "mirror";
/// How long any one test may wait for its bundles.
const IMPORT_LIMIT: Duration = Duration::from_secs(300);

fn full() -> bool {
    std::env::var_os("AIRLOCK_SOAK_FULL").is_some()
}

/// The seed of this run: `AIRLOCK_FAULT_SEED`, else the clock. Printed.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("AIRLOCK_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: fault seed {seed} (AIRLOCK_FAULT_SEED={seed} replays it)");
    seed
}

/// `count` bundles of one image each, sharing a base layer; every third
/// carries a layer of `big` bytes (uploaded in several chunks).
fn bundles(key: &TestKey, name: &str, count: usize, big: u64) -> Vec<BuiltBundle> {
    let base = Layer::gzip_tar(7, 128 << 10);
    (0..count)
        .map(|i| {
            let mut layers = vec![base.clone(), Layer::gzip_tar(100 + i as u64, 64 << 10)];
            if i % 3 == 0 {
                layers.push(Layer::uncompressed(200 + i as u64, big));
            }
            BundleBuilder::new(&format!("{name}-{i}"))
                .image(Image::new(&format!("quay.io/acme/{name}{i}:1.0")).layers(&layers))
                .build(key)
        })
        .collect()
}

/// Fast retries and short timeouts, so stalls and outages cost seconds.
fn impatient(setup: &mut DaemonSetup) {
    for (key, value) in [
        ("AIRLOCK_IMPORTS__RETRY_INITIAL_BACKOFF", "200ms"),
        ("AIRLOCK_IMPORTS__RETRY_MAX_BACKOFF", "1s"),
        ("AIRLOCK_REGISTRY__ANSWER_TIMEOUT", "2s"),
        ("AIRLOCK_REGISTRY__IDLE_TIMEOUT", "2s"),
    ] {
        setup.envs.push((key.into(), value.into()));
    }
}

/// The daemon's records with status `imported`, by bundle id.
fn imported_ids(daemon: &Daemon) -> BTreeSet<String> {
    let Some((200, body)) = daemon.get("/api/v1/imports?limit=1000") else {
        return BTreeSet::new();
    };
    let records: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    records
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == "imported")
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}

/// The truth, read independently: the registry holds exactly the images of
/// `bundles` (catalog, tags, and each manifest's bytes through skopeo), and
/// the daemon records every bundle as imported, once.
fn assert_nothing_lost(registry: &Registry, daemon: &Daemon, bundles: &[BuiltBundle]) {
    let mut expected_repos = BTreeSet::new();
    for bundle in bundles {
        for image in bundle.images() {
            let repo = format!("{PREFIX}/{}", image.repository());
            let reference = format!("{PREFIX}/{}", image.full_ref);
            assert_eq!(
                skopeo::inspect_raw(registry, &reference),
                image.manifest,
                "{reference} differs from the bundle"
            );
            assert_eq!(
                registry.tags(&repo),
                vec![image.tag().expect("a tagged image")],
                "{repo} holds other tags"
            );
            expected_repos.insert(repo);
        }
    }
    let catalog = catalog_without_staging(registry);
    assert_eq!(
        catalog, expected_repos,
        "the registry holds other repositories"
    );
    let records = daemon.imports();
    let records = records.as_array().expect("a list of records");
    assert_eq!(
        records.len(),
        bundles.len(),
        "one record per bundle: {records:#?}"
    );
    assert!(
        records.iter().all(|r| r["status"] == "imported"),
        "{records:#?}"
    );
}

#[test]
fn faults_of_a_proxy_in_front_of_the_registry_are_survived_and_nothing_is_lost() {
    let seed = seed("proxy faults");
    let key = TestKey::generate(KeyKind::EcP256);
    let count = if full() { 30 } else { 6 };
    let bundles = bundles(&key, "proxied", count, 12 << 20);
    let registry = Registry::start();
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            faults: Some(FaultPlan {
                seed,
                percent: 20,
                max_faults: if full() { 400 } else { 40 },
                // Far longer than the daemon's 2 s answer timeout: without
                // it, a stalled request would hold its import past the
                // test's limit.
                stall: Duration::from_secs(600),
            }),
            ..ProxyRules::default()
        },
    );
    let site = Site::new();
    let mut setup = site.setup(&[]);
    impatient(&mut setup);
    let daemon = Daemon::start_at(&setup, &proxy.host(), key.public_pem());
    for bundle in &bundles {
        bundle.copy_into(site.drop.path());
    }

    daemon.wait_within(
        "every bundle imported through the faults",
        IMPORT_LIMIT,
        |d| imported_ids(d).len() == count,
    );

    let injected = proxy.faults_injected();
    let total: usize = injected.values().sum();
    eprintln!(
        "proxy faults: {total} injected and survived over {} requests, {count} bundles, nothing lost: {injected:?}",
        proxy.requests().len()
    );
    assert!(total > 0, "no fault was injected; the test proved nothing");
    assert_nothing_lost(&registry, &daemon, &bundles);
}

#[test]
fn the_registry_killed_at_random_points_and_restarted_several_times_loses_nothing() {
    let seed = seed("registry kills");
    let mut random = fastrand::Rng::with_seed(seed);
    let key = TestKey::generate(KeyKind::EcP256);
    let count = if full() { 15 } else { 5 };
    let kills = if full() { 12 } else { 4 };
    let bundles = bundles(&key, "outage", count, 32 << 20);
    let mut registry = Registry::start();
    let site = Site::new();
    let mut setup = site.setup(&[]);
    impatient(&mut setup);
    let daemon = Daemon::start(&setup, &registry, key.public_pem());

    // One kill per bundle, at a random point of its import: once the
    // registry has seen airlock ask for it.
    let started = Instant::now();
    let mut killed = 0;
    for bundle in bundles.iter().take(kills) {
        bundle.copy_into(site.drop.path());
        wait_for_requests_about(&registry, bundle, started);
        std::thread::sleep(Duration::from_millis(random.u64(0..1500)));
        registry.stop();
        killed += 1;
        std::thread::sleep(Duration::from_millis(random.u64(100..1500)));
        registry.restart();
    }
    for bundle in bundles.iter().skip(kills) {
        bundle.copy_into(site.drop.path());
    }
    daemon.wait_within(
        "every bundle imported after the outages",
        IMPORT_LIMIT,
        |d| imported_ids(d).len() == count,
    );

    eprintln!("registry kills: {killed} injected and survived, {count} bundles, nothing lost");
    assert_eq!(killed, kills);
    assert_nothing_lost(&registry, &daemon, &bundles);
}

/// Waits (bounded) until the registry's log shows airlock asking about
/// the first image of `bundle`.
fn wait_for_requests_about(registry: &Registry, bundle: &BuiltBundle, started: Instant) {
    let repo = format!("/v2/{PREFIX}/{}/", bundle.images()[0].repository());
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && started.elapsed() < IMPORT_LIMIT {
        let asked = registry
            .requests()
            .iter()
            .any(|r| r.user_agent.starts_with("airlock/") && r.path.starts_with(&repo));
        if asked {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("airlock never asked the registry about {repo}");
}

/// Bundle or signature files still directly in the drop folder.
fn pairs_left(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list the drop folder")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".zst") || n.ends_with(".sig.bin"))
        .collect()
}

#[test]
fn the_daemon_killed_at_random_points_and_restarted_several_times_loses_nothing() {
    let seed = seed("daemon kills");
    let mut random = fastrand::Rng::with_seed(seed);
    let key = TestKey::generate(KeyKind::EcP256);
    let count = if full() { 20 } else { 6 };
    let kills = if full() { 15 } else { 5 };
    let bundles = bundles(&key, "crash", count, 16 << 20);
    let registry = Registry::start();
    let site = Site::new();
    // Moving files and writing state are where a kill hurts most.
    let mut setup = site.setup(&["--on-success", "move"]);
    impatient(&mut setup);
    let mut daemon = Daemon::start(&setup, &registry, key.public_pem());

    // One kill per bundle, at a random point after the registry has seen
    // airlock ask for it: mid-upload, while recording, while moving files.
    let started = Instant::now();
    let mut killed = 0;
    for bundle in bundles.iter().take(kills) {
        bundle.copy_into(site.drop.path());
        wait_for_requests_about(&registry, bundle, started);
        std::thread::sleep(Duration::from_millis(random.u64(0..1500)));
        daemon.kill9();
        killed += 1;
        daemon.restart();
    }
    for bundle in bundles.iter().skip(kills) {
        bundle.copy_into(site.drop.path());
    }
    daemon.wait_within("every bundle imported after the kills", IMPORT_LIMIT, |d| {
        imported_ids(d).len() == count && pairs_left(site.drop.path()).is_empty()
    });

    eprintln!(
        "daemon kills: {killed} SIGKILLs injected and survived, {count} bundles, nothing lost"
    );
    assert_eq!(killed, kills);
    assert_nothing_lost(&registry, &daemon, &bundles);
    let processed = site.drop.path().join("processed");
    for bundle in &bundles {
        for file in [bundle.zst(), bundle.sig()] {
            let name = file.file_name().expect("a file name");
            assert!(
                processed.join(name).is_file(),
                "{} was not moved to processed/",
                name.to_string_lossy()
            );
        }
    }
}

/// Opt-out for machines where tests cannot mount file systems.
const SKIP_MOUNT_TESTS: &str = "AIRLOCK_TEST_SKIP_MOUNT";

/// A small tmpfs mounted on a folder, unmounted on drop.
struct SmallTmpfs {
    path: std::path::PathBuf,
}

impl SmallTmpfs {
    fn mount(path: &Path, size: &str) -> Option<SmallTmpfs> {
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| SmallTmpfs {
            path: path.to_owned(),
        })
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

/// Fills the file system holding `dir` with one file until it is full.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("create the filler");
    let block = vec![0u8; 64 << 10];
    // Bounded: the tmpfs holds a few MiB.
    for _ in 0..100_000 {
        if file.write_all(&block).is_err() {
            break;
        }
    }
    let _ = file.sync_all();
    path
}

#[test]
fn a_full_state_directory_holds_imports_back_and_loses_nothing() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundles = bundles(&key, "state", 2, 1 << 20);
    let registry = Registry::start();
    let site = Site::new();
    let Some(_tmpfs) = SmallTmpfs::mount(site.state.path(), "4m") else {
        assert!(
            std::env::var_os(SKIP_MOUNT_TESTS).is_some(),
            "cannot mount a tmpfs (needs root); set {SKIP_MOUNT_TESTS}=1 to skip this test knowingly"
        );
        eprintln!("skipping: {SKIP_MOUNT_TESTS} is set and no tmpfs can be mounted");
        return;
    };
    let mut setup = site.setup(&[]);
    impatient(&mut setup);
    let daemon = Daemon::start(&setup, &registry, key.public_pem());
    let failed = |d: &Daemon| d.metric(r#"airlock_bundles_total{outcome="failed"}"#);

    // Full: nothing may be pushed while no record can be written.
    let filler = fill(site.state.path());
    bundles[0].copy_into(site.drop.path());
    daemon.wait_until("an attempt refused by the full state directory", |d| {
        failed(d) >= 2.0
    });
    assert!(
        daemon
            .log_text()
            .contains("cannot write to the state directory"),
        "{}",
        daemon.log_text()
    );
    let writes = registry.settled_writes();
    assert_eq!(writes, 0, "pushed while the state directory was full");
    std::fs::remove_file(&filler).expect("free the state directory");
    daemon.wait_until("the import once there is room", |d| {
        imported_ids(d).len() == 1
    });

    bundles[1].copy_into(site.drop.path());
    daemon.wait_until("the next import", |d| imported_ids(d).len() == 2);

    eprintln!("state directory full: injected and survived, 2 bundles, nothing lost");
    assert_nothing_lost(&registry, &daemon, &bundles);
}

/// The daemon's peak resident memory (`VmHWM`), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib << 10)
}

/// Most the daemon may hold after 200 bundles: its import buffers (48 MiB)
/// and zstd window are far below; a leak per bundle is not.
const MEMORY_LIMIT: u64 = 256 << 20;

#[test]
fn two_hundred_bundles_at_once_good_duplicated_tampered_truncated_each_handled_once() {
    let count = 200;
    let key = TestKey::generate(KeyKind::EcP256);
    let registry = Registry::start();
    let site = Site::new();
    let mut setup = site.setup(&["--concurrency", "4"]);
    impatient(&mut setup);
    let daemon = Daemon::start(&setup, &registry, key.public_pem());

    // Of every ten: seven good, one good copy under another name, one
    // tampered, one truncated.
    let staging = tempfile::tempdir().expect("staging dir");
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for i in 0..count {
        let bundle = BundleBuilder::new(&format!("mass-{i:03}"))
            .image(
                Image::new(&format!("quay.io/acme/mass{i:03}:1.0"))
                    .layers(&[Layer::gzip_tar(1000 + i as u64, 4 << 10)]),
            )
            .build(&key);
        match i % 10 {
            7 => {
                let original: &BuiltBundle = &good[good.len() - 1];
                let name = format!("copy-of-{i:03}");
                std::fs::copy(original.zst(), staging.path().join(format!("{name}.zst")))
                    .expect("copy the duplicate");
                std::fs::copy(
                    original.sig(),
                    staging.path().join(format!("{name}.sig.bin")),
                )
                .expect("copy the duplicate's signature");
            }
            8 => {
                bundle.tamper();
                bundle.copy_into(staging.path());
                bad.push(bundle);
            }
            9 => {
                let (zst, _) = bundle.copy_into(staging.path());
                let len = std::fs::metadata(&zst).expect("stat").len();
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&zst)
                    .expect("open the copy");
                file.set_len(len / 2).expect("truncate the copy");
                bad.push(bundle);
            }
            _ => {
                bundle.copy_into(staging.path());
                good.push(bundle);
            }
        }
    }
    // All at once: one rename each into the watched folder.
    for entry in std::fs::read_dir(staging.path()).expect("list staging") {
        let entry = entry.expect("staging entry");
        std::fs::rename(entry.path(), site.drop.path().join(entry.file_name()))
            .expect("move into the drop folder");
    }
    let started = Instant::now();
    let duplicates = count / 10;
    daemon.wait_within("every bundle handled", IMPORT_LIMIT, |d| {
        d.metric(r#"airlock_bundles_total{outcome="imported"}"#) >= good.len() as f64
            && d.metric(r#"airlock_bundles_total{outcome="rejected"}"#) >= bad.len() as f64
            && d.metric(r#"airlock_bundles_total{outcome="duplicate"}"#) >= duplicates as f64
    });
    let took = started.elapsed();
    let peak = peak_memory(daemon.pid());
    eprintln!(
        "{count} bundles at once: {} imported, {duplicates} duplicates, {} rejected in {took:?}; daemon peak RSS {} MiB",
        good.len(),
        bad.len(),
        peak >> 20
    );
    assert!(peak < MEMORY_LIMIT, "the daemon held {peak} bytes");

    // Each good image landed once: one PUT of its tag.
    let puts = registry
        .settled_requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/1.0"))
        .count();
    assert_eq!(puts, good.len(), "a tag was pushed more than once");
    // Each bad one rejected with its reason beside it, nothing of it pushed.
    for bundle in &bad {
        let name = bundle.zst().file_name().expect("name").to_string_lossy();
        let reason = site.drop.path().join(format!("{name}.error.json"));
        let text = std::fs::read_to_string(&reason)
            .unwrap_or_else(|e| panic!("no reason file {}: {e}", reason.display()));
        assert!(text.contains("message"), "{text}");
        let repo = format!("{PREFIX}/{}", bundle.images()[0].repository());
        assert!(registry.tags(&repo).is_empty(), "{repo} was pushed");
    }
    let (_, body) = daemon
        .get("/api/v1/imports?limit=1000")
        .expect("GET /api/v1/imports");
    let records: serde_json::Value = serde_json::from_str(&body).expect("records JSON");
    let records = records.as_array().expect("records");
    let imported = records.iter().filter(|r| r["status"] == "imported").count();
    let rejected = records.iter().filter(|r| r["status"] == "rejected").count();
    assert_eq!(imported, good.len(), "imported records");
    assert_eq!(rejected, bad.len(), "rejected records");
    let named_twice = records
        .iter()
        .filter(|r| r["names"].as_array().is_some_and(|n| n.len() == 2))
        .count();
    assert_eq!(
        named_twice, duplicates,
        "duplicates recorded under both names"
    );
    let catalog = catalog_without_staging(&registry);
    let expected: BTreeSet<String> = good
        .iter()
        .map(|b| format!("{PREFIX}/{}", b.images()[0].repository()))
        .collect();
    assert_eq!(catalog, expected, "the registry holds other repositories");
    for bundle in &good {
        let image = &bundle.images()[0];
        let reference = format!("{PREFIX}/{}", image.full_ref);
        assert_eq!(skopeo::inspect_raw(&registry, &reference), image.manifest);
    }
}

/// The registry's repositories but the staging repository, which holds the
/// blobs imports sent while indexing (and no image).
fn catalog_without_staging(registry: &Registry) -> BTreeSet<String> {
    let staging = format!("{PREFIX}/airlock-staging");
    registry
        .catalog()
        .into_iter()
        .filter(|repo| *repo != staging)
        .collect()
}
