//! A command run in the background with its output in files, waited for
//! with a time limit (and killed when the limit passes or on drop).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running command.
pub struct Background {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

/// How a [`Background`] command ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The exit code (`None` if a signal ended it).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl Background {
    /// Starts `command` with no stdin and its output going to files.
    pub fn spawn(command: &mut Command) -> Background {
        let dir = tempfile::tempdir().expect("tempdir for command output");
        let stdout = dir.path().join("stdout");
        let stderr = dir.path().join("stderr");
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start the command");
        Background {
            child,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    /// What the command printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the command to end, at most `limit`; panics (after killing
    /// it) when it takes longer.
    pub fn wait(&mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll the command") {
                return Finished {
                    code: status.code(),
                    stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
                    stderr: self.stderr(),
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "the command did not finish within {limit:?}; stderr:\n{}",
            self.stderr()
        );
    }
}

/// Runs `command` to its end (at most `limit`) and returns how it ended with
/// the bytes it read through `read(2)` and friends (`rchar` of
/// `/proc/<pid>/io`, every thread counted). The counter is read while the
/// process is a zombie: it has exited, so nothing more is added, and it has
/// not been reaped, so its `/proc` entry is still there.
pub fn run_counting_reads(command: &mut Command, limit: Duration) -> (Finished, u64) {
    let mut background = Background::spawn(command);
    let pid = background.child.id();
    let deadline = Instant::now() + limit;
    // Polled through /proc rather than `try_wait`, which would reap it.
    while !is_zombie(pid) {
        assert!(
            Instant::now() < deadline,
            "the command did not finish within {limit:?}; stderr:\n{}",
            background.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/<pid>/io");
    let rchar = io
        .lines()
        .find_map(|line| line.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("rchar in /proc/<pid>/io");
    (background.wait(Duration::from_secs(5)), rchar)
}

/// Whether process `pid` has exited and waits to be reaped (state `Z` in
/// `/proc/<pid>/stat`, the field after the command name in parentheses).
fn is_zombie(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z'))
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
