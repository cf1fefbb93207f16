//! A hostile HTTP/1.1 server on 127.0.0.1 (std::net and threads): it answers
//! each request with whatever the test's handler decides — a redirect to
//! another port, a challenge naming a foreign token realm, an endless
//! chunked body, a body trickled byte by byte — and records every request it
//! received with its headers, so a test can prove what airlock sent where.
//!
//! One request per connection (`Connection: close`). Every wait is bounded
//! by socket timeouts and [`MAX_BODY_SECONDS`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Socket read/write timeout.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest any reply body is sent for, endless or trickled.
pub const MAX_BODY_SECONDS: u64 = 120;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How a reply's body is sent.
#[derive(Debug, Clone)]
pub enum Body {
    /// These bytes, with a `Content-Length`.
    Bytes(Vec<u8>),
    /// `chunk` repeated `count` times with chunked transfer encoding and no
    /// `Content-Length` (or until the client hangs up).
    Chunked { chunk: Vec<u8>, count: u64 },
    /// `bytes`, with a `Content-Length`, one byte every `every`.
    Trickle { bytes: Vec<u8>, every: Duration },
}

/// A reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: Body) -> Reply {
        self.body = body;
        self
    }
}

type Handler = dyn Fn(&SeenRequest) -> Reply + Send + Sync;

/// How fast request bodies are read (bytes per second), like a slow link or
/// a throttling proxy; `None` reads them as fast as they come.
type ReadRate = Option<u64>;

/// A running hostile server; stopped when dropped.
pub struct HostileServer {
    port: u16,
    log: Arc<Mutex<Vec<SeenRequest>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl HostileServer {
    /// Listens on a free loopback port and answers with `handler`.
    pub fn start(handler: impl Fn(&SeenRequest) -> Reply + Send + Sync + 'static) -> HostileServer {
        HostileServer::start_reading_at(None, handler)
    }

    /// [`HostileServer::start`], reading request bodies at `bytes_per_second`.
    pub fn start_reading_at(
        bytes_per_second: ReadRate,
        handler: impl Fn(&SeenRequest) -> Reply + Send + Sync + 'static,
    ) -> HostileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let port = listener.local_addr().expect("local address").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let acceptor = {
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            thread::spawn(move || accept(listener, handler, bytes_per_second, log, stop))
        };
        HostileServer {
            port,
            log,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.log.lock().expect("request log").clone()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept(
    listener: TcpListener,
    handler: Arc<Handler>,
    rate: ReadRate,
    log: Arc<Mutex<Vec<SeenRequest>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (handler, log, stop) =
                    (Arc::clone(&handler), Arc::clone(&log), Arc::clone(&stop));
                thread::spawn(move || {
                    let _ = serve(stream, &*handler, rate, &log, &stop);
                });
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn serve(
    stream: TcpStream,
    handler: &Handler,
    rate: ReadRate,
    log: &Mutex<Vec<SeenRequest>>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let request = SeenRequest {
        method,
        path,
        headers,
    };
    let length: u64 = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    read_body(&mut reader, length, rate)?;
    log.lock().expect("request log").push(request.clone());
    let reply = handler(&request);
    send(stream, &reply, stop)
}

/// Reads and drops `length` bytes of body, at most `rate` bytes a second.
fn read_body(reader: &mut impl Read, length: u64, rate: ReadRate) -> std::io::Result<()> {
    let Some(rate) = rate else {
        std::io::copy(&mut reader.take(length), &mut std::io::sink())?;
        return Ok(());
    };
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    let mut done = 0u64;
    while done < length {
        let want = (length - done).min(buffer.len() as u64) as usize;
        let n = reader.read(&mut buffer[..want])?;
        if n == 0 {
            break;
        }
        done += n as u64;
        let due = Duration::from_secs_f64(done as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            thread::sleep(wait);
        }
    }
    Ok(())
}

fn send(mut stream: TcpStream, reply: &Reply, stop: &AtomicBool) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} Hostile\r\nConnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let deadline = Instant::now() + Duration::from_secs(MAX_BODY_SECONDS);
    match &reply.body {
        Body::Bytes(bytes) => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
            stream.write_all(head.as_bytes())?;
            stream.write_all(bytes)?;
        }
        Body::Chunked { chunk, count } => {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            stream.write_all(head.as_bytes())?;
            let frame = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk.clone(),
                b"\r\n".to_vec(),
            ]
            .concat();
            for _ in 0..*count {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    return Ok(());
                }
                stream.write_all(&frame)?;
            }
            stream.write_all(b"0\r\n\r\n")?;
        }
        Body::Trickle { bytes, every } => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
            stream.write_all(head.as_bytes())?;
            for byte in bytes {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    return Ok(());
                }
                stream.write_all(&[*byte])?;
                stream.flush()?;
                thread::sleep(*every);
            }
        }
    }
    stream.flush()
}
