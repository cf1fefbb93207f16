//! Registry credentials and the Docker token flow.
//!
//! A registry answers 401 with a `WWW-Authenticate` challenge: `Basic` means
//! send the credentials on every request; `Bearer realm=…,service=…` means
//! fetch a token for the repository scope from the realm (with the
//! credentials, if any) and send that. Tokens are cached per scope.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::super::{Error, Result};

/// Credentials for one registry. `Debug` never shows the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials: anonymous access (and anonymous tokens).
    #[default]
    Anonymous,
    /// A user name and password (or access token used as a password).
    Basic {
        /// The user name.
        username: String,
        /// The password; never logged.
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

impl Credentials {
    /// The `Authorization: Basic …` header value, if there are credentials.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Anonymous => None,
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                STANDARD.encode(format!("{username}:{password}"))
            )),
        }
    }
}

/// The default Docker client configuration: `$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`.
pub fn default_auth_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
    #[serde(rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// Looks up `host` in a Docker `config.json`. Returns anonymous credentials
/// when the file has no entry for the host.
pub fn credentials_from_auth_file(path: &Path, host: &str) -> Result<Credentials> {
    let auth_file_error = |reason: String| Error::AuthFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| auth_file_error(e.to_string()))?;
    let config: DockerConfig =
        serde_json::from_str(&text).map_err(|e| auth_file_error(format!("not valid JSON: {e}")))?;
    let candidates = [
        host.to_owned(),
        format!("https://{host}"),
        format!("http://{host}"),
        format!("https://{host}/v1/"),
        format!("https://{host}/v2/"),
    ];
    let Some(entry) = candidates.iter().find_map(|key| config.auths.get(key)) else {
        if let Some(store) = config.creds_store {
            tracing::warn!(
                auth_file = %path.display(),
                creds_store = %store,
                "no inline credentials for {host}; credential helpers are not used by airlock"
            );
        }
        return Ok(Credentials::Anonymous);
    };
    if let Some(encoded) = &entry.auth {
        let decoded = STANDARD
            .decode(encoded.trim())
            .map_err(|_| auth_file_error(format!("the auth entry for {host} is not base64")))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| auth_file_error(format!("the auth entry for {host} is not UTF-8")))?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| {
            auth_file_error(format!("the auth entry for {host} is not user:password"))
        })?;
        return Ok(Credentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        });
    }
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Credentials::Basic {
            username: username.clone(),
            password: password.clone(),
        });
    }
    if entry.identitytoken.is_some() {
        return Err(auth_file_error(format!(
            "the entry for {host} holds an identity token, which airlock does not support; log in with a user name and password"
        )));
    }
    Ok(Credentials::Anonymous)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Send credentials with HTTP Basic.
    Basic,
    /// Fetch a token from `realm`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter to pass on.
        service: Option<String>,
    },
}

/// Parses `Basic realm="…"` or `Bearer realm="…",service="…",scope="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(params);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
    })
}

fn parse_params(text: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_owned());
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    params
}

/// The token endpoint's answer (`token` per Docker, `access_token` per OAuth2).
#[derive(Deserialize)]
pub struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

impl TokenResponse {
    /// The bearer token, whichever field carried it.
    pub fn into_token(self) -> Option<String> {
        self.token.or(self.access_token).filter(|t| !t.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let header = r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#;
        assert_eq!(
            parse_challenge(header),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let credentials = Credentials::Basic {
            username: "ci".into(),
            password: "s3cret".into(),
        };
        let shown = format!("{credentials:?}");
        assert!(shown.contains("ci") && !shown.contains("s3cret"));
    }

    #[test]
    fn reads_inline_credentials_from_a_docker_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        let encoded = STANDARD.encode("user:pa:ss");
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"https://reg.local:5000":{{"auth":"{encoded}"}}}}}}"#),
        )
        .expect("write config");
        match credentials_from_auth_file(&path, "reg.local:5000").expect("lookup") {
            Credentials::Basic { username, password } => {
                assert_eq!((username.as_str(), password.as_str()), ("user", "pa:ss"));
            }
            other => panic!("expected basic credentials, got {other:?}"),
        }
        assert!(matches!(
            credentials_from_auth_file(&path, "other:5000").expect("lookup"),
            Credentials::Anonymous
        ));
    }
}
