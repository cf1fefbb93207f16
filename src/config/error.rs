//! The single error type of the configuration module.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::FailureClass;
use crate::plan::InvalidTarget;

/// Where a configuration value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file given with `--config`.
    File(PathBuf),
    /// An `AIRLOCK_*` environment variable, by its exact name.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// Everything that can make the daemon's configuration unusable.
///
/// Large causes are boxed so that a `Result` stays small.
///
/// Every variant is the operator's to fix ([`FailureClass::Config`]). Each
/// message is one line naming the key (as a dotted path such as
/// `drop.settle_time`) and, where it matters, the file or environment
/// variable it came from. An underlying I/O or parser error is not repeated
/// in the message but chained as [`std::error::Error::source`]; print the
/// chain to show it. No message ever contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {}", path.display())]
    ReadFile {
        /// The file given with `--config`.
        path: PathBuf,
        /// Why the read failed.
        #[source]
        source: io::Error,
    },

    /// The configuration file is not a YAML map.
    #[error("cannot parse configuration file {} as YAML", path.display())]
    ParseFile {
        /// The file given with `--config`.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: Box<::config::ConfigError>,
    },

    /// A key that is not part of the configuration: a typo, or a setting from
    /// another version. Refused rather than ignored so a typo never silently
    /// leaves a default in force.
    #[error("unknown key {key:?} in {origin}{}", did_you_mean(suggestion.as_deref()))]
    UnknownKey {
        /// The dotted key, e.g. `drop.setle_time`.
        key: String,
        /// The file or environment variable holding it.
        origin: Origin,
        /// The known key (or environment variable) it most resembles.
        suggestion: Option<String>,
    },

    /// A password or token given inline. Secrets are only read from files, so
    /// they never sit in a configuration file, a process listing or `env`.
    #[error(
        "{key} in {origin} is not accepted: secrets are never given inline; put the password \
         in a file (e.g. a mounted Kubernetes Secret) and set registry.password_file \
         (AIRLOCK_REGISTRY__PASSWORD_FILE, --password-file), or use registry.auth_file"
    )]
    InlineSecret {
        /// The dotted key, e.g. `registry.password`.
        key: String,
        /// The file or environment variable holding it.
        origin: Origin,
    },

    /// Two environment variables that differ only in case set the same key.
    #[error("{key} is set twice, by environment variables {first} and {second}")]
    DuplicateEnv {
        /// The dotted key.
        key: String,
        /// One variable.
        first: String,
        /// The other.
        second: String,
    },

    /// An `AIRLOCK_*` environment variable whose value is not valid Unicode.
    #[error("environment variable {name} is not valid Unicode")]
    NonUnicodeEnv {
        /// The variable.
        name: String,
    },

    /// A value of the wrong type or form: `settle_time: soon`,
    /// `concurrency: two`, `listen: localhost`, `on_success: moved`.
    #[error("invalid value for {key} in {origin}")]
    InvalidValue {
        /// The dotted key, with an index for list items (`drop.dirs[1]`).
        key: String,
        /// The file or environment variable holding it.
        origin: Origin,
        /// What was wrong, as the deserializer put it.
        #[source]
        source: Box<::config::ConfigError>,
    },

    /// The sources could not be merged (a failure the checks before merging
    /// did not foresee).
    #[error("cannot assemble the configuration")]
    Merge {
        /// The configuration library's error.
        #[source]
        source: Box<::config::ConfigError>,
    },

    /// A required setting is given nowhere.
    #[error(
        "{key} is required: set {key} in the configuration file, {env} in the environment, or {flag}"
    )]
    Missing {
        /// The dotted key.
        key: &'static str,
        /// Its environment variable.
        env: String,
        /// Its flag.
        flag: &'static str,
    },

    /// A setting is present but unusable, alone or with another one.
    #[error("invalid {key}: {reason}")]
    Invalid {
        /// The dotted key.
        key: &'static str,
        /// Why, naming the other key when two conflict.
        reason: String,
    },

    /// `registry.target` is neither `host[:port][/prefix]` nor `oci:DIR`.
    #[error("invalid registry.target")]
    Target {
        /// The parser's explanation (it quotes the value).
        #[source]
        source: InvalidTarget,
    },

    /// `registry.password_file` could not be read (missing, unreadable, not
    /// UTF-8).
    #[error("cannot read registry.password_file {}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why the read failed.
        #[source]
        source: io::Error,
    },

    /// `registry.password_file` holds nothing but (at most) a newline.
    #[error("registry.password_file {} is empty", path.display())]
    EmptyPasswordFile {
        /// The file.
        path: PathBuf,
    },

    /// The Docker `config.json` could not be used.
    #[error("cannot take registry credentials from {}", path.display())]
    AuthFile {
        /// The file: `registry.auth_file`, or the default one.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<crate::push::Error>,
    },
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!("; did you mean {s}?"))
        .unwrap_or_default()
}

impl Error {
    /// Which class of failure this is: always [`FailureClass::Config`]
    /// (exit code 2; the daemon does not start, nothing is retried).
    pub fn class(&self) -> FailureClass {
        FailureClass::Config
    }
}
