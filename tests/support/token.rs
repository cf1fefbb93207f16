//! A token service for distribution's own token auth mode (`auth: token:`),
//! as Docker's auth server or Harbor's core play it: on
//! `GET /token?service=…&scope=repository:NAME:pull,push` with HTTP Basic
//! credentials it answers `{"token": JWT}`, the JWT granting the requested
//! actions the account may have, signed with ES256 by a key whose
//! certificate travels in the `x5c` header.
//!
//! How distribution 2.8 checks such a token (`registry/auth/token/token.go`):
//! issuer and audience (the service) must match its config; the `x5c`
//! chain must verify against `rootcertbundle`; `exp` and `nbf` are checked
//! with 60 s of leeway. So a token whose lifetime should *feel* like `L`
//! to the registry is issued with `exp = now + L - 60 s`
//! ([`REGISTRY_LEEWAY`]).
//!
//! The signing key and its self-signed certificate are made with the
//! openssl CLI; tokens are signed in process (p256). Requests are served on
//! 127.0.0.1 by a thread per connection, and every request is recorded.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use p256::ecdsa::{Signature, SigningKey, signature::Signer as _};
use p256::pkcs8::DecodePrivateKey as _;

use super::tools;

/// The leeway distribution adds to `exp` and subtracts from `nbf`.
pub const REGISTRY_LEEWAY: Duration = Duration::from_secs(60);
/// The `iss` the registry is configured to trust.
pub const ISSUER: &str = "airlock-test-token-issuer";
/// The `service` (token audience) the registry names in its challenge.
pub const SERVICE: &str = "airlock-test-registry";
/// How long a connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An account of the token service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAccount {
    pub user: String,
    pub password: String,
    /// Repository name prefixes this account may pull from and push to
    /// (`""` for every repository).
    pub repositories: Vec<String>,
}

impl TokenAccount {
    /// An account allowed on repositories starting with any of `prefixes`.
    pub fn new(user: &str, password: &str, prefixes: &[&str]) -> Self {
        TokenAccount {
            user: user.to_owned(),
            password: password.to_owned(),
            repositories: prefixes.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn may_access(&self, repository: &str) -> bool {
        self.repositories.iter().any(|p| repository.starts_with(p))
    }
}

/// One request the token service answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The user of the Basic credentials, if any were sent.
    pub user: Option<String>,
    /// Whether the credentials matched an account.
    pub authenticated: bool,
    /// The `scope` parameters asked for.
    pub scopes: Vec<String>,
    /// What the token granted: `(repository, actions)`.
    pub granted: Vec<(String, Vec<String>)>,
    /// The status answered.
    pub status: u16,
    /// The token issued, if any (to look for it where it must not be).
    pub token: Option<String>,
}

struct State {
    accounts: Vec<TokenAccount>,
    lifetime: Duration,
    requests: Vec<TokenRequest>,
}

/// The running token service, stopped when dropped.
pub struct TokenService {
    port: u16,
    cert: PathBuf,
    key: SigningKey,
    cert_der: Vec<u8>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenService {
    /// Starts the service with its signing key and certificate made in
    /// `dir`, tokens living `lifetime` (as the registry sees it).
    pub fn start(dir: &Path, accounts: Vec<TokenAccount>, lifetime: Duration) -> TokenService {
        let (key, cert) = make_signing_key(dir);
        let key_pem = std::fs::read_to_string(&key).expect("read the token signing key");
        let key = SigningKey::from_pkcs8_pem(&key_pem).expect("parse the token signing key");
        let cert_der = pem_body(&std::fs::read_to_string(&cert).expect("read the token cert"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token service");
        listener
            .set_nonblocking(true)
            .expect("make the token listener non-blocking");
        let port = listener.local_addr().expect("token service address").port();
        let state = Arc::new(Mutex::new(State {
            accounts,
            lifetime,
            requests: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let signer = Signer {
            key: key.clone(),
            cert_der: cert_der.clone(),
            state: Arc::clone(&state),
        };
        let stopping = Arc::clone(&stop);
        let thread = thread::spawn(move || accept_loop(listener, signer, stopping));
        TokenService {
            port,
            cert,
            key,
            cert_der,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/token`: the registry's `realm`.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The certificate the registry trusts (`rootcertbundle`).
    pub fn root_cert(&self) -> &Path {
        &self.cert
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.lock().requests.clone()
    }

    /// Tokens issued from now on live `lifetime` as the registry sees it.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.lock().lifetime = lifetime;
    }

    /// A token for `access` (`(type, name, actions)`), minted without a
    /// request and not recorded, for the tests' own reads.
    pub fn mint(&self, access: &[(String, String, Vec<String>)]) -> String {
        let signer = Signer {
            key: self.key.clone(),
            cert_der: self.cert_der.clone(),
            state: Arc::clone(&self.state),
        };
        signer.token("airlock-test-admin", access, Duration::from_secs(600))
    }

    /// A token that may read everything: the catalog and any repository
    /// named in `repositories`.
    pub fn admin_token(&self, repositories: &[&str]) -> String {
        let mut access = vec![(
            "registry".to_owned(),
            "catalog".to_owned(),
            vec!["*".into()],
        )];
        for repository in repositories {
            access.push((
                "repository".to_owned(),
                (*repository).to_owned(),
                vec!["pull".into(), "push".into(), "delete".into()],
            ));
        }
        self.mint(&access)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Clone)]
struct Signer {
    key: SigningKey,
    cert_der: Vec<u8>,
    state: Arc<Mutex<State>>,
}

impl Signer {
    /// A JWT for `access` (`(type, name, actions)`), living `lifetime` for
    /// the registry.
    fn token(
        &self,
        subject: &str,
        access: &[(String, String, Vec<String>)],
        lifetime: Duration,
    ) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64;
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)],
        });
        let exp = now + lifetime.as_secs() as i64 - REGISTRY_LEEWAY.as_secs() as i64;
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": exp,
            "nbf": now,
            "iat": now,
            "jti": format!("{now}-{}", fastrand::u64(..)),
            "access": access.iter().map(|(kind, name, actions)| serde_json::json!({
                "type": kind, "name": name, "actions": actions,
            })).collect::<Vec<_>>(),
        });
        let signing_input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let signature: Signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", b64.encode(signature.to_bytes()))
    }

    fn answer(&self, path: &str, authorization: Option<&str>) -> (u16, String) {
        let query = path.split_once('?').map_or("", |(_, q)| q);
        let scopes: Vec<String> = query
            .split('&')
            .filter_map(|pair| pair.strip_prefix("scope="))
            .map(percent_decode)
            .collect();
        let basic = authorization
            .and_then(|value| value.strip_prefix("Basic "))
            .and_then(|encoded| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok());
        let (user, password) = match basic.as_deref().and_then(|b| b.split_once(':')) {
            Some((user, password)) => (Some(user.to_owned()), Some(password.to_owned())),
            None => (None, None),
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let account = state
            .accounts
            .iter()
            .find(|a| Some(&a.user) == user.as_ref() && Some(&a.password) == password.as_ref())
            .cloned();
        let lifetime = state.lifetime;
        let Some(account) = account else {
            state.requests.push(TokenRequest {
                user,
                authenticated: false,
                scopes,
                granted: Vec::new(),
                status: 401,
                token: None,
            });
            return (
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                    .to_owned(),
            );
        };
        let mut access = Vec::new();
        let mut granted = Vec::new();
        for scope in &scopes {
            let Some((kind, rest)) = scope.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            let allowed = match kind {
                "repository" if account.may_access(name) => actions
                    .split(',')
                    .filter(|a| matches!(*a, "pull" | "push"))
                    .map(str::to_owned)
                    .collect(),
                "registry" => vec!["*".to_owned()],
                _ => Vec::new(),
            };
            if !allowed.is_empty() {
                granted.push((name.to_owned(), allowed.clone()));
                access.push((kind.to_owned(), name.to_owned(), allowed));
            }
        }
        let token = self.token(&account.user, &access, lifetime);
        state.requests.push(TokenRequest {
            user,
            authenticated: true,
            scopes,
            granted,
            status: 200,
            token: Some(token.clone()),
        });
        drop(state);
        (
            200,
            serde_json::json!({ "token": token, "access_token": token }).to_string(),
        )
    }
}

fn accept_loop(listener: TcpListener, signer: Signer, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let signer = signer.clone();
                thread::spawn(move || serve(stream, &signer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Answers the requests of one connection (keep-alive), each a `GET`.
fn serve(stream: TcpStream, signer: &Signer) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    for _request in 0..1000 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut authorization = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("authorization")
            {
                authorization = Some(value.trim().to_owned());
            }
        }
        let (status, body) = signer.answer(&path, authorization.as_deref());
        let reason = if status == 200 { "OK" } else { "Unauthorized" };
        let mut head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if status == 401 {
            head.push_str("WWW-Authenticate: Basic realm=\"airlock-test-token\"\r\n");
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body.as_bytes()).is_err()
        {
            return;
        }
    }
}

/// A P-256 key (PKCS#8 PEM) and a self-signed certificate for it, valid two
/// days: what the registry's `rootcertbundle` holds.
fn make_signing_key(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("token-signing.key");
    let cert = dir.join("token-signing.crt");
    tools::run(
        tools::command("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=airlock test token issuer"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        "make the token service's signing key and certificate with openssl",
    );
    (key, cert)
}

/// The DER inside the first PEM block of `pem`.
fn pem_body(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM body is base64")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                if let Some(byte) = text
                    .get(i + 1..i + 3)
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
