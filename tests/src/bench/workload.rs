//! Traffic patterns shared by every scenario: bulk transfer, 1-byte
//! request/response, and connection rate. Each works on any byte stream, so
//! the mesh and the baseline run exactly the same code.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of each write and read in bulk transfers.
pub const BULK_CHUNK: usize = 256 * 1024;

/// Writes `bytes` into `writer` and shuts it down.
pub async fn send_bulk<W: AsyncWrite + Unpin>(mut writer: W, bytes: u64) -> std::io::Result<()> {
    let chunk = vec![0x5a_u8; BULK_CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BULK_CHUNK as u64) as usize;
        writer.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    writer.shutdown().await
}

/// Reads until EOF; returns the byte count.
pub async fn receive_bulk<R: AsyncRead + Unpin>(mut reader: R) -> std::io::Result<u64> {
    let mut buf = vec![0_u8; BULK_CHUNK];
    let mut total = 0_u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

pub fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs / 1e9
}

/// Echoes until EOF, then closes.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    if tokio::io::copy(&mut rd, &mut wr).await.is_ok() {
        let _ = wr.shutdown().await;
    }
}

/// 1-byte request/response round trips on one open stream whose peer echoes;
/// returns each round trip in microseconds (after `warmup` unrecorded ones).
pub async fn ping_pong<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    warmup: usize,
    iterations: usize,
) -> std::io::Result<Vec<f64>> {
    let mut byte = [0_u8; 1];
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let start = Instant::now();
        stream.write_all(b"x").await?;
        stream.read_exact(&mut byte).await?;
        if i >= warmup {
            samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(samples)
}

/// Runs `op` from `concurrency` workers for `duration`; returns completed
/// operations per second. Fails if any operation fails.
pub async fn rate<F, Fut>(concurrency: usize, duration: Duration, op: F) -> std::io::Result<f64>
where
    F: Fn() -> Fut + 'static,
    Fut: Future<Output = std::io::Result<()>>,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let workers = (0..concurrency).map(|_| {
        let op = op.clone();
        let done = done.clone();
        async move {
            while Instant::now() < deadline {
                op().await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, std::io::Error>(())
        }
    });
    for result in futures_util::future::join_all(workers).await {
        result?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// One request on a fresh connection: send a byte and read the echo.
pub async fn one_request<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> std::io::Result<()> {
    stream.write_all(b"x").await?;
    let mut buf = [0_u8; 1];
    stream.read_exact(&mut buf).await?;
    Ok(())
}
