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
    let lost_after = stopped.elapsed();
    assert!(
        lost_after >= duration / 2 && lost_after <= duration * 3,
        "lost after {lost_after:?}"
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
