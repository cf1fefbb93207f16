//! Running the external tools the tests rely on, with failures that say what
//! went wrong and how to fix the machine.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The tools the integration tests need, with the Debian package holding each.
pub const TOOLS: &[(&str, &str)] = &[
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
    ("openssl", "openssl"),
    ("zstd", "zstd"),
    ("htpasswd", "apache2-utils"),
    ("umoci", "umoci"),
    ("curl", "curl"),
    ("tar", "tar"),
    ("python3", "python3"),
    ("gpg", "gnupg"),
    ("chromium", "chromium"),
    ("node", "nodejs"),
    (
        "helm",
        "helm (scripts/test fetches it into target/test-tools/bin)",
    ),
    (
        "kubernetes-validate",
        "kubernetes-validate (scripts/test installs it with pip)",
    ),
];

/// Full path of `tool` on `PATH`; panics with a message naming `scripts/test`
/// (which installs every tool the tests need) when it is missing.
pub fn require(tool: &str) -> PathBuf {
    if let Some(found) = find_on_path(tool) {
        return found;
    }
    let package = TOOLS
        .iter()
        .find(|(name, _)| *name == tool)
        .map(|(_, package)| *package)
        .unwrap_or(tool);
    let all: Vec<&str> = TOOLS.iter().map(|(_, package)| *package).collect();
    panic!(
        "the integration tests need `{tool}`, which is not on PATH: run `scripts/test`, which \
         installs the test tools (Debian packages: {}), or install it with \
         `apt-get install {package}`",
        all.join(" ")
    );
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A `Command` for `tool`, after checking that it is installed.
pub fn command(tool: &str) -> Command {
    let mut cmd = Command::new(require(tool));
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion, capturing its output, and panics (with the
/// command line, exit status, stdout and stderr) unless it succeeded.
/// `what` says what the command was for, e.g. "push the layout with skopeo".
pub fn run(cmd: &mut Command, what: &str) -> Output {
    let output = output(cmd, what);
    if !output.status.success() {
        panic!(
            "failed to {what}: {} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            describe(cmd),
            output.status,
            clip(&output.stdout),
            clip(&output.stderr)
        );
    }
    output
}

/// Runs `cmd` to completion and returns its output whatever the exit status;
/// panics only if it could not be started.
pub fn output(cmd: &mut Command, what: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|err| panic!("failed to {what}: could not start {}: {err}", describe(cmd)))
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&shell_word(arg));
    }
    line
}

fn shell_word(arg: &OsStr) -> String {
    let arg = arg.to_string_lossy();
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,%".contains(c))
    {
        arg.into_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// At most the last 8 KiB of a tool's output, as text.
pub fn clip(bytes: &[u8]) -> String {
    const MAX: usize = 8 * 1024;
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= MAX {
        return text.into_owned();
    }
    let mut start = text.len() - MAX;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {} bytes cut …]{}", start, &text[start..])
}
