//! HTTP basic auth for the console and `/api/v1/`, from an htpasswd file of
//! bcrypt entries (`htpasswd -B`), with the paths that stay open for probes
//! and Prometheus.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::error::Error as HttpError;

/// Credentials remembered as verified, so a console refreshing itself does
/// not pay a bcrypt verification (tens of milliseconds) per request.
pub const MAX_REMEMBERED_CREDENTIALS: usize = 64;

/// Why the htpasswd file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read.
    #[error("cannot read the htpasswd file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `user:$2y$…` (bcrypt); other schemes are refused, as
    /// they are weak (MD5, SHA-1, crypt) or plain text.
    #[error("htpasswd file {path}, line {line}: expected user:bcrypt-hash (htpasswd -B)")]
    Entry {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
    },
    /// No user at all: nobody could sign in.
    #[error("htpasswd file {path} has no users")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Who may read the guarded paths.
#[derive(Debug)]
pub struct BasicAuth {
    /// bcrypt hashes by user name.
    users: HashMap<String, String>,
    /// Paths served without credentials (exact match).
    open_paths: HashSet<String>,
    /// SHA-256 of `Authorization` values already verified.
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl BasicAuth {
    /// Reads the htpasswd file at `path`; `open_paths` stay open.
    pub fn load(path: &Path, open_paths: &[String]) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, open_paths)
    }

    fn parse(text: &str, path: &Path, open_paths: &[String]) -> Result<Self, Error> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = line
                .split_once(':')
                .filter(|(user, hash)| !user.is_empty() && is_bcrypt(hash));
            let Some((user, hash)) = entry else {
                return Err(Error::Entry {
                    path: path.to_owned(),
                    line: n + 1,
                });
            };
            users.insert(user.to_owned(), hash.to_owned());
        }
        if users.is_empty() {
            return Err(Error::Empty {
                path: path.to_owned(),
            });
        }
        Ok(BasicAuth {
            users,
            open_paths: open_paths.iter().cloned().collect(),
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Whether `path` is served without credentials.
    fn is_open(&self, path: &str) -> bool {
        self.open_paths.contains(path)
    }

    /// Whether an `Authorization` header value names a user and their
    /// password.
    fn admits(&self, authorization: &str) -> bool {
        let key: [u8; 32] = Sha256::digest(authorization.as_bytes()).into();
        if self.remembered().contains(&key) {
            return true;
        }
        let Some((user, password)) = decode_basic(authorization) else {
            return false;
        };
        let admitted = self
            .users
            .get(&user)
            .is_some_and(|hash| bcrypt::verify(&password, hash).unwrap_or(false));
        if admitted {
            let mut remembered = self.remembered();
            if remembered.len() >= MAX_REMEMBERED_CREDENTIALS {
                remembered.clear();
            }
            remembered.insert(key);
        }
        admitted
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `$2a$`, `$2b$`, `$2x$` or `$2y$` followed by cost and hash.
fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|prefix| hash.starts_with(prefix))
        && hash.len() == 60
}

/// `Basic base64(user:password)` → (user, password).
fn decode_basic(authorization: &str) -> Option<(String, String)> {
    let (scheme, encoded) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Answers `401` to a request for a guarded path without valid credentials.
pub(super) async fn require(
    State(auth): State<std::sync::Arc<BasicAuth>>,
    request: Request,
    next: Next,
) -> Response {
    if auth.is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let admitted = match header {
        Some(value) => {
            let auth = std::sync::Arc::clone(&auth);
            // bcrypt is slow on purpose: keep it off the async workers.
            tokio::task::spawn_blocking(move || auth.admits(&value))
                .await
                .unwrap_or(false)
        }
        None => false,
    };
    if admitted {
        next.run(request).await
    } else {
        HttpError::Unauthorized.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(text: &str) -> Result<BasicAuth, Error> {
        BasicAuth::parse(text, Path::new("htpasswd"), &["/healthz".to_owned()])
    }

    fn basic(user_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[test]
    fn a_bcrypt_user_is_admitted_with_the_right_password_only() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let auth = auth(&format!("# operators\nauditor:{hash}\n")).expect("parse");
        assert!(auth.admits(&basic("auditor:s3cret")));
        // Remembered now, and still only for the same credentials.
        assert!(auth.admits(&basic("auditor:s3cret")));
        assert!(!auth.admits(&basic("auditor:wrong")));
        assert!(!auth.admits(&basic("nobody:s3cret")));
        assert!(!auth.admits("Bearer abc"));
        assert!(!auth.admits("Basic !!!"));
    }

    #[test]
    fn weak_schemes_and_empty_files_are_refused() {
        let md5 = "auditor:$apr1$abcdefgh$0123456789abcdefghijkl";
        assert!(matches!(auth(md5), Err(Error::Entry { line: 1, .. })));
        assert!(matches!(
            auth("auditor:plaintext"),
            Err(Error::Entry { .. })
        ));
        assert!(matches!(auth("# nobody\n"), Err(Error::Empty { .. })));
    }

    #[test]
    fn only_the_listed_paths_are_open() {
        let hash = bcrypt::hash("x", 4).expect("hash");
        let auth = auth(&format!("a:{hash}")).expect("parse");
        assert!(auth.is_open("/healthz"));
        assert!(!auth.is_open("/healthz/"));
        assert!(!auth.is_open("/api/v1/imports"));
    }
}
