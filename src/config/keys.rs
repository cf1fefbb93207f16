//! Every configuration key with its environment variable and flag, and the
//! check that a file or the environment sets nothing else.
//!
//! Keys are dotted paths into the YAML file (`drop.settle_time`). The
//! environment variable of a key is `AIRLOCK_` followed by the path in upper
//! case with `__` between levels (`AIRLOCK_DROP__SETTLE_TIME`,
//! `AIRLOCK_STATE_DIR`); list values are comma-separated.

use ::config::{Map, Value, ValueKind};

use super::error::{Error, Origin};

/// What every environment variable of the daemon starts with.
pub const ENV_PREFIX: &str = "AIRLOCK_";

/// What separates levels in an environment variable name: a single `_` is
/// part of a key name (`state_dir`), so levels need two.
pub const ENV_SEPARATOR: &str = "__";

/// What separates the items of a list in an environment variable.
pub const ENV_LIST_SEPARATOR: &str = ",";

/// One configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The dotted path in the file, e.g. `drop.settle_time`.
    pub path: &'static str,
    /// The `airlock watch` flag that sets it, if there is one.
    pub flag: Option<&'static str>,
    /// Whether the daemon refuses to start without it.
    pub required: bool,
    /// Whether the value is a list (comma-separated in the environment; the
    /// flag is repeated).
    pub list: bool,
}

impl Key {
    /// The environment variable that sets this key.
    pub fn env_var(&self) -> String {
        env_var(self.path)
    }
}

const fn key(path: &'static str, flag: Option<&'static str>) -> Key {
    Key {
        path,
        flag,
        required: false,
        list: false,
    }
}

const fn list(path: &'static str, flag: &'static str, required: bool) -> Key {
    Key {
        path,
        flag: Some(flag),
        required,
        list: true,
    }
}

/// Every key of the configuration, in the order of the example file.
pub const KEYS: &[Key] = &[
    list("drop.dirs", "--drop-dir", true),
    key("drop.recursive", Some("--recursive")),
    key("drop.follow_symlinks", None),
    key("drop.poll", Some("--poll")),
    key("drop.poll_interval", Some("--poll-interval")),
    key("drop.rescan_interval", None),
    key("drop.settle_time", Some("--settle-time")),
    key("drop.unpaired_warn_after", None),
    key("drop.confirm_rejection", None),
    list("trust.public_keys", "--public-key", true),
    Key {
        list: true,
        ..key("trust.keyless", None)
    },
    key("trust.max_bundle_age", Some("--max-bundle-age")),
    Key {
        list: true,
        ..key("trust.image_signatures", None)
    },
    Key {
        required: true,
        ..key("registry.target", Some("--registry"))
    },
    key("registry.plain_http", Some("--plain-http")),
    list("registry.ca_cert", "--ca-cert", false),
    key(
        "registry.insecure_skip_tls_verify",
        Some("--insecure-skip-tls-verify"),
    ),
    key("registry.client_cert", Some("--client-cert")),
    key("registry.client_key", Some("--client-key")),
    key("registry.username", Some("--username")),
    key("registry.password_file", Some("--password-file")),
    key("registry.auth_file", Some("--auth-file")),
    key("registry.upload_mode", Some("--upload-mode")),
    key("registry.staging_repository", Some("--staging-repository")),
    key("registry.blob_concurrency", Some("--blob-concurrency")),
    key("registry.buffer_mib", Some("--buffer-mib")),
    key("registry.pack_prefix", Some("--pack-prefix")),
    key("registry.pack_image_policy", Some("--pack-image-policy")),
    Key {
        list: true,
        ..key("registry.token_realm_hosts", None)
    },
    key("registry.answer_timeout", None),
    key("registry.idle_timeout", None),
    key("imports.concurrency", Some("--concurrency")),
    key("imports.on_success", Some("--on-success")),
    key("imports.on_reject", Some("--on-reject")),
    key("imports.on_existing_tag", Some("--on-existing-tag")),
    list("imports.platforms", "--platform", false),
    key("imports.retry_initial_backoff", None),
    key("imports.retry_max_backoff", None),
    key("imports.single_read", Some("--single-read")),
    key("attestations.signing_key", Some("--attestation-key")),
    key("read.max_document_bytes", None),
    key("read.max_documents_total_bytes", None),
    key("read.max_entries", None),
    key("read.max_uncompressed_bytes", None),
    key("read.max_expansion_ratio", None),
    key("read.max_manifests", None),
    key("read.max_index_depth", None),
    key("read.max_path_bytes", None),
    key("state_dir", Some("--state-dir")),
    key("state.retention", None),
    key("state.max_records", None),
    key("http.listen", Some("--listen")),
    key("http.auth.htpasswd_file", None),
    Key {
        list: true,
        ..key("http.auth.open_paths", None)
    },
    key("log.format", None),
    key("log.level", None),
    key("kube.enabled", None),
    key("kube.namespace", None),
    key("kube.identity", None),
    key("kube.lease_duration", None),
    key("kube.events", None),
    key("kube.lease_retention", None),
];

/// Keys that would hold a secret inline; refused with a pointer to
/// `registry.password_file`.
const INLINE_SECRETS: &[&str] = &["registry.password", "registry.token"];

/// The key with this dotted path.
pub fn find(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

/// The environment variable for a dotted path: `drop.settle_time` →
/// `AIRLOCK_DROP__SETTLE_TIME`.
pub fn env_var(path: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        path.replace('.', ENV_SEPARATOR).to_ascii_uppercase()
    )
}

/// The dotted path an environment variable sets, if it is one of airlock's
/// (`AIRLOCK_` prefix, compared without regard to case as the `config` crate
/// does): `AIRLOCK_DROP__SETTLE_TIME` → `drop.settle_time`.
pub fn env_path(name: &str) -> Option<String> {
    let prefix = name.get(..ENV_PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(ENV_PREFIX) {
        return None;
    }
    Some(
        name[ENV_PREFIX.len()..]
            .to_lowercase()
            .replace(ENV_SEPARATOR, "."),
    )
}

/// Whether `path` names a section (`drop`, `registry`) rather than a key.
fn is_section(path: &str) -> bool {
    KEYS.iter().any(|k| {
        k.path
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Checks that a parsed configuration file holds only known keys.
pub(super) fn check_file(table: &Map<String, Value>, origin: &Origin) -> Result<(), Error> {
    check_table("", table, origin)
}

fn check_table(prefix: &str, table: &Map<String, Value>, origin: &Origin) -> Result<(), Error> {
    // Sorted, so that the same file always reports the same key first.
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (name, value) in entries {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if find(&path).is_some() {
            continue;
        }
        if is_section(&path) {
            // A section that is not a map is a type error, reported with the
            // key when the merged configuration is deserialized.
            if let ValueKind::Table(inner) = &value.kind {
                check_table(&path, inner, origin)?;
            }
            continue;
        }
        return Err(refuse(&path, origin.clone()));
    }
    Ok(())
}

/// The error for a key that is not in [`KEYS`] (or names a section where a
/// key is expected).
pub(super) fn refuse(path: &str, origin: Origin) -> Error {
    if INLINE_SECRETS.contains(&path) {
        return Error::InlineSecret {
            key: path.to_owned(),
            origin,
        };
    }
    let suggestion = suggest(path).map(|k| match origin {
        Origin::File(_) => format!("{:?}", k.path),
        Origin::Env(_) => k.env_var(),
    });
    Error::UnknownKey {
        key: path.to_owned(),
        origin,
        suggestion,
    }
}

/// The known key a mistyped one most likely meant.
fn suggest(path: &str) -> Option<&'static Key> {
    if is_section(path) {
        return KEYS
            .iter()
            .find(|k| k.path.starts_with(path) && k.path[path.len()..].starts_with('.'));
    }
    let close = KEYS
        .iter()
        .map(|k| (edit_distance(path, k.path), k))
        .min_by_key(|(distance, _)| *distance)
        .filter(|(distance, _)| *distance <= 2 + path.len() / 8)
        .map(|(_, k)| k);
    close.or_else(|| {
        // The right key in the wrong place, e.g. `settle_time` at the top.
        let last = path.rsplit('.').next()?;
        KEYS.iter()
            .find(|k| k.path.rsplit('.').next() == Some(last))
    })
}

/// Levenshtein distance between two short strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::{Args, Command};

    use super::*;
    use crate::config::{DaemonConfig, WatchArgs};

    fn leaves(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (name, inner) in map {
                    let path = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    leaves(&path, inner, out);
                }
            }
            _ => {
                out.insert(prefix.to_owned());
            }
        }
    }

    #[test]
    fn keys_are_exactly_the_fields_of_the_configuration() {
        let json = serde_json::to_value(DaemonConfig::default()).expect("serializes");
        let mut fields = BTreeSet::new();
        leaves("", &json, &mut fields);
        let keys: BTreeSet<String> = KEYS.iter().map(|k| k.path.to_owned()).collect();
        assert_eq!(fields, keys);
    }

    #[test]
    fn every_flag_in_the_table_exists() {
        let command = WatchArgs::augment_args(Command::new("watch"));
        let longs: BTreeSet<String> = command
            .get_arguments()
            .filter_map(|a| a.get_long())
            .map(|l| format!("--{l}"))
            .collect();
        for key in KEYS {
            if let Some(flag) = key.flag {
                assert!(
                    longs.contains(flag),
                    "{flag} for {} is not a flag",
                    key.path
                );
            }
        }
    }

    #[test]
    fn env_names_round_trip() {
        for key in KEYS {
            assert_eq!(env_path(&key.env_var()).as_deref(), Some(key.path));
        }
        assert_eq!(env_var("state_dir"), "AIRLOCK_STATE_DIR");
        assert_eq!(env_path("PATH"), None);
        assert_eq!(env_path("AIRLOCK"), None);
    }

    #[test]
    fn suggestions_find_typos_sections_and_misplaced_keys() {
        let path = |p: &str| suggest(p).map(|k| k.path);
        assert_eq!(path("drop.setle_time"), Some("drop.settle_time"));
        assert_eq!(path("drop"), Some("drop.dirs"));
        assert_eq!(path("settle_time"), Some("drop.settle_time"));
        assert_eq!(path("bogus"), None);
    }
}
