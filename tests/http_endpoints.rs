//! The daemon's HTTP endpoints, served on a loopback port with a fake
//! [`DaemonView`], and the registry request hook feeding the metrics; all
//! requests are real HTTP over TCP.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use airlock::http::{self, DaemonView, Readiness};
use airlock::metrics::{Metrics, Outcome, RetryReason};
use airlock::progress::Progress;
use airlock::push::registry::{
    ObserverHandle, RegistryClient, RegistryConfig, RequestObserver, RetryPolicy,
};
use airlock::state::{BundleRecord, Failure, Pushed, PushedImageRecord, Status};
use airlock::verify::VerifiedBy;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Bound on every request and on the server's shutdown.
const TIMEOUT: Duration = Duration::from_secs(10);
/// An id the fake view panics on.
const PANIC_ID: &str = "dead000000000000000000000000000000000000000000000000000000000000";

fn id(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

/// Three records, newest first: imported, rejected, retrying.
fn records() -> Vec<BundleRecord> {
    let key = VerifiedBy {
        label: "/etc/airlock/keys/release.pem".into(),
        fingerprint: format!("sha256:{}", "ab".repeat(32)),
        algorithm: "ECDSA P-256".into(),
        certificate: None,
    };
    vec![
        BundleRecord {
            id: id(3),
            names: vec!["app-1.1.zst".into(), "app-1.1-again.zst".into()],
            size: 4096,
            status: Status::Imported,
            attempts: 1,
            first_seen: at(1_700_000_300),
            started: Some(at(1_700_000_301)),
            finished: Some(at(1_700_000_360)),
            verified_by: Some(key),
            pushed: Some(Pushed {
                images: vec![PushedImageRecord {
                    source: "quay.io/acme/app:1.1".into(),
                    target: "registry.internal/mirror/quay.io/acme/app:1.1".into(),
                    digest: format!("sha256:{}", "cd".repeat(32)),
                    rewritten_from: None,
                }],
                blobs_uploaded: 3,
                bytes_uploaded: 3000,
                blobs_mounted: 1,
                blobs_present: 2,
                ..Pushed::default()
            }),
            error: None,
            pair: None,
        },
        BundleRecord {
            id: id(2),
            names: vec!["evil.zst".into()],
            size: 100,
            status: Status::Rejected,
            attempts: 1,
            first_seen: at(1_700_000_200),
            started: Some(at(1_700_000_201)),
            finished: Some(at(1_700_000_202)),
            verified_by: None,
            pushed: None,
            error: Some(Failure {
                class: "integrity".into(),
                message: "no trusted key verifies the signature".into(),
                at: at(1_700_000_202),
            }),
            pair: None,
        },
        BundleRecord {
            id: id(1),
            names: vec!["app-1.0.zst".into()],
            size: 2048,
            status: Status::Retrying,
            attempts: 3,
            first_seen: at(1_700_000_100),
            started: Some(at(1_700_000_150)),
            finished: None,
            verified_by: None,
            pushed: None,
            error: Some(Failure {
                class: "transport".into(),
                message: "registry unreachable".into(),
                at: at(1_700_000_151),
            }),
            pair: None,
        },
    ]
}

/// Serves fixed records and a readiness the test can change.
struct FakeView {
    records: Vec<BundleRecord>,
    readiness: Mutex<Readiness>,
    last_limit: AtomicUsize,
}

impl FakeView {
    fn new() -> Arc<Self> {
        Arc::new(FakeView {
            records: records(),
            readiness: Mutex::new(Readiness {
                watcher_running: true,
                state_writable: true,
                registry_reachable: true,
                kube_api_reachable: None,
                detail: None,
            }),
            last_limit: AtomicUsize::new(usize::MAX),
        })
    }

    fn set_readiness(&self, readiness: Readiness) {
        *self.readiness.lock().expect("readiness lock") = readiness;
    }
}

impl DaemonView for FakeView {
    fn imports(&self, limit: usize, after: Option<&str>) -> Vec<BundleRecord> {
        self.last_limit.store(limit, Ordering::SeqCst);
        let skip = after.map_or(0, |id| {
            self.records
                .iter()
                .position(|r| r.id == id)
                .map_or(self.records.len(), |n| n + 1)
        });
        self.records
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect()
    }

    fn import(&self, id: &str) -> Option<BundleRecord> {
        assert_ne!(id, PANIC_ID, "the fake view panics on request");
        self.records.iter().find(|r| r.id == id).cloned()
    }

    fn readiness(&self) -> Pin<Box<dyn Future<Output = Readiness> + Send + '_>> {
        Box::pin(async move { self.readiness.lock().expect("readiness lock").clone() })
    }
}

/// A running server and the means to stop it.
struct Server {
    address: SocketAddr,
    metrics: Arc<Metrics>,
    view: Arc<FakeView>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("local address");
        let metrics = Arc::new(Metrics::new());
        let view = FakeView::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(http::serve(
            listener,
            Arc::clone(&metrics),
            Arc::clone(&view) as Arc<dyn DaemonView>,
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            address,
            metrics,
            view,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        client()
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Stops the server and waits (bounded) for `serve` to return.
    async fn shutdown(mut self, bound: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(bound, self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task joins");
        result.expect("serve ends without error");
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .expect("HTTP client")
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn json(response: reqwest::Response) -> Value {
    assert_eq!(content_type(&response), "application/json");
    response.json().await.expect("a JSON body")
}

/// The value of one exposition line, `series` written exactly as rendered.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

#[tokio::test]
async fn metrics_are_served_in_the_prometheus_text_format() {
    let server = Server::start().await;
    server.metrics.bundle_finished(Outcome::Imported);
    server.metrics.bundle_finished(Outcome::Imported);
    server.metrics.retry(RetryReason::RateLimited);
    // An import still running: what it sent so far shows at the scrape.
    let progress = Progress::new();
    let _running = server.metrics.track_import(&progress);
    progress.add_blob_uploaded(1 << 20);
    progress.add_pushed_bytes(2048);
    server.metrics.set_watcher_up(true);

    let response = server.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "text/plain; version=0.0.4");
    let text = response.text().await.expect("body");
    assert_eq!(
        sample(&text, r#"airlock_bundles_total{outcome="imported"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, r#"airlock_retries_total{reason="rate_limited"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&text, "airlock_pushed_bytes_total"), Some(2048.0));
    assert_eq!(sample(&text, "airlock_watcher_up"), Some(1.0));
    assert!(text.contains("# TYPE airlock_import_duration_seconds histogram\n"));
    assert!(text.contains("# TYPE airlock_registry_requests_total counter\n"));
    server.shutdown(TIMEOUT).await;
}

#[tokio::test]
async fn healthz_answers_ok() {
    let server = Server::start().await;
    let response = server.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("text/plain"));
    assert_eq!(response.text().await.expect("body"), "ok");
    server.shutdown(TIMEOUT).await;
}

#[tokio::test]
async fn readyz_names_each_check_and_fails_when_one_does() {
    let server = Server::start().await;
    let response = server.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["ready"], true);
    assert_eq!(body["watcherRunning"], true);
    assert_eq!(body["stateWritable"], true);
    assert_eq!(body["registryReachable"], true);
    assert_eq!(body["detail"], Value::Null);

    server.view.set_readiness(Readiness {
        watcher_running: true,
        state_writable: true,
        registry_reachable: false,
        kube_api_reachable: None,
        detail: Some("GET https://registry.internal/v2/ failed: connection refused".into()),
    });
    let response = server.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body = json(response).await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["watcherRunning"], true);
    assert_eq!(body["registryReachable"], false);
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("connection refused")),
        "{body}"
    );

    server.view.set_readiness(Readiness {
        watcher_running: false,
        state_writable: true,
        registry_reachable: true,
        kube_api_reachable: None,
        detail: None,
    });
    assert_eq!(server.get("/readyz").await.status(), 503);
    server.shutdown(TIMEOUT).await;
}

#[tokio::test]
async fn imports_lists_records_newest_first_with_a_bounded_limit() {
    let server = Server::start().await;
    let body = json(server.get("/api/v1/imports").await).await;
    let ids: Vec<_> = body
        .as_array()
        .expect("a JSON list")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids, [id(3), id(2), id(1)]);
    assert_eq!(server.view.last_limit.load(Ordering::SeqCst), 100);

    let first = &body[0];
    assert_eq!(first["status"], "imported");
    assert_eq!(first["names"][1], "app-1.1-again.zst");
    assert_eq!(first["verifiedBy"]["algorithm"], "ECDSA P-256");
    assert_eq!(
        first["pushed"]["images"][0]["target"],
        "registry.internal/mirror/quay.io/acme/app:1.1"
    );
    assert_eq!(first["pushed"]["bytesUploaded"], 3000);
    assert!(
        first["started"]
            .as_str()
            .is_some_and(|t| t.starts_with("2023-11-14T"))
    );
    assert_eq!(body[1]["error"]["class"], "integrity");

    let response = server.get("/api/v1/imports?limit=1").await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body.as_array().map(Vec::len), Some(1));
    assert_eq!(body[0]["id"], id(3));

    let response = server.get("/api/v1/imports?limit=1000000").await;
    assert_eq!(response.status(), 200);
    assert_eq!(server.view.last_limit.load(Ordering::SeqCst), 1000);

    for bad in ["many", "-1", "1.5", "99999999999999999999999999"] {
        let response = server.get(&format!("/api/v1/imports?limit={bad}")).await;
        assert_eq!(response.status(), 400, "limit={bad}");
        let body = json(response).await;
        assert!(body["error"].as_str().is_some(), "{body}");
    }
    server.shutdown(TIMEOUT).await;
}

#[tokio::test]
async fn one_import_by_id() {
    let server = Server::start().await;
    let response = server.get(&format!("/api/v1/imports/{}", id(2))).await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["id"], id(2));
    assert_eq!(body["status"], "rejected");
    assert_eq!(
        body["error"]["message"],
        "no trusted key verifies the signature"
    );

    let unknown = "f".repeat(64);
    let response = server.get(&format!("/api/v1/imports/{unknown}")).await;
    assert_eq!(response.status(), 404);
    let body = json(response).await;
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains(&unknown)),
        "{body}"
    );

    let upper = "0A".repeat(32);
    for bad in [
        upper.as_str(),
        &"a".repeat(63),
        &"a".repeat(65),
        "sha256:0303",
        "..%2F..%2Fetc%2Fpasswd",
        "%FF%FE",
    ] {
        let response = server.get(&format!("/api/v1/imports/{bad}")).await;
        assert_eq!(response.status(), 400, "id {bad}");
        let body = json(response).await;
        assert!(body["error"].as_str().is_some(), "{body}");
    }
    server.shutdown(TIMEOUT).await;
}

#[tokio::test]
async fn no_request_brings_the_server_down() {
    let server = Server::start().await;

    // A view that panics costs one request a 500, not the server.
    let response = server.get(&format!("/api/v1/imports/{PANIC_ID}")).await;
    assert_eq!(response.status(), 500);
    assert_eq!(json(response).await["error"], "internal error");

    // Unknown paths and methods.
    let response = server.get("/nope").await;
    assert_eq!(response.status(), 404);
    assert!(json(response).await["error"].is_string());
    let response = client()
        .post(server.url("/metrics"))
        .body("x")
        .send()
        .await
        .expect("POST /metrics");
    assert_eq!(response.status(), 405);

    // Garbage instead of HTTP.
    let mut stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(server.address))
        .await
        .expect("connect in time")
        .expect("connect");
    stream
        .write_all(b"\x00\x01\x02 not http at all\r\n\r\n")
        .await
        .expect("write garbage");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );

    // An absurdly long request line.
    let mut stream = TcpStream::connect(server.address).await.expect("connect");
    let long = format!(
        "GET /api/v1/imports/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let _ = stream.write_all(long.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer)).await;

    let response = server.get("/healthz").await;
    assert_eq!(response.status(), 200);
    server.shutdown(TIMEOUT).await;
}

#[tokio::test]
async fn shutdown_does_not_wait_forever_for_a_stalled_client() {
    let server = Server::start().await;
    // Half a request, never finished.
    let mut stalled = TcpStream::connect(server.address).await.expect("connect");
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    assert_eq!(server.get("/healthz").await.status(), 200);
    let started = std::time::Instant::now();
    server.shutdown(http::SHUTDOWN_GRACE + TIMEOUT).await;
    assert!(started.elapsed() < http::SHUTDOWN_GRACE + Duration::from_secs(3));
    drop(stalled);
}

/// A registry that asks for a bearer token on `acme/app`, answers 503 once
/// and then 404 on `acme/busy`, and serves tokens at `/token`.
async fn fake_registry() -> (SocketAddr, JoinHandle<()>) {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::{any, get};

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let address = listener.local_addr().expect("local address");
    let busy_once = Arc::new(AtomicUsize::new(0));
    let realm = format!("http://{address}/token");
    let app = axum::Router::new()
        .route("/v2/", get(|| async { "{}" }))
        .route("/token", get(|| async { r#"{"token":"t0k"}"# }))
        .route(
            "/v2/acme/app/blobs/{digest}",
            any(move |headers: HeaderMap| {
                let realm = realm.clone();
                async move {
                    let authorized = headers
                        .get(header::AUTHORIZATION)
                        .is_some_and(|v| v == "Bearer t0k");
                    if authorized {
                        StatusCode::OK.into_response()
                    } else {
                        (
                            StatusCode::UNAUTHORIZED,
                            [(
                                header::WWW_AUTHENTICATE,
                                format!(r#"Bearer realm="{realm}",service="fake""#),
                            )],
                        )
                            .into_response()
                    }
                }
            }),
        )
        .route(
            "/v2/acme/busy/blobs/{digest}",
            any(move || {
                let busy_once = Arc::clone(&busy_once);
                async move {
                    if busy_once.fetch_add(1, Ordering::SeqCst) == 0 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::NOT_FOUND
                    }
                }
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (address, task)
}

#[tokio::test]
async fn every_registry_exchange_is_counted() {
    let (address, registry) = fake_registry().await;
    let metrics = Arc::new(Metrics::new());
    let observer = ObserverHandle::new(Arc::clone(&metrics) as Arc<dyn RequestObserver>);
    assert_eq!(format!("{observer:?}"), "RequestObserver");
    let config = |host: String| RegistryConfig {
        host,
        plain_http: true,
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
        },
        observer: Some(observer.clone()),
        ..RegistryConfig::default()
    };
    let client = RegistryClient::new(config(address.to_string())).expect("client");
    let digest = format!("sha256:{}", "12".repeat(32))
        .parse()
        .expect("digest");

    tokio::time::timeout(TIMEOUT, async {
        client.ping().await.expect("ping");
        // 401, token, 200.
        let size = client.blob_size("acme/app", &digest).await.expect("HEAD");
        assert!(size.is_some());
        // 503 (retried), 404.
        let size = client.blob_size("acme/busy", &digest).await.expect("HEAD");
        assert!(size.is_none());
    })
    .await
    .expect("registry calls finish in time");

    // Nothing listens here: no response at all.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("address");
    let unreachable = RegistryClient::new(config(closed.to_string())).expect("client");
    let result = tokio::time::timeout(TIMEOUT, unreachable.ping())
        .await
        .expect("ping fails in time");
    assert!(result.is_err());

    let text = metrics.render();
    let count = |method: &str, class: &str| {
        sample(
            &text,
            &format!(
                r#"airlock_registry_requests_total{{method="{method}",status_class="{class}"}}"#
            ),
        )
    };
    assert_eq!(count("GET", "2xx"), Some(2.0), "ping and token\n{text}");
    assert_eq!(count("HEAD", "4xx"), Some(2.0), "401 and 404\n{text}");
    assert_eq!(count("HEAD", "2xx"), Some(1.0), "{text}");
    assert_eq!(count("HEAD", "5xx"), Some(1.0), "{text}");
    assert_eq!(count("GET", "error"), Some(1.0), "unreachable\n{text}");
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("airlock_registry_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 7.0, "{text}");
    registry.abort();
}
