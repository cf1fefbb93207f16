//! An in-process Kubernetes API server speaking real HTTP, for the tests of
//! airlock's kube integration (no real API server can run here).
//!
//! It keeps namespaced objects of any kind in memory and implements what
//! the kube client relies on for correctness: a `resourceVersion` on every
//! write, `409 AlreadyExists` on a second create, `409 Conflict` on an
//! update or delete based on a stale `resourceVersion`, `404 NotFound`,
//! JSON merge patches (`application/merge-patch+json`, and strategic merge
//! treated the same) and server-side apply (`application/apply-patch+yaml`,
//! creating the object when missing), and list with an equality
//! `labelSelector`. Errors are `Status` objects as the real server sends.
//!
//! airlock reaches it through its real kube client, from a kubeconfig whose
//! server is `http://127.0.0.1:PORT` ([`FakeApiServer::kubeconfig`]). Tests
//! can make it answer 503 to everything, delay writes (to force races), stop
//! and start it again on the same port (an unreachable API), and read every
//! request it served.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct Served {
    /// The HTTP method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// When it was answered.
    pub at: Instant,
}

/// How the server misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// It does not: every request is served.
    None,
    /// Every request is answered `503 Service Unavailable`.
    Unavailable,
    /// Requests whose path contains this are answered `500`; others are
    /// served.
    FailPathsWith(&'static str),
}

#[derive(Default)]
struct Store {
    /// Objects by collection path (`/apis/g/v/namespaces/ns/leases`) and name.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    next_version: u64,
    served: Vec<Served>,
    fault: Option<Fault>,
    write_delay: Duration,
}

type Shared = Arc<Mutex<Store>>;

/// The fake API server. Stopped when dropped.
pub struct FakeApiServer {
    store: Shared,
    addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    dir: tempfile::TempDir,
}

impl FakeApiServer {
    /// Starts the server on a free loopback port.
    pub fn start() -> FakeApiServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the fake API server");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the fake API server");
        let addr = listener.local_addr().expect("its address");
        let mut server = FakeApiServer {
            store: Shared::default(),
            addr,
            runtime,
            stop: None,
            dir: tempfile::tempdir().expect("tempdir for the kubeconfig"),
        };
        server.serve(listener);
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: airlock\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
        );
        std::fs::write(server.kubeconfig(), config).expect("write the kubeconfig");
        server
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&self.store));
        self.runtime.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        self.stop = Some(stop_tx);
    }

    /// A kubeconfig pointing at this server (namespace `airlock`, no
    /// credentials).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving: connections are refused, as from an API server that
    /// is down.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Wait until the port refuses connections.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && std::net::TcpStream::connect(self.addr).is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Serves again on the same port, with the same objects.
    pub fn start_again(&mut self) {
        assert!(self.stop.is_none(), "stop the server first");
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match self
                .runtime
                .block_on(tokio::net::TcpListener::bind(self.addr))
            {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("cannot bind {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Makes the server misbehave, or stop misbehaving.
    pub fn set_fault(&self, fault: Fault) {
        self.store.lock().expect("store").fault = Some(fault);
    }

    /// Holds every write (POST, PUT, PATCH, DELETE) this long before
    /// handling it, so concurrent clients all read before any writes.
    pub fn set_write_delay(&self, delay: Duration) {
        self.store.lock().expect("store").write_delay = delay;
    }

    /// Every request served so far.
    pub fn served(&self) -> Vec<Served> {
        self.store.lock().expect("store").served.clone()
    }

    /// The objects of a collection, e.g.
    /// `/apis/coordination.k8s.io/v1/namespaces/airlock/leases`.
    pub fn objects(&self, collection: &str) -> Vec<Value> {
        self.store
            .lock()
            .expect("store")
            .objects
            .get(collection)
            .map(|objects| objects.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The Leases of namespace `airlock`.
    pub fn leases(&self) -> Vec<Value> {
        self.objects("/apis/coordination.k8s.io/v1/namespaces/airlock/leases")
    }

    /// The events.k8s.io Events of namespace `airlock`.
    pub fn events(&self) -> Vec<Value> {
        self.objects("/apis/events.k8s.io/v1/namespaces/airlock/events")
    }

    /// Stores an object as if a client had created it.
    pub fn insert(&self, collection: &str, mut object: Value) {
        let mut store = self.store.lock().expect("store");
        store.next_version += 1;
        let version = store.next_version.to_string();
        object["metadata"]["resourceVersion"] = json!(version);
        let name = object["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_owned();
        store
            .objects
            .entry(collection.to_owned())
            .or_default()
            .insert(name, object);
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Splits `/api/v1/namespaces/NS/RES[/NAME]` or
/// `/apis/G/V/namespaces/NS/RES[/NAME]` into the collection path and the
/// name.
fn route(path: &str) -> Option<(String, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let prefix = match parts.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => return None,
    };
    let rest = parts.get(prefix..)?;
    match rest {
        ["namespaces", _, _] => Some((format!("/{}", parts.join("/")), None)),
        ["namespaces", _, _, name] => Some((
            format!("/{}", parts[..parts.len() - 1].join("/")),
            Some((*name).to_owned()),
        )),
        _ => None,
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

async fn handle(State(store): State<Shared>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let delay = store.lock().map(|s| s.write_delay).unwrap_or_default();
    if method != Method::GET && !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut guard = store.lock().expect("store");
    let response = match guard.fault {
        Some(Fault::Unavailable) => status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the fake API server is unavailable".to_owned(),
        ),
        Some(Fault::FailPathsWith(part)) if path.contains(part) => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("the fake API server fails requests to {part}"),
        ),
        _ => answer(&mut guard, &method, &path, &query, &headers, &body),
    };
    guard.served.push(Served {
        method: method.to_string(),
        path,
        status: response.status().as_u16(),
        at: Instant::now(),
    });
    response
}

fn answer(
    store: &mut Store,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let Some((collection, name)) = route(path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no route {path}"),
        );
    };
    let parsed: Option<Value> = serde_json::from_slice(body)
        .ok()
        .or_else(|| serde_yaml_ng::from_slice(body).ok());
    let bad_request = || {
        status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "unparsable body".to_owned(),
        )
    };
    match (method.as_str(), name) {
        ("GET", None) => list(store, &collection, query),
        ("GET", Some(name)) => match store.objects.get(&collection).and_then(|o| o.get(&name)) {
            Some(object) => axum::Json(object.clone()).into_response(),
            None => not_found(&name),
        },
        ("POST", None) => match parsed {
            Some(object) => create(store, &collection, object),
            None => bad_request(),
        },
        ("PUT", Some(name)) => match parsed {
            Some(object) => update(store, &collection, &name, object),
            None => bad_request(),
        },
        ("PATCH", Some(name)) => match parsed {
            Some(patch) => {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                patch_object(store, &collection, &name, patch, content_type)
            }
            None => bad_request(),
        },
        ("DELETE", Some(name)) => {
            let preconditions: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            delete(store, &collection, &name, &preconditions)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} {path}"),
        ),
    }
}

fn not_found(name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{name:?} not found"),
    )
}

fn conflict(name: &str) -> Response {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {name:?}: the object has been modified; please apply your changes to the latest version and try again"
        ),
    )
}

fn stamp(store: &mut Store, object: &mut Value, created: bool) {
    store.next_version += 1;
    object["metadata"]["resourceVersion"] = json!(store.next_version.to_string());
    if created {
        object["metadata"]["uid"] = json!(format!("uid-{}", store.next_version));
        object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
}

fn matches_selector(object: &Value, query: &str) -> bool {
    let Some(selector) = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("labelSelector="))
    else {
        return true;
    };
    let selector = url::form_urlencoded::parse(format!("s={selector}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let Some((key, value)) = term.split_once('=') else {
            return false;
        };
        object["metadata"]["labels"][key.trim_end_matches('=')].as_str() == Some(value)
    })
}

fn list(store: &Store, collection: &str, query: &str) -> Response {
    let items: Vec<Value> = store
        .objects
        .get(collection)
        .map(|objects| {
            objects
                .values()
                .filter(|o| matches_selector(o, query))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    axum::Json(json!({
        "kind": "List", "apiVersion": "v1",
        "metadata": {"resourceVersion": store.next_version.to_string()},
        "items": items,
    }))
    .into_response()
}

fn create(store: &mut Store, collection: &str, mut object: Value) -> Response {
    let name = match object["metadata"]["name"].as_str() {
        Some(name) => name.to_owned(),
        None => match object["metadata"]["generateName"].as_str() {
            Some(prefix) => format!("{prefix}{}", store.next_version + 1),
            None => {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "metadata.name is required".to_owned(),
                );
            }
        },
    };
    if store
        .objects
        .get(collection)
        .is_some_and(|o| o.contains_key(&name))
    {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{name:?} already exists"),
        );
    }
    object["metadata"]["name"] = json!(name);
    stamp(store, &mut object, true);
    store
        .objects
        .entry(collection.to_owned())
        .or_default()
        .insert(name, object.clone());
    (StatusCode::CREATED, axum::Json(object)).into_response()
}

fn current_version(store: &Store, collection: &str, name: &str) -> Option<String> {
    store
        .objects
        .get(collection)?
        .get(name)?
        .pointer("/metadata/resourceVersion")?
        .as_str()
        .map(str::to_owned)
}

fn update(store: &mut Store, collection: &str, name: &str, mut object: Value) -> Response {
    let Some(current) = current_version(store, collection, name) else {
        return not_found(name);
    };
    if let Some(sent) = object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && sent != current
    {
        return conflict(name);
    }
    let uid = store.objects[collection][name]["metadata"]["uid"].clone();
    object["metadata"]["uid"] = uid;
    stamp(store, &mut object, false);
    store
        .objects
        .entry(collection.to_owned())
        .or_default()
        .insert(name.to_owned(), object.clone());
    axum::Json(object).into_response()
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (key, value) in fields {
                if value.is_null() {
                    if let Some(map) = target.as_object_mut() {
                        map.remove(key);
                    }
                } else {
                    merge(&mut target[key.as_str()], value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn patch_object(
    store: &mut Store,
    collection: &str,
    name: &str,
    patch: Value,
    content_type: &str,
) -> Response {
    let apply = content_type.starts_with("application/apply-patch");
    let Some(current) = current_version(store, collection, name) else {
        if apply {
            let mut object = patch;
            object["metadata"]["name"] = json!(name);
            return create(store, collection, object);
        }
        return not_found(name);
    };
    if let Some(sent) = patch
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && sent != current
    {
        return conflict(name);
    }
    let mut object = store.objects[collection][name].clone();
    merge(&mut object, &patch);
    stamp(store, &mut object, false);
    store
        .objects
        .entry(collection.to_owned())
        .or_default()
        .insert(name.to_owned(), object.clone());
    axum::Json(object).into_response()
}

fn delete(store: &mut Store, collection: &str, name: &str, options: &Value) -> Response {
    let Some(current) = current_version(store, collection, name) else {
        return not_found(name);
    };
    if let Some(wanted) = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        && wanted != current
    {
        return conflict(name);
    }
    let object = store
        .objects
        .get_mut(collection)
        .and_then(|o| o.remove(name))
        .unwrap_or(Value::Null);
    axum::Json(object).into_response()
}
