//! Which protocol a connection to a service port speaks, as Istio decides:
//! the port's `appProtocol`, else its name (`<protocol>[-<suffix>]`), else
//! detected from the client's first bytes. Whatever is not HTTP is proxied
//! as opaque TCP.

/// What the port declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    Http1,
    Http2,
    Grpc,
    /// Not HTTP (tcp, tls, https passthrough, databases): opaque bytes.
    Tcp,
    /// Nothing usable declared: look at the first bytes.
    Detect,
}

/// `appProtocol` wins over the port name, as in Istio; unknown values in
/// either mean "detect" (Istio's behaviour for unrecognised names).
pub fn declared(name: Option<&str>, app_protocol: Option<&str>) -> Declared {
    if let Some(found) = app_protocol.and_then(from_app_protocol) {
        return found;
    }
    name.and_then(from_port_name).unwrap_or(Declared::Detect)
}

fn from_app_protocol(value: &str) -> Option<Declared> {
    match value.to_ascii_lowercase().as_str() {
        // The Kubernetes-standard names for cleartext HTTP/2 and WebSocket.
        "kubernetes.io/h2c" => Some(Declared::Http2),
        "kubernetes.io/ws" => Some(Declared::Http1),
        "kubernetes.io/wss" => Some(Declared::Tcp),
        other => from_protocol(other),
    }
}

/// `http`, `http-web`, `grpc-api`, ...: the part before the first `-`.
fn from_port_name(name: &str) -> Option<Declared> {
    let lower = name.to_ascii_lowercase();
    // `grpc-web` and `http2` contain no further meaning past the protocol.
    if let Some(found) = from_protocol(&lower) {
        return Some(found);
    }
    lower.split_once('-').and_then(|(p, _)| from_protocol(p))
}

fn from_protocol(protocol: &str) -> Option<Declared> {
    Some(match protocol {
        "http" | "grpc-web" => Declared::Http1,
        "http2" => Declared::Http2,
        "grpc" => Declared::Grpc,
        "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" => Declared::Tcp,
        _ => return None,
    })
}

/// HTTP/2 with prior knowledge starts with this (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The longest request method we wait for before calling it TCP.
const MAX_METHOD: usize = 16;

/// What the first bytes a client sent look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    Http1,
    Http2,
    Tcp,
    /// Could still be HTTP: read more (or, after a while, treat as TCP:
    /// server-first protocols send nothing and must be declared).
    NeedMore,
}

/// Classifies `prefix`, the bytes received so far.
pub fn sniff(prefix: &[u8]) -> Sniffed {
    if prefix.is_empty() {
        return Sniffed::NeedMore;
    }
    let n = prefix.len().min(H2_PREFACE.len());
    if prefix[..n] == H2_PREFACE[..n] {
        return if prefix.len() >= H2_PREFACE.len() {
            Sniffed::Http2
        } else {
            Sniffed::NeedMore
        };
    }
    // HTTP/1: a method token (RFC 9110 methods are upper-case letters in
    // practice) then a space.
    for (i, &b) in prefix.iter().enumerate().take(MAX_METHOD + 1) {
        match b {
            b'A'..=b'Z' | b'-' | b'_' => continue,
            b' ' if i > 0 => return Sniffed::Http1,
            _ => return Sniffed::Tcp,
        }
    }
    if prefix.len() > MAX_METHOD {
        Sniffed::Tcp
    } else {
        Sniffed::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_protocol_wins_over_the_port_name() {
        assert_eq!(declared(Some("tcp-db"), Some("http")), Declared::Http1);
        assert_eq!(
            declared(Some("http"), Some("kubernetes.io/h2c")),
            Declared::Http2
        );
        assert_eq!(declared(Some("web"), Some("GRPC")), Declared::Grpc);
        // An unknown appProtocol falls back to the name.
        assert_eq!(declared(Some("grpc-api"), Some("custom")), Declared::Grpc);
    }

    #[test]
    fn port_names_declare_by_prefix() {
        for (name, want) in [
            ("http", Declared::Http1),
            ("http-web", Declared::Http1),
            ("HTTP2-api", Declared::Http2),
            ("grpc", Declared::Grpc),
            ("grpc-web", Declared::Http1),
            ("tcp-db", Declared::Tcp),
            ("https", Declared::Tcp),
            ("mysql", Declared::Tcp),
            ("web", Declared::Detect),
            ("httpx", Declared::Detect),
            ("", Declared::Detect),
        ] {
            assert_eq!(declared(Some(name), None), want, "{name}");
        }
        assert_eq!(declared(None, None), Declared::Detect);
    }

    #[test]
    fn sniffs_http1_h2_and_tcp() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniffed::Http1);
        assert_eq!(sniff(b"POST /x"), Sniffed::Http1);
        assert_eq!(sniff(b"M-SEARCH * HTTP/1.1"), Sniffed::Http1);
        assert_eq!(sniff(H2_PREFACE), Sniffed::Http2);
        assert_eq!(sniff(b"\x16\x03\x01\x02\x00"), Sniffed::Tcp, "TLS hello");
        assert_eq!(
            sniff(b"get / HTTP/1.1"),
            Sniffed::Tcp,
            "methods are upper-case"
        );
        assert_eq!(sniff(b" GET"), Sniffed::Tcp);
        assert_eq!(sniff(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"), Sniffed::Tcp);
    }

    #[test]
    fn waits_while_it_could_still_be_http() {
        assert_eq!(sniff(b""), Sniffed::NeedMore);
        assert_eq!(sniff(b"GE"), Sniffed::NeedMore);
        // "PRI" could be the h2 preface or a method: more bytes decide.
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n"), Sniffed::NeedMore);
        assert_eq!(sniff(b"PRI /x HTTP/1.1"), Sniffed::Http1);
    }
}
