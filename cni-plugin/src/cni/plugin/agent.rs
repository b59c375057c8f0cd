//! The node agent's socket, client side: connect, one request line, one
//! reply line. Plain std with timeouts: the plugin is exec'd per pod and
//! must start fast.

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cni::protocol::{MAX_LINE, Reply, Request};

/// Connecting to a live agent is immediate; a full backlog (a wedged
/// agent) would block `connect` forever.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Writing one request line to an agent that accepted the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Nobody is listening (socket missing, connection refused, connect
    /// timeout): the plugin may decide alone.
    #[error("amesh node agent unreachable at {}: {source}", socket.display())]
    Unreachable { socket: PathBuf, source: io::Error },
    /// The agent accepted the connection but gave no usable reply: it may
    /// be half-way through the request.
    #[error("amesh node agent at {} gave no reply: {reason}", socket.display())]
    NoReply { socket: PathBuf, reason: String },
}

/// Sends `request`, waits up to `reply_timeout` for the reply.
pub fn call(
    socket: &Path,
    request: &Request,
    reply_timeout: Duration,
) -> Result<Reply, AgentError> {
    let mut stream =
        connect(socket, CONNECT_TIMEOUT).map_err(|source| AgentError::Unreachable {
            socket: socket.to_owned(),
            source,
        })?;
    let no_reply = |reason: String| AgentError::NoReply {
        socket: socket.to_owned(),
        reason,
    };
    let mut line = serde_json::to_vec(request)
        .map_err(|err| no_reply(format!("cannot encode the request: {err}")))?;
    line.push(b'\n');
    stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .and_then(|()| stream.write_all(&line))
        .map_err(|err| no_reply(format!("sending the request: {err}")))?;
    let reply = read_line(&mut stream, reply_timeout).map_err(no_reply)?;
    serde_json::from_slice(&reply).map_err(|err| no_reply(format!("invalid reply: {err}")))
}

/// `UnixStream::connect` has no timeout: connect on a helper thread and
/// stop waiting for it at `timeout` (the process exits soon after anyway).
fn connect(socket: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let (tx, rx) = mpsc::sync_channel(1);
    let path = socket.to_owned();
    std::thread::Builder::new()
        .name("agent-connect".into())
        .spawn(move || {
            let _ = tx.send(UnixStream::connect(path));
        })?;
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {timeout:?}"),
        ))
    })
}

/// Reads up to the first '\n' within `timeout` overall, at most
/// [`MAX_LINE`] bytes.
fn read_line(stream: &mut UnixStream, timeout: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(format!("no reply within {timeout:?}"));
        }
        stream
            .set_read_timeout(Some(remaining))
            .map_err(|err| err.to_string())?;
        let n = match stream.read(&mut chunk) {
            Ok(0) if line.is_empty() => return Err("connection closed without a reply".into()),
            // A last line without its '\n' is still a line.
            Ok(0) => return Ok(line),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no reply within {timeout:?}"));
            }
            Err(err) => return Err(format!("reading the reply: {err}")),
        };
        let new = chunk.get(..n).unwrap_or_default();
        if let Some(end) = new.iter().position(|b| *b == b'\n') {
            line.extend_from_slice(new.get(..end).unwrap_or_default());
            return Ok(line);
        }
        line.extend_from_slice(new);
        if line.len() > MAX_LINE {
            return Err(format!("reply longer than {MAX_LINE} bytes"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead as _, BufReader};
    use std::os::unix::net::UnixListener;

    fn temp_socket(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("amesh-cni-agent-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("cni.sock")
    }

    /// Accepts one connection, reads the request line, writes `reply` (raw).
    fn serve_once(socket: &Path, reply: &'static [u8]) -> std::thread::JoinHandle<String> {
        let listener = UnixListener::bind(socket).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            reader.get_mut().write_all(reply).unwrap();
            request
        })
    }

    #[test]
    fn sends_one_line_and_reads_the_reply() {
        let socket = temp_socket("ok");
        let server = serve_once(&socket, b"{\"outcome\":\"ok\"}\n");
        let reply = call(&socket, &Request::Status, Duration::from_secs(10)).unwrap();
        assert_eq!(reply, Reply::Ok);
        assert_eq!(server.join().unwrap(), "{\"command\":\"STATUS\"}\n");
        let _ = std::fs::remove_dir_all(socket.parent().unwrap());
    }

    #[test]
    fn a_silent_agent_times_out() {
        let socket = temp_socket("silent");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            // Holds the connection without replying until the client hangs up.
            let mut rest = Vec::new();
            let _ = BufReader::new(stream).read_to_end(&mut rest);
            rest
        });
        let err = call(&socket, &Request::Status, Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("no reply within"), "{err}");
        assert!(matches!(err, AgentError::NoReply { .. }));
        assert_eq!(server.join().unwrap(), b"{\"command\":\"STATUS\"}\n");
        let _ = std::fs::remove_dir_all(socket.parent().unwrap());
    }

    #[test]
    fn missing_socket_is_unreachable() {
        let socket = temp_socket("missing");
        let err = call(&socket, &Request::Status, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, AgentError::Unreachable { .. }), "{err}");
        let _ = std::fs::remove_dir_all(socket.parent().unwrap());
    }

    #[test]
    fn closed_without_reply_or_garbage_is_no_reply() {
        let socket = temp_socket("closed");
        let server = serve_once(&socket, b"");
        let err = call(&socket, &Request::Status, Duration::from_secs(10)).unwrap_err();
        assert!(err.to_string().contains("closed without a reply"), "{err}");
        server.join().unwrap();
        std::fs::remove_file(&socket).unwrap();

        let server = serve_once(&socket, b"{\"outcome\":\"nope\"}\n");
        let err = call(&socket, &Request::Status, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(err, AgentError::NoReply { .. }), "{err}");
        assert!(err.to_string().contains("invalid reply"), "{err}");
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(socket.parent().unwrap());
    }
}
