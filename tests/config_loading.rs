//! Loading the daemon's configuration: file < environment < flags, unknown
//! and missing keys, secrets, durations, and the shipped example file. Uses
//! the library only; the environment is passed in, never set on the process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock::FailureClass;
use airlock::config::{DaemonConfig, Error, KEYS, OnReject, OnSuccess, WATCH_EXAMPLES, WatchArgs};
use airlock::plan::Target;
use airlock::push::UploadMode;
use airlock::push::registry::Credentials;
use clap::Parser;

/// `airlock watch` as the lead wires it: the flags flattened into a command.
#[derive(Parser)]
#[command(name = "watch")]
struct Watch {
    #[command(flatten)]
    args: WatchArgs,
}

fn flags(args: &[&str]) -> WatchArgs {
    Watch::try_parse_from(std::iter::once("watch").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("flags {args:?} do not parse: {e}"))
        .args
}

fn no_flags() -> WatchArgs {
    WatchArgs::default()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// A configuration file in its own temporary directory.
struct YamlFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn yaml(text: &str) -> YamlFile {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("airlock.yaml");
    std::fs::write(&path, text).expect("write config");
    YamlFile { _dir: dir, path }
}

const MINIMAL: &str = "
drop:
  dirs: [/drop]
trust:
  public_keys: [/etc/airlock/keys]
registry:
  target: harbor.local/spectro-images
";

fn load(
    file: Option<&Path>,
    vars: &[(&str, &str)],
    flags: &WatchArgs,
) -> Result<DaemonConfig, Error> {
    DaemonConfig::load_from(file, env(vars), flags)
}

fn load_ok(file: Option<&Path>, vars: &[(&str, &str)], flags: &WatchArgs) -> DaemonConfig {
    load(file, vars, flags).unwrap_or_else(|e| panic!("does not load: {}", chain(&e)))
}

fn load_err(file: Option<&Path>, vars: &[(&str, &str)], flags: &WatchArgs) -> Error {
    match load(file, vars, flags) {
        Ok(config) => panic!("loaded, but should not have: {config:?}"),
        Err(e) => {
            assert_eq!(e.class(), FailureClass::Config);
            e
        }
    }
}

/// The message and its causes, as the CLI prints them.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

#[test]
fn a_minimal_file_gets_every_default() {
    let file = yaml(MINIMAL);
    let config = load_ok(Some(&file.path), &[], &no_flags());
    assert_eq!(config.drop.dirs, [PathBuf::from("/drop")]);
    assert!(!config.drop.recursive && !config.drop.poll);
    assert_eq!(config.drop.poll_interval, Duration::from_secs(2));
    assert_eq!(config.drop.rescan_interval, Duration::from_secs(60));
    assert_eq!(config.drop.settle_time, Duration::from_secs(5));
    assert_eq!(config.registry.upload_mode, UploadMode::Chunked);
    assert_eq!(config.registry.blob_concurrency, 16);
    assert_eq!(config.registry.buffer_mib, 48);
    assert_eq!(config.imports.concurrency, 1);
    assert_eq!(config.imports.on_success, OnSuccess::Keep);
    assert_eq!(config.imports.on_reject, OnReject::Keep);
    assert_eq!(config.imports.retry_initial_backoff, Duration::from_secs(5));
    assert_eq!(config.imports.retry_max_backoff, Duration::from_secs(600));
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/airlock"));
    assert_eq!(
        config.http.listen,
        "0.0.0.0:9090".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.log.level, "info");
    assert_eq!(
        config.target().expect("target"),
        Target::Registry {
            host: "harbor.local".into(),
            prefix: "spectro-images".into()
        }
    );
    assert_eq!(
        config.public_key_paths(),
        [PathBuf::from("/etc/airlock/keys")]
    );
}

#[test]
fn the_environment_overrides_the_file_and_flags_override_both() {
    let file = yaml(&format!(
        "{MINIMAL}  plain_http: false
  blob_concurrency: 2
state_dir: /from-file
imports:
  concurrency: 2
  on_success: move
"
    ));
    let vars = [
        ("AIRLOCK_DROP__SETTLE_TIME", "20s"),
        ("AIRLOCK_DROP__DIRS", "/env/a,/env/b"),
        ("AIRLOCK_STATE_DIR", "/from-env"),
        ("AIRLOCK_IMPORTS__CONCURRENCY", "3"),
        ("AIRLOCK_REGISTRY__PLAIN_HTTP", "true"),
    ];

    let config = load_ok(Some(&file.path), &vars, &no_flags());
    assert_eq!(config.drop.settle_time, Duration::from_secs(20));
    assert_eq!(
        config.drop.dirs,
        [PathBuf::from("/env/a"), PathBuf::from("/env/b")]
    );
    assert_eq!(config.state_dir, PathBuf::from("/from-env"));
    assert_eq!(config.imports.concurrency, 3);
    assert!(config.registry.plain_http);
    // Untouched by the environment: still the file's.
    assert_eq!(config.imports.on_success, OnSuccess::Move);
    assert_eq!(config.registry.blob_concurrency, 2);
    assert_eq!(config.registry.target, "harbor.local/spectro-images");

    let flags = flags(&[
        "--settle-time",
        "30s",
        "--drop-dir",
        "/flag",
        "--state-dir",
        "/from-flag",
        "--concurrency",
        "4",
        "--on-success",
        "delete",
    ]);
    let config = load_ok(Some(&file.path), &vars, &flags);
    assert_eq!(config.drop.settle_time, Duration::from_secs(30));
    assert_eq!(config.drop.dirs, [PathBuf::from("/flag")]);
    assert_eq!(config.state_dir, PathBuf::from("/from-flag"));
    assert_eq!(config.imports.concurrency, 4);
    assert_eq!(config.imports.on_success, OnSuccess::Delete);
    // Flags not given leave the environment's and the file's values alone.
    assert!(config.registry.plain_http);
    assert_eq!(config.registry.blob_concurrency, 2);
}

#[test]
fn single_underscores_stay_inside_a_key_name() {
    let config = load_ok(
        None,
        &[
            ("AIRLOCK_DROP__DIRS", "/drop"),
            ("AIRLOCK_TRUST__PUBLIC_KEYS", "/keys/a.pem,/keys/b.pem"),
            ("AIRLOCK_REGISTRY__TARGET", "oci:/srv/mirror"),
            ("AIRLOCK_STATE_DIR", "/data/state"),
            ("AIRLOCK_DROP__SETTLE_TIME", "2s"),
            ("AIRLOCK_REGISTRY__INSECURE_SKIP_TLS_VERIFY", "true"),
            ("AIRLOCK_HTTP__LISTEN", "127.0.0.1:9191"),
            ("AIRLOCK_LOG__FORMAT", "json"),
        ],
        &no_flags(),
    );
    assert_eq!(config.state_dir, PathBuf::from("/data/state"));
    assert_eq!(config.drop.settle_time, Duration::from_secs(2));
    assert_eq!(config.public_key_paths().len(), 2);
    assert!(config.registry.insecure_skip_tls_verify);
    assert_eq!(
        config.http.listen,
        "127.0.0.1:9191".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.log.format, airlock::config::LogFormat::Json);
    assert_eq!(
        config.target().expect("target"),
        Target::Layout {
            dir: PathBuf::from("/srv/mirror")
        }
    );
}

#[test]
fn scalar_values_from_the_environment_are_not_reinterpreted_as_numbers() {
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(secret.path(), "pw\n").expect("write");
    let config = load_ok(
        None,
        &[
            ("AIRLOCK_DROP__DIRS", "/drop"),
            ("AIRLOCK_TRUST__PUBLIC_KEYS", "/keys"),
            ("AIRLOCK_REGISTRY__TARGET", "harbor.local"),
            ("AIRLOCK_REGISTRY__USERNAME", "0042"),
            (
                "AIRLOCK_REGISTRY__PASSWORD_FILE",
                &secret.path().display().to_string(),
            ),
        ],
        &no_flags(),
    );
    assert_eq!(config.registry.username.as_deref(), Some("0042"));
}

#[test]
fn an_unknown_key_in_the_file_is_named_with_its_path_and_the_file() {
    let file = yaml(&format!("{MINIMAL}\n").replace("drop:\n", "drop:\n  setle_time: 2s\n"));
    let error = load_err(Some(&file.path), &[], &no_flags());
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "unknown key \"drop.setle_time\" in {}",
            file.path.display()
        )),
        "{message}"
    );
    assert!(
        message.contains("did you mean \"drop.settle_time\"?"),
        "{message}"
    );

    let file = yaml(&format!("{MINIMAL}colour: blue\n"));
    let message = load_err(Some(&file.path), &[], &no_flags()).to_string();
    assert!(
        message.starts_with("unknown key \"colour\" in "),
        "{message}"
    );
}

#[test]
fn an_unknown_environment_variable_is_named() {
    let file = yaml(MINIMAL);
    let error = load_err(Some(&file.path), &[("AIRLOCK_BOGUS", "1")], &no_flags());
    assert_eq!(
        error.to_string(),
        "unknown key \"bogus\" in environment variable AIRLOCK_BOGUS"
    );

    let error = load_err(
        Some(&file.path),
        &[("AIRLOCK_DROP__SETLE_TIME", "2s")],
        &no_flags(),
    );
    assert_eq!(
        error.to_string(),
        "unknown key \"drop.setle_time\" in environment variable AIRLOCK_DROP__SETLE_TIME; \
         did you mean AIRLOCK_DROP__SETTLE_TIME?"
    );

    // One underscore between levels is a different (unknown) key.
    let error = load_err(
        Some(&file.path),
        &[("AIRLOCK_DROP_SETTLE_TIME", "2s")],
        &no_flags(),
    );
    assert!(
        error.to_string().contains("AIRLOCK_DROP_SETTLE_TIME"),
        "{error}"
    );
}

#[test]
fn unrelated_and_kubernetes_variables_are_ignored() {
    let file = yaml(MINIMAL);
    load_ok(
        Some(&file.path),
        &[
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("AIRLOCK_SERVICE_HOST", "10.96.0.12"),
            ("AIRLOCK_SERVICE_PORT", "9090"),
            ("AIRLOCK_PORT", "tcp://10.96.0.12:9090"),
            ("AIRLOCK_PORT_9090_TCP_PROTO", "tcp"),
        ],
        &no_flags(),
    );
}

#[test]
fn a_missing_required_key_says_how_to_set_it() {
    let error = load_err(None, &[], &no_flags());
    assert_eq!(
        error.to_string(),
        "drop.dirs is required: set drop.dirs in the configuration file, \
         AIRLOCK_DROP__DIRS in the environment, or --drop-dir"
    );

    let error = load_err(None, &[], &flags(&["--drop-dir", "/drop"]));
    let message = error.to_string();
    assert!(message.contains("trust.public_keys"), "{message}");
    assert!(message.contains("AIRLOCK_TRUST__PUBLIC_KEYS"), "{message}");
    assert!(message.contains("--public-key"), "{message}");

    let error = load_err(
        None,
        &[],
        &flags(&["--drop-dir", "/drop", "--public-key", "k.pem"]),
    );
    let message = error.to_string();
    assert!(message.contains("registry.target"), "{message}");
    assert!(message.contains("AIRLOCK_REGISTRY__TARGET"), "{message}");
    assert!(message.contains("--registry"), "{message}");
}

#[test]
fn keyless_signers_alone_are_enough_trust_and_each_entry_needs_all_three_keys() {
    let file = yaml(
        "
drop:
  dirs: [/drop]
trust:
  keyless:
    - trusted_root: /etc/airlock/sigstore/trusted_root.json
      identity: release@example.com
      issuer: https://accounts.example.com
registry:
  target: harbor.local/spectro-images
",
    );
    let config = load_ok(Some(&file.path), &[], &no_flags());
    assert!(config.trust.public_keys.is_empty());
    assert_eq!(config.trust.keyless.len(), 1);
    assert_eq!(config.trust.keyless[0].identity, "release@example.com");

    let file = yaml(
        "
drop:
  dirs: [/drop]
trust:
  keyless:
    - trusted_root: /etc/airlock/sigstore/trusted_root.json
      identity: release@example.com
      issuer: \"\"
registry:
  target: harbor.local/spectro-images
",
    );
    let message = chain(&load_err(Some(&file.path), &[], &no_flags()));
    assert!(
        message.contains("trust.keyless") && message.contains("entry 1 needs"),
        "{message}"
    );
}

#[test]
fn the_flags_only_example_needs_no_configuration_file() {
    let line = WATCH_EXAMPLES
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("airlock watch --drop-dir"))
        .expect("the flags-only example");
    assert_eq!(
        line,
        "airlock watch --drop-dir d --public-key k.pem --registry 127.0.0.1:5000/mirror --plain-http --state-dir s"
    );
    let args: Vec<&str> = line.split_whitespace().skip(2).collect();
    let flags = flags(&args);
    assert!(flags.config.is_none());
    let config = load_ok(flags.config.as_deref(), &[], &flags);
    assert_eq!(config.drop.dirs, [PathBuf::from("d")]);
    assert_eq!(config.public_key_paths(), [PathBuf::from("k.pem")]);
    assert_eq!(config.state_dir, PathBuf::from("s"));
    let registry = config.registry_config().expect("registry config");
    assert_eq!(registry.host, "127.0.0.1:5000");
    assert!(registry.plain_http);
}

#[test]
fn every_example_in_the_help_parses() {
    let examples: Vec<&str> = WATCH_EXAMPLES
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("airlock watch"))
        .collect();
    assert!(examples.contains(&"airlock watch --config /etc/airlock/airlock.yaml"));
    for line in examples {
        let args: Vec<&str> = line.split_whitespace().skip(2).collect();
        flags(&args);
    }
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/airlock.yaml")
}

#[test]
fn the_example_configuration_loads_cleanly_and_sets_every_key() {
    let path = example_path();
    let config = load_ok(Some(&path), &[], &no_flags());
    assert!(!config.drop.dirs.is_empty());
    config.target().expect("target");
    let text = std::fs::read_to_string(&path).expect("read example");
    for key in KEYS {
        let leaf = key.path.rsplit('.').next().unwrap_or(key.path);
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{leaf}:"))),
            "config/airlock.yaml does not show {}",
            key.path
        );
    }
}

#[test]
fn the_operations_guide_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md");
    let text = std::fs::read_to_string(path).expect("read docs/OPERATIONS.md");
    for key in KEYS {
        assert!(
            text.contains(&format!("`{}`", key.path)),
            "{} is not documented",
            key.path
        );
        assert!(
            text.contains(&key.env_var()),
            "{} is not documented",
            key.env_var()
        );
        if let Some(flag) = key.flag {
            assert!(text.contains(flag), "{flag} is not documented");
        }
    }
}

#[test]
fn an_inline_password_is_refused_with_a_pointer_to_password_file() {
    let file = yaml(&format!(
        "{MINIMAL}  username: robot\n  password: hunter2\n"
    ));
    let message = load_err(Some(&file.path), &[], &no_flags()).to_string();
    assert!(message.starts_with("registry.password in "), "{message}");
    assert!(message.contains("registry.password_file"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");

    let file = yaml(MINIMAL);
    let message = load_err(
        Some(&file.path),
        &[("AIRLOCK_REGISTRY__PASSWORD", "hunter2")],
        &no_flags(),
    )
    .to_string();
    assert!(
        message.starts_with("registry.password in environment variable AIRLOCK_REGISTRY__PASSWORD"),
        "{message}"
    );
    assert!(message.contains("--password-file"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn the_password_is_read_from_password_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("password");
    std::fs::write(&secret, "s3cret\n").expect("write");
    let file = yaml(&format!(
        "{MINIMAL}  username: robot\n  password_file: {}\n",
        secret.display()
    ));
    let config = load_ok(Some(&file.path), &[], &no_flags());
    let registry = config.registry_config().expect("registry config");
    match &registry.credentials {
        Credentials::Basic { username, password } => {
            assert_eq!(username, "robot");
            assert_eq!(password, "s3cret");
        }
        Credentials::Anonymous => panic!("expected credentials"),
    }
    let shown = format!("{config:?} {registry:?}");
    assert!(!shown.contains("s3cret"), "{shown}");

    std::fs::write(&secret, "\n").expect("write");
    let error = config.registry_config().expect_err("empty password file");
    assert!(matches!(error, Error::EmptyPasswordFile { .. }), "{error}");

    std::fs::remove_file(&secret).expect("remove");
    let error = config.registry_config().expect_err("missing password file");
    assert!(matches!(error, Error::PasswordFile { .. }), "{error}");
}

#[test]
fn credentials_come_from_an_auth_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let auth = dir.path().join("config.json");
    // robot:s3cret
    std::fs::write(
        &auth,
        r#"{"auths":{"harbor.local":{"auth":"cm9ib3Q6czNjcmV0"}}}"#,
    )
    .expect("write");
    let file = yaml(MINIMAL);
    let flags = flags(&["--auth-file", &auth.display().to_string()]);
    let config = load_ok(Some(&file.path), &[], &flags);
    match config
        .registry_config()
        .expect("registry config")
        .credentials
    {
        Credentials::Basic { username, .. } => assert_eq!(username, "robot"),
        Credentials::Anonymous => panic!("expected credentials"),
    }

    std::fs::remove_file(&auth).expect("remove");
    let error = config.registry_config().expect_err("missing auth file");
    assert!(matches!(error, Error::AuthFile { .. }), "{error}");
}

#[test]
fn username_needs_password_file_and_excludes_auth_file() {
    let file = yaml(MINIMAL);
    let message = load_err(Some(&file.path), &[], &flags(&["--username", "robot"])).to_string();
    assert!(message.contains("registry.password_file"), "{message}");

    let message = load_err(
        Some(&file.path),
        &[("AIRLOCK_REGISTRY__AUTH_FILE", "/auth.json")],
        &flags(&["--username", "robot", "--password-file", "/pw"]),
    )
    .to_string();
    assert!(
        message.contains("conflicts with registry.auth_file"),
        "{message}"
    );

    let message = load_err(Some(&file.path), &[], &flags(&["--password-file", "/pw"])).to_string();
    assert!(message.contains("needs registry.username"), "{message}");
}

#[test]
fn durations_are_humantime_strings() {
    let file = yaml(&format!("{MINIMAL}\n").replace(
        "drop:\n",
        "drop:\n  settle_time: 500ms\n  poll_interval: 1m\n  rescan_interval: 1h 30m\n",
    ));
    let config = load_ok(
        Some(&file.path),
        &[("AIRLOCK_IMPORTS__RETRY_MAX_BACKOFF", "2h")],
        &flags(&["--poll-interval", "1500ms"]),
    );
    assert_eq!(config.drop.settle_time, Duration::from_millis(500));
    assert_eq!(config.drop.poll_interval, Duration::from_millis(1500));
    assert_eq!(config.drop.rescan_interval, Duration::from_secs(5400));
    assert_eq!(config.imports.retry_max_backoff, Duration::from_secs(7200));
}

#[test]
fn a_bad_value_names_the_key_and_where_it_came_from() {
    let file = yaml(&format!("{MINIMAL}\n").replace("drop:\n", "drop:\n  settle_time: soon\n"));
    let error = load_err(Some(&file.path), &[], &no_flags());
    assert_eq!(
        error.to_string(),
        format!(
            "invalid value for drop.settle_time in {}",
            file.path.display()
        )
    );
    assert!(chain(&error).contains("soon"), "{}", chain(&error));

    let file = yaml(MINIMAL);
    let error = load_err(
        Some(&file.path),
        &[("AIRLOCK_IMPORTS__CONCURRENCY", "two")],
        &no_flags(),
    );
    assert_eq!(
        error.to_string(),
        "invalid value for imports.concurrency in environment variable AIRLOCK_IMPORTS__CONCURRENCY"
    );

    let error = load_err(
        Some(&file.path),
        &[("AIRLOCK_HTTP__LISTEN", "localhost:9090")],
        &no_flags(),
    );
    assert!(error.to_string().contains("http.listen"), "{error}");

    let error = load_err(
        Some(&file.path),
        &[("AIRLOCK_IMPORTS__ON_SUCCESS", "moved")],
        &no_flags(),
    );
    assert!(
        chain(&error).ends_with(
            "imports.on_success in environment variable \
             AIRLOCK_IMPORTS__ON_SUCCESS: \"moved\" is not one of keep, move, delete"
        ),
        "{}",
        chain(&error)
    );
}

#[test]
fn values_that_cannot_work_are_refused_at_load() {
    let file = yaml(MINIMAL);
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("AIRLOCK_DROP__SETTLE_TIME", "0s")],
            "invalid drop.settle_time",
        ),
        (
            &[("AIRLOCK_IMPORTS__CONCURRENCY", "0")],
            "invalid imports.concurrency",
        ),
        (
            &[("AIRLOCK_REGISTRY__BLOB_CONCURRENCY", "0")],
            "invalid registry.blob_concurrency",
        ),
        (
            &[("AIRLOCK_REGISTRY__TARGET", "https://harbor.local")],
            "invalid registry.target",
        ),
        (&[("AIRLOCK_DROP__DIRS", "/a,")], "invalid drop.dirs"),
        (
            &[("AIRLOCK_IMPORTS__RETRY_MAX_BACKOFF", "1s")],
            "invalid imports.retry_max_backoff",
        ),
        (
            &[("AIRLOCK_LOG__LEVEL", "airlock=loud")],
            "invalid log.level",
        ),
        (
            &[("AIRLOCK_READ__MAX_DOCUMENT_BYTES", "100")],
            "invalid read.max_document_bytes",
        ),
        (
            &[
                ("AIRLOCK_READ__MAX_DOCUMENT_BYTES", "1048576"),
                ("AIRLOCK_READ__MAX_DOCUMENTS_TOTAL_BYTES", "65536"),
            ],
            "invalid read.max_documents_total_bytes",
        ),
    ];
    for (vars, expected) in cases {
        let error = load_err(Some(&file.path), vars, &no_flags());
        assert!(error.to_string().starts_with(expected), "{vars:?}: {error}");
    }
    // clap refuses a zero before loading starts.
    assert!(Watch::try_parse_from(["watch", "--concurrency", "0"]).is_err());
}

#[test]
fn a_missing_or_malformed_file_is_named() {
    let error = load_err(
        Some(Path::new("/nonexistent/airlock.yaml")),
        &[],
        &no_flags(),
    );
    assert_eq!(
        error.to_string(),
        "cannot read configuration file /nonexistent/airlock.yaml"
    );
    let file = yaml("drop: [unclosed\n");
    let error = load_err(Some(&file.path), &[], &no_flags());
    assert!(
        error
            .to_string()
            .starts_with("cannot parse configuration file"),
        "{error}"
    );
}

#[test]
fn read_limits_follow_the_read_section() {
    let defaults = load_ok(Some(&yaml(MINIMAL).path), &[], &no_flags()).read_limits();
    assert_eq!(defaults.max_document_bytes, 4 << 20);
    assert_eq!(defaults.max_documents_total_bytes, 256 << 20);
    let file = yaml(&format!(
        "{MINIMAL}read:\n  max_document_bytes: 65536\n  max_documents_total_bytes: 1048576\n"
    ));
    let limits = load_ok(Some(&file.path), &[], &no_flags()).read_limits();
    assert_eq!(limits.max_document_bytes, 65536);
    assert_eq!(limits.max_documents_total_bytes, 1 << 20);
    let limits = load_ok(
        Some(&file.path),
        &[("AIRLOCK_READ__MAX_DOCUMENTS_TOTAL_BYTES", "2097152")],
        &no_flags(),
    )
    .read_limits();
    assert_eq!(limits.max_documents_total_bytes, 2 << 20);
}

#[test]
fn push_options_follow_the_registry_section() {
    let file = yaml(MINIMAL);
    let config = load_ok(
        Some(&file.path),
        &[("AIRLOCK_REGISTRY__UPLOAD_MODE", "monolithic")],
        &flags(&["--blob-concurrency", "8"]),
    );
    let options = config.push_options();
    assert_eq!(options.concurrency, 8);
    assert_eq!(options.upload_mode, UploadMode::Monolithic);
}
