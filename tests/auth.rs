//! Authentication against the real registry (Debian's `docker-registry`) in
//! its own modes: htpasswd basic auth, and token auth (`auth: token:`) with
//! a token service of the tests' that issues JWTs the registry trusts,
//! scoped per repository and expiring when the test says. A wrong password
//! is refused once and not tried again and again, and no credential (nor
//! token) shows up in anything airlock writes or serves.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use support::airlock;
use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer};
use support::daemon::{Daemon, Site};
use support::keys::{KeyKind, TestKey};
use support::process::Background;
use support::proxy::{Proxy, ProxyRules, Release};
use support::registry::{Registry, RegistryOptions};
use support::skopeo;
use support::token::TokenAccount;

const PREFIX: &str = "mirror";
const USER: &str = "robot";
const PASSWORD: &str = "t0ken-service-s3cret";

/// A registry in token mode whose account may use repositories under
/// `prefixes`, tokens living `lifetime`.
fn token_registry(prefixes: &[&str], lifetime: Duration) -> Registry {
    Registry::start_with(
        RegistryOptions::default()
            .with_token_auth(vec![TokenAccount::new(USER, PASSWORD, prefixes)], lifetime),
    )
}

/// A Docker `config.json` in `dir` holding `user:password` for `host`.
fn auth_file(dir: &Path, host: &str, user: &str, password: &str) -> PathBuf {
    let path = dir.join("config.json");
    let encoded = support::base64(format!("{user}:{password}").as_bytes());
    std::fs::write(
        &path,
        format!(r#"{{"auths":{{"{host}":{{"auth":"{encoded}"}}}}}}"#),
    )
    .expect("write config.json");
    path
}

/// `airlock import` of `bundle` into `host` over plain HTTP with the
/// credentials of `auth`, logging everything.
fn import_command(bundle: &BuiltBundle, host: &str, auth: &Path) -> std::process::Command {
    let mut command = airlock();
    command
        .args(["--log", "trace", "import"])
        .arg(bundle.zst())
        .arg("--public-key")
        .arg(bundle.public_key_pem())
        .args(["--registry", &format!("{host}/{PREFIX}"), "--plain-http"])
        .args(["--output", "json"])
        .arg("--auth-file")
        .arg(auth);
    command
}

fn import(bundle: &BuiltBundle, host: &str, auth: &Path) -> Output {
    import_command(bundle, host, auth)
        .output()
        .expect("run airlock import")
}

fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_landed(bundle: &BuiltBundle, registry: &Registry) {
    for image in bundle.images() {
        let reference = format!("{PREFIX}/{}", image.full_ref);
        assert_eq!(
            skopeo::inspect_raw(registry, &reference),
            image.manifest,
            "{reference} differs from the bundle"
        );
    }
}

/// Requests airlock (not the tests' curl or skopeo) made, as logged by the
/// registry.
fn airlock_requests(registry: &Registry) -> Vec<support::registry::LoggedRequest> {
    registry
        .settled_requests()
        .into_iter()
        .filter(|r| r.user_agent.starts_with("airlock/"))
        .collect()
}

#[test]
fn token_auth_imports_with_tokens_scoped_to_each_repository() {
    let key = TestKey::generate(KeyKind::EcP256);
    let shared = Layer::gzip_tar(11, 64 << 10);
    let bundle = BundleBuilder::new("token")
        .image(Image::new("quay.io/acme/app:1.0").layers(std::slice::from_ref(&shared)))
        .image(Image::new("quay.io/acme/web:2.0").layers(&[shared, Layer::gzip_tar(12, 8 << 10)]))
        .build(&key);
    let registry = token_registry(&["mirror/"], Duration::from_secs(300));
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = auth_file(dir.path(), &registry.host(), USER, PASSWORD);

    let output = import(&bundle, &registry.host(), &auth);

    assert!(output.status.success(), "{}", printed(&output));
    assert_landed(&bundle, &registry);
    let requests = registry.token_service().requests();
    assert!(!requests.is_empty(), "no token was asked for");
    let repositories: Vec<String> = bundle
        .images()
        .iter()
        .map(|i| format!("{PREFIX}/{}", i.repository()))
        .collect();
    for request in &requests {
        assert!(request.authenticated, "{request:?}");
        assert_eq!(request.user.as_deref(), Some(USER));
        for scope in &request.scopes {
            let named = repositories
                .iter()
                .chain(std::iter::once(&format!("{PREFIX}/airlock-staging")))
                .any(|repo| scope.starts_with(&format!("repository:{repo}:")));
            assert!(
                named,
                "a token was asked for {scope}, which is neither a repository of the bundle nor the staging repository"
            );
        }
    }
    for repository in &repositories {
        let push = format!("repository:{repository}:pull,push");
        assert!(
            requests.iter().any(|r| r.scopes.contains(&push)),
            "no token for {push}: {requests:#?}"
        );
    }
}

#[test]
fn a_repository_the_token_does_not_grant_is_refused_by_name() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("scoped")
        .image(Image::new("quay.io/acme/app:1.0"))
        .image(Image::new("quay.io/other/tool:1.0"))
        .build(&key);
    let registry = token_registry(&["mirror/quay.io/acme/"], Duration::from_secs(300));
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = auth_file(dir.path(), &registry.host(), USER, PASSWORD);

    let output = import(&bundle, &registry.host(), &auth);

    assert_eq!(output.status.code(), Some(4), "{}", printed(&output));
    let printed = printed(&output);
    assert!(
        printed.contains("does not grant repository:mirror/quay.io/other/tool:pull,push"),
        "the error does not name the scope that was refused:\n{printed}"
    );
    let forbidden: Vec<String> = airlock_requests(&registry)
        .into_iter()
        .filter(|r| r.path.contains("/quay.io/other/") && r.status / 100 == 2)
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    assert!(
        forbidden.is_empty(),
        "the registry served the forbidden repository: {forbidden:?}"
    );
    assert!(registry.tags("mirror/quay.io/other/tool").is_empty());
}

#[test]
fn a_token_that_expires_mid_upload_is_fetched_again_and_the_import_completes() {
    const LAYER: u64 = 24 << 20;
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("expiry")
        .image(Image::new("quay.io/acme/big:1.0").layers(&[Layer::uncompressed(21, LAYER)]))
        .build(&key);
    // Tokens live 2 s. The layer goes into the staging repository as the
    // import's probe: its first 8 MiB in a PATCH of their own, then the
    // other 16 MiB in one streamed PATCH, which the proxy holds 4 s before
    // it reaches the registry. Its 401 is answered with a new token and the
    // 16 MiB again, from the chunks the import still holds.
    let registry = token_registry(&["mirror/"], Duration::from_secs(2));
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            hold_patch: Some(2),
            ..ProxyRules::default()
        },
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = auth_file(dir.path(), &proxy.host(), USER, PASSWORD);

    let mut running = Background::spawn(&mut import_command(&bundle, &proxy.host(), &auth));
    assert!(
        proxy.wait_for_hold(Duration::from_secs(60)),
        "the layer's streamed PATCH never came: {}",
        running.stderr()
    );
    let issued = Instant::now();
    // Bounded: the token outlives its 2 s within this wait.
    std::thread::sleep(Duration::from_secs(4));
    proxy.release(Release::Forward);
    let finished = running.wait(Duration::from_secs(120));

    assert!(finished.success(), "{}", finished.stderr);
    assert_landed(&bundle, &registry);
    eprintln!(
        "the held chunk went on {:?} after it was held",
        issued.elapsed()
    );
    let repository = "repository:mirror/quay.io/acme/big:pull,push";
    let tokens = registry
        .token_service()
        .requests()
        .iter()
        .filter(|r| r.scopes.iter().any(|s| s == repository))
        .count();
    assert!(
        tokens >= 2,
        "the expired token was not replaced: {tokens} token(s) for {repository}"
    );
    let requests = airlock_requests(&registry);
    let expired = requests
        .iter()
        .position(|r| r.method == "PATCH" && r.status == 401)
        .expect("the held chunk should have met the registry with an expired token");
    let resent = requests[expired + 1..]
        .iter()
        .find(|r| r.method == "PATCH" && r.status == 202)
        .unwrap_or_else(|| panic!("the PATCH was not sent again with a new token: {requests:#?}"));
    assert_eq!(
        resent.upload_state().map(|state| state.offset),
        Some(8 << 20),
        "the streamed rest goes on where the probe's chunk ended: {requests:#?}"
    );
}

#[test]
fn a_wrong_password_at_the_token_service_fails_at_once_and_pushes_nothing() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("wrong")
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    let registry = token_registry(&["mirror/"], Duration::from_secs(300));
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = auth_file(dir.path(), &registry.host(), USER, "not-the-password");

    let started = Instant::now();
    let output = import(&bundle, &registry.host(), &auth);

    assert_eq!(output.status.code(), Some(4), "{}", printed(&output));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a refused password was retried: {:?}",
        started.elapsed()
    );
    let printed = printed(&output);
    assert!(
        printed.contains("refused access with these credentials"),
        "{printed}"
    );
    assert!(!printed.contains("not-the-password"));
    let refused = registry.token_service().requests();
    assert!(refused.iter().all(|r| !r.authenticated), "{refused:#?}");
    assert!(registry.settled_writes_since(0).is_empty());
}

/// How many times the registry answered airlock 401.
fn refusals(registry: &Registry) -> usize {
    airlock_requests(registry)
        .iter()
        .filter(|r| r.status == 401)
        .count()
}

#[test]
fn the_daemon_tries_a_wrong_password_once_and_again_only_when_it_changes() {
    let registry =
        Registry::start_with(RegistryOptions::default().with_basic_auth(USER, "right-password"));
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("wrong-then-right")
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    let site = Site::new();
    let secrets = tempfile::tempdir().expect("tempdir");
    let password = secrets.path().join("password");
    std::fs::write(&password, "wrong-password\n").expect("write the password");
    let mut setup = site.setup(&["--username", USER]);
    setup
        .extra
        .extend(["--password-file".to_owned(), password.display().to_string()]);
    setup.envs.extend([
        // Retries would come fast, were they made.
        (
            "AIRLOCK_IMPORTS__RETRY_INITIAL_BACKOFF".into(),
            "100ms".into(),
        ),
        ("AIRLOCK_IMPORTS__RETRY_MAX_BACKOFF".into(), "200ms".into()),
    ]);
    let daemon = Daemon::start(&setup, &registry, key.public_pem());
    bundle.copy_into(site.drop.path());
    daemon.wait_until("the refused attempt", |d| {
        d.metric(r#"airlock_bundles_total{outcome="failed"}"#) >= 1.0
    });
    let after_first = refusals(&registry);
    assert!(after_first >= 1);

    // Fifty backoffs' worth of time: no further login may be tried.
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        refusals(&registry),
        after_first,
        "the refused password was tried again"
    );
    let records = daemon.imports();
    let record = &records[0];
    assert_eq!(record["status"], "retrying", "{records:#}");
    assert!(
        record["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("refused access with these credentials")),
        "{records:#}"
    );
    assert!(
        daemon
            .log_text()
            .contains("no import is tried with them again"),
        "{}",
        daemon.log_text()
    );

    let next = secrets.path().join("password.next");
    std::fs::write(&next, "right-password\n").expect("write the new password");
    std::fs::rename(&next, &password).expect("rotate the password");
    daemon.wait_until("the import with the new password", |d| {
        d.metric(r#"airlock_bundles_total{outcome="imported"}"#) >= 1.0
    });
    assert_landed(&bundle, &registry);
}

/// Every file under `dir`, recursively, as `(path, text)`.
fn files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    // Bounded: the state and drop folders of one test hold a few dozen files.
    for _ in 0..10_000 {
        let Some(next) = pending.pop() else { break };
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                found.push((path, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    found
}

#[test]
fn no_password_or_token_appears_in_logs_errors_metrics_api_state_or_reason_files() {
    let key = TestKey::generate(KeyKind::EcP256);
    let good = BundleBuilder::new("good")
        .image(Image::new("quay.io/acme/app:1.0"))
        .build(&key);
    let forbidden = BundleBuilder::new("forbidden")
        .image(Image::new("quay.io/other/tool:1.0"))
        .build(&key);
    let tampered = BundleBuilder::new("tampered")
        .image(Image::new("quay.io/acme/tampered:1.0"))
        .build(&key);
    tampered.tamper();
    let registry = token_registry(&["mirror/quay.io/acme/"], Duration::from_secs(300));
    let site = Site::new();
    let secrets = tempfile::tempdir().expect("tempdir");
    let password = secrets.path().join("password");
    std::fs::write(&password, "an-old-wrong-password\n").expect("write the password");
    let mut setup = site.setup(&["--username", USER]);
    setup
        .extra
        .extend(["--password-file".to_owned(), password.display().to_string()]);
    setup
        .envs
        .push(("AIRLOCK_LOG__LEVEL".into(), "trace".into()));
    let daemon = Daemon::start(&setup, &registry, key.public_pem());

    // A refused password first, then the right one; a bundle the account
    // may not push, one that lands, one that is rejected.
    good.copy_into(site.drop.path());
    daemon.wait_until("the refused password", |d| {
        d.metric(r#"airlock_bundles_total{outcome="failed"}"#) >= 1.0
    });
    let next = secrets.path().join("password.next");
    std::fs::write(&next, format!("{PASSWORD}\n")).expect("write the new password");
    std::fs::rename(&next, &password).expect("rotate the password");
    forbidden.copy_into(site.drop.path());
    tampered.copy_into(site.drop.path());
    daemon.wait_until("one import, one rejection, one refusal of scope", |d| {
        d.metric(r#"airlock_bundles_total{outcome="imported"}"#) >= 1.0
            && d.metric(r#"airlock_bundles_total{outcome="rejected"}"#) >= 1.0
            && d.imports().as_array().is_some_and(|records| {
                records.iter().any(|r| {
                    r["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("does not grant"))
                })
            })
    });
    assert_landed(&good, &registry);

    let cli_dir = tempfile::tempdir().expect("tempdir");
    let auth = auth_file(cli_dir.path(), &registry.host(), USER, PASSWORD);
    let cli = import(&forbidden, &registry.host(), &auth);
    assert_eq!(cli.status.code(), Some(4), "{}", printed(&cli));

    let mut places: Vec<(String, String)> = vec![
        ("the daemon's log".into(), daemon.log_text()),
        ("airlock import's output".into(), printed(&cli)),
    ];
    let records = daemon.imports();
    let mut paths: Vec<String> = [
        "/metrics",
        "/healthz",
        "/readyz",
        "/api/v1/imports",
        "/api/v1/packs",
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .collect();
    for record in records.as_array().expect("a list of records") {
        let id = record["id"].as_str().expect("a record id");
        paths.push(format!("/api/v1/imports/{id}"));
    }
    for path in paths {
        let (_, body) = daemon.get(&path).unwrap_or_else(|| panic!("GET {path}"));
        places.push((format!("GET {path}"), body));
    }
    for dir in [site.state.path(), site.drop.path()] {
        for (path, text) in files_under(dir) {
            places.push((path.display().to_string(), text));
        }
    }
    assert!(
        places
            .iter()
            .any(|(place, _)| place.ends_with(".error.json")),
        "no reason file was written: {:?}",
        places.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );

    let tokens: Vec<String> = registry
        .token_service()
        .requests()
        .into_iter()
        .filter_map(|r| r.token)
        .collect();
    assert!(!tokens.is_empty(), "no token was issued");
    let mut secrets: Vec<String> = vec![
        PASSWORD.to_owned(),
        "an-old-wrong-password".to_owned(),
        support::base64(format!("{USER}:{PASSWORD}").as_bytes()),
        support::base64(format!("{USER}:an-old-wrong-password").as_bytes()),
    ];
    // A token's signature alone would let it be used; look for each.
    secrets.extend(
        tokens
            .iter()
            .filter_map(|t| t.rsplit('.').next().map(str::to_owned)),
    );
    for (place, text) in &places {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a credential ({}…) appears in {place}",
                &secret[..6]
            );
        }
    }
    eprintln!(
        "{} places searched for {} secrets ({} tokens issued)",
        places.len(),
        secrets.len(),
        tokens.len()
    );
}
