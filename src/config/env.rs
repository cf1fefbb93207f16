//! The `AIRLOCK_*` environment variables: which are the daemon's, whether
//! each names a known key, and the `config` sources that read them.

use std::collections::{BTreeMap, HashMap};

use ::config::{Environment, Map};

use super::error::{Error, Origin};
use super::keys::{self, ENV_LIST_SEPARATOR, ENV_PREFIX, ENV_SEPARATOR, KEYS};

/// The daemon's environment variables, checked and split by kind.
#[derive(Debug, Default)]
pub(super) struct EnvVars {
    /// Variables of scalar keys, by name.
    scalars: Map<String, String>,
    /// Variables of list keys, by name.
    lists: Map<String, String>,
    /// Which variable set each dotted key.
    names: HashMap<String, String>,
}

impl EnvVars {
    /// Picks airlock's variables out of `vars` and checks that each sets a
    /// known key. An empty variable counts as unset. Kubernetes service
    /// links (`AIRLOCK_SERVICE_HOST`, `AIRLOCK_PORT_9090_TCP`, …, injected
    /// into every pod when a Service is named `airlock`) are not settings
    /// and are skipped.
    pub(super) fn select(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, Error> {
        // Sorted, so that the same environment always reports the same
        // variable first.
        let ours: BTreeMap<String, (String, String)> = vars
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .filter(|(name, value)| !is_kubernetes_service_link(name, value))
            .filter_map(|(name, value)| Some((name.clone(), (keys::env_path(&name)?, value))))
            .collect();
        let mut selected = EnvVars::default();
        for (name, (path, value)) in ours {
            let Some(key) = keys::find(&path) else {
                return Err(keys::refuse(&path, Origin::Env(name)));
            };
            if let Some(first) = selected.names.insert(path.clone(), name.clone()) {
                return Err(Error::DuplicateEnv {
                    key: path,
                    first,
                    second: name,
                });
            }
            let kind = if key.list {
                &mut selected.lists
            } else {
                &mut selected.scalars
            };
            kind.insert(name, value);
        }
        Ok(selected)
    }

    /// The variable that set a dotted key, if one did.
    pub(super) fn name_of(&self, path: &str) -> Option<&str> {
        self.names.get(path).map(String::as_str)
    }

    /// The `config` sources for these variables. Scalars are handed over as
    /// strings (with `try_parsing`, `0042` would become the number 42 and a
    /// user name would lose its zeros); list keys are parsed, which the
    /// `config` crate only does together with `try_parsing`.
    pub(super) fn sources(&self) -> [Environment; 2] {
        let base = || {
            Environment::with_prefix(ENV_PREFIX.trim_end_matches('_'))
                .prefix_separator("_")
                .separator(ENV_SEPARATOR)
        };
        let scalars = base().source(Some(self.scalars.clone()));
        let lists = KEYS
            .iter()
            .filter(|k| k.list)
            .fold(
                base().try_parsing(true).list_separator(ENV_LIST_SEPARATOR),
                |env, k| env.with_list_parse_key(k.path),
            )
            .source(Some(self.lists.clone()));
        [scalars, lists]
    }
}

/// Whether a variable is one Kubernetes injects for a Service named
/// `airlock`: `AIRLOCK_SERVICE_HOST`, `AIRLOCK_SERVICE_PORT[_<name>]`,
/// `AIRLOCK_PORT=tcp://…` and `AIRLOCK_PORT_<port>_<proto>[_…]`.
fn is_kubernetes_service_link(name: &str, value: &str) -> bool {
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        return false;
    };
    if rest == "SERVICE_HOST" || rest == "SERVICE_PORT" || rest.starts_with("SERVICE_PORT_") {
        return true;
    }
    if rest == "PORT" {
        return value.contains("://");
    }
    rest.strip_prefix("PORT_")
        .and_then(|port| port.split('_').next())
        .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn kubernetes_service_links_are_skipped() {
        let env = EnvVars::select(vars(&[
            ("AIRLOCK_SERVICE_HOST", "10.0.0.7"),
            ("AIRLOCK_SERVICE_PORT", "9090"),
            ("AIRLOCK_SERVICE_PORT_HTTP", "9090"),
            ("AIRLOCK_PORT", "tcp://10.0.0.7:9090"),
            ("AIRLOCK_PORT_9090_TCP", "tcp://10.0.0.7:9090"),
            ("AIRLOCK_PORT_9090_TCP_ADDR", "10.0.0.7"),
            ("AIRLOCK_STATE_DIR", "/data"),
        ]))
        .expect("only service links and one key");
        assert_eq!(env.name_of("state_dir"), Some("AIRLOCK_STATE_DIR"));
        assert_eq!(env.names.len(), 1);
    }

    #[test]
    fn a_plain_airlock_port_is_not_a_service_link() {
        let error = EnvVars::select(vars(&[("AIRLOCK_PORT", "9090")])).expect_err("unknown");
        assert!(error.to_string().contains("AIRLOCK_PORT"), "{error}");
    }

    #[test]
    fn other_variables_and_empty_ones_are_ignored() {
        let env = EnvVars::select(vars(&[
            ("PATH", "/bin"),
            ("AIRLOCKED", "1"),
            ("AIRLOCK_BOGUS", ""),
        ]))
        .expect("nothing of ours");
        assert!(env.names.is_empty());
    }

    #[test]
    fn two_spellings_of_one_key_are_refused() {
        let error = EnvVars::select(vars(&[
            ("AIRLOCK_STATE_DIR", "/a"),
            ("airlock_state_dir", "/b"),
        ]))
        .expect_err("duplicate");
        assert!(matches!(error, Error::DuplicateEnv { .. }), "{error}");
    }
}
