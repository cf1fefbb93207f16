//! What a hostile or misconfigured registry (or a proxy in front of it) can
//! make airlock do. Each test stands up the registry side on 127.0.0.1: the
//! real registry with its `Location` base pointed elsewhere (distribution's
//! `http.host`), or a hostile server answering as the test says
//! ([`support::hostile`]), and proves where airlock's credentials went and
//! how much it read.

mod support;

use std::io::Write;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock::digest::Digest;
use airlock::push::registry::{Credentials, RegistryClient, RegistryConfig, RetryPolicy, Timeouts};
use base64::Engine as _;
use support::airlock;
use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer};
use support::daemon::{Daemon, DaemonSetup};
use support::hostile::{Body, HostileServer, Reply, SeenRequest};
use support::keys::{KeyKind, TestKey};
use support::registry::{Registry, RegistryOptions};

const USER: &str = "robot";
const PASSWORD: &str = "s3cret-never-elsewhere";

fn basic_header() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

/// A server that takes whatever is sent to it and answers 401 with a Basic
/// challenge, as a registry would, inviting the credentials.
fn collector() -> HostileServer {
    HostileServer::start(|_| {
        Reply::status(401).header("WWW-Authenticate", r#"Basic realm="collector""#)
    })
}

fn bundle(name: &str) -> BuiltBundle {
    let key = TestKey::generate(KeyKind::EcP256);
    BundleBuilder::new(name)
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key)
}

/// `airlock import` of `bundle` into `registry`/mirror with the credentials
/// on stdin, at trace level so any credential that reaches the log is seen.
fn import(bundle: &BuiltBundle, registry: &Registry) -> Output {
    let mut command = airlock();
    command
        .arg("--log")
        .arg("trace")
        .arg("import")
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--registry", &format!("{}/mirror", registry.host())])
        .args(["--username", USER, "--password-stdin", "--quiet"])
        .env("DOCKER_CONFIG", bundle.dir().join("no-docker-config"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if registry.is_tls() {
        command.arg("--ca-cert").arg(registry.ca_cert_path());
    } else {
        command.arg("--plain-http");
    }
    let mut child = command.spawn().expect("start airlock import");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("write the password");
    child.wait_with_output().expect("wait for airlock import")
}

fn credentials_seen(requests: &[SeenRequest]) -> Vec<&SeenRequest> {
    requests
        .iter()
        .filter(|r| r.header("authorization").is_some())
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn credentials_never_follow_an_upload_location_to_another_port() {
    let collector = collector();
    let registry = Registry::start_with(
        RegistryOptions::default()
            .with_basic_auth(USER, PASSWORD)
            .with_public_url(&format!("http://localhost:{}", collector.port())),
    );
    let bundle = bundle("elsewhere");

    let output = import(&bundle, &registry);

    assert!(
        !output.status.success(),
        "uploads sent elsewhere cannot succeed"
    );
    let seen = collector.requests();
    assert!(
        !seen.is_empty(),
        "the registry's Location should have sent uploads to the collector: {}",
        stderr(&output)
    );
    assert!(
        credentials_seen(&seen).is_empty(),
        "credentials reached another port: {:#?}",
        credentials_seen(&seen)
    );
    assert!(!stderr(&output).contains(PASSWORD));
    assert!(!stderr(&output).contains(&basic_header()[6..]));
    assert!(registry.tags("mirror/quay.io/acme/app").is_empty());
}

#[test]
fn an_https_registry_cannot_downgrade_uploads_to_plain_http() {
    let collector = collector();
    let registry = Registry::start_with(
        RegistryOptions::default()
            .with_basic_auth(USER, PASSWORD)
            .with_tls()
            .with_public_url(&format!("http://127.0.0.1:{}", collector.port())),
    );
    let bundle = bundle("downgrade");

    let output = import(&bundle, &registry);

    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("does not downgrade"),
        "{}",
        stderr(&output)
    );
    assert!(
        collector.requests().is_empty(),
        "nothing may go over plain http: {:#?}",
        collector.requests()
    );
    assert!(registry.tags("mirror/quay.io/acme/app").is_empty());
}

/// A registry client with the test credentials, for `host` over plain http.
fn client(host: &str, token_realm_hosts: &[&str]) -> RegistryClient {
    RegistryClient::new(RegistryConfig {
        host: host.to_owned(),
        plain_http: true,
        credentials: Credentials::Basic {
            username: USER.into(),
            password: PASSWORD.into(),
        },
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        token_realm_hosts: token_realm_hosts.iter().map(|h| (*h).to_owned()).collect(),
        ..RegistryConfig::default()
    })
    .expect("a registry client")
}

fn some_digest() -> Digest {
    format!("sha256:{}", "ab".repeat(32))
        .parse()
        .expect("a digest")
}

/// A registry that redirects every blob read to `target` (a CDN, an object
/// store), as registries with external storage do.
fn redirecting_registry(target: String) -> HostileServer {
    HostileServer::start(move |request| {
        if request.path.starts_with("/v2/acme/app/blobs/") {
            Reply::status(307).header("Location", &format!("{target}{}", request.path))
        } else {
            Reply::status(200).body(Body::Bytes(b"{}".to_vec()))
        }
    })
}

#[tokio::test]
async fn a_redirect_target_cannot_choose_the_token_realm() {
    // The redirect target answers 401 naming a token realm on yet another
    // port, over plain http; the realm takes whatever comes.
    let realm = HostileServer::start(|_| {
        Reply::status(200).body(Body::Bytes(br#"{"token":"stolen"}"#.to_vec()))
    });
    let realm_url = format!("http://localhost:{}/token", realm.port());
    let cdn = HostileServer::start(move |_| {
        Reply::status(401).header(
            "WWW-Authenticate",
            &format!(r#"Bearer realm="{realm_url}",service="cdn""#),
        )
    });
    let registry = redirecting_registry(format!("http://localhost:{}", cdn.port()));

    let client = client(&registry.host(), &[]);
    let mut sink = Vec::new();
    let error = client
        .get_blob("acme/app", &some_digest(), 1024, &mut sink)
        .await
        .expect_err("a 401 from the redirect target is not the registry's challenge");

    assert!(
        error
            .to_string()
            .contains("authenticates only to the registry"),
        "{error}"
    );
    assert!(!cdn.requests().is_empty(), "the redirect was followed");
    assert!(
        credentials_seen(&cdn.requests()).is_empty(),
        "{:#?}",
        cdn.requests()
    );
    assert!(
        realm.requests().is_empty(),
        "the redirect target's realm was asked for a token: {:#?}",
        realm.requests()
    );
}

/// A registry whose every request needs a token from `realm`.
fn token_registry(realm: String) -> HostileServer {
    HostileServer::start(move |request| {
        if request.header("authorization") == Some("Bearer t0k") {
            Reply::status(404)
        } else {
            Reply::status(401).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="{realm}",service="registry""#),
            )
        }
    })
}

fn token_service() -> HostileServer {
    HostileServer::start(|_| Reply::status(200).body(Body::Bytes(br#"{"token":"t0k"}"#.to_vec())))
}

#[tokio::test]
async fn credentials_go_to_a_plain_http_token_realm_only_on_the_registrys_own_host() {
    let service = token_service();
    // Same host (127.0.0.1), other port, plain http like the registry: allowed.
    let same_host = token_registry(format!("http://127.0.0.1:{}/token", service.port()));
    let found = client(&same_host.host(), &[])
        .blob_size("acme/app", &some_digest())
        .await
        .expect("a same-host plain-http realm is used");
    assert_eq!(found, None);
    let asked = service.requests();
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert_eq!(
        asked[0].header("authorization"),
        Some(basic_header().as_str())
    );

    // Another host over plain http: refused before anything is sent there.
    let other_service = token_service();
    let other_host = token_registry(format!("http://localhost:{}/token", other_service.port()));
    let error = client(&other_host.host(), &[])
        .blob_size("acme/app", &some_digest())
        .await
        .expect_err("a plain-http realm on another host gets no credentials");
    assert!(error.to_string().contains("only over https"), "{error}");
    assert!(other_service.requests().is_empty());
}

#[tokio::test]
async fn token_realm_hosts_restricts_where_the_credentials_go() {
    let service = token_service();
    let registry = token_registry(format!("http://127.0.0.1:{}/token", service.port()));
    let error = client(&registry.host(), &["auth.internal"])
        .blob_size("acme/app", &some_digest())
        .await
        .expect_err("a realm not listed in token_realm_hosts is refused");
    assert!(error.to_string().contains("token_realm_hosts"), "{error}");
    assert!(service.requests().is_empty());

    let listed = format!("127.0.0.1:{}", service.port());
    client(&registry.host(), &[listed.as_str()])
        .blob_size("acme/app", &some_digest())
        .await
        .expect("a listed realm is used");
    assert_eq!(service.requests().len(), 1);
}

/// Peak resident memory of this test process so far (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .expect("VmHWM in /proc/self/status")
}

const MIB: u64 = 1 << 20;

/// A server answering every request with 200 and an endless chunked body
/// (1 MiB chunks, up to 4 GiB), whatever was asked.
fn endless_body() -> HostileServer {
    HostileServer::start(|_| {
        Reply::status(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .header("Docker-Content-Digest", &some_digest().to_string())
            .body(Body::Chunked {
                chunk: vec![b' '; MIB as usize],
                count: 4096,
            })
    })
}

#[tokio::test]
async fn endless_registry_answers_are_cut_off_at_their_caps() {
    let server = endless_body();
    let client = Arc::new(client(&server.host(), &[]));
    let started = Instant::now();
    let before = peak_rss();

    let manifest = client.manifest("acme/app", "1.0").await;
    assert!(
        manifest
            .as_ref()
            .is_err_and(|e| e.to_string().contains("larger than")),
        "an endless chunked manifest is refused: {:?}",
        manifest.as_ref().err()
    );
    let tags = client.tags("acme/app", 100).await;
    assert!(tags.is_err(), "an endless tag list is refused");
    let catalog = client.catalog_page(100, None).await;
    assert!(catalog.is_err(), "an endless catalog page is refused");

    let grew = peak_rss().saturating_sub(before);
    let took = started.elapsed();
    eprintln!(
        "endless bodies: peak RSS grew {} KiB, {:?}",
        grew / 1024,
        took
    );
    assert!(grew < 64 * MIB, "memory grew by {grew} bytes");
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[tokio::test]
async fn a_blob_read_stops_at_its_size() {
    let server = endless_body();
    let client = client(&server.host(), &[]);
    let mut sink = Vec::new();
    let error = client
        .get_blob("acme/app", &some_digest(), 1024, &mut sink)
        .await
        .expect_err("a blob longer than its descriptor is refused");
    assert!(error.to_string().contains("more than"), "{error}");
    assert!(sink.len() as u64 <= 1024 + MIB, "{} bytes kept", sink.len());
}

/// The upload journal's file for a blob, as `state::UploadSessions` names
/// it: `<algorithm>-<hex>-<12 hex of SHA-256(registry/repository)>.json`.
fn journal_file(
    state: &std::path::Path,
    registry: &str,
    repository: &str,
    digest: &str,
) -> std::path::PathBuf {
    use sha2::Digest as _;
    let place = hex::encode(sha2::Sha256::digest(format!("{registry}/{repository}")));
    state.join("uploads").join(format!(
        "{}-{}.json",
        digest.replace(':', "-"),
        &place[..12]
    ))
}

#[test]
fn a_journaled_upload_url_on_another_port_is_not_replayed() {
    const LAYER: u64 = 64 << 20;
    let collector = collector();
    let registry = Registry::start_with(RegistryOptions::default().with_basic_auth(USER, PASSWORD));
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("journaled")
        .image(Image::new("quay.io/acme/big:1.0").layers(&[Layer::uncompressed(7, LAYER)]))
        .build(&key);
    let layer = bundle
        .blobs()
        .iter()
        .find(|b| b.size == LAYER)
        .expect("the big layer")
        .digest
        .clone();
    let state = tempfile::tempdir().expect("state dir");
    let drop = tempfile::tempdir().expect("drop dir");
    // A record someone left in the state directory: the big layer's upload
    // "continues" on another port.
    // The index pass uploads into the staging repository.
    let repository = "mirror/airlock-staging";
    let record = journal_file(state.path(), &registry.host(), repository, &layer);
    std::fs::create_dir_all(record.parent().expect("uploads dir")).expect("mkdir uploads");
    std::fs::write(
        &record,
        serde_json::json!({
            "registry": registry.host(),
            "repository": repository,
            "digest": layer,
            "size": LAYER,
            "location": format!("http://localhost:{}/v2/{repository}/blobs/uploads/x?_state=y", collector.port()),
            "offset": 8 << 20,
        })
        .to_string(),
    )
    .expect("write the journal record");
    let password = state.path().join("password");
    std::fs::write(&password, PASSWORD).expect("write the password file");
    let setup = DaemonSetup {
        drop_dir: drop.path().to_owned(),
        state_dir: state.path().to_owned(),
        extra: vec![
            "--username".into(),
            USER.into(),
            "--password-file".into(),
            password.display().to_string(),
            "--upload-mode".into(),
            "chunked".into(),
        ],
        envs: vec![("AIRLOCK_LOG__LEVEL".into(), "trace".into())],
    };
    let daemon = Daemon::start(&setup, &registry, key.public_pem());
    bundle.copy_into(drop.path());

    daemon.wait_until("the bundle to be imported", imported);
    assert!(
        collector.requests().is_empty(),
        "the journaled URL on another port was replayed: {:#?}",
        collector.requests()
    );
    let log = daemon.log_text();
    assert!(
        log.contains("not resuming a journaled upload session"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD));
    assert!(!log.contains(&basic_header()[6..]));
    assert!(registry.blob_exists(repository, &layer));
}

/// A client whose registry may answer within `answer`, bodies moving at no
/// less than 128 KiB/s, response bodies pausing at most 1 s.
fn impatient_client(host: &str, answer: Duration) -> RegistryClient {
    RegistryClient::new(RegistryConfig {
        host: host.to_owned(),
        plain_http: true,
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        timeouts: Timeouts {
            answer,
            min_bytes_per_second: 128 << 10,
            idle: Duration::from_secs(1),
        },
        ..RegistryConfig::default()
    })
    .expect("a registry client")
}

#[tokio::test]
async fn an_upload_that_keeps_moving_is_not_cut_off_however_long_it_takes() {
    // The registry (or a proxy in front of it) takes the body at 256 KiB/s:
    // 2 MiB take 8 s, four times the time allowed for an answer.
    let server =
        HostileServer::start_reading_at(Some(256 << 10), |request| match request.method.as_str() {
            "POST" => Reply::status(202).header("Location", "/v2/acme/app/blobs/uploads/1"),
            "PATCH" => Reply::status(202)
                .header("Location", "/v2/acme/app/blobs/uploads/1")
                .header("Range", "0-2097151"),
            _ => Reply::status(500),
        });
    let client = impatient_client(&server.host(), Duration::from_secs(2));
    let mut session = client.start_upload("acme/app").await.expect("session");
    let started = Instant::now();
    client
        .send_chunk(
            "acme/app",
            &mut session,
            bytes::Bytes::from(vec![7u8; 2 << 20]),
        )
        .await
        .expect("a slow upload that keeps moving succeeds");
    let took = started.elapsed();
    eprintln!("2 MiB at 256 KiB/s with a 2 s answer timeout: {took:?}");
    assert!(took > Duration::from_secs(6), "{took:?}");
}

#[tokio::test]
async fn a_response_body_that_stops_is_abandoned_after_the_idle_timeout() {
    let server = HostileServer::start(|_| {
        Reply::status(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(Body::Trickle {
                bytes: b"{ }".to_vec(),
                every: Duration::from_secs(30),
            })
    });
    // 30 s for the whole answer, but 1 s of silence is a stall.
    let started = Instant::now();
    let error = impatient_client(&server.host(), Duration::from_secs(30))
        .manifest("acme/app", "1.0")
        .await
        .err()
        .expect("a stalled body fails");
    let took = started.elapsed();
    eprintln!("stalled body: {error} after {took:?}");
    assert!(error.to_string().contains("stalled"), "{error}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[tokio::test]
async fn a_response_trickled_byte_by_byte_is_cut_off_at_its_deadline() {
    // One byte every 200 ms never looks idle, and would take 200 s.
    let server = HostileServer::start(|_| {
        Reply::status(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(Body::Trickle {
                bytes: vec![b' '; 1000],
                every: Duration::from_millis(200),
            })
    });
    let started = Instant::now();
    let error = impatient_client(&server.host(), Duration::from_secs(2))
        .manifest("acme/app", "1.0")
        .await
        .err()
        .expect("a trickled body fails at the deadline");
    let took = started.elapsed();
    eprintln!("trickled body: {error} after {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// Whether the daemon counts an imported bundle. A scrape that fails (the
/// listener busy) counts as not yet, so the wait, not one request, decides.
fn imported(daemon: &Daemon) -> bool {
    daemon.get("/metrics").is_some_and(|(_, text)| {
        text.lines().any(|line| {
            line.starts_with(r#"airlock_bundles_total{outcome="imported"} "#)
                && !line.ends_with(" 0")
        })
    })
}
