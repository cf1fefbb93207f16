//! `airlock watch` as a real process: started with flags, observed through its
//! HTTP endpoints, stopped with SIGTERM or killed with SIGKILL.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::registry::{Registry, free_port};

/// Environment variables that steer the tests, never passed to the daemon.
pub const TEST_SWITCHES: [&str; 3] = [
    "AIRLOCK_TEST_SKIP_MOUNT",
    "AIRLOCK_SOAK_FULL",
    "AIRLOCK_FAULT_SEED",
];

/// How long any wait in these tests may take before it fails.
pub const WAIT_LIMIT: Duration = Duration::from_secs(90);

/// The rescan interval of every test daemon: far longer than any test, so a
/// bundle that lands was found by inotify or by polling, never by the
/// periodic full rescan that would hide a watcher that sees nothing.
pub const TEST_RESCAN_INTERVAL: &str = "1h";

/// A running `airlock watch`.
pub struct Daemon {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// A command the daemon runs under (`strace ...`), empty for none.
    wrapper: Vec<String>,
    /// The working directory, when not the test's.
    cwd: Option<PathBuf>,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

/// A drop folder and a state directory of their own, for one test's daemon.
pub struct Site {
    /// The drop folder.
    pub drop: tempfile::TempDir,
    /// The state directory.
    pub state: tempfile::TempDir,
}

impl Site {
    /// Two fresh temporary directories.
    pub fn new() -> Site {
        Site {
            drop: tempfile::tempdir().expect("drop dir"),
            state: tempfile::tempdir().expect("state dir"),
        }
    }

    /// A daemon setup on this site with `extra` flags.
    pub fn setup(&self, extra: &[&str]) -> DaemonSetup {
        DaemonSetup {
            drop_dir: self.drop.path().to_owned(),
            state_dir: self.state.path().to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            envs: Vec::new(),
        }
    }

    /// `name` in the drop folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.drop.path().join(name)
    }
}

/// What a daemon watches and where it writes.
pub struct DaemonSetup {
    /// The drop folder.
    pub drop_dir: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Extra flags (`--poll`, `--on-success move`, ...).
    pub extra: Vec<String>,
    /// Extra environment (`AIRLOCK_...`).
    pub envs: Vec<(String, String)>,
}

impl Daemon {
    /// Starts `airlock watch` against `registry` (prefix `mirror`), trusting
    /// `public_key`, with a 1 s settle time, fast retries and no periodic
    /// rescan ([`TEST_RESCAN_INTERVAL`]).
    /// Over TLS when the registry serves it (its CA then comes from the
    /// setup, e.g. `AIRLOCK_REGISTRY__CA_CERT`).
    pub fn start(setup: &DaemonSetup, registry: &Registry, public_key: &Path) -> Daemon {
        let mut daemon = Daemon::configure(setup, &registry.host(), public_key);
        if registry.is_tls() {
            daemon.args.retain(|arg| arg != "--plain-http");
        }
        daemon.spawn();
        daemon
    }

    /// [`Daemon::start`] against a plain-HTTP registry at `registry_host`
    /// (`127.0.0.1:PORT`), e.g. a proxy in front of the test registry.
    pub fn start_at(setup: &DaemonSetup, registry_host: &str, public_key: &Path) -> Daemon {
        let mut daemon = Daemon::configure(setup, registry_host, public_key);
        daemon.spawn();
        daemon
    }

    /// `airlock watch ARGS` started in `cwd` with nothing added but
    /// `--listen 127.0.0.1:PORT` (a free port) and no `AIRLOCK_*`
    /// environment: how an operator runs a configuration file as shipped.
    pub fn start_as_shipped(args: &[&str], cwd: &Path) -> Daemon {
        let port = free_port();
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.extend(["--listen".to_owned(), format!("127.0.0.1:{port}")]);
        let log_dir = tempfile::tempdir().expect("tempdir for the daemon log");
        let log = log_dir.path().join("airlock.log");
        let mut daemon = Daemon {
            child: None,
            port,
            args,
            envs: Vec::new(),
            wrapper: Vec::new(),
            cwd: Some(cwd.to_owned()),
            log,
            _log_dir: log_dir,
        };
        daemon.spawn();
        daemon
    }

    fn configure(setup: &DaemonSetup, registry_host: &str, public_key: &Path) -> Daemon {
        let port = free_port();
        let mut args = vec![
            "watch".to_owned(),
            "--drop-dir".to_owned(),
            setup.drop_dir.display().to_string(),
            "--public-key".to_owned(),
            public_key.display().to_string(),
            "--registry".to_owned(),
            format!("{registry_host}/mirror"),
            "--plain-http".to_owned(),
            "--state-dir".to_owned(),
            setup.state_dir.display().to_string(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
        ];
        // A test may choose its own settle time.
        if !setup.extra.iter().any(|a| a == "--settle-time") {
            args.extend(["--settle-time".to_owned(), "1s".to_owned()]);
        }
        args.extend(setup.extra.iter().cloned());
        let mut envs = vec![
            (
                "AIRLOCK_IMPORTS__RETRY_INITIAL_BACKOFF".to_owned(),
                "300ms".to_owned(),
            ),
            (
                "AIRLOCK_IMPORTS__RETRY_MAX_BACKOFF".to_owned(),
                "2s".to_owned(),
            ),
            (
                "AIRLOCK_LOG__LEVEL".to_owned(),
                "info,airlock=debug".to_owned(),
            ),
            (
                "AIRLOCK_DROP__RESCAN_INTERVAL".to_owned(),
                TEST_RESCAN_INTERVAL.to_owned(),
            ),
        ];
        envs.extend(setup.envs.iter().cloned());
        let log_dir = tempfile::tempdir().expect("tempdir for the daemon log");
        let log = log_dir.path().join("airlock.log");
        Daemon {
            child: None,
            port,
            args,
            envs,
            wrapper: Vec::new(),
            cwd: None,
            log,
            _log_dir: log_dir,
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the daemon log");
        let err = log.try_clone().expect("clone the log handle");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(env!("CARGO_BIN_EXE_airlock"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_airlock")),
        };
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        // Switches of the test suite share airlock's prefix; the daemon
        // refuses AIRLOCK_* variables that are not its settings.
        for switch in TEST_SWITCHES {
            command.env_remove(switch);
        }
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        self.child = Some(command.spawn().expect("start airlock watch"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.try_status() {
                panic!(
                    "airlock watch exited early ({status}):\n{}",
                    self.log_text()
                );
            }
            if self
                .get("/healthz")
                .is_some_and(|(status, _)| status == 200)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "airlock watch did not answer /healthz:\n{}",
            self.log_text()
        );
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("poll the daemon"))
    }

    /// Starts `airlock watch` like [`Daemon::start`], but as the last
    /// argument of `wrapper` (e.g. `strace -f -e inject=...`), to inject
    /// faults into the real process.
    pub fn start_under(
        wrapper: &[&str],
        setup: &DaemonSetup,
        registry: &Registry,
        public_key: &Path,
    ) -> Daemon {
        let mut daemon = Daemon::configure(setup, &registry.host(), public_key);
        daemon.wrapper = wrapper.iter().map(|s| (*s).to_owned()).collect();
        daemon.spawn();
        daemon
    }

    /// Runs later restarts without the wrapper.
    pub fn drop_wrapper(&mut self) {
        self.wrapper.clear();
    }

    /// Waits (up to `limit`) for the process to exit by itself, e.g. killed
    /// by an injected signal; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Starts the daemon again with the same flags (after a kill or stop).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the daemon first");
        self.spawn();
    }

    /// Everything the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's listener as a URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// GET a path on the daemon's listener: (status, body), or None if it
    /// does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    }

    /// The value of one metric series, e.g.
    /// `airlock_bundles_total{outcome="imported"}`; 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics").expect("scrape /metrics");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }

    /// `/api/v1/imports` as JSON.
    pub fn imports(&self) -> Value {
        let (status, body) = self.get("/api/v1/imports").expect("GET /api/v1/imports");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("imports JSON")
    }

    /// Waits until `condition` holds, failing with the daemon's log after
    /// [`WAIT_LIMIT`].
    pub fn wait_until(&self, what: &str, condition: impl FnMut(&Daemon) -> bool) {
        self.wait_within(what, WAIT_LIMIT, condition);
    }

    /// Waits until `condition` holds, failing with the daemon's log after
    /// `limit`.
    pub fn wait_within(
        &self,
        what: &str,
        limit: Duration,
        mut condition: impl FnMut(&Daemon) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if condition(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; daemon log:\n{}",
            self.log_text()
        );
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.send_sigterm();
        self.wait_for_exit(Duration::from_secs(40))
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// How many inotify instances the daemon process holds, read from its
    /// open file descriptors (`anon_inode:inotify`), independently of what
    /// it logs.
    pub fn inotify_instances(&self) -> usize {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("list /proc/PID/fd");
        fds.filter_map(Result::ok)
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|target| target.to_string_lossy() == "anon_inode:inotify")
            .count()
    }

    /// Sends SIGTERM without waiting; [`Daemon::wait_for_exit`] collects the
    /// status.
    pub fn send_sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (at most `limit`) for the daemon to exit and returns its status.
    pub fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status() {
                self.child = None;
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("airlock watch did not exit:\n{}", self.log_text());
    }

    /// SIGKILL, like a crash or an OOM kill.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
