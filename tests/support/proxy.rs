//! A small HTTP/1.1 reverse proxy on 127.0.0.1 in front of a test registry
//! (std::net and threads), that can misbehave on purpose:
//!
//! * refuse every `PATCH` with 405 (a registry or proxy that does not take
//!   chunked uploads);
//! * answer 413 to a `PUT` whose body is larger than a limit (a proxy's body
//!   limit, like nginx's `client_max_body_size`);
//! * hold the n-th `PATCH` until the test decides what becomes of it: dropped
//!   unseen by the registry, or forwarded (a 502 when the registry is down);
//! * inject faults at random, from a seed ([`FaultPlan`]): connections reset
//!   before or after the registry acted, answers that never come, and
//!   500/502/503/429 (the last two with `Retry-After`). Each is counted.
//!
//! Each request is read whole (head and body) before it is forwarded, the
//! way nginx buffers request bodies by default, over a fresh upstream
//! connection with `Connection: close`; the answer is relayed and the client
//! connection closed. The `Host` header is passed on unchanged, so the
//! registry's `Location` headers point back at the proxy. Every wait is
//! bounded by socket timeouts and [`HOLD_LIMIT`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a held request waits for [`Proxy::release`] before it is dropped.
pub const HOLD_LIMIT: Duration = Duration::from_secs(120);
/// Socket read/write timeout, on both sides.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Request heads larger than this are refused.
const MAX_HEAD: usize = 64 << 10;

/// How the proxy misbehaves.
#[derive(Debug, Clone, Default)]
pub struct ProxyRules {
    /// Answer 405 Method Not Allowed to every `PATCH`.
    pub refuse_patch: bool,
    /// Answer 413 Payload Too Large to a `PUT` with a larger body.
    pub max_put_body: Option<u64>,
    /// Hold the n-th `PATCH` (1-based) until [`Proxy::release`].
    pub hold_patch: Option<usize>,
    /// Forward the body of every `PATCH` as it arrives, and hold the first
    /// one larger than this once this many of its bytes went to the registry, until
    /// [`Proxy::release`]: `Drop` then closes both connections, so the
    /// registry keeps the bytes it got, as when a sender dies midway.
    pub hold_patch_after: Option<u64>,
    /// Inject faults at random.
    pub faults: Option<FaultPlan>,
}

/// Which requests fail and how: each request draws from a generator seeded
/// with `seed`, so a failing run can be replayed with its printed seed
/// (concurrent requests draw in arrival order, which varies a little).
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub seed: u64,
    /// Chance of a fault per request, in percent.
    pub percent: u8,
    /// At most this many faults in all, so the run ends.
    pub max_faults: usize,
    /// How long a stalled answer stays silent before the connection closes:
    /// longer than the client's timeout.
    pub stall: Duration,
}

/// A fault the proxy injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// The connection closed before the request reached the registry.
    ResetBefore,
    /// The registry acted, then the connection closed without its answer.
    ResetAfter,
    /// No byte of an answer for [`FaultPlan::stall`], then closed; the
    /// registry never saw the request. Only requests with small bodies stall,
    /// as a client's deadline grows with the body it sends.
    Stall,
    /// Answered with this status without asking the registry; 429 and 503
    /// come with `Retry-After: 1`.
    Status(u16),
}

const FAULT_KINDS: [Fault; 7] = [
    Fault::ResetBefore,
    Fault::ResetAfter,
    Fault::Stall,
    Fault::Status(500),
    Fault::Status(502),
    Fault::Status(503),
    Fault::Status(429),
];

/// Largest body of a request the proxy lets stall.
const MAX_STALLED_BODY: u64 = 64 << 10;

/// What becomes of a held request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Close the client connection without forwarding: the registry never
    /// sees the request.
    Drop,
    /// Forward it now (answered 502 if the registry is down).
    Forward,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Bytes of the request body (as announced when the body was refused).
    pub body_len: u64,
    /// The status sent back; 0 when the connection was closed without one.
    pub status: u16,
}

struct Shared {
    upstream: SocketAddr,
    rules: ProxyRules,
    log: Mutex<Vec<ProxiedRequest>>,
    patches: AtomicUsize,
    held: AtomicUsize,
    /// A streamed `PATCH` was held (`hold_patch_after` holds one).
    stream_held: AtomicBool,
    release: Mutex<Option<Release>>,
    released: Condvar,
    stop: AtomicBool,
    random: Mutex<Option<fastrand::Rng>>,
    injected: Mutex<std::collections::BTreeMap<Fault, usize>>,
}

/// A running proxy; stopped when dropped.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy forwarding to `upstream` (`127.0.0.1:PORT` of a plain
    /// HTTP registry).
    pub fn start(upstream: &str, rules: ProxyRules) -> Proxy {
        let upstream: SocketAddr = upstream.parse().expect("upstream is 127.0.0.1:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking proxy listener");
        let port = listener.local_addr().expect("proxy address").port();
        let random = rules
            .faults
            .as_ref()
            .map(|plan| fastrand::Rng::with_seed(plan.seed));
        let shared = Arc::new(Shared {
            upstream,
            rules,
            log: Mutex::new(Vec::new()),
            patches: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            stream_held: AtomicBool::new(false),
            release: Mutex::new(None),
            released: Condvar::new(),
            stop: AtomicBool::new(false),
            random: Mutex::new(random),
            injected: Mutex::new(std::collections::BTreeMap::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let acceptor = thread::spawn(move || {
            while !accept_shared.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let shared = Arc::clone(&accept_shared);
                        thread::spawn(move || handle(&shared, client));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT`, to give airlock as the registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request so far, in the order their answers were decided.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.shared.log.lock().expect("proxy log").clone()
    }

    /// The faults injected so far, by kind.
    pub fn faults_injected(&self) -> std::collections::BTreeMap<Fault, usize> {
        self.shared.injected.lock().expect("fault counts").clone()
    }

    /// Requests waiting for [`Proxy::release`] now.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Waits (bounded by `limit`) until a request is held; false on timeout.
    pub fn wait_for_hold(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.held() > 0 {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Decides what becomes of the held request (and of any held later).
    pub fn release(&self, release: Release) {
        *self.shared.release.lock().expect("release lock") = Some(release);
        self.shared.released.notify_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.release(Release::Drop);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    /// Header lines as received, without the line ending.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

fn handle(shared: &Shared, client: TcpStream) {
    let _ = client.set_nonblocking(false);
    let _ = client.set_read_timeout(Some(IO_TIMEOUT));
    let _ = client.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(read_half) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut client = client;
    let Some((method, path, headers)) = read_head(&mut reader) else {
        return;
    };
    let announced: u64 = header(&headers, "content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let log = |status: u16, body_len: u64| {
        shared.log.lock().expect("proxy log").push(ProxiedRequest {
            method: method.clone(),
            path: path.clone(),
            body_len,
            status,
        });
    };

    if method == "PUT"
        && let Some(limit) = shared.rules.max_put_body
        && announced > limit
    {
        log(413, announced);
        let body = "<html><body><h1>413 Request Entity Too Large</h1></body></html>";
        let _ = write!(
            client,
            "HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = client.flush();
        // Lingering close: drain what the client is still sending so it can
        // read the answer instead of a reset.
        let _ = std::io::copy(&mut reader.take(announced), &mut std::io::sink());
        return;
    }

    if method == "PATCH"
        && let Some(at) = shared.rules.hold_patch_after
        && header(&headers, "transfer-encoding").is_none()
    {
        shared.patches.fetch_add(1, Ordering::SeqCst);
        let hold =
            (announced > at && !shared.stream_held.swap(true, Ordering::SeqCst)).then_some(at);
        let status = stream_patch(
            shared,
            &mut reader,
            &mut client,
            &path,
            &headers,
            announced,
            hold,
        );
        log(status, announced);
        return;
    }

    let Some(body) = read_body(&mut reader, &headers, announced) else {
        return;
    };
    let request = Request {
        method: method.clone(),
        path: path.clone(),
        headers,
        body,
    };
    let body_len = request.body.len() as u64;

    if method == "PATCH" {
        if shared.rules.refuse_patch {
            log(405, body_len);
            let _ = write!(
                client,
                "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD, POST, PUT, DELETE\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return;
        }
        let n = shared.patches.fetch_add(1, Ordering::SeqCst) + 1;
        if shared.rules.hold_patch == Some(n) {
            shared.held.fetch_add(1, Ordering::SeqCst);
            let release = wait_for_release(shared);
            shared.held.fetch_sub(1, Ordering::SeqCst);
            if release == Release::Drop {
                log(0, body_len);
                return;
            }
        }
    }

    if let Some(fault) = draw_fault(shared, body_len) {
        inject(shared, fault, &request, &mut client);
        log(0, body_len);
        return;
    }

    let (status, response) = match forward(shared.upstream, &request) {
        Some(answer) => answer,
        None => {
            let bad = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            (502, bad.to_vec())
        }
    };
    log(status, body_len);
    let _ = client.write_all(&response);
    let _ = client.flush();
}

/// Forwards a `PATCH` whose head was read, its body copied to the registry
/// as it arrives; with `hold`, stops once that many bytes went through and
/// waits for [`Proxy::release`]. Returns the status sent back (0: none).
fn stream_patch(
    shared: &Shared,
    reader: &mut BufReader<TcpStream>,
    client: &mut TcpStream,
    path: &str,
    headers: &[(String, String)],
    announced: u64,
    hold: Option<u64>,
) -> u16 {
    let Ok(mut upstream) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))
    else {
        return 0;
    };
    let _ = upstream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = upstream.set_write_timeout(Some(IO_TIMEOUT));
    let mut head = format!("PATCH {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        if !["connection", "keep-alive", "proxy-connection"]
            .iter()
            .any(|s| name.eq_ignore_ascii_case(s))
        {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    if upstream.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let first = hold.map_or(announced, |at| at.min(announced));
    let copied = std::io::copy(&mut reader.by_ref().take(first), &mut upstream).unwrap_or(0);
    if copied < first {
        return 0;
    }
    if hold.is_some_and(|at| at < announced) {
        let _ = upstream.flush();
        shared.held.fetch_add(1, Ordering::SeqCst);
        let release = wait_for_release(shared);
        shared.held.fetch_sub(1, Ordering::SeqCst);
        if release == Release::Drop {
            let _ = upstream.shutdown(std::net::Shutdown::Both);
            let _ = client.shutdown(std::net::Shutdown::Both);
            return 0;
        }
        let rest = announced - first;
        if std::io::copy(&mut reader.by_ref().take(rest), &mut upstream).unwrap_or(0) < rest {
            return 0;
        }
    }
    let mut response = Vec::new();
    let _ = upstream.read_to_end(&mut response);
    let status = std::str::from_utf8(&response[..response.len().min(64)])
        .ok()
        .and_then(|text| text.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(502);
    let _ = client.write_all(&response);
    let _ = client.flush();
    status
}

/// Whether this request fails, and how.
fn draw_fault(shared: &Shared, body_len: u64) -> Option<Fault> {
    let plan = shared.rules.faults.as_ref()?;
    let mut random = shared.random.lock().expect("fault generator");
    let random = random.as_mut()?;
    let mut injected = shared.injected.lock().expect("fault counts");
    if injected.values().sum::<usize>() >= plan.max_faults || random.u8(0..100) >= plan.percent {
        return None;
    }
    let fault = FAULT_KINDS[random.usize(..FAULT_KINDS.len())];
    if fault == Fault::Stall && body_len > MAX_STALLED_BODY {
        return None;
    }
    *injected.entry(fault).or_default() += 1;
    Some(fault)
}

fn inject(shared: &Shared, fault: Fault, request: &Request, client: &mut TcpStream) {
    match fault {
        Fault::ResetBefore => {}
        Fault::ResetAfter => {
            let _ = forward(shared.upstream, request);
        }
        Fault::Stall => {
            let stall = shared
                .rules
                .faults
                .as_ref()
                .map_or(Duration::ZERO, |plan| plan.stall);
            let deadline = Instant::now() + stall;
            // Bounded by the stall; ends early when the proxy stops.
            while Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(50));
            }
        }
        Fault::Status(status) => {
            let retry_after = if matches!(status, 429 | 503) {
                "Retry-After: 1\r\n"
            } else {
                ""
            };
            let _ = write!(
                client,
                "HTTP/1.1 {status} Injected\r\n{retry_after}Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = client.flush();
            return;
        }
    }
    // The connection ends without an answer, as when a proxy dies.
    let _ = client.shutdown(std::net::Shutdown::Both);
}

fn wait_for_release(shared: &Shared) -> Release {
    let deadline = Instant::now() + HOLD_LIMIT;
    let mut release = shared.release.lock().expect("release lock");
    loop {
        if let Some(decided) = *release {
            return decided;
        }
        let now = Instant::now();
        if now >= deadline {
            return Release::Drop;
        }
        release = shared
            .released
            .wait_timeout(release, deadline - now)
            .expect("release wait")
            .0;
    }
}

type Head = (String, String, Vec<(String, String)>);

fn read_head(reader: &mut BufReader<TcpStream>) -> Option<Head> {
    let mut line = String::new();
    let mut total = 0;
    reader.read_line(&mut line).ok()?;
    total += line.len();
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        total += line.len();
        if total > MAX_HEAD {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Some((method, path, headers));
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
}

fn read_body(
    reader: &mut BufReader<TcpStream>,
    headers: &[(String, String)],
    announced: u64,
) -> Option<Vec<u8>> {
    let chunked = header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if !chunked {
        reader.take(announced).read_to_end(&mut body).ok()?;
        return (body.len() as u64 == announced).then_some(body);
    }
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).ok()?;
        let size_text = size_line.trim().split(';').next()?.to_owned();
        let size = usize::from_str_radix(&size_text, 16).ok()?;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).ok()? == 0 || line.trim().is_empty() {
                    return Some(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).ok()?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).ok()?;
    }
}

/// Sends `request` upstream on a fresh connection and reads the whole
/// answer; `None` when the upstream cannot be reached.
fn forward(upstream: SocketAddr, request: &Request) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).ok()?;
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.path);
    for (name, value) in &request.headers {
        let skip = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "content-length",
        ];
        if !skip.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    let has_body = !request.body.is_empty()
        || header(&request.headers, "content-length").is_some()
        || header(&request.headers, "transfer-encoding").is_some();
    if has_body {
        head.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    // A registry may answer before it read the whole body (a 401 to a
    // stale token) and close: its answer is still read and passed on.
    if stream.write_all(&request.body).is_ok() {
        stream.flush().ok()?;
    }
    let mut response = Vec::new();
    // The upstream closes after its answer (Connection: close).
    let _ = stream.read_to_end(&mut response);
    let status = std::str::from_utf8(response.get(..response.len().min(64))?)
        .ok()
        .and_then(|text| text.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())?;
    Some((status, response))
}
