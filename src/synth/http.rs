//! A small HTTP/1.1 server for `grist serve`: one thread per connection, keep-alive with an idle
//! timeout, `Content-Length` bodies, requests parsed by `httparse`. (tiny_http was tried first;
//! its thread pool can leave a new connection unserved while its threads wait on idle keep-alive
//! connections, which is exactly what a pool of concurrent clients makes.)
//!
//! What a client sends cannot exhaust or wedge it: the head is read up to [`MAX_HEAD`] bytes
//! (a line without a newline included), a request must arrive whole within [`REQUEST_DEADLINE`]
//! of its first byte however slowly it drips, bodies are read as they arrive (never allocated
//! from `Content-Length`) within a budget shared by all connections, and when every connection
//! slot is taken the one that has waited longest for its request is closed to admit the new
//! one. A panic in the handler is answered 500; the server goes on.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A parsed request.
pub struct HttpRequest {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub body: Vec<u8>,
    /// Tells a long handler whether the client is still there.
    pub client: ClientProbe,
}

/// A JSON response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

pub type Handler = dyn Fn(&HttpRequest) -> HttpResponse + Send + Sync;

/// Request line and headers, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// One request body.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// All bodies being received or handled at once; past it a request gets a 503 (retryable).
pub const MAX_BODIES_TOTAL: usize = 256 * 1024 * 1024;
/// Connections served at once; past it the longest-waiting idle one is closed.
pub const MAX_CONNECTIONS: usize = 1024;
/// A keep-alive connection with no request started this long is closed.
pub const IDLE: Duration = Duration::from_secs(60);
/// A request must arrive whole (head and body) this long after its first byte.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// An answer the client does not read within this long is dropped with its connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the client of a request has closed its connection. A client that only shuts down
/// its sending side (a half-close, as `nc -N` does) looks the same and is taken as gone.
#[derive(Clone)]
pub struct ClientProbe(Option<Arc<TcpStream>>);

impl ClientProbe {
    /// A probe that never reports the client gone (requests made in-process).
    pub fn detached() -> ClientProbe {
        ClientProbe(None)
    }

    /// True once the peer has closed the connection (or it failed). Looks without consuming:
    /// bytes of a next pipelined request stay in the socket.
    pub fn gone(&self) -> bool {
        let Some(s) = &self.0 else { return false };
        if s.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let gone = match s.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        };
        let _ = s.set_nonblocking(false);
        gone
    }
}

/// A connection's state, seen by the accepting thread.
struct Slot {
    /// To close it from outside (eviction): the connection's one socket, shared.
    stream: Arc<TcpStream>,
    /// A request is being handled: not evictable.
    busy: Arc<AtomicBool>,
    /// When it started waiting for its current request (ms since the server started).
    waiting_since: Arc<AtomicU64>,
}

/// How many connections, and how long each may wait.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub idle: Duration,
    pub request_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            idle: IDLE,
            request_deadline: REQUEST_DEADLINE,
        }
    }
}

struct Server {
    handler: Arc<Handler>,
    limits: Limits,
    slots: Mutex<HashMap<u64, Slot>>,
    body_bytes: AtomicUsize,
    started: Instant,
}

impl Server {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Makes room for one more connection: true if there is (or now is) a free slot.
    fn admit(&self) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() < self.limits.max_connections {
            return true;
        }
        let victim = slots
            .iter()
            .filter(|(_, s)| !s.busy.load(Ordering::SeqCst))
            .min_by_key(|(_, s)| s.waiting_since.load(Ordering::SeqCst))
            .map(|(&id, _)| id);
        match victim.and_then(|id| slots.remove(&id)) {
            Some(slot) => {
                let _ = slot.stream.shutdown(Shutdown::Both);
                true
            }
            None => false,
        }
    }
}

/// Serves `listener` forever, calling `handler` for each request.
pub fn run(listener: TcpListener, handler: Arc<Handler>) {
    run_with(listener, handler, Limits::default())
}

/// [`run`] with other limits.
pub fn run_with(listener: TcpListener, handler: Arc<Handler>, mut limits: Limits) {
    // Each connection holds one file descriptor: past the process's limit, accepting fails
    // and nobody could be evicted to make room. Keep some for the model, logs and the rest.
    if let Some(fds) = open_files_limit() {
        let room = usize::try_from(fds)
            .unwrap_or(usize::MAX)
            .saturating_sub(64)
            .max(1);
        if limits.max_connections > room {
            tracing::warn!(
                "serving at most {room} connections, not {}: the open-file limit is {fds} (raise it with `ulimit -n`)",
                limits.max_connections
            );
            limits.max_connections = room;
        }
    }
    let server = Arc::new(Server {
        handler,
        limits,
        slots: Mutex::new(HashMap::new()),
        body_bytes: AtomicUsize::new(0),
        started: Instant::now(),
    });
    let mut next_id = 0u64;
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => Arc::new(c),
            Err(e) => {
                // Out of file descriptors (or another transient failure): wait for some to be
                // freed rather than spin on the listener.
                tracing::warn!("accepting a connection: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if !server.admit() {
            let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = write_response(&conn, &error(503, "too many requests in flight"), true);
            continue;
        }
        let busy = Arc::new(AtomicBool::new(false));
        let waiting_since = Arc::new(AtomicU64::new(server.now_ms()));
        let id = next_id;
        next_id += 1;
        server
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Slot {
                    stream: conn.clone(),
                    busy: busy.clone(),
                    waiting_since: waiting_since.clone(),
                },
            );
        let server = server.clone();
        let spawned = std::thread::Builder::new()
            .name("grist-http".into())
            .spawn(move || {
                serve_connection(conn, &server, &busy, &waiting_since);
                server
                    .slots
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            });
        if spawned.is_err() {
            tracing::warn!("cannot start a connection thread; connection dropped");
        }
    }
}

/// The soft limit of open files of this process (Linux), if it can be read.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// An OpenAI-style error body.
pub fn error(status: u16, message: &str) -> HttpResponse {
    let kind = if status < 500 {
        "invalid_request_error"
    } else {
        "server_error"
    };
    let v = serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    HttpResponse {
        status,
        body: serde_json::to_vec(&v).expect("json"),
    }
}

/// Reads from a socket until a deadline, however the bytes are spread out.
struct DeadlineReader {
    stream: Arc<TcpStream>,
    deadline: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        (&*self.stream).read(buf)
    }
}

/// Bytes of the shared body budget held by one request; released when dropped.
pub struct BodyReservation<'a> {
    pool: &'a AtomicUsize,
    bytes: usize,
}

impl<'a> BodyReservation<'a> {
    /// Reserves `bytes` of `pool` (at most `limit` in all), or `None` when they are not free.
    pub fn try_new(pool: &'a AtomicUsize, bytes: usize, limit: usize) -> Option<Self> {
        pool.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
            held.checked_add(bytes).filter(|&t| t <= limit)
        })
        .ok()?;
        Some(BodyReservation { pool, bytes })
    }
}

impl Drop for BodyReservation<'_> {
    fn drop(&mut self) {
        self.pool.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// One socket per connection (reader, writer, probe and the slot's handle share it): a
/// connection costs one file descriptor.
fn serve_connection(conn: Arc<TcpStream>, server: &Server, busy: &AtomicBool, waiting: &AtomicU64) {
    let _ = conn.set_nodelay(true);
    let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
    let probe = ClientProbe(Some(conn.clone()));
    let limits = server.limits;
    let mut reader = BufReader::new(DeadlineReader {
        stream: conn.clone(),
        deadline: Instant::now() + limits.idle,
    });
    loop {
        waiting.store(server.now_ms(), Ordering::SeqCst);
        reader.get_mut().deadline = Instant::now() + limits.idle;
        let parsed = read_request(
            &mut reader,
            &server.body_bytes,
            MAX_BODIES_TOTAL,
            limits.request_deadline,
        );
        let (head, body, reservation) = match parsed {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(resp) => {
                let _ = write_response(&conn, &resp, true);
                return;
            }
        };
        // Not evictable from here until its answer is written.
        busy.store(true, Ordering::SeqCst);
        let req = HttpRequest {
            method: head.method,
            path: head.path,
            body,
            client: probe.clone(),
        };
        let resp =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (server.handler)(&req)))
                .unwrap_or_else(|payload| {
                    let why = crate::error::panic_message(payload.as_ref());
                    tracing::error!("{} {}: internal error: {why}", req.method, req.path);
                    error(500, &format!("internal error: {why}"))
                });
        drop(req);
        drop(reservation);
        let written = write_response(&conn, &resp, head.close);
        waiting.store(server.now_ms(), Ordering::SeqCst);
        busy.store(false, Ordering::SeqCst);
        if written.is_err() || head.close {
            return;
        }
    }
}

/// The request line and headers that matter.
pub struct RequestHead {
    pub method: String,
    pub path: String,
    /// The client asked to close the connection after the answer.
    pub close: bool,
}

/// The next request from `r`: its head, its body and the body budget it holds. `None` when the
/// client closed the connection (or stayed idle past the deadline) between requests; an error
/// response for a request that cannot be read (the connection is closed after it). The reader's
/// deadline is moved to `deadline` from now once the request's first byte is there.
pub fn read_request<'a, R: Read + SetDeadline>(
    r: &mut BufReader<R>,
    body_pool: &'a AtomicUsize,
    body_limit: usize,
    deadline: Duration,
) -> std::result::Result<Option<(RequestHead, Vec<u8>, BodyReservation<'a>)>, HttpResponse> {
    // Skip stray empty lines between requests, then wait for a first byte.
    loop {
        match r.fill_buf() {
            Ok([]) => return Ok(None),
            Ok([b'\r' | b'\n', ..]) => r.consume(1),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Ok(None),
        }
    }
    r.get_mut().set_deadline(Instant::now() + deadline);
    let mut head = Vec::new();
    loop {
        let room = (MAX_HEAD + 1).saturating_sub(head.len()) as u64;
        let before = head.len();
        match r.by_ref().take(room).read_until(b'\n', &mut head) {
            Ok(0) => return Err(error(400, "the request ended inside its headers")),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                return Err(error(408, "the request did not arrive in time"));
            }
            Err(e) => return Err(error(400, &format!("reading the request: {e}"))),
        }
        if head.len() > MAX_HEAD {
            return Err(error(431, "request headers too large"));
        }
        if head.last() != Some(&b'\n') {
            return Err(error(400, "the request ended inside its headers"));
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Err(error(431, "more than 64 request headers"));
        }
        _ => return Err(error(400, "malformed request line or headers")),
    }
    let method = parsed.method.unwrap_or("").to_string();
    let path = parsed
        .path
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("")
        .to_string();
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    if header("transfer-encoding").is_some_and(|v| v != "identity") {
        return Err(error(
            411,
            "send the body with Content-Length (chunked bodies are not read)",
        ));
    }
    let len: usize = match header("content-length") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| error(400, "Content-Length is not a number"))?,
    };
    if len > MAX_BODY {
        return Err(error(413, "request body too large"));
    }
    let Some(reservation) = BodyReservation::try_new(body_pool, len, body_limit) else {
        return Err(error(
            503,
            "the server is receiving too much at once; retry",
        ));
    };
    // Grows as bytes arrive: a Content-Length alone allocates nothing.
    let mut body = Vec::new();
    match r.by_ref().take(len as u64).read_to_end(&mut body) {
        Ok(n) if n == len => {}
        Ok(_) => return Err(error(400, "the body ended early")),
        Err(e)
            if e.kind() == std::io::ErrorKind::TimedOut
                || e.kind() == std::io::ErrorKind::WouldBlock =>
        {
            return Err(error(408, "the request did not arrive in time"));
        }
        Err(e) => return Err(error(400, &format!("the body ended early: {e}"))),
    }
    let close = match header("connection") {
        Some(v) => v.contains("close"),
        None => parsed.version == Some(0),
    };
    Ok(Some((
        RequestHead {
            method,
            path,
            close,
        },
        body,
        reservation,
    )))
}

/// A reader whose reads fail with `TimedOut` after a deadline.
pub trait SetDeadline {
    fn set_deadline(&mut self, deadline: Instant);
}

impl SetDeadline for DeadlineReader {
    fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }
}

/// In-memory bytes (for tests and fuzzing): no deadline.
impl SetDeadline for &[u8] {
    fn set_deadline(&mut self, _: Instant) {}
}

fn write_response(mut w: &TcpStream, resp: &HttpResponse, close: bool) -> std::io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        resp.status,
        resp.body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    w.write_all(head.as_bytes())?;
    w.write_all(&resp.body)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(handler: Arc<Handler>) -> std::net::SocketAddr {
        start_with(handler, Limits::default())
    }

    fn start_with(handler: Arc<Handler>, limits: Limits) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || run_with(l, handler, limits));
        addr
    }

    fn read(bytes: &[u8], pool: &AtomicUsize) -> Result<RequestHead, u16> {
        read_request(
            &mut BufReader::new(bytes),
            pool,
            MAX_BODIES_TOTAL,
            REQUEST_DEADLINE,
        )
        .map(|r| r.unwrap().0)
        .map_err(|e| e.status)
    }

    fn echo() -> Arc<Handler> {
        Arc::new(|r: &HttpRequest| HttpResponse {
            status: 200,
            body: [r.path.as_bytes(), b":", &r.body].concat(),
        })
    }

    fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(bytes).unwrap();
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn keeps_connections_alive_and_answers_many_clients() {
        let addr = start(echo());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        // More keep-alive clients than any small thread pool, each sending several requests.
        std::thread::scope(|s| {
            for c in 0..24 {
                let agent = agent.clone();
                s.spawn(move || {
                    for i in 0..5 {
                        let body = format!("{c}-{i}");
                        let resp = agent
                            .post(format!("http://{addr}/p?q=1"))
                            .send(body.as_bytes())
                            .unwrap();
                        assert_eq!(
                            resp.into_body().read_to_string().unwrap(),
                            format!("/p:{body}")
                        );
                    }
                });
            }
        });
        let answer = raw(
            addr,
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    }

    /// Issue 16, item 7: a request line with no newline is cut at the head limit (it used to be
    /// read whole: 200 MB, no answer), and a Content-Length allocates nothing by itself.
    #[test]
    fn i07_heads_and_bodies_are_bounded_while_reading() {
        let addr = start(echo());
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let chunk = vec![b'a'; 1 << 20];
        let mut sent = 0usize;
        // The server answers 431 and closes after MAX_HEAD bytes; our writes then fail.
        while sent < 200 << 20 {
            if c.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        assert!(sent < 32 << 20, "the server kept reading: {sent} bytes");
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );

        // In memory: a head without newline, a body announced but never sent.
        let pool = AtomicUsize::new(0);
        let long = vec![b'G'; MAX_HEAD + 10];
        assert_eq!(read(&long, &pool).err(), Some(431));
        let lying = b"POST / HTTP/1.1\r\nContent-Length: 16000000\r\n\r\nshort";
        assert_eq!(read(lying, &pool).err(), Some(400));
        assert_eq!(
            pool.load(Ordering::SeqCst),
            0,
            "the reservation is released"
        );
        let too_big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(read(too_big.as_bytes(), &pool).err(), Some(413));
        // The shared budget: a body that does not fit beside the others is a 503.
        let first = BodyReservation::try_new(&pool, MAX_BODIES_TOTAL - 10, MAX_BODIES_TOTAL);
        assert!(first.is_some());
        let req = b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world";
        assert_eq!(read(req, &pool).err(), Some(503));
        drop(first);
        let (head, body, _r) = read_request(
            &mut BufReader::new(&req[..]),
            &pool,
            MAX_BODIES_TOTAL,
            REQUEST_DEADLINE,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (head.method.as_str(), body.as_slice()),
            ("POST", &b"hello world"[..])
        );
    }

    /// Issue 16, item 8: connections that drip a byte at a time cannot lock others out: at the
    /// connection limit the longest-waiting idle one is closed for a newcomer, and none may take
    /// longer than the request deadline.
    #[test]
    fn i08_dripping_connections_do_not_lock_clients_out() {
        let limits = Limits {
            max_connections: 64,
            idle: Duration::from_secs(60),
            request_deadline: Duration::from_millis(1500),
        };
        let addr = start_with(echo(), limits);
        let mut drips = Vec::new();
        for _ in 0..limits.max_connections + 16 {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"P").unwrap();
            drips.push(c);
        }
        // Every slot is held by a dripper; a real client still gets its answer at once.
        let started = Instant::now();
        let ok = b"POST /ok HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
        let answer = raw(addr, ok);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("/ok:hi"),
            "{answer}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // A drip does not extend the deadline: the connection is answered 408 and closed.
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        for b in b"POST /slow HTTP/1.1\r\n".iter().cycle().take(200) {
            if c.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            let _ = c.set_nonblocking(true);
            let mut buf = [0u8; 512];
            if let Ok(n @ 1..) = c.read(&mut buf) {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            let _ = c.set_nonblocking(false);
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_panicking_handler_is_a_500_and_the_server_goes_on() {
        let addr = start(Arc::new(|r: &HttpRequest| {
            if r.path == "/boom" {
                panic!("boom");
            }
            HttpResponse {
                status: 200,
                body: b"fine".to_vec(),
            }
        }));
        let answer = raw(addr, b"GET /boom HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(
            answer.starts_with("HTTP/1.1 500") && answer.contains("boom"),
            "{answer}"
        );
        let answer = raw(addr, b"GET /ok HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
