//! A small HTTP/1.1 server for `grist serve`: one thread per connection, keep-alive with an idle
//! timeout, `Content-Length` bodies, requests parsed by `httparse`. (tiny_http was tried first;
//! its thread pool can leave a new connection unserved while its threads wait on idle keep-alive
//! connections, which is exactly what a pool of concurrent clients makes.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A parsed request.
pub struct HttpRequest {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub body: Vec<u8>,
}

/// A JSON response.
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

pub type Handler = dyn Fn(&HttpRequest) -> HttpResponse + Send + Sync;

const MAX_HEADER: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Connections served at once; more get a 503 and are closed.
const MAX_CONNECTIONS: usize = 1024;
/// A keep-alive connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(120);

/// Serves `listener` forever, calling `handler` for each request.
pub fn run(listener: TcpListener, handler: Arc<Handler>) {
    let open = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            let _ = write_response(&mut conn, &error(503, "too many connections"), true);
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (handler, open) = (handler.clone(), open.clone());
        std::thread::spawn(move || {
            serve_connection(conn, handler.as_ref());
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
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

fn serve_connection(conn: TcpStream, handler: &Handler) {
    let _ = conn.set_read_timeout(Some(IDLE));
    let _ = conn.set_nodelay(true);
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let (req, close) = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(resp) => {
                let _ = write_response(&mut writer, &resp, true);
                return;
            }
        };
        let resp = handler(&req);
        if write_response(&mut writer, &resp, close).is_err() || close {
            return;
        }
    }
}

/// The next request; `None` when the client closed the connection; an error response for a
/// request that cannot be read (the connection is closed after it).
fn read_request(
    r: &mut BufReader<TcpStream>,
) -> std::result::Result<Option<(HttpRequest, bool)>, HttpResponse> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        match r.read_until(b'\n', &mut head) {
            Ok(0) if head.is_empty() => return Ok(None),
            Ok(0) => return Err(error(400, "the request ended inside its headers")),
            Ok(_) => {}
            Err(_) if head.is_empty() => return Ok(None),
            Err(e) => return Err(error(408, &format!("reading the request: {e}"))),
        }
        if head.len() > MAX_HEADER {
            return Err(error(431, "request headers too large"));
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                // A stray empty line between requests.
                head.clear();
                continue;
            }
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
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
    let mut body = vec![0; len];
    r.read_exact(&mut body)
        .map_err(|e| error(400, &format!("the body ended early: {e}")))?;
    let close = match header("connection") {
        Some(v) => v.contains("close"),
        None => parsed.version == Some(0),
    };
    Ok(Some((HttpRequest { method, path, body }, close)))
}

fn write_response(w: &mut TcpStream, resp: &HttpResponse, close: bool) -> std::io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
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

    #[test]
    fn keeps_connections_alive_and_answers_many_clients() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            run(
                l,
                Arc::new(|r: &HttpRequest| HttpResponse {
                    status: 200,
                    body: [r.path.as_bytes(), b":", &r.body].concat(),
                }),
            )
        });
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
        let mut raw = TcpStream::connect(addr).unwrap();
        raw.write_all(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        raw.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    }
}
