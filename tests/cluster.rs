//! airlock's Kubernetes integration against an in-process fake API server
//! that speaks real HTTP (tests/support/fake_apiserver.rs), reached through
//! kube's real client from a kubeconfig with an `http://` server.

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use airlock::cluster::{BundleEvent, Claim, Cluster, LeaseOutcome, lease_name};
use airlock::config::{KubeMode, KubeSection};
use support::fake_apiserver::{FakeApiServer, Fault};

const BUNDLE: &str = "5d41402abc4b2a76b9719d911017c592aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/airlock/leases";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn settings(identity: &str, lease_duration: Duration) -> KubeSection {
    KubeSection {
        enabled: KubeMode::On,
        namespace: None,
        identity: Some(identity.to_owned()),
        lease_duration,
        events: true,
        lease_retention: Duration::from_secs(3600),
    }
}

/// A replica's view of the cluster, from the fake server's kubeconfig (whose
/// context names the namespace `airlock`).
fn replica(
    rt: &tokio::runtime::Runtime,
    server: &FakeApiServer,
    settings: &KubeSection,
) -> Cluster {
    let path = server.kubeconfig();
    rt.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("read the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("a client configuration");
        Cluster::with_config(config, settings).expect("a client")
    })
}

fn block_on<F: Future>(rt: &tokio::runtime::Runtime, future: F) -> F::Output {
    rt.block_on(future)
}

fn holder(server: &FakeApiServer) -> Option<String> {
    server
        .leases()
        .iter()
        .find(|l| l["metadata"]["name"] == lease_name(BUNDLE).as_str())
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

fn conflicts(server: &FakeApiServer, method: &str) -> usize {
    server
        .served()
        .iter()
        .filter(|s| s.method == method && s.status == 409)
        .count()
}

#[test]
fn of_three_replicas_racing_to_create_a_bundle_lease_exactly_one_wins() {
    let server = FakeApiServer::start();
    let rt = runtime();
    let replicas: Vec<Cluster> = ["a", "b", "c"]
        .iter()
        .map(|id| replica(&rt, &server, &settings(id, Duration::from_secs(15))))
        .collect();
    // Every replica reads (404) before any create is handled.
    server.set_write_delay(Duration::from_millis(300));
    let claims = block_on(&rt, async {
        let claims = replicas.iter().map(|r| {
            let leases = r.leases();
            async move { leases.claim(BUNDLE, "app.zst").await }
        });
        futures::future::join_all(claims).await
    });
    let mut acquired = Vec::new();
    let mut held = 0;
    for (replica, claim) in replicas.iter().zip(claims) {
        match claim.expect("the API answers") {
            Claim::Acquired(guard) => acquired.push((replica.identity().to_owned(), guard)),
            Claim::HeldElsewhere { holder, .. } => {
                held += 1;
                assert_ne!(holder, replica.identity());
            }
            Claim::Finished { .. } => panic!("nothing finished yet"),
        }
    }
    assert_eq!(acquired.len(), 1, "exactly one replica holds the bundle");
    assert_eq!(held, 2);
    assert_eq!(
        conflicts(&server, "POST"),
        2,
        "two creates refused: AlreadyExists"
    );
    assert_eq!(holder(&server), Some(acquired[0].0.clone()));

    // Once finished, nobody takes it again.
    server.set_write_delay(Duration::ZERO);
    let (winner, guard) = acquired.remove(0);
    block_on(&rt, guard.finish(LeaseOutcome::Imported));
    for replica in &replicas {
        match block_on(&rt, replica.leases().claim(BUNDLE, "copy.zst")).expect("claim") {
            Claim::Finished { outcome, by } => {
                assert_eq!(outcome, LeaseOutcome::Imported);
                assert_eq!(by.as_deref(), Some(winner.as_str()));
            }
            other => panic!("{} got {other:?}", replica.identity()),
        }
    }
}

#[test]
fn of_two_replicas_taking_over_an_expired_lease_the_stale_update_loses() {
    let server = FakeApiServer::start();
    server.insert(
        LEASES,
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": lease_name(BUNDLE),
                         "labels": {"app.kubernetes.io/managed-by": "airlock", "airlock/state": "importing"}},
            "spec": {"holderIdentity": "dead", "leaseDurationSeconds": 15,
                     "renewTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 0},
        }),
    );
    let rt = runtime();
    let a = replica(&rt, &server, &settings("a", Duration::from_secs(15)));
    let b = replica(&rt, &server, &settings("b", Duration::from_secs(15)));
    server.set_write_delay(Duration::from_millis(300));
    let (first, second) = block_on(&rt, async {
        let (la, lb) = (a.leases(), b.leases());
        tokio::join!(la.claim(BUNDLE, "x.zst"), lb.claim(BUNDLE, "x.zst"))
    });
    let outcomes = [first.expect("a"), second.expect("b")];
    let winners = outcomes
        .iter()
        .filter(|c| matches!(c, Claim::Acquired(_)))
        .count();
    assert_eq!(winners, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|c| matches!(c, Claim::HeldElsewhere { .. })),
        "{outcomes:?}"
    );
    assert_eq!(conflicts(&server, "PUT"), 1, "the stale update was refused");
    let lease = &server.leases()[0];
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    drop(outcomes);
}

#[test]
fn a_replica_that_stops_renewing_loses_the_bundle_after_the_lease_duration() {
    let server = FakeApiServer::start();
    let rt = runtime();
    let duration = Duration::from_secs(2);
    let a = replica(&rt, &server, &settings("a", duration));
    let b = replica(&rt, &server, &settings("b", duration));

    let guard = match block_on(&rt, a.leases().claim(BUNDLE, "x.zst")).expect("claim") {
        Claim::Acquired(guard) => guard,
        other => panic!("{other:?}"),
    };
    // While a renews, b waits, however long it looks.
    std::thread::sleep(duration * 2);
    let retry_in = match block_on(&rt, b.leases().claim(BUNDLE, "x.zst")).expect("claim") {
        Claim::HeldElsewhere { holder, retry_in } => {
            assert_eq!(holder, "a");
            retry_in
        }
        other => panic!("a renews its lease, yet b got {other:?}"),
    };
    assert!(retry_in <= duration, "{retry_in:?}");
    let renewals = server
        .served()
        .iter()
        .filter(|s| s.method == "PUT" && s.status == 200)
        .count();
    assert!(renewals >= 3, "{renewals} renewals in two lease durations");

    // a dies: its renewals stop. b takes over once the lease expires.
    drop(guard);
    let died = Instant::now();
    let deadline = died + Duration::from_secs(20);
    let taken = loop {
        assert!(Instant::now() < deadline, "b never took the bundle over");
        match block_on(&rt, b.leases().claim(BUNDLE, "x.zst")).expect("claim") {
            Claim::Acquired(guard) => break guard,
            Claim::HeldElsewhere { retry_in, .. } => {
                std::thread::sleep(retry_in.min(Duration::from_millis(200)))
            }
            other => panic!("{other:?}"),
        }
    };
    let takeover = died.elapsed();
    assert!(
        takeover >= duration / 2 && takeover <= duration * 2,
        "taken over after {takeover:?}"
    );
    assert_eq!(holder(&server), Some("b".to_owned()));
    assert_eq!(server.leases()[0]["spec"]["leaseTransitions"], 1);
    drop(taken);
}

#[test]
fn an_unreachable_api_fails_claims_and_a_lease_not_renewable_for_its_duration_is_lost() {
    let mut server = FakeApiServer::start();
    let rt = runtime();
    let duration = Duration::from_secs(2);
    let a = replica(&rt, &server, &settings("a", duration));
    let mut guard = match block_on(&rt, a.leases().claim(BUNDLE, "x.zst")).expect("claim") {
        Claim::Acquired(guard) => guard,
        other => panic!("{other:?}"),
    };
    assert_eq!(a.health().problem(), None);

    server.stop();
    let stopped = Instant::now();
    block_on(&rt, async {
        tokio::time::timeout(Duration::from_secs(20), guard.lost())
            .await
            .expect("the guard reports the lease lost")
    });
    let lost_at = std::time::SystemTime::now();
    let lost_after = stopped.elapsed();
    assert!(lost_after <= duration * 3, "lost after {lost_after:?}");
    // Lost a whole duration after the last renewal the API took, not at the
    // first failed one (measured from that renewal: on a loaded machine the
    // last renewal may come well before the API stops).
    let renewed = server
        .leases()
        .iter()
        .find_map(|lease| lease["spec"]["renewTime"].as_str().map(str::to_owned))
        .expect("the lease was renewed");
    let renewed = humantime::parse_rfc3339_weak(&renewed).expect("renewTime is RFC 3339");
    let unrenewed = lost_at.duration_since(renewed).unwrap_or_default();
    assert!(
        unrenewed + Duration::from_millis(50) >= duration && unrenewed <= duration * 3,
        "lost {unrenewed:?} after the last renewal ({lost_after:?} after the API stopped)"
    );
    let error = block_on(&rt, a.leases().claim("ff".repeat(32).as_str(), "y.zst"))
        .expect_err("no API, no claim");
    let message = airlock::report::error_chain(&error);
    assert!(message.contains("get lease"), "{message}");
    let problem = a.health().problem().expect("health says why");
    assert!(problem.contains("Kubernetes API"), "{problem}");

    server.start_again();
    let claim = block_on(&rt, a.leases().claim("ff".repeat(32).as_str(), "y.zst"));
    assert!(matches!(claim, Ok(Claim::Acquired(_))), "{claim:?}");
    assert_eq!(a.health().problem(), None);
}

#[test]
fn api_errors_are_reported_not_taken_for_a_free_bundle() {
    let server = FakeApiServer::start();
    let rt = runtime();
    let a = replica(&rt, &server, &settings("a", Duration::from_secs(15)));
    server.set_fault(Fault::Unavailable);
    let error = block_on(&rt, a.leases().claim(BUNDLE, "x.zst")).expect_err("503 is an error");
    let message = airlock::report::error_chain(&error);
    assert!(message.contains("unavailable"), "{message}");
    assert!(a.health().problem().is_some());
    assert!(server.leases().is_empty());
    server.set_fault(Fault::None);
    assert!(matches!(
        block_on(&rt, a.leases().claim(BUNDLE, "x.zst")),
        Ok(Claim::Acquired(_))
    ));
}

#[test]
fn finished_leases_are_swept_after_the_retention_and_live_ones_stay() {
    let server = FakeApiServer::start();
    let rt = runtime();
    let mut kube = settings("a", Duration::from_secs(2));
    kube.lease_retention = Duration::from_secs(2);
    let a = replica(&rt, &server, &kube);
    let leases = a.leases();
    let finished = "aa".repeat(32);
    let live = "bb".repeat(32);
    match block_on(&rt, leases.claim(&finished, "done.zst")).expect("claim") {
        Claim::Acquired(guard) => block_on(&rt, guard.finish(LeaseOutcome::Imported)),
        other => panic!("{other:?}"),
    }
    let _live = match block_on(&rt, leases.claim(&live, "busy.zst")).expect("claim") {
        Claim::Acquired(guard) => guard,
        other => panic!("{other:?}"),
    };
    assert_eq!(block_on(&rt, leases.sweep()).expect("sweep"), 0);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(block_on(&rt, leases.sweep()).expect("sweep"), 1);
    let names: Vec<String> = server
        .leases()
        .iter()
        .filter_map(|l| l["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names, vec![lease_name(&live)]);
    assert!(
        server
            .served()
            .iter()
            .any(|s| s.method == "GET" && s.path.ends_with("/leases")),
        "the sweep lists the leases"
    );
}

#[test]
fn events_on_the_pod_carry_the_reason_and_repeat_as_a_series() {
    let mut server = FakeApiServer::start();
    let rt = runtime();
    let a = replica(
        &rt,
        &server,
        &settings("airlock-7d9f-abcde", Duration::from_secs(15)),
    );
    let events = a.events().expect("kube.events is on");
    let imported = BundleEvent::Imported {
        bundle: "app.zst".to_owned(),
        digest: format!("sha256:{BUNDLE}"),
        images: vec!["registry.local/mirror/quay.io/acme/app:1.0".to_owned()],
    };
    block_on(&rt, events.send(&imported));
    block_on(&rt, events.send(&imported));
    block_on(
        &rt,
        events.send(&BundleEvent::Rejected {
            bundle: "bad.zst".to_owned(),
            digest: format!("sha256:{BUNDLE}"),
            reason: "the signature does not verify".to_owned(),
        }),
    );
    let stored = server.events();
    assert_eq!(stored.len(), 2, "{stored:#?}");
    let by_reason = |reason: &str| {
        stored
            .iter()
            .find(|e| e["reason"] == reason)
            .unwrap_or_else(|| panic!("no {reason} event: {stored:#?}"))
            .clone()
    };
    let ok = by_reason("BundleImported");
    assert_eq!(ok["type"], "Normal");
    assert_eq!(ok["regarding"]["kind"], "Pod");
    assert_eq!(ok["regarding"]["name"], "airlock-7d9f-abcde");
    assert_eq!(ok["reportingController"], "airlock");
    let note = ok["note"].as_str().expect("note");
    assert!(
        note.contains("app.zst") && note.contains(BUNDLE) && note.contains("quay.io/acme/app:1.0"),
        "{note}"
    );
    assert_eq!(ok["series"]["count"], 2, "the repeat is a series: {ok:#}");
    let bad = by_reason("BundleRejected");
    assert_eq!(bad["type"], "Warning");
    assert!(
        bad["note"]
            .as_str()
            .expect("note")
            .contains("does not verify")
    );

    // With the API down an Event is given up on in bounded time.
    server.stop();
    let started = Instant::now();
    block_on(&rt, events.send(&imported));
    assert!(started.elapsed() < Duration::from_secs(15));
}

// ---------------------------------------------------------------------------
// Whole daemons (`airlock watch` processes) sharing one drop folder.

use std::collections::BTreeMap;
use std::path::Path;

use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer, Naming};
use support::daemon::{Daemon, DaemonSetup};
use support::keys::{KeyKind, TestKey};
use support::proxy::{Proxy, ProxyRules, Release};
use support::registry::Registry;

/// The lease duration of the daemons under test: short, so takeovers are
/// quick, yet three renewal periods of one second each.
const TEST_LEASE: &str = "3s";

fn replica_env(server: &FakeApiServer, pod: &str) -> Vec<(String, String)> {
    [
        ("AIRLOCK_KUBE__ENABLED", "true"),
        ("AIRLOCK_KUBE__LEASE_DURATION", TEST_LEASE),
        (
            "KUBECONFIG",
            server.kubeconfig().to_str().expect("UTF-8 path"),
        ),
        ("POD_NAME", pod),
        ("POD_NAMESPACE", "airlock"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

fn setup(drop: &Path, state: &Path, envs: Vec<(String, String)>) -> DaemonSetup {
    DaemonSetup {
        drop_dir: drop.to_owned(),
        state_dir: state.to_owned(),
        extra: Vec::new(),
        envs,
    }
}

fn bundle(key: &TestKey, i: usize, layers: &[Layer]) -> BuiltBundle {
    BundleBuilder::new(&format!("delivery-{i}"))
        .image(
            Image::new(&format!("quay.io/acme/app-{i}:1.0"))
                .naming(Naming::ContainerdName)
                .layers(layers),
        )
        .build(key)
}

/// Manifest PUTs the registry accepted, by `repository:tag`.
fn tag_pushes(registry: &Registry) -> BTreeMap<String, usize> {
    let mut pushes = BTreeMap::new();
    for request in registry.settled_requests() {
        if request.method != "PUT" || request.status != 201 {
            continue;
        }
        if let Some((repository, tag)) = request
            .path
            .strip_prefix("/v2/")
            .and_then(|p| p.split_once("/manifests/"))
        {
            *pushes.entry(format!("{repository}:{tag}")).or_insert(0) += 1;
        }
    }
    pushes
}

fn lease_states(server: &FakeApiServer) -> Vec<(String, String)> {
    server
        .leases()
        .iter()
        .map(|l| {
            (
                l["metadata"]["labels"]["airlock/state"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                l["spec"]["holderIdentity"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn imported_here(daemon: &Daemon) -> Vec<String> {
    daemon
        .imports()
        .as_array()
        .expect("a list")
        .iter()
        .filter(|r| r["status"] == "imported")
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}

fn replicas_share_one_drop_folder(replicas: usize, bundles: usize) {
    let key = TestKey::generate(KeyKind::EcP256);
    let built: Vec<BuiltBundle> = (0..bundles)
        .map(|i| bundle(&key, i, &[Layer::gzip_tar(i as u64, 4096)]))
        .collect();
    let registry = Registry::start();
    let server = FakeApiServer::start();
    let drop = tempfile::tempdir().expect("drop");
    let states: Vec<tempfile::TempDir> = (0..replicas)
        .map(|_| tempfile::tempdir().expect("state"))
        .collect();
    let daemons: Vec<Daemon> = states
        .iter()
        .enumerate()
        .map(|(i, state)| {
            Daemon::start(
                &setup(
                    drop.path(),
                    state.path(),
                    replica_env(&server, &format!("airlock-{i}")),
                ),
                &registry,
                key.public_pem(),
            )
        })
        .collect();
    let dropped = Instant::now();
    for bundle in &built {
        bundle.copy_into(drop.path());
    }
    wait_for(
        "every bundle's lease to say imported",
        Duration::from_secs(120),
        || {
            let states = lease_states(&server);
            states.len() == bundles && states.iter().all(|(state, _)| state == "imported")
        },
    );
    let all_done = dropped.elapsed();
    // Let every replica look at every bundle (retries included) before
    // counting: each has settled once the queue and imports are empty.
    for daemon in &daemons {
        daemon.wait_until("an idle queue", |d| {
            d.metric("airlock_bundles_queued") == 0.0
                && d.metric("airlock_imports_in_progress") == 0.0
        });
    }
    std::thread::sleep(Duration::from_secs(5));

    let pushes = tag_pushes(&registry);
    for (i, bundle) in built.iter().enumerate() {
        let image = &bundle.images()[0];
        let tag = format!("mirror/{}", image.full_ref);
        assert_eq!(
            pushes.get(&tag),
            Some(&1),
            "bundle {i} ({tag}) tagged once: {pushes:#?}"
        );
    }
    let mut importers: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, daemon) in daemons.iter().enumerate() {
        for id in imported_here(daemon) {
            importers.entry(id).or_default().push(i);
        }
    }
    assert_eq!(importers.len(), bundles, "{importers:?}");
    assert!(
        importers.values().all(|by| by.len() == 1),
        "each bundle imported by exactly one replica: {importers:?}"
    );
    let events: Vec<serde_json::Value> = server
        .events()
        .into_iter()
        .filter(|e| e["reason"] == "BundleImported")
        .collect();
    assert_eq!(events.len(), bundles, "one BundleImported Event per bundle");
    let per_replica: Vec<usize> = (0..replicas)
        .map(|i| importers.values().filter(|by| by[0] == i).count())
        .collect();
    eprintln!(
        "{replicas} replicas, {bundles} bundles: every bundle imported once, split {per_replica:?}, all done {all_done:?} after the drop"
    );
}

#[test]
fn two_daemons_on_one_drop_folder_import_each_bundle_once() {
    replicas_share_one_drop_folder(2, 4);
}

#[test]
fn three_daemons_on_one_drop_folder_import_each_bundle_once() {
    replicas_share_one_drop_folder(3, 6);
}

#[test]
fn a_daemon_killed_mid_import_is_taken_over_after_its_lease_expires() {
    let key = TestKey::generate(KeyKind::EcP256);
    // The layer streams in one PATCH, held once 8 MiB went through.
    let built = bundle(&key, 0, &[Layer::uncompressed(7, 20 << 20)]);
    let registry = Registry::start();
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            hold_patch_after: Some(8 << 20),
            ..ProxyRules::default()
        },
    );
    let server = FakeApiServer::start();
    let drop = tempfile::tempdir().expect("drop");
    let (state_a, state_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let mut a = Daemon::start_at(
        &setup(
            drop.path(),
            state_a.path(),
            replica_env(&server, "airlock-a"),
        ),
        &proxy.host(),
        key.public_pem(),
    );
    built.copy_into(drop.path());
    assert!(
        proxy.wait_for_hold(Duration::from_secs(90)),
        "the upload never reached 8 MiB:\n{}",
        a.log_text()
    );
    assert_eq!(
        lease_states(&server),
        vec![("importing".to_owned(), "airlock-a".to_owned())]
    );

    // b sees the bundle and waits while a renews its lease.
    let b = Daemon::start(
        &setup(
            drop.path(),
            state_b.path(),
            replica_env(&server, "airlock-b"),
        ),
        &registry,
        key.public_pem(),
    );
    wait_for("b to find the bundle held", Duration::from_secs(60), || {
        b.log_text()
            .contains("another replica is importing this bundle")
    });
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        lease_states(&server),
        vec![("importing".to_owned(), "airlock-a".to_owned())],
        "b must not take a lease that a renews"
    );

    a.kill9();
    let killed = Instant::now();
    proxy.release(Release::Drop);
    wait_for("b to take the lease over", Duration::from_secs(60), || {
        lease_states(&server)
            .first()
            .is_some_and(|(_, holder)| holder == "airlock-b")
    });
    let takeover = killed.elapsed();
    wait_for("b to finish the import", Duration::from_secs(90), || {
        lease_states(&server) == vec![("imported".to_owned(), "airlock-b".to_owned())]
    });
    let finished = killed.elapsed();
    assert!(
        takeover <= Duration::from_secs(3) * 2 + Duration::from_secs(2),
        "takeover took {takeover:?}"
    );
    let image = &built.images()[0];
    assert_eq!(
        tag_pushes(&registry).get(&format!("mirror/{}", image.full_ref)),
        Some(&1),
        "tagged once, by b"
    );
    assert_eq!(imported_here(&b).len(), 1);
    assert_eq!(server.leases()[0]["spec"]["leaseTransitions"], 1);
    eprintln!(
        "killed mid-import: taken over after {takeover:?}, finished {finished:?} after the kill"
    );
}

#[test]
fn imports_wait_while_the_api_is_unreachable_and_readyz_says_why() {
    let key = TestKey::generate(KeyKind::EcP256);
    let built = bundle(&key, 0, &[Layer::gzip_tar(1, 4096)]);
    let registry = Registry::start();
    let mut server = FakeApiServer::start();
    let drop = tempfile::tempdir().expect("drop");
    let state = tempfile::tempdir().expect("state");
    let daemon = Daemon::start(
        &setup(drop.path(), state.path(), replica_env(&server, "airlock-0")),
        &registry,
        key.public_pem(),
    );
    server.stop();
    built.copy_into(drop.path());
    daemon.wait_until("/readyz to blame the API", |d| {
        d.get("/readyz").is_some_and(|(status, body)| {
            status == 503
                && body.contains("\"kubeApiReachable\":false")
                && body.contains("Kubernetes API")
        })
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        tag_pushes(&registry).is_empty(),
        "nothing is imported without the lease"
    );
    server.start_again();
    daemon.wait_until("the import", |d| imported_here(d).len() == 1);
    daemon.wait_until("/readyz to pass", |d| {
        d.get("/readyz").is_some_and(|(status, body)| {
            status == 200 && body.contains("\"kubeApiReachable\":true")
        })
    });
    assert_eq!(tag_pushes(&registry).len(), 1);
}

#[test]
fn failing_events_never_hold_up_an_import_and_rejections_are_events() {
    let key = TestKey::generate(KeyKind::EcP256);
    let other = TestKey::generate(KeyKind::EcP256);
    let good = bundle(&key, 0, &[Layer::gzip_tar(1, 4096)]);
    let forged = bundle(&other, 1, &[Layer::gzip_tar(2, 4096)]);
    let registry = Registry::start();
    let server = FakeApiServer::start();
    server.set_fault(Fault::FailPathsWith("/events"));
    let drop = tempfile::tempdir().expect("drop");
    let state = tempfile::tempdir().expect("state");
    let daemon = Daemon::start(
        &setup(drop.path(), state.path(), replica_env(&server, "airlock-0")),
        &registry,
        key.public_pem(),
    );
    good.copy_into(drop.path());
    daemon.wait_until("the import despite failing Events", |d| {
        imported_here(d).len() == 1
    });
    assert!(
        server
            .served()
            .iter()
            .any(|s| s.path.contains("/events") && s.status == 500),
        "an Event was tried"
    );
    assert!(
        daemon
            .log_text()
            .contains("cannot write a Kubernetes Event")
    );

    server.set_fault(Fault::None);
    forged.copy_into(drop.path());
    wait_for("the BundleRejected Event", Duration::from_secs(60), || {
        server.events().iter().any(|e| {
            e["reason"] == "BundleRejected"
                && e["type"] == "Warning"
                && e["regarding"]["name"] == "airlock-0"
                && e["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("delivery-1.zst"))
        })
    });
    assert_eq!(
        tag_pushes(&registry).len(),
        1,
        "the forged bundle pushed nothing"
    );
}

#[test]
fn with_kube_off_the_api_is_never_asked() {
    let key = TestKey::generate(KeyKind::EcP256);
    let built = bundle(&key, 0, &[Layer::gzip_tar(1, 4096)]);
    let registry = Registry::start();
    let server = FakeApiServer::start();
    let drop = tempfile::tempdir().expect("drop");
    let state = tempfile::tempdir().expect("state");
    let mut envs = replica_env(&server, "airlock-0");
    envs.retain(|(k, _)| k != "AIRLOCK_KUBE__ENABLED");
    envs.push(("AIRLOCK_KUBE__ENABLED".to_owned(), "false".to_owned()));
    let daemon = Daemon::start(
        &setup(drop.path(), state.path(), envs),
        &registry,
        key.public_pem(),
    );
    built.copy_into(drop.path());
    daemon.wait_until("the import", |d| imported_here(d).len() == 1);
    let (status, body) = daemon.get("/readyz").expect("readyz");
    assert_eq!(status, 200);
    assert!(!body.contains("kubeApiReachable"), "{body}");
    assert!(server.served().is_empty(), "{:?}", server.served());
}
