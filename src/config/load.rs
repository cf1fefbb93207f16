//! Loading: the configuration file, then the environment, then flags, each
//! overriding the one before; then validation.

use std::path::Path;

use ::config::{Config, ConfigError, File, FileFormat, Source};

use super::env::EnvVars;
use super::error::{Error, Origin};
use super::flags::WatchArgs;
use super::keys;
use super::schema::DaemonConfig;

impl DaemonConfig {
    /// Loads the configuration from `file` (if any), the process environment
    /// and `flags`, in increasing precedence, and validates it.
    ///
    /// Paths are not checked for existence here: the daemon does that when
    /// it starts, so a configuration can be checked on another machine.
    pub fn load(file: Option<&Path>, flags: &WatchArgs) -> Result<DaemonConfig, Error> {
        let mut vars = Vec::new();
        for (name, value) in std::env::vars_os() {
            // Variables that are not valid Unicode cannot be airlock's unless
            // their value is the problem; only then is it worth an error.
            let Ok(name) = name.into_string() else {
                continue;
            };
            match value.into_string() {
                Ok(value) => vars.push((name, value)),
                Err(_) if keys::env_path(&name).is_some() => {
                    return Err(Error::NonUnicodeEnv { name });
                }
                Err(_) => {}
            }
        }
        DaemonConfig::load_from(file, vars, flags)
    }

    /// [`DaemonConfig::load`] with the environment given as `(name, value)`
    /// pairs instead of read from the process, for tests and for callers that
    /// filter it. Only variables starting with `AIRLOCK_` are considered.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &WatchArgs,
    ) -> Result<DaemonConfig, Error> {
        let env = EnvVars::select(env)?;
        let mut builder = Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(read_file(path)?);
        }
        for source in env.sources() {
            builder = builder.add_source(source);
        }
        let merged = builder.build().map_err(|source| Error::Merge {
            source: Box::new(source),
        })?;
        let mut config: DaemonConfig = merged
            .try_deserialize()
            .map_err(|e| value_error(e, file, &env))?;
        flags.apply(&mut config);
        config.validate()?;
        Ok(config)
    }
}

/// Reads and parses the file once, checks its keys, and returns it as a
/// `config` source.
fn read_file(path: &Path) -> Result<File<::config::FileSourceString, FileFormat>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let source = File::from_str(&text, FileFormat::Yaml);
    let table = source.collect().map_err(|source| Error::ParseFile {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    keys::check_file(&table, &Origin::File(path.to_owned()))?;
    Ok(source)
}

/// Names the key and the file or variable behind a deserialization error.
fn value_error(error: ConfigError, file: Option<&Path>, env: &EnvVars) -> Error {
    let (key, source) = match error {
        ConfigError::At {
            error,
            key: Some(key),
            ..
        } => (key, *error),
        ConfigError::Type {
            unexpected,
            expected,
            key: Some(key),
            ..
        } => (
            key,
            ConfigError::Type {
                origin: None,
                unexpected,
                expected,
                key: None,
            },
        ),
        source => {
            return Error::Merge {
                source: Box::new(source),
            };
        }
    };
    // `drop.dirs[1]` came from wherever `drop.dirs` did.
    let path = key.split('[').next().unwrap_or(&key);
    let origin = match (env.name_of(path), file) {
        (Some(name), _) => Origin::Env(name.to_owned()),
        (None, Some(file)) => Origin::File(file.to_owned()),
        // Only the file and the environment are deserialized (defaults and
        // flags are typed), so this does not happen.
        (None, None) => {
            return Error::Merge {
                source: Box::new(source),
            };
        }
    };
    Error::InvalidValue {
        key,
        origin,
        source: Box::new(source),
    }
}
