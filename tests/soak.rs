//! A soak of `airlock watch` against the real registry: many bundles, some
//! dropped again under other names, some with bad signatures, some copied
//! slowly, through a `kill -9`, a registry outage and a SIGTERM restart.
//! It ends with every good bundle imported exactly once (the registry's
//! access log), every bad one rejected once, no finished file left in the
//! drop folder, and the idle daemon using under 1% of a core.
//!
//! `AIRLOCK_SOAK_FULL=1` runs 500 bundles; by default 40, to keep CI short.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer, Naming};
use support::daemon::{Daemon, DaemonSetup};
use support::keys::{KeyKind, TestKey};
use support::registry::Registry;

/// Bundles in the default (CI) run and with `AIRLOCK_SOAK_FULL=1`.
const CI_BUNDLES: usize = 40;
const FULL_BUNDLES: usize = 500;
/// How long the whole soak may take before it fails.
const SOAK_LIMIT: Duration = Duration::from_secs(20 * 60);

/// What a dropped pair is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A correctly signed bundle, copied at once.
    Good,
    /// A correctly signed bundle, copied in pieces with pauses.
    Slow,
    /// The bytes of an earlier good bundle, under another name.
    Duplicate(usize),
    /// Signed with a key the daemon does not trust.
    BadSignature,
}

fn kind_of(n: usize) -> Kind {
    match n % 10 {
        3 if n > 10 => Kind::Duplicate(n - 7),
        5 => Kind::BadSignature,
        8 => Kind::Slow,
        _ => Kind::Good,
    }
}

fn reference(n: usize) -> String {
    format!("quay.io/soak/app-{n}:1.0")
}

struct Soak {
    drop: tempfile::TempDir,
    key: TestKey,
    stranger: TestKey,
    bundles: HashMap<usize, BuiltBundle>,
}

impl Soak {
    fn bundle(&mut self, n: usize) -> &BuiltBundle {
        let key = &self.key;
        self.bundles.entry(n).or_insert_with(|| {
            BundleBuilder::new(&format!("b{n}"))
                .image(
                    Image::new(&reference(n))
                        .naming(Naming::ContainerdName)
                        .layers(&[Layer::uncompressed(10_000 + n as u64, 64 << 10)]),
                )
                .build(key)
        })
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.drop.path().join(name)
    }

    /// Drops pair `n` as its kind says.
    fn drop_pair(&mut self, n: usize) {
        let name = format!("b{n}");
        match kind_of(n) {
            Kind::Good => {
                let bundle = self.bundle(n);
                let (zst, sig) = (bundle.zst().to_owned(), bundle.sig().to_owned());
                copy_pair(&zst, &sig, self.drop.path(), &name);
            }
            Kind::Duplicate(of) => {
                let bundle = self.bundle(of);
                let (zst, sig) = (bundle.zst().to_owned(), bundle.sig().to_owned());
                copy_pair(&zst, &sig, self.drop.path(), &name);
            }
            Kind::BadSignature => {
                let zst = self.bundle(n).zst().to_owned();
                let signature = self.path(&format!("{name}.sig.bin"));
                self.stranger.sign(&zst, &signature);
                copy_atomically(&zst, &self.path(&format!("{name}.zst")));
            }
            Kind::Slow => {
                let bundle = self.bundle(n);
                let (zst, sig) = (bundle.zst().to_owned(), bundle.sig().to_owned());
                std::fs::copy(&sig, self.path(&format!("{name}.sig.bin"))).expect("sig");
                let content = std::fs::read(&zst).expect("read bundle");
                let mut file =
                    std::fs::File::create(self.path(&format!("{name}.zst"))).expect("create");
                // Pauses well within the 1 s settle time.
                for piece in content.chunks(content.len() / 3 + 1) {
                    file.write_all(piece).expect("write piece");
                    file.flush().expect("flush");
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
    }
}

fn copy_atomically(from: &Path, to: &Path) {
    let name = to.file_name().expect("name").to_string_lossy();
    let tmp = to.with_file_name(format!(".{name}.partial"));
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename into place");
}

fn copy_pair(zst: &Path, sig: &Path, dir: &Path, name: &str) {
    std::fs::copy(sig, dir.join(format!("{name}.sig.bin"))).expect("copy signature");
    copy_atomically(zst, &dir.join(format!("{name}.zst")));
}

/// Bundles or signatures still directly in the drop folder.
fn pairs_left(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list the drop folder")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && (n.ends_with(".zst") || n.ends_with(".sig.bin")))
        .collect();
    names.sort();
    names
}

/// Every record, read page by page through `/api/v1/imports`.
fn all_records(daemon: &Daemon) -> Vec<serde_json::Value> {
    let mut records: Vec<serde_json::Value> = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10_000 {
        let path = match &after {
            Some(id) => format!("/api/v1/imports?limit=50&after={id}"),
            None => "/api/v1/imports?limit=50".to_owned(),
        };
        let (status, body) = daemon.get(&path).expect("GET imports");
        assert_eq!(status, 200, "{body}");
        let page: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON");
        let Some(last) = page.last() else {
            return records;
        };
        after = Some(last["id"].as_str().expect("id").to_owned());
        records.extend(page);
    }
    panic!("paging did not end");
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').expect("stat format").1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

#[test]
fn soak_many_bundles_through_restarts_and_an_outage() {
    let total = if std::env::var_os("AIRLOCK_SOAK_FULL").is_some() {
        FULL_BUNDLES
    } else {
        CI_BUNDLES
    };
    let started = Instant::now();
    let mut soak = Soak {
        drop: tempfile::tempdir().expect("drop dir"),
        key: TestKey::generate(KeyKind::EcP256),
        stranger: TestKey::generate(KeyKind::EcP256),
        bundles: HashMap::new(),
    };
    for n in 0..total {
        soak.bundle(n);
    }
    let built = started.elapsed();
    let state = tempfile::tempdir().expect("state dir");
    let mut registry = Registry::start();
    let setup = DaemonSetup {
        drop_dir: soak.drop.path().to_owned(),
        state_dir: state.path().to_owned(),
        extra: [
            "--on-success",
            "move",
            "--on-reject",
            "move",
            "--concurrency",
            "2",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        envs: vec![("AIRLOCK_LOG__LEVEL".to_owned(), "info".to_owned())],
    };
    let mut daemon = Daemon::start(&setup, &registry, soak.key.public_pem());

    let third = total / 3;
    for n in 0..third {
        soak.drop_pair(n);
    }
    // kill -9 while imports are under way.
    std::thread::sleep(Duration::from_secs(2));
    daemon.kill9();
    daemon.restart();
    for n in third..2 * third {
        soak.drop_pair(n);
        if n == third + third / 2 {
            registry.stop();
        }
    }
    // The registry stays away for a while, then comes back.
    std::thread::sleep(Duration::from_secs(5));
    registry.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert!(daemon.terminate().success(), "SIGTERM should exit 0");
    daemon.restart();
    for n in 2 * third..total {
        soak.drop_pair(n);
    }

    let good: Vec<usize> = (0..total)
        .filter(|n| matches!(kind_of(*n), Kind::Good | Kind::Slow))
        .collect();
    let bad: Vec<usize> = (0..total)
        .filter(|n| kind_of(*n) == Kind::BadSignature)
        .collect();
    let deadline = Instant::now() + SOAK_LIMIT;
    loop {
        let left = pairs_left(soak.drop.path());
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still in the drop folder after {:?}: {left:?}\n{}",
            started.elapsed(),
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let finished = started.elapsed();

    // Every good bundle's manifest was put exactly once.
    let requests = registry.settled_requests();
    let mut puts: HashMap<String, usize> = HashMap::new();
    for request in &requests {
        if request.method == "PUT" && request.path.contains("/manifests/") && request.status == 201
        {
            *puts.entry(request.path.clone()).or_insert(0) += 1;
        }
    }
    for n in &good {
        let path = format!("/v2/mirror/quay.io/soak/app-{n}/manifests/1.0");
        assert_eq!(puts.get(&path), Some(&1), "{path}: {puts:?}");
    }
    for n in &bad {
        let path = format!("/v2/mirror/quay.io/soak/app-{n}/manifests/1.0");
        assert_eq!(puts.get(&path), None, "a bad bundle was pushed: {path}");
    }
    let mut uploads: HashMap<String, usize> = HashMap::new();
    for request in &requests {
        let completed = request.method == "PUT"
            && request.path.contains("/blobs/uploads/")
            && request.status == 201;
        if let Some(digest) = request.digest_param().filter(|_| completed) {
            *uploads.entry(digest).or_insert(0) += 1;
        }
    }
    let twice: Vec<_> = uploads.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "blobs uploaded twice: {twice:?}");

    // The records, read page by page: one per good content, one per bad
    // pair, each rejected once.
    let records = all_records(&daemon);
    let ids: HashSet<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), records.len(), "a record listed twice");
    let imported = records.iter().filter(|r| r["status"] == "imported").count();
    let rejected: Vec<_> = records
        .iter()
        .filter(|r| r["status"] == "rejected")
        .collect();
    assert_eq!(imported, good.len(), "imported records");
    assert_eq!(rejected.len(), bad.len(), "rejected records");
    for record in &rejected {
        assert_eq!(record["attempts"], 1, "rejected more than once: {record}");
    }
    assert_eq!(
        records.len(),
        good.len() + bad.len(),
        "other records: {records:?}"
    );
    let failed = soak.path("failed");
    for n in &bad {
        assert!(failed.join(format!("b{n}.zst.error.json")).exists(), "b{n}");
    }

    // Idle: under 1% of a core.
    let pid = daemon.pid();
    std::thread::sleep(Duration::from_secs(2));
    let cpu_before = cpu_seconds(pid);
    let idle = Duration::from_secs(10);
    std::thread::sleep(idle);
    let cpu = cpu_seconds(pid) - cpu_before;
    let share = cpu / idle.as_secs_f64();
    eprintln!(
        "soak: {total} pairs ({} good, {} duplicates, {} bad signatures), bundles built in {built:?}, all finished {finished:?} after the start, {} registry requests, idle CPU {:.3}% of a core",
        good.len(),
        total - good.len() - bad.len(),
        bad.len(),
        requests.len(),
        share * 100.0
    );
    assert!(share < 0.01, "idle CPU {:.2}% of a core", share * 100.0);
}
