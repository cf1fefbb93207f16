//! A client for the OCI distribution API, limited to what importing needs:
//! blob existence, cross-repository mounts, chunked and monolithic uploads,
//! and manifests pushed as their original bytes.
//!
//! Why not `oci_client::Client` for the transport: it cannot report a 202 on a
//! mount as "not mounted", does not expose upload sessions (so no resume from
//! the `Range` a registry acknowledges), has no retries and no re-authentication
//! in the middle of an upload, and gives no hook to count requests by status.
//! airlock uses `oci_client`'s reference parsing; the wire calls are here.

pub mod auth;
pub mod origin;
pub mod retry;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use url::Url;

use super::{Error, Result};
use crate::digest::Digest;
use crate::read::document::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_ARTIFACT_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
pub use auth::Credentials;
use auth::{Challenge, TokenResponse};
use origin::Origin;
pub use retry::RetryPolicy;

/// How long to wait for a TCP/TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the registry may take to answer a request, on top of the time
/// its body takes to move. Generous, as registries verify a whole blob's
/// digest before answering the final PUT.
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(300);
/// The slowest a body may move before its request is abandoned: 64 KiB/s, a
/// link slower than any that carries bundles, so only a stalled transfer
/// trips it. A request's deadline is the answer timeout plus its body's size
/// at this rate.
pub const DEFAULT_MIN_BYTES_PER_SECOND: u64 = 64 << 10;
/// How long a response body may send nothing before it counts as stalled.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Redirects followed per request (blob reads are redirected to storage).
const MAX_REDIRECTS: usize = 5;
/// Largest tag list or catalog page read: about 30,000 tag names, far more
/// than the pages of at most a few hundred entries airlock asks for.
const MAX_LIST_BYTES: u64 = 4 << 20;
/// Largest token response read: JWTs with many scopes stay under 64 KiB.
const MAX_TOKEN_BYTES: u64 = 1 << 20;
/// How much of an error body is read for its message.
const MAX_ERROR_BYTES: u64 = 64 << 10;

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// `host[:port]`.
    pub host: String,
    /// Use HTTP instead of HTTPS (default false).
    pub plain_http: bool,
    /// Extra CA certificates (PEM files) to trust, e.g. an internal CA.
    pub ca_certs: Vec<PathBuf>,
    /// Accept any TLS certificate (default false; for tests and emergencies).
    pub insecure_skip_tls_verify: bool,
    /// A client certificate to present when the registry asks for one
    /// (mutual TLS; default none).
    pub client_identity: Option<ClientIdentity>,
    /// Credentials (default anonymous).
    pub credentials: Credentials,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// Told about every HTTP exchange with the registry (default none).
    pub observer: Option<ObserverHandle>,
    /// How long requests may take (default [`Timeouts::default`]).
    pub timeouts: Timeouts,
    /// Hosts (`host` or `host:port`) a token realm may be on for airlock to
    /// send the credentials there (default: empty, any host reached over
    /// https, see [`origin`]).
    pub token_realm_hosts: Vec<String>,
}

/// A client certificate and its private key (PEM files), presented to a
/// registry that requires mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate, optionally followed by its intermediate CAs.
    pub certificate: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub key: PathBuf,
}

impl ClientIdentity {
    /// Reads both files into the identity the TLS client presents. The
    /// key's bytes are never part of an error.
    fn load(&self) -> Result<reqwest::Identity> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| Error::Tls {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        };
        let mut pem = read(&self.certificate)?;
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
        pem.extend_from_slice(&read(&self.key)?);
        reqwest::Identity::from_pem(&pem).map_err(|e| Error::Tls {
            path: format!("{} and {}", self.certificate.display(), self.key.display()),
            reason: format!("not a PEM client certificate and private key: {e}"),
        })
    }
}

/// How long a request may take: a deadline that grows with the bytes it
/// moves, so a large blob moving slowly is never cut off for its size, and an
/// idle limit on response bodies, so a stalled one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The time for the registry's answer (default
    /// [`DEFAULT_ANSWER_TIMEOUT`]).
    pub answer: Duration,
    /// The slowest rate a body may move at (default
    /// [`DEFAULT_MIN_BYTES_PER_SECOND`]).
    pub min_bytes_per_second: u64,
    /// How long a response body may send nothing (default
    /// [`DEFAULT_IDLE_TIMEOUT`]).
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            answer: DEFAULT_ANSWER_TIMEOUT,
            min_bytes_per_second: DEFAULT_MIN_BYTES_PER_SECOND,
            idle: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl Timeouts {
    /// The deadline of a request moving `bytes` of body (sent or received).
    pub fn deadline(&self, bytes: u64) -> Duration {
        let moving = bytes / self.min_bytes_per_second.max(1);
        self.answer + Duration::from_secs(moving)
    }
}

/// Told about every HTTP exchange with the registry, e.g. to count requests
/// by method and status for metrics.
pub trait RequestObserver: Send + Sync {
    /// One exchange ended: `method` as sent (`GET`, `PUT`, …) and the
    /// response status, or `None` when no response arrived (connection
    /// error, timeout). Called once per attempt, including 401 challenges,
    /// token requests and attempts that are retried.
    fn observe(&self, method: &str, status: Option<u16>);
}

/// A shared [`RequestObserver`] as [`RegistryConfig`] holds it (its `Debug`
/// prints just `RequestObserver`).
#[derive(Clone)]
pub struct ObserverHandle(Arc<dyn RequestObserver>);

impl ObserverHandle {
    /// Wraps an observer.
    pub fn new(observer: Arc<dyn RequestObserver>) -> Self {
        ObserverHandle(observer)
    }
}

impl fmt::Debug for ObserverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestObserver")
    }
}

/// A manifest as a registry served it.
pub struct FetchedManifest {
    /// The media type it was served as.
    pub media_type: String,
    /// Its digest, computed from the bytes (with the algorithm the
    /// registry's `Docker-Content-Digest` names, else SHA-256); a registry
    /// header that disagrees is refused. Always `Some`.
    pub digest: Option<Digest>,
    /// Its exact bytes.
    pub bytes: Bytes,
}

/// The access a request needs, as token scopes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    repository: String,
    mount_from: Option<String>,
    access: Access,
}

/// What a scope asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Access {
    /// Pull and push on the repository.
    PullPush,
    /// Pull only on the repository.
    Pull,
    /// Listing the registry's repositories.
    Catalog,
}

impl Scope {
    /// Pull and push on `repository`.
    pub fn push(repository: &str) -> Self {
        Scope {
            repository: repository.to_owned(),
            mount_from: None,
            access: Access::PullPush,
        }
    }

    /// Pull only on `repository` (`airlock bundle create --image`), so a
    /// read-only account is enough.
    pub fn pull(repository: &str) -> Self {
        Scope {
            access: Access::Pull,
            ..Scope::push(repository)
        }
    }

    /// Listing the registry's repositories (`/v2/_catalog`).
    pub fn catalog() -> Self {
        Scope {
            repository: String::new(),
            mount_from: None,
            access: Access::Catalog,
        }
    }

    /// Push on `repository` and pull on `from`, for cross-repository mounts.
    pub fn mount(repository: &str, from: &str) -> Self {
        Scope {
            mount_from: Some(from.to_owned()),
            ..Scope::push(repository)
        }
    }

    fn token_scopes(&self) -> Vec<String> {
        let actions = match self.access {
            Access::Catalog => return vec!["registry:catalog:*".to_owned()],
            Access::Pull => "pull",
            Access::PullPush => "pull,push",
        };
        let mut scopes = vec![format!("repository:{}:{actions}", self.repository)];
        if let Some(from) = &self.mount_from {
            scopes.push(format!("repository:{from}:pull"));
        }
        scopes
    }
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    tokens: HashMap<Scope, String>,
}

/// A connection to one registry, shared by all concurrent transfers.
pub struct RegistryClient {
    http: reqwest::Client,
    base: Url,
    origin: Origin,
    host: String,
    credentials: Credentials,
    retry: RetryPolicy,
    auth: Mutex<AuthState>,
    observer: Option<ObserverHandle>,
    timeouts: Timeouts,
}

/// An open upload session: where to send the next request, and how far the
/// registry has acknowledged.
#[derive(Debug, Clone)]
pub struct UploadSession {
    /// The latest `Location` the registry returned.
    pub location: Url,
    /// Bytes acknowledged so far.
    pub offset: u64,
}

impl RegistryClient {
    /// Builds a client; reads the CA files now so a bad path fails early.
    pub fn new(config: RegistryConfig) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
            .redirect(redirect_policy());
        for path in &config.ca_certs {
            let pem = std::fs::read(path).map_err(|e| Error::Tls {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Tls {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            if certs.is_empty() {
                return Err(Error::Tls {
                    path: path.display().to_string(),
                    reason: "no PEM certificate found".into(),
                });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(identity) = &config.client_identity {
            builder = builder.identity(identity.load()?);
        }
        if config.insecure_skip_tls_verify {
            tracing::warn!(
                registry = %config.host,
                "TLS certificate verification is off (insecure skip TLS verify): anyone on the network path can read and change what is pushed"
            );
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|e| Error::Tls {
            path: "(client)".into(),
            reason: e.to_string(),
        })?;
        let scheme = if config.plain_http { "http" } else { "https" };
        let base =
            Url::parse(&format!("{scheme}://{}/", config.host)).map_err(|e| Error::InvalidUrl {
                url: config.host.clone(),
                reason: e.to_string(),
            })?;
        Ok(RegistryClient {
            http,
            origin: Origin::new(base.clone(), config.token_realm_hosts),
            base,
            host: config.host,
            credentials: config.credentials,
            retry: config.retry,
            auth: Mutex::new(AuthState::default()),
            observer: config.observer,
            timeouts: config.timeouts,
        })
    }

    /// Reports one exchange to the observer, if any.
    fn observe(&self, method: &Method, outcome: std::result::Result<&Response, &reqwest::Error>) {
        if let Some(ObserverHandle(observer)) = &self.observer {
            observer.observe(method.as_str(), outcome.ok().map(|r| r.status().as_u16()));
        }
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base.join(path).map_err(|e| Error::InvalidUrl {
            url: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Checks the registry answers the API at all (`GET /v2/`); a 401 counts
    /// as alive.
    pub async fn ping(&self) -> Result<()> {
        let url = self.url("v2/")?;
        let response = self
            .http
            .get(url.clone())
            .timeout(self.timeouts.deadline(0))
            .send()
            .await;
        self.observe(&Method::GET, response.as_ref());
        let response = response.map_err(|source| http_error(&Method::GET, &url, source))?;
        match response.status() {
            s if s.is_success() || s == StatusCode::UNAUTHORIZED => Ok(()),
            _ => Err(status_error(Method::GET, &url, response).await),
        }
    }

    /// Whether a blob is in `repository`, and its size there.
    pub async fn blob_size(&self, repository: &str, digest: &Digest) -> Result<Option<u64>> {
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"))?;
        let scope = Scope::push(repository);
        let response = self
            .send(&scope, true, || self.http.head(url.clone()))
            .await?;
        match response.status() {
            // reqwest reports a HEAD body as empty; the header holds the size.
            s if s.is_success() => Ok(Some(
                response
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(Method::HEAD, &url, response).await),
        }
    }

    /// Asks the registry to link a blob from another repository. `Ok(false)`
    /// when it declines (202 or an error status), in which case the caller
    /// uploads instead.
    pub async fn mount(&self, repository: &str, from: &str, digest: &Digest) -> Result<bool> {
        let mut url = self.url(&format!("v2/{repository}/blobs/uploads/"))?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from);
        let scope = Scope::mount(repository, from);
        let response = self
            .send(&scope, true, || self.http.post(url.clone()))
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // The registry opened an upload session instead; close it so
                // it does not linger until the registry's purge.
                if let Ok(location) = self.location(&url, &response) {
                    let _ = self.cancel(repository, &location).await;
                }
                Ok(false)
            }
            status => {
                tracing::debug!(%status, %repository, %from, %digest, "mount declined");
                Ok(false)
            }
        }
    }

    /// Opens an upload session (`POST /v2/<repo>/blobs/uploads/`).
    pub async fn start_upload(&self, repository: &str) -> Result<UploadSession> {
        let url = self.url(&format!("v2/{repository}/blobs/uploads/"))?;
        let scope = Scope::push(repository);
        let response = self
            .send(&scope, true, || {
                self.http
                    .post(url.clone())
                    .header(header::CONTENT_LENGTH, 0)
            })
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(status_error(Method::POST, &url, response).await);
        }
        Ok(UploadSession {
            location: self.location(&url, &response)?,
            offset: 0,
        })
    }

    /// Sends one chunk (`PATCH` with `Content-Range`) and advances the session.
    pub async fn send_chunk(
        &self,
        repository: &str,
        session: &mut UploadSession,
        chunk: Bytes,
    ) -> Result<()> {
        let len = chunk.len() as u64;
        if len == 0 {
            return Ok(());
        }
        let range = format!("{}-{}", session.offset, session.offset + len - 1);
        let url = session.location.clone();
        let scope = Scope::push(repository);
        let response = self
            .send(&scope, false, || {
                self.http
                    .patch(url.clone())
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_RANGE, range.clone())
                    .header(header::CONTENT_LENGTH, len)
                    .body(chunk.clone())
            })
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(status_error(Method::PATCH, &url, response).await);
        }
        session.location = self.location(&url, &response)?;
        session.offset += len;
        Ok(())
    }

    /// Closes a session with the blob's digest (`PUT ?digest=`), sending
    /// `last` as the final part of the content (may be empty).
    pub async fn finish_upload(
        &self,
        repository: &str,
        session: &UploadSession,
        digest: &Digest,
        last: Bytes,
    ) -> Result<()> {
        let mut url = session.location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let scope = Scope::push(repository);
        let len = last.len();
        let response = self
            .send(&scope, false, || {
                self.http
                    .put(url.clone())
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_LENGTH, len)
                    .body(last.clone())
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(status_error(Method::PUT, &url, response).await);
        }
        Ok(())
    }

    /// Sends the rest of a blob, `len` bytes from the session's offset, as
    /// one `PATCH` whose body streams in as the bundle is read: a single
    /// chunk as far as the registry can tell (`Content-Range` and
    /// `Content-Length` cover all of it). Returns the session's next
    /// `Location`. Like [`RegistryClient::put_stream`] it is sent once; the
    /// caller asks the registry how far it got when it fails.
    pub async fn patch_stream(
        &self,
        repository: &str,
        session: &UploadSession,
        len: u64,
        body: reqwest::Body,
    ) -> Result<Url> {
        let url = &session.location;
        let range = format!("{}-{}", session.offset, session.offset + len - 1);
        let request = self
            .http
            .patch(url.clone())
            .header(header::CONTENT_RANGE, range);
        let response = self
            .send_streamed(repository, Method::PATCH, url, len, request, body)
            .await?;
        tracing::debug!(method = %Method::PATCH, url = %redact(url), status = %response.status(), bytes = len, "registry request");
        if response.status() == StatusCode::UNAUTHORIZED && self.origin.is_registry(response.url())
        {
            // A token that expired while the bundle was read: fetch a new
            // one, so that the caller's next attempt carries it.
            self.authenticate(&Scope::push(repository), response.headers())
                .await?;
        }
        if response.status() != StatusCode::ACCEPTED {
            return Err(status_error(Method::PATCH, url, response).await);
        }
        self.location(url, &response)
    }

    /// Sends a whole blob as one streaming `PUT ?digest=` on an open session.
    pub async fn put_stream(
        &self,
        repository: &str,
        session: &UploadSession,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
    ) -> Result<()> {
        let mut url = session.location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let request = self.http.put(url.clone());
        let response = self
            .send_streamed(repository, Method::PUT, &url, size, request, body)
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(status_error(Method::PUT, &url, response).await);
        }
        Ok(())
    }

    /// Sends `request` (a `method` to `url`) once with a body of `len` bytes
    /// that streams in as it is read, so it cannot be replayed: the
    /// registry's credentials when `url` is on its own origin, a deadline
    /// that grows with `len`, the exchange counted in the metrics.
    async fn send_streamed(
        &self,
        repository: &str,
        method: Method,
        url: &Url,
        len: u64,
        request: RequestBuilder,
        body: reqwest::Body,
    ) -> Result<Response> {
        let mut request = request
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, len)
            .timeout(self.timeouts.deadline(len))
            .body(body);
        if self.origin.is_registry(url)
            && let Some(value) = self.auth_header(&Scope::push(repository))
        {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = request.send().await;
        self.observe(&method, response.as_ref());
        response.map_err(|source| http_error(&method, url, source))
    }

    /// Where an upload session stands (`GET` on its latest `Location`): the
    /// bytes the registry holds and the `Location` to continue with. `None`
    /// when the registry no longer knows the session (404, or 400 for a
    /// `Location` that is not the latest) or cannot say how far it got.
    /// Transient failures are retried per the [`RetryPolicy`].
    pub async fn upload_status(
        &self,
        repository: &str,
        location: &Url,
    ) -> Result<Option<UploadSession>> {
        let scope = Scope::push(repository);
        let response = self
            .send(&scope, true, || self.http.get(location.clone()))
            .await?;
        let status = response.status();
        if status.is_success() {
            let Some(offset) = acknowledged_bytes(response.headers()) else {
                tracing::debug!(url = %redact(location), %status, "upload status without a Range header");
                return Ok(None);
            };
            let next = self
                .location(location, &response)
                .unwrap_or_else(|_| location.clone());
            return Ok(Some(UploadSession {
                location: next,
                offset,
            }));
        }
        if status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST {
            tracing::debug!(url = %redact(location), %status, "upload session unknown to the registry");
            return Ok(None);
        }
        Err(status_error(Method::GET, location, response).await)
    }

    /// The registry this client talks to (`host[:port]`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The retry policy for transient failures.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Abandons an upload session.
    pub async fn cancel(&self, repository: &str, location: &Url) -> Result<()> {
        let scope = Scope::push(repository);
        self.send(&scope, false, || self.http.delete(location.clone()))
            .await
            .map(|_| ())
    }

    /// The digest a tag or digest reference currently resolves to.
    pub async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Digest>> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"))?;
        let scope = Scope::push(repository);
        let accept = [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
            OCI_ARTIFACT_MANIFEST,
        ]
        .join(", ");
        let response = self
            .send(&scope, true, || {
                self.http
                    .head(url.clone())
                    .header(header::ACCEPT, accept.clone())
            })
            .await?;
        match response.status() {
            s if s.is_success() => Ok(response
                .headers()
                .get("Docker-Content-Digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(Method::HEAD, &url, response).await),
        }
    }

    /// Fetches a manifest or index by tag or digest: the media type the
    /// registry serves it as, and its exact bytes. Fails when it is absent.
    pub async fn get_manifest(&self, repository: &str, reference: &str) -> Result<(String, Bytes)> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"))?;
        match self.fetch_manifest(&url, &Scope::pull(repository)).await? {
            Some(fetched) => Ok((fetched.media_type, fetched.bytes)),
            None => Err(Error::Status {
                method: Method::GET.to_string(),
                url: redact(&url),
                status: StatusCode::NOT_FOUND.as_u16(),
                message: "manifest unknown".into(),
            }),
        }
    }

    /// One page of `GET /v2/_catalog?n=<n>[&last=<last>]`: repository names
    /// in the registry's (lexical) order.
    pub async fn catalog_page(&self, n: usize, last: Option<&str>) -> Result<Vec<String>> {
        let mut url = self.url("v2/_catalog")?;
        url.query_pairs_mut().append_pair("n", &n.to_string());
        if let Some(last) = last {
            url.query_pairs_mut().append_pair("last", last);
        }
        let response = self
            .send(&Scope::catalog(), true, || self.http.get(url.clone()))
            .await?;
        if !response.status().is_success() {
            return Err(status_error(Method::GET, &url, response).await);
        }
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let bytes = read_capped(
            response,
            MAX_LIST_BYTES,
            &url,
            "the catalog page",
            self.timeouts.idle,
        )
        .await?;
        let body: Catalog = serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
            url: redact(&url),
            reason: format!("unreadable catalog: {e}"),
        })?;
        Ok(body.repositories.unwrap_or_default())
    }

    /// Up to `n` tags of `repository` (`GET /v2/<repository>/tags/list?n=<n>`);
    /// empty when the repository is unknown.
    pub async fn tags(&self, repository: &str, n: usize) -> Result<Vec<String>> {
        let mut url = self.url(&format!("v2/{repository}/tags/list"))?;
        url.query_pairs_mut().append_pair("n", &n.to_string());
        let response = self
            .send(&Scope::push(repository), true, || {
                self.http.get(url.clone())
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => return Ok(Vec::new()),
            s if !s.is_success() => return Err(status_error(Method::GET, &url, response).await),
            _ => {}
        }
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let bytes = read_capped(
            response,
            MAX_LIST_BYTES,
            &url,
            "the tag list",
            self.timeouts.idle,
        )
        .await?;
        let body: Tags = serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
            url: redact(&url),
            reason: format!("unreadable tag list: {e}"),
        })?;
        Ok(body.tags.unwrap_or_default())
    }

    /// The manifest `repository:reference` as the registry serves it (media
    /// type, digest, bytes); `None` when absent.
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<FetchedManifest>> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"))?;
        self.fetch_manifest(&url, &Scope::push(repository)).await
    }

    /// `GET` of a manifest URL, refusing anything larger than a registry
    /// must accept; `None` on 404.
    async fn fetch_manifest(&self, url: &Url, scope: &Scope) -> Result<Option<FetchedManifest>> {
        let accept = [
            OCI_INDEX,
            OCI_MANIFEST,
            DOCKER_MANIFEST_LIST,
            DOCKER_MANIFEST,
            OCI_ARTIFACT_MANIFEST,
        ]
        .join(", ");
        let response = self
            .send(scope, true, || {
                self.http
                    .get(url.clone())
                    .header(header::ACCEPT, accept.clone())
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => return Ok(None),
            s if !s.is_success() => return Err(status_error(Method::GET, url, response).await),
            _ => {}
        }
        let headers = response.headers();
        let announced: Option<Digest> = headers
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let media_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .unwrap_or_default();
        // Registries need only accept manifests up to 4 MiB, so a bigger one
        // is refused as it streams, chunked or not.
        let bytes = read_capped(
            response,
            crate::read::DEFAULT_MAX_DOCUMENT_BYTES,
            url,
            "the manifest",
            self.timeouts.idle,
        )
        .await?;
        let algorithm = announced
            .as_ref()
            .map_or(crate::digest::Algorithm::Sha256, Digest::algorithm);
        let mut hasher = crate::digest::Hasher::new(algorithm);
        hasher.update(&bytes);
        let digest = hasher.finish();
        if let Some(announced) = announced
            && announced != digest
        {
            return Err(Error::Protocol {
                url: redact(url),
                reason: format!(
                    "the registry says the manifest is {announced} but its bytes hash to {digest}"
                ),
            });
        }
        let digest = Some(digest);
        Ok(Some(FetchedManifest {
            media_type,
            digest,
            bytes,
        }))
    }

    /// Streams a blob of `size` bytes (its descriptor's) into `sink` as it
    /// arrives; returns the bytes written. A registry sending more is cut
    /// off there: the caller checks the digest of what was written.
    pub async fn get_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        sink: &mut dyn std::io::Write,
    ) -> Result<u64> {
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"))?;
        let scope = Scope::pull(repository);
        let deadline = self.timeouts.deadline(size);
        let mut response = self
            .send(&scope, true, || {
                self.http.get(url.clone()).timeout(deadline)
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error(Method::GET, &url, response).await);
        }
        let mut written = 0u64;
        while let Some(chunk) = next_chunk(&mut response, &url, self.timeouts.idle).await? {
            if written + chunk.len() as u64 > size {
                return Err(Error::Protocol {
                    url: redact(&url),
                    reason: format!("the registry sent more than the blob's {size} bytes"),
                });
            }
            sink.write_all(&chunk).map_err(|e| Error::Protocol {
                url: redact(&url),
                reason: format!("cannot store the blob: {e}"),
            })?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    /// Pushes a manifest as its original bytes under a tag or its digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<()> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"))?;
        let scope = Scope::push(repository);
        let response = self
            .send(&scope, true, || {
                self.http
                    .put(url.clone())
                    .header(header::CONTENT_TYPE, media_type)
                    .body(body.clone())
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(status_error(Method::PUT, &url, response).await);
        }
        Ok(())
    }

    fn location(&self, request_url: &Url, response: &Response) -> Result<Url> {
        let value = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Protocol {
                url: redact(request_url),
                reason: "the registry sent no Location for the upload session".into(),
            })?;
        let location = request_url.join(value).map_err(|e| Error::InvalidUrl {
            url: value.to_owned(),
            reason: e.to_string(),
        })?;
        self.check_upload_url(&location)?;
        Ok(location)
    }

    /// Whether `url` is the registry itself (scheme, host and port), the
    /// only place credentials are sent.
    pub fn is_registry_url(&self, url: &Url) -> bool {
        self.origin.is_registry(url)
    }

    /// Checks an upload URL the registry named (or the upload journal
    /// recorded) before anything is sent to it: see [`Origin::check_upload_url`].
    pub fn check_upload_url(&self, url: &Url) -> Result<()> {
        self.origin
            .check_upload_url(url)
            .map_err(|reason| Error::Protocol {
                url: redact(url),
                reason,
            })
    }

    fn auth_header(&self, scope: &Scope) -> Option<String> {
        let state = self.auth.lock().ok()?;
        match &state.challenge {
            Some(Challenge::Bearer { .. }) => state
                .tokens
                .get(scope)
                .map(|token| format!("Bearer {token}")),
            Some(Challenge::Basic) => self.credentials.basic_header(),
            None => None,
        }
    }

    /// Sends a request built by `build`, authenticating on a 401 and retrying
    /// transient failures when `retryable` (the body must be replayable).
    async fn send(
        &self,
        scope: &Scope,
        retryable: bool,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response> {
        let mut attempt = 0u32;
        let mut authenticated = false;
        loop {
            attempt += 1;
            let mut request = build().build().map_err(|e| Error::InvalidUrl {
                url: "(request)".into(),
                reason: e.to_string(),
            })?;
            // Credentials go to the registry's own scheme, host and port only,
            // never to another host an upload `Location` names.
            if self.origin.is_registry(request.url())
                && let Some(value) = self.auth_header(scope)
            {
                let value =
                    header::HeaderValue::from_str(&value).map_err(|e| Error::InvalidUrl {
                        url: "(authorization header)".into(),
                        reason: e.to_string(),
                    })?;
                request.headers_mut().insert(header::AUTHORIZATION, value);
            }
            // A deadline that grows with the body sent, unless the caller
            // set one for the body it expects back (a blob download).
            if request.timeout().is_none() {
                let sent = request
                    .body()
                    .and_then(|body| body.as_bytes())
                    .map_or(0, |bytes| bytes.len() as u64);
                *request.timeout_mut() = Some(self.timeouts.deadline(sent));
            }
            let method = request.method().clone();
            let url = request.url().clone();
            let outcome = self.http.execute(request).await;
            self.observe(&method, outcome.as_ref());
            match outcome {
                Ok(response)
                    if response.status() == StatusCode::UNAUTHORIZED
                        && !self.origin.is_registry(response.url()) =>
                {
                    // A redirect target (a CDN, an object store) does not get
                    // to choose where airlock sends its credentials.
                    return Err(Error::Unauthorized {
                        host: self.host.clone(),
                        detail: format!(
                            "{} asked for authentication, but airlock authenticates only to the registry itself",
                            redact(response.url())
                        ),
                    });
                }
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED && !authenticated => {
                    authenticated = true;
                    attempt -= 1;
                    self.authenticate(scope, response.headers()).await?;
                }
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    return Err(self.refusal(scope, response).await);
                }
                Ok(response) if retryable && retry::is_transient_status(response.status()) => {
                    let wait = retry::retry_after(response.headers());
                    match self.retry.delay(attempt, wait) {
                        Some(delay) => {
                            tracing::warn!(%method, url = %redact(&url), status = %response.status(), attempt, "registry busy; retrying in {delay:?}");
                            tokio::time::sleep(delay).await;
                        }
                        None => return Ok(response),
                    }
                }
                Ok(response) => {
                    tracing::debug!(%method, url = %redact(&url), status = %response.status(), "registry request");
                    return Ok(response);
                }
                Err(source)
                    if retryable
                        && (source.is_connect() || source.is_timeout())
                        && tls_hint(&source).is_none() =>
                {
                    match self.retry.delay(attempt, None) {
                        Some(delay) => {
                            tracing::warn!(%method, url = %redact(&url), attempt, error = %source, "registry unreachable; retrying in {delay:?}");
                            tokio::time::sleep(delay).await;
                        }
                        None => return Err(http_error(&method, &url, source)),
                    }
                }
                Err(source) => return Err(http_error(&method, &url, source)),
            }
        }
    }

    /// The error for a 401 that authenticating did not mend: the
    /// credentials themselves were refused (Basic), or the token the
    /// service issued does not grant `scope` (Bearer), or none were given.
    async fn refusal(&self, scope: &Scope, response: Response) -> Error {
        let challenge = self.auth.lock().ok().and_then(|s| s.challenge.clone());
        let message = registry_message(response).await;
        let host = self.host.clone();
        match challenge {
            Some(Challenge::Basic) if self.credentials != Credentials::Anonymous => {
                Error::CredentialsRefused {
                    host,
                    detail: message,
                }
            }
            Some(Challenge::Bearer { .. }) => Error::Unauthorized {
                host,
                detail: format!(
                    "{message}; the token it issued does not grant {}",
                    scope.token_scopes().join(" ")
                ),
            },
            _ => Error::Unauthorized {
                host,
                detail: message,
            },
        }
    }

    /// Answers a 401: remember the scheme and, for Bearer, fetch a token.
    async fn authenticate(&self, scope: &Scope, headers: &HeaderMap) -> Result<()> {
        let challenge = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(auth::parse_challenge)
            .ok_or_else(|| Error::Unauthorized {
                host: self.host.clone(),
                detail: "the registry asked for authentication in a way airlock does not know"
                    .into(),
            })?;
        let token = match &challenge {
            Challenge::Basic => {
                if matches!(self.credentials, Credentials::Anonymous) {
                    return Err(Error::Unauthorized {
                        host: self.host.clone(),
                        detail: "the registry requires credentials (--username/--password-stdin or --auth-file)".into(),
                    });
                }
                None
            }
            Challenge::Bearer { realm, service } => {
                Some(self.fetch_token(realm, service.as_deref(), scope).await?)
            }
        };
        if let Ok(mut state) = self.auth.lock() {
            state.challenge = Some(challenge);
            if let Some(token) = token {
                state.tokens.insert(scope.clone(), token);
            }
        }
        Ok(())
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
    ) -> Result<String> {
        let mut url = Url::parse(realm).map_err(|e| Error::InvalidUrl {
            url: realm.to_owned(),
            reason: e.to_string(),
        })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            for s in scope.token_scopes() {
                query.append_pair("scope", &s);
            }
        }
        let realm_error = |reason: String| Error::Unauthorized {
            host: self.host.clone(),
            detail: format!("token realm {}: {reason}", redact(&url)),
        };
        let mut request = self
            .http
            .get(url.clone())
            .timeout(self.timeouts.deadline(0));
        if let Some(basic) = self.credentials.basic_header() {
            self.origin.check_token_realm(&url).map_err(realm_error)?;
            request = request.header(header::AUTHORIZATION, basic);
        } else if !Origin::allows_redirect(&self.base, &url) {
            return Err(realm_error(
                "the registry is reached over https; airlock does not fetch tokens over plain http"
                    .into(),
            ));
        }
        let response = request.send().await;
        self.observe(&Method::GET, response.as_ref());
        let response = response.map_err(|source| http_error(&Method::GET, &url, source))?;
        if !response.status().is_success() {
            let detail = format!(
                "the token service {} answered {}",
                redact(&url),
                response.status()
            );
            let refused = matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            );
            return Err(if refused && self.credentials != Credentials::Anonymous {
                Error::CredentialsRefused {
                    host: self.host.clone(),
                    detail,
                }
            } else {
                Error::Unauthorized {
                    host: self.host.clone(),
                    detail,
                }
            });
        }
        let bytes = read_capped(
            response,
            MAX_TOKEN_BYTES,
            &url,
            "the token response",
            self.timeouts.idle,
        )
        .await?;
        let body: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
            url: redact(&url),
            reason: format!("unreadable token response: {e}"),
        })?;
        body.into_token().ok_or_else(|| Error::Protocol {
            url: redact(&url),
            reason: "the token response holds no token".into(),
        })
    }
}

/// Follows up to five redirects, never from https to plain http (reqwest
/// itself drops `Authorization` when the host changes).
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt
            .previous()
            .last()
            .is_some_and(|previous| !Origin::allows_redirect(previous, attempt.url()));
        if downgrade {
            attempt.error("refusing a redirect from https to plain http")
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// Bytes an upload session holds, from its `Range: 0-<last byte>` header
/// (`bytes=0-N` is accepted too). `0-0` is read as nothing held: registries
/// send it for an empty session, and airlock never resumes a session of one
/// byte.
fn acknowledged_bytes(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::RANGE)?.to_str().ok()?.trim();
    let value = value.strip_prefix("bytes=").unwrap_or(value);
    let (start, end) = value.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    let end: u64 = end.trim().parse().ok()?;
    // `0-18446744073709551615` would overflow: no registry holds that.
    if end == 0 {
        Some(0)
    } else {
        end.checked_add(1)
    }
}

/// Reads a whole response body, refusing it once it passes `limit` bytes,
/// whether or not it announced its length (a chunked body need not).
async fn read_capped(
    mut response: Response,
    limit: u64,
    url: &Url,
    what: &str,
    idle: Duration,
) -> Result<Bytes> {
    let too_large = || Error::Protocol {
        url: redact(url),
        reason: format!("{what} is larger than {limit} bytes"),
    };
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = next_chunk(&mut response, url, idle).await? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// The next piece of a response body, failing when none arrives for `idle`.
async fn next_chunk(response: &mut Response, url: &Url, idle: Duration) -> Result<Option<Bytes>> {
    match tokio::time::timeout(idle, response.chunk()).await {
        Ok(chunk) => chunk.map_err(|source| http_error(&Method::GET, url, source)),
        Err(_) => Err(Error::Stalled {
            url: redact(url),
            idle,
        }),
    }
}

/// The first `limit` bytes of a body (an error message), the rest dropped
/// unread; stops at the first pause of [`DEFAULT_IDLE_TIMEOUT`].
async fn read_prefix(mut response: Response, limit: u64) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Ok(Some(chunk))) =
        tokio::time::timeout(DEFAULT_IDLE_TIMEOUT, response.chunk()).await
    {
        let room = usize::try_from(limit).unwrap_or(usize::MAX) - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() as u64 >= limit {
            break;
        }
    }
    body
}

/// A URL fit for logs: no query (upload state, tokens) and no user info.
pub fn redact(url: &Url) -> String {
    let mut clean = url.clone();
    clean.set_query(None);
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.to_string()
}

/// What a failed TLS handshake means for the operator, by what the TLS
/// library (rustls) says: `(text in its message, hint)`.
const TLS_HINTS: &[(&str, &str)] = &[
    (
        "UnknownIssuer",
        "the registry's certificate is not issued by a trusted CA: give its CA with --ca-cert (registry.ca_cert)",
    ),
    (
        "not valid for name",
        "the registry's certificate does not name the host in --registry (registry.target): use a name the certificate holds",
    ),
    (
        "certificate expired",
        "the registry's certificate has expired (or this machine's clock is wrong)",
    ),
    (
        "BadCertificate",
        "the registry refused airlock's client certificate, or wants one: give --client-cert and --client-key (registry.client_cert, registry.client_key) issued by a CA the registry trusts",
    ),
    (
        "CertificateRequired",
        "the registry wants a client certificate: give --client-cert and --client-key (registry.client_cert, registry.client_key)",
    ),
    (
        "UnknownCA",
        "the registry does not trust the CA of airlock's client certificate",
    ),
    (
        "InvalidContentType",
        "the registry does not speak TLS on this port; if it serves plain HTTP, say so with --plain-http (registry.plain_http): airlock never falls back by itself",
    ),
];

/// The hint for a request that failed in its TLS handshake, if it did.
fn tls_hint(source: &reqwest::Error) -> Option<&'static str> {
    let text = crate::report::error_chain(source);
    TLS_HINTS
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, hint)| *hint)
}

fn http_error(method: &Method, url: &Url, source: reqwest::Error) -> Error {
    if let Some(hint) = tls_hint(&source) {
        return Error::TlsHandshake {
            url: redact(url),
            reason: crate::report::error_chain(&source.without_url()),
            hint,
        };
    }
    Error::Http {
        method: method.to_string(),
        url: redact(url),
        source: Box::new(source.without_url()),
    }
}

async fn status_error(method: Method, url: &Url, response: Response) -> Error {
    let status = response.status();
    Error::Status {
        method: method.to_string(),
        url: redact(url),
        status: status.as_u16(),
        message: registry_message(response).await,
    }
}

/// The first error message of a distribution-spec error body, or the status.
async fn registry_message(response: Response) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        code: Option<String>,
        message: Option<String>,
    }
    let status = response.status();
    let text = read_prefix(response, MAX_ERROR_BYTES).await;
    let text = String::from_utf8_lossy(&text);
    match serde_json::from_str::<Body>(&text) {
        Ok(body) if !body.errors.is_empty() => body
            .errors
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.code.as_deref().unwrap_or("ERROR"),
                    e.message.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str) -> Option<u64> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, value.parse().expect("header value"));
        acknowledged_bytes(&headers)
    }

    #[test]
    fn range_headers_give_the_bytes_held() {
        assert_eq!(range("0-1048575"), Some(1 << 20));
        assert_eq!(range("bytes=0-99"), Some(100));
        assert_eq!(range("0-0"), Some(0));
        assert_eq!(range("5-10"), None);
        assert_eq!(range("0-x"), None);
        assert_eq!(range("0-18446744073709551615"), None);
        assert_eq!(acknowledged_bytes(&HeaderMap::new()), None);
    }
}
