//! A real OCI registry per test: Debian's `docker-registry` (CNCF distribution
//! 2.8) on a free loopback port, with its storage, config and log in a
//! temporary directory, optionally with htpasswd basic auth or token auth
//! (a [`TokenService`] of its own), and/or TLS from a throwaway CA made with
//! the openssl CLI, with a server certificate for other names than
//! 127.0.0.1 and with client certificates required (mutual TLS).
//!
//! Requests from the tests themselves go through `curl`, which handles plain
//! HTTP, TLS with a custom CA and basic auth the same way.

use std::fs::{self, OpenOptions};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::token::{TokenAccount, TokenService};
use super::tools;

/// How long to wait for the registry to answer `GET /v2/` after spawning it.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The manifest media types the registry is asked for, so it never falls back
/// to a schema 1 conversion.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// How a [`Registry`] is set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryOptions {
    /// `(user, password)`: require HTTP basic auth (htpasswd, bcrypt).
    pub basic_auth: Option<(String, String)>,
    /// Serve HTTPS with a server certificate for `127.0.0.1` issued by a
    /// throwaway CA (see [`Registry::ca_cert_path`]).
    pub tls: bool,
    /// distribution's `http.host`: the base URL it builds `Location`
    /// headers from, as a TLS-terminating proxy in front of it would have it
    /// set. Pointing it elsewhere makes a registry that sends uploads (and
    /// whatever credentials come with them) to another place.
    pub public_url: Option<String>,
    /// The server certificate's `subjectAltName` instead of
    /// `IP:127.0.0.1,DNS:localhost`, e.g. `DNS:registry.example` for a
    /// certificate that does not name the address airlock connects to.
    pub tls_names: Option<String>,
    /// Require a client certificate issued by a CA of the registry's own
    /// (`http.tls.clientcas`; see [`Registry::client_cert_and_key`]).
    pub client_certs: bool,
    /// distribution's token auth, with a [`TokenService`] started for it.
    pub token: Option<TokenOptions>,
}

/// How the registry's token service is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOptions {
    /// The accounts; the first is the one [`Registry::credentials`] gives.
    pub accounts: Vec<TokenAccount>,
    /// How long tokens live as the registry sees it.
    pub lifetime: Duration,
}

impl RegistryOptions {
    /// Plain HTTP, no auth (the default).
    pub fn plain() -> Self {
        Self::default()
    }

    /// Require basic auth with this user and password.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        self.basic_auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Serve HTTPS with a certificate from a throwaway CA.
    pub fn with_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Serve a certificate naming `names` (`subjectAltName` syntax) only.
    pub fn with_tls_names(mut self, names: &str) -> Self {
        self.tls = true;
        self.tls_names = Some(names.to_owned());
        self
    }

    /// Require client certificates (mutual TLS); implies TLS.
    pub fn with_client_certs(mut self) -> Self {
        self.tls = true;
        self.client_certs = true;
        self
    }

    /// Token auth: these accounts, tokens living `lifetime`.
    pub fn with_token_auth(mut self, accounts: Vec<TokenAccount>, lifetime: Duration) -> Self {
        self.token = Some(TokenOptions { accounts, lifetime });
        self
    }

    /// Build `Location` headers from `url` (`http.host`).
    pub fn with_public_url(mut self, url: &str) -> Self {
        self.public_url = Some(url.to_owned());
        self
    }
}

/// One response read with curl.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names are lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body parsed as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "registry answered {} with a body that is not JSON ({err}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One line of the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// Path and query, as requested.
    pub path: String,
    pub status: u16,
    pub user_agent: String,
}

/// What distribution's signed `_state` query of an upload URL says: the
/// session and the bytes it held when that URL was issued. For a `PATCH` or
/// the final `PUT`, `offset` is where the request's body starts (its
/// `Content-Range` start), which the access log does not show otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadState {
    pub uuid: String,
    pub offset: u64,
}

impl LoggedRequest {
    /// The upload state in this request's `_state` query (base64url of a
    /// 32-byte HMAC followed by JSON), if it has one.
    pub fn upload_state(&self) -> Option<UploadState> {
        use base64::Engine as _;
        let query = self.path.split_once('?')?.1;
        let value = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("_state="))?;
        let value = percent_decode(value);
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .ok()?;
        let json: serde_json::Value = serde_json::from_slice(raw.get(32..)?).ok()?;
        Some(UploadState {
            uuid: json["UUID"].as_str()?.to_owned(),
            offset: json["Offset"].as_u64()?,
        })
    }

    /// The `digest=` query value of a final `PUT`, decoded.
    pub fn digest_param(&self) -> Option<String> {
        let query = self.path.split_once('?')?.1;
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("digest="))
            .map(percent_decode)
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A running `docker-registry`, killed when dropped.
pub struct Registry {
    dir: TempDir,
    port: u16,
    options: RegistryOptions,
    config: PathBuf,
    storage: PathBuf,
    log: PathBuf,
    tls: Option<TlsFiles>,
    token_service: Option<TokenService>,
    child: Option<Child>,
}

#[derive(Debug, Clone)]
struct TlsFiles {
    ca_cert: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    cert_dir: PathBuf,
    /// With `client_certs`: a client certificate and key the registry
    /// accepts, and one from a CA it does not know.
    client: Option<ClientFiles>,
}

#[derive(Debug, Clone)]
struct ClientFiles {
    ca_cert: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    foreign_cert: PathBuf,
    foreign_key: PathBuf,
}

enum StartError {
    AddrInUse,
}

impl Registry {
    /// A plain-HTTP registry without auth.
    pub fn start() -> Registry {
        Registry::start_with(RegistryOptions::default())
    }

    /// A registry set up as `options` say.
    pub fn start_with(options: RegistryOptions) -> Registry {
        tools::require("docker-registry");
        tools::require("curl");
        let dir = tempfile::Builder::new()
            .prefix("airlock-registry-")
            .tempdir()
            .expect("create a temporary directory for the test registry");
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).expect("create the test registry's storage directory");
        let tls = options.tls.then(|| {
            make_tls_files(
                dir.path(),
                options
                    .tls_names
                    .as_deref()
                    .unwrap_or("IP:127.0.0.1,DNS:localhost"),
                options.client_certs,
            )
        });
        let token_service = options
            .token
            .as_ref()
            .map(|token| TokenService::start(dir.path(), token.accounts.clone(), token.lifetime));
        if let Some((user, password)) = &options.basic_auth {
            let out = tools::run(
                tools::command("htpasswd").args(["-Bbn", user, password]),
                "make a bcrypt htpasswd entry for the test registry",
            );
            fs::write(dir.path().join("htpasswd"), &out.stdout)
                .expect("write the test registry's htpasswd file");
        }
        let mut registry = Registry {
            config: dir.path().join("config.yml"),
            log: dir.path().join("registry.log"),
            dir,
            port: 0,
            options,
            storage,
            tls,
            token_service,
            child: None,
        };
        for _attempt in 0..10 {
            registry.port = free_port();
            registry.write_config();
            match registry.spawn_and_wait() {
                Ok(()) => return registry,
                Err(StartError::AddrInUse) => continue,
            }
        }
        panic!(
            "could not start docker-registry: every free port tried was taken before it bound \
             it; log:\n{}",
            registry.log_text()
        );
    }

    /// `127.0.0.1:PORT`, as used in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.host())
    }

    pub fn scheme(&self) -> &'static str {
        if self.options.tls { "https" } else { "http" }
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    pub fn is_tls(&self) -> bool {
        self.options.tls
    }

    /// `(user, password)` when basic auth is on, or the first account of
    /// the token service.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        if let Some(token) = &self.options.token {
            return token
                .accounts
                .first()
                .map(|a| (a.user.as_str(), a.password.as_str()));
        }
        self.options
            .basic_auth
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str()))
    }

    /// The token service of a registry in token auth mode. Panics otherwise.
    pub fn token_service(&self) -> &TokenService {
        self.token_service
            .as_ref()
            .expect("this test registry was started without token auth")
    }

    /// A client certificate and key (PEM) the registry accepts. Panics
    /// without `client_certs`.
    pub fn client_cert_and_key(&self) -> (&Path, &Path) {
        let client = self.client_files();
        (&client.cert, &client.key)
    }

    /// A client certificate and key from a CA the registry does not know.
    pub fn foreign_client_cert_and_key(&self) -> (&Path, &Path) {
        let client = self.client_files();
        (&client.foreign_cert, &client.foreign_key)
    }

    fn client_files(&self) -> &ClientFiles {
        self.tls_files()
            .client
            .as_ref()
            .expect("this test registry does not require client certificates")
    }

    /// The PEM file of the CA that issued the server certificate. Panics for a
    /// registry without TLS.
    pub fn ca_cert_path(&self) -> &Path {
        &self.tls_files().ca_cert
    }

    /// A directory holding only `ca.crt`, in the shape `skopeo --cert-dir`
    /// (and containers/image's `certs.d`) wants. Panics without TLS.
    pub fn cert_dir(&self) -> &Path {
        &self.tls_files().cert_dir
    }

    /// The server certificate and key (PEM). Panics without TLS.
    pub fn server_cert_and_key(&self) -> (&Path, &Path) {
        let tls = self.tls_files();
        (&tls.server_cert, &tls.server_key)
    }

    fn tls_files(&self) -> &TlsFiles {
        self.tls.as_ref().expect(
            "this test registry was started without TLS (RegistryOptions { tls: true, .. })",
        )
    }

    /// The registry's filesystem storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The temporary directory holding config, storage, certificates and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The registry's log: its stdout and stderr (warnings and the access log).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The registry's log so far, as text.
    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|err| format!("(no log at {}: {err})", self.log.display()))
    }

    /// The requests in the access log so far, oldest first (the registry
    /// writes a line when a response is complete). Requests made by the
    /// support code itself have the user agent `curl/…`.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log_text()
            .lines()
            .filter_map(parse_access_line)
            .collect()
    }

    /// The requests in the access log once it has stopped growing for
    /// 300 ms (at most 5 s): the registry logs a request after its response
    /// is sent, so a client can be done before the last line is written.
    /// Take "before" counts with this.
    pub fn settled_requests(&self) -> Vec<LoggedRequest> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut last = self.requests();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let now = self.requests();
            if now.len() == last.len() || std::time::Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// The number of write requests (anything but `GET` and `HEAD`) in the
    /// settled access log (see [`Registry::settled_requests`]).
    pub fn settled_writes(&self) -> usize {
        self.settled_writes_since(0).len()
    }

    /// The write requests (anything but `GET` and `HEAD`) in the settled
    /// access log after its first `before` lines, as `METHOD path`. Every
    /// "nothing was written" check reads this, never the raw log: a write
    /// the registry has answered but not yet logged would go unseen.
    pub fn settled_writes_since(&self, before: usize) -> Vec<String> {
        self.settled_requests()
            .iter()
            .skip(before)
            .filter(|r| r.method != "GET" && r.method != "HEAD")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// What reached the registry for good in the settled access log after
    /// its first `before` lines, as `METHOD path`: every write except the
    /// traffic of upload sessions that were cancelled (an import may send a
    /// blob into a session before the bundle proved whole, and cancels the
    /// session when it turns out broken), plus `OPEN <dir>` for each upload
    /// session still open in the storage. A committed blob shows as its
    /// `PUT ?digest=` or its mount.
    pub fn settled_commits_since(&self, before: usize) -> Vec<String> {
        let requests = self.settled_requests();
        let cancelled: std::collections::HashSet<String> = requests
            .iter()
            .filter(|r| r.method == "DELETE" && r.path.contains("/blobs/uploads/"))
            .map(|r| session_of(&r.path))
            .collect();
        let mut commits: Vec<String> = requests
            .iter()
            .skip(before)
            .filter(|r| r.method != "GET" && r.method != "HEAD")
            .filter(|r| {
                let session_traffic = r.path.contains("/blobs/uploads/")
                    && !r.path.contains("mount=")
                    && (r.method == "POST" || cancelled.contains(&session_of(&r.path)));
                !session_traffic
            })
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        commits.extend(
            self.open_upload_sessions()
                .into_iter()
                .map(|dir| format!("OPEN {}", dir.display())),
        );
        commits
    }

    /// Upload sessions the registry still holds: the directories under a
    /// repository's `_uploads` in its storage that hold the `startedat` file
    /// written when the session was opened. (distribution 2.8 removes a
    /// cancelled session's directory and then writes an empty hash state
    /// into it again, so a cancelled session leaves `hashstates/` and
    /// nothing else.)
    pub fn open_upload_sessions(&self) -> Vec<PathBuf> {
        let mut open = Vec::new();
        let mut dirs = vec![self.storage_dir().to_path_buf()];
        for _ in 0..10_000 {
            let Some(dir) = dirs.pop() else { break };
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if !path.is_dir() {
                    continue;
                }
                if path.file_name().is_some_and(|n| n == "_uploads") {
                    let Ok(sessions) = std::fs::read_dir(&path) else {
                        continue;
                    };
                    open.extend(
                        sessions
                            .flatten()
                            .map(|s| s.path())
                            .filter(|s| s.join("startedat").exists()),
                    );
                } else {
                    dirs.push(path);
                }
            }
        }
        open
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            None => false,
            Some(child) => child
                .try_wait()
                .expect("ask whether the test registry is still running")
                .is_none(),
        }
    }

    /// Kills the registry (SIGKILL, like a crash) and waits for it. The port
    /// and storage are kept for [`Registry::restart`]. Does nothing if it is
    /// already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // kill() fails only if it already exited, which is fine here.
            let _ = child.kill();
            child
                .wait()
                .expect("wait for the killed test registry to exit");
        }
    }

    /// Starts the registry again on the same port with the same storage,
    /// config and upload secret (so upload sessions opened before stay valid),
    /// and waits until it answers. Stops it first if it is running.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(StartError::AddrInUse) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(200));
                }
                Err(StartError::AddrInUse) => panic!(
                    "could not restart docker-registry on port {}: the port stayed in use \
                     (another process took it while the registry was down); log:\n{}",
                    self.port,
                    self.log_text()
                ),
            }
        }
    }

    /// Repositories in `GET /v2/_catalog`, as the registry lists them (sorted).
    pub fn catalog(&self) -> Vec<String> {
        let response = self.get("/v2/_catalog?n=1000");
        assert_eq!(
            response.status,
            200,
            "GET /v2/_catalog on the test registry failed: {}",
            String::from_utf8_lossy(&response.body)
        );
        string_list(&response.json(), "repositories")
    }

    /// Tags of `repo` (`GET /v2/<repo>/tags/list`), sorted; empty when the
    /// repository does not exist.
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let response = self.get(&format!("/v2/{repo}/tags/list"));
        match response.status {
            404 => Vec::new(),
            200 => {
                let mut tags = string_list(&response.json(), "tags");
                tags.sort();
                tags
            }
            other => panic!(
                "GET /v2/{repo}/tags/list on the test registry answered {other}: {}",
                String::from_utf8_lossy(&response.body)
            ),
        }
    }

    /// The manifest `repo:reference` (tag or digest) as stored, or `None` if
    /// the registry does not have it.
    pub fn manifest(&self, repo: &str, reference: &str) -> Option<HttpResponse> {
        let response = self.request(
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", MANIFEST_ACCEPT)],
        );
        match response.status {
            200 => Some(response),
            404 => None,
            other => panic!(
                "GET /v2/{repo}/manifests/{reference} on the test registry answered {other}: {}",
                String::from_utf8_lossy(&response.body)
            ),
        }
    }

    /// Whether `HEAD /v2/<repo>/manifests/<reference>` finds it.
    pub fn manifest_exists(&self, repo: &str, reference: &str) -> bool {
        let path = format!("/v2/{repo}/manifests/{reference}");
        exists(
            &path,
            self.request("HEAD", &path, &[("Accept", MANIFEST_ACCEPT)]),
        )
    }

    /// Whether `HEAD /v2/<repo>/blobs/<digest>` finds it (a blob is only
    /// visible in repositories it was pushed or mounted into).
    pub fn blob_exists(&self, repo: &str, digest: &str) -> bool {
        let path = format!("/v2/{repo}/blobs/{digest}");
        exists(&path, self.request("HEAD", &path, &[]))
    }

    /// Digests (`sha256:…`) of every blob in the storage, whatever repository
    /// links it: configs, layers and manifests alike. Sorted.
    pub fn stored_blobs(&self) -> Vec<String> {
        let root = self.storage.join("docker/registry/v2/blobs/sha256");
        let mut digests = Vec::new();
        let Ok(prefixes) = fs::read_dir(&root) else {
            return digests;
        };
        for prefix in prefixes {
            let prefix = prefix.expect("list the registry's blob storage");
            for blob in fs::read_dir(prefix.path()).expect("list the registry's blob storage") {
                let blob = blob.expect("list the registry's blob storage");
                if blob.path().join("data").is_file() {
                    digests.push(format!("sha256:{}", blob.file_name().to_string_lossy()));
                }
            }
        }
        digests.sort();
        digests
    }

    /// `GET path` (e.g. `/v2/_catalog`) with the registry's CA and credentials.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[])
    }

    /// Any request without a body, through curl, with the registry's CA and
    /// credentials. `path` starts with `/`.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        let mut cmd = tools::command("curl");
        cmd.args(["--silent", "--show-error", "--include", "--max-time", "20"]);
        if method == "HEAD" {
            cmd.arg("--head");
        } else {
            cmd.args(["--request", method]);
        }
        let base = self.curl_base(&mut cmd);
        if let Some((user, password)) = &self.options.basic_auth {
            cmd.arg("--user").arg(format!("{user}:{password}"));
        }
        if let Some(service) = &self.token_service {
            let repositories: Vec<&str> = repository_of(path).into_iter().collect();
            cmd.arg("--header").arg(format!(
                "Authorization: Bearer {}",
                service.admin_token(&repositories)
            ));
        }
        for (name, value) in headers {
            cmd.arg("--header").arg(format!("{name}: {value}"));
        }
        cmd.arg(format!("{base}{path}"));
        let out = tools::run(&mut cmd, &format!("{method} {path} on the test registry"));
        parse_curl_include(&out.stdout).unwrap_or_else(|| {
            panic!(
                "could not parse curl's answer to {method} {path}: {:?}",
                tools::clip(&out.stdout)
            )
        })
    }

    /// Adds curl's TLS options (CA, client certificate, a `--resolve` for a
    /// certificate that names another host) and returns the base URL to use.
    fn curl_base(&self, cmd: &mut std::process::Command) -> String {
        let Some(tls) = &self.tls else {
            return self.url();
        };
        cmd.arg("--cacert").arg(&tls.ca_cert);
        if let Some(client) = &tls.client {
            cmd.arg("--cert").arg(&client.cert);
            cmd.arg("--key").arg(&client.key);
        }
        let named = self
            .options
            .tls_names
            .as_deref()
            .and_then(|names| names.split(',').find_map(|n| n.strip_prefix("DNS:")));
        match named {
            Some(name) => {
                cmd.arg("--resolve")
                    .arg(format!("{name}:{}:127.0.0.1", self.port));
                format!("https://{name}:{}", self.port)
            }
            None => self.url(),
        }
    }

    fn write_config(&self) {
        let quote =
            |path: &Path| serde_json::to_string(&path.to_string_lossy()).expect("quote a path");
        let mut yaml = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: {secret}\n",
            storage = quote(&self.storage),
            port = self.port,
            secret = random_hex(),
        );
        if let Some(url) = &self.options.public_url {
            yaml.push_str(&format!("  host: {url}\n"));
        }
        if let Some(tls) = &self.tls {
            yaml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                quote(&tls.server_cert),
                quote(&tls.server_key)
            ));
            if let Some(client) = &tls.client {
                yaml.push_str(&format!(
                    "    clientcas:\n      - {}\n",
                    quote(&client.ca_cert)
                ));
            }
        }
        if self.options.basic_auth.is_some() {
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: airlock-test\n    path: {}\n",
                quote(&self.dir.path().join("htpasswd"))
            ));
        }
        if let Some(service) = &self.token_service {
            yaml.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                service.realm(),
                super::token::SERVICE,
                super::token::ISSUER,
                quote(service.root_cert())
            ));
        }
        fs::write(&self.config, yaml).expect("write the test registry's config.yml");
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let log_start = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the test registry's log file");
        let log_err = log
            .try_clone()
            .expect("duplicate the test registry's log file handle");
        let mut cmd = tools::command("docker-registry");
        cmd.arg("serve")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(&key);
            }
        }
        let child = cmd.spawn().expect("spawn docker-registry");
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            let exited = self
                .child
                .as_mut()
                .expect("the registry child was just stored")
                .try_wait()
                .expect("ask whether docker-registry is still running");
            if let Some(status) = exited {
                self.child = None;
                let log = self.log_text();
                let new_lines = log.get(log_start as usize..).unwrap_or(&log);
                if new_lines.contains("address already in use") {
                    return Err(StartError::AddrInUse);
                }
                panic!(
                    "docker-registry exited with {status} while starting (config {}); log:\n{new_lines}",
                    self.config.display()
                );
            }
            // The answer must be this child's: while the port was free
            // (a restart), another test's server may have taken it, and then
            // this child fails to bind while the other one answers.
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && self.answers_v2()
                && self.logged_a_probe_since(log_start)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                panic!(
                    "docker-registry did not answer GET /v2/ on {} within {:?}; log:\n{}",
                    self.host(),
                    START_TIMEOUT,
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /v2/` answers 200, or 401 when auth is on, from a distribution
    /// registry (and not from some other server that took the port).
    /// Whether this registry's access log shows a `GET /v2/` (a probe of
    /// [`Self::answers_v2`]) written after byte `log_start`. The line comes
    /// just after the answer, so a probe may need a moment to show.
    fn logged_a_probe_since(&self, log_start: u64) -> bool {
        let log = self.log_text();
        log.get(log_start as usize..)
            .unwrap_or_default()
            .lines()
            .filter_map(parse_access_line)
            .any(|r| r.method == "GET" && r.path == "/v2/")
    }

    fn answers_v2(&self) -> bool {
        let mut cmd = tools::command("curl");
        cmd.args(["--silent", "--include", "--max-time", "2"]);
        let base = self.curl_base(&mut cmd);
        cmd.arg(format!("{base}/v2/"));
        let out = tools::output(&mut cmd, "probe the test registry");
        match parse_curl_include(&out.stdout) {
            Some(response) => {
                (response.status == 200 || response.status == 401)
                    && response.header("docker-distribution-api-version").is_some()
            }
            None => false,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.url())
            .field("auth", &self.options.basic_auth.is_some())
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener.local_addr().expect("read the bound port").port()
}

/// A fresh random-looking hex string (not for security: tests only).
fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut hasher = Sha256::new();
    hasher.update(nanos.to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    hasher.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// A throwaway CA and a server certificate for `names` (`subjectAltName`
/// syntax), both P-256, valid for two days; with `client_certs`, a client
/// CA with a client certificate, and a client certificate of another CA.
fn make_tls_files(dir: &Path, names: &str, client_certs: bool) -> TlsFiles {
    let tls_dir = dir.join("tls");
    let cert_dir = dir.join("certs.d");
    fs::create_dir(&tls_dir).expect("create the test registry's tls directory");
    fs::create_dir(&cert_dir).expect("create the test registry's certs.d directory");
    let ca_key = tls_dir.join("ca.key");
    let ca_cert = tls_dir.join("ca.crt");
    let server_key = tls_dir.join("server.key");
    let server_csr = tls_dir.join("server.csr");
    let server_cert = tls_dir.join("server.crt");
    let ext = tls_dir.join("server.ext");
    tools::run(
        tools::command("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=airlock test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca_cert),
        "make a throwaway CA with openssl",
    );
    tools::run(
        tools::command("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(&server_key)
            .arg("-out")
            .arg(&server_csr),
        "make the test registry's certificate request with openssl",
    );
    fs::write(
        &ext,
        format!(
            "subjectAltName={names}\n\
             basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n"
        ),
    )
    .expect("write the server certificate's extensions file");
    tools::run(
        tools::command("openssl")
            .args(["x509", "-req", "-days", "2", "-set_serial"])
            .arg(format!("0x{}", random_hex()))
            .arg("-in")
            .arg(&server_csr)
            .arg("-CA")
            .arg(&ca_cert)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&server_cert),
        "issue the test registry's server certificate with openssl",
    );
    fs::copy(&ca_cert, cert_dir.join("ca.crt")).expect("copy the CA certificate into certs.d");
    let client = client_certs.then(|| {
        let (client_ca, client_ca_key) = make_ca(&tls_dir, "client-ca", "airlock test client CA");
        let (cert, key) = issue_client_cert(&tls_dir, "client", &client_ca, &client_ca_key);
        let (other_ca, other_ca_key) = make_ca(&tls_dir, "other-ca", "some other client CA");
        let (foreign_cert, foreign_key) =
            issue_client_cert(&tls_dir, "foreign-client", &other_ca, &other_ca_key);
        // skopeo (containers/image) takes the client pair from certs.d too.
        fs::copy(&cert, cert_dir.join("client.cert")).expect("copy the client certificate");
        fs::copy(&key, cert_dir.join("client.key")).expect("copy the client key");
        ClientFiles {
            ca_cert: client_ca,
            cert,
            key,
            foreign_cert,
            foreign_key,
        }
    });
    TlsFiles {
        ca_cert,
        server_cert,
        server_key,
        cert_dir,
        client,
    }
}

/// A P-256 CA `<name>.crt`/`<name>.key` in `dir`.
fn make_ca(dir: &Path, name: &str, subject: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    tools::run(
        tools::command("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .arg("-subj")
            .arg(format!("/CN={subject}"))
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        &format!("make the throwaway CA {name} with openssl"),
    );
    (cert, key)
}

/// A P-256 client certificate (`clientAuth`) `<name>.crt`/`<name>.key`
/// issued by `ca`.
fn issue_client_cert(dir: &Path, name: &str, ca: &Path, ca_key: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let cert = dir.join(format!("{name}.crt"));
    let ext = dir.join(format!("{name}.ext"));
    tools::run(
        tools::command("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes"])
            .args(["-subj", "/CN=airlock"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr),
        &format!("make the certificate request {name} with openssl"),
    );
    fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=clientAuth\n",
    )
    .expect("write the client certificate's extensions file");
    tools::run(
        tools::command("openssl")
            .args(["x509", "-req", "-days", "2", "-set_serial"])
            .arg(format!("0x{}", random_hex()))
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(ca)
            .arg("-CAkey")
            .arg(ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert),
        &format!("issue the client certificate {name} with openssl"),
    );
    (cert, key)
}

/// The repository a `/v2/<repository>/(manifests|blobs|tags)/…` path names.
fn repository_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .find_map(|marker| rest.find(marker).map(|end| &rest[..end]))
}

fn exists(path: &str, response: HttpResponse) -> bool {
    match response.status {
        200 => true,
        404 => false,
        other => panic!("HEAD {path} on the test registry answered {other}"),
    }
}

fn string_list(json: &serde_json::Value, key: &str) -> Vec<String> {
    match &json[key] {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .unwrap_or_else(|| panic!("registry listed a non-string in `{key}`: {json}"))
                    .to_owned()
            })
            .collect(),
        other => panic!("registry answered `{key}` = {other}, not a list"),
    }
}

/// Parses `curl --include` output: status line, headers, blank line, body.
/// Interim `100 Continue` blocks are skipped.
fn parse_curl_include(raw: &[u8]) -> Option<HttpResponse> {
    let mut rest = raw;
    loop {
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let body = &rest[end + 4..];
        let mut lines = head.lines();
        let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        if status == 100 {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            })
            .collect();
        return Some(HttpResponse {
            status,
            headers,
            body: body.to_vec(),
        });
    }
}

/// `127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"`
fn parse_access_line(line: &str) -> Option<LoggedRequest> {
    let mut quoted = line.split('"');
    let _before = quoted.next()?;
    let request = quoted.next()?;
    let after = quoted.next()?;
    let _referer = quoted.next()?;
    let _gap = quoted.next()?;
    let user_agent = quoted.next().unwrap_or("").to_owned();
    let mut parts = request.split(' ');
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = after.split_whitespace().next()?.parse().ok()?;
    Some(LoggedRequest {
        method,
        path,
        status,
        user_agent,
    })
}

/// The session a `/v2/<repo>/blobs/uploads/<uuid>?…` path belongs to.
fn session_of(path: &str) -> String {
    path.split('?').next().unwrap_or(path).to_owned()
}
