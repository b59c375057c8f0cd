//! A minimal blocking HTTP/1.1 client for the daemons' operational
//! endpoints (metrics, readiness, admin), run from inside a node's or a
//! pod's netns: one request per connection (`Connection: close`), the whole
//! response read, bounded in time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::topology::{Node, Pod};

/// Connect, write and read timeout of each request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response read (a metrics scrape or config dump is far smaller).
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;

/// A response: status code, headers (names lower-cased) and body as text.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` over `stream` and reads the response to the end.
pub fn request_over(mut stream: TcpStream, method: &str, path: &str) -> Result<HttpResponse> {
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let host = stream
        .peer_addr()
        .map_or_else(|_| "localhost".to_string(), |a| a.to_string());
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: amesh-tests\r\n\
         Accept: */*\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .context("write request")?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .context("read response")?;
    parse_response(&raw)
}

/// Parses a complete HTTP/1.x response (Content-Length, chunked, or
/// delimited by the connection's end).
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    if raw.is_empty() {
        bail!("connection closed without a response");
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("response has no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).context("headers are not UTF-8")?;
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1 status line: {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let find = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().context("bad content-length")?;
        if rest.len() < len {
            bail!("body cut short: {} of {len} bytes", rest.len());
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).context("body is not UTF-8")?,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line not terminated")?;
        let line = std::str::from_utf8(&data[..end])?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {line:?}"))?;
        data = &data[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("chunk cut short");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

impl Node {
    /// `method path` to `addr` from the node netns (where ztunnel serves
    /// metrics, readiness and admin).
    pub fn http(&self, method: &str, addr: SocketAddr, path: &str) -> Result<HttpResponse> {
        let stream = self
            .connect_std(addr, HTTP_TIMEOUT)
            .with_context(|| format!("{}: connect {addr}", self.name))?;
        request_over(stream, method, path)
            .with_context(|| format!("{}: {method} http://{addr}{path}", self.name))
    }

    pub fn http_get(&self, addr: SocketAddr, path: &str) -> Result<HttpResponse> {
        self.http("GET", addr, path)
    }
}

impl Pod {
    /// `method path` to `addr` from inside this pod (captured like an app's
    /// connection when the pod is in the mesh).
    pub fn http(&self, method: &str, addr: SocketAddr, path: &str) -> Result<HttpResponse> {
        let stream = self
            .connect_std(addr, HTTP_TIMEOUT)
            .with_context(|| format!("pod {}: connect {addr}", self.name))?;
        request_over(stream, method, path)
            .with_context(|| format!("pod {}: {method} http://{addr}{path}", self.name))
    }

    pub fn http_get(&self, addr: SocketAddr, path: &str) -> Result<HttpResponse> {
        self.http("GET", addr, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_close_delimited() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabcdef")
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "abc"));
        assert_eq!(r.header("x-a"), Some("b"));
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n2\r\n o\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "not o"));
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nbye").unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "bye"));
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
    }
}
