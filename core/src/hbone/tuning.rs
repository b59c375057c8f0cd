//! HTTP/2 settings for tunnels. Defaults come from `meshbench hbone`
//! measurements on a 2-core machine (see README, "Tuning").

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct H2Config {
    /// Per-stream receive window: bounds the bytes in flight per tunnel.
    pub stream_window: u32,
    /// Connection-wide receive window, shared by all streams.
    pub connection_window: u32,
    /// Largest DATA frame we accept (and so the peer sends).
    pub max_frame_size: u32,
    /// Bytes h2 buffers per stream before applying backpressure to the writer.
    pub max_send_buffer: usize,
    /// Largest chunk one write hands to h2.
    pub max_write_chunk: usize,
    /// How long a dropped stream waits for the peer's END_STREAM before resetting.
    pub close_linger: Duration,
    /// PING interval on idle-or-not connections; `None` disables keepalive.
    pub keepalive_interval: Option<Duration>,
    /// A PING not answered within this closes the connection.
    pub keepalive_timeout: Duration,
}

impl Default for H2Config {
    /// Measured with `meshbench hbone` (README, "Tuning"): a 1 MiB stream
    /// window already covers loopback and in-cluster bandwidth-delay products;
    /// larger windows and send buffers only raised peak RSS (47 MiB vs 22 MiB
    /// for 8 busy connections) without more throughput. 256 KiB writes: h2
    /// writes one DATA frame per flush, so the chunk is also the size of each
    /// send to the socket; through two ztunnels (`meshbench ztunnel`) 256 KiB
    /// moved ~25% more than 64 KiB, with `meshbench hbone` unchanged.
    fn default() -> Self {
        Self {
            stream_window: 1024 * 1024,
            connection_window: 8 * 1024 * 1024,
            max_frame_size: 256 * 1024,
            max_send_buffer: 512 * 1024,
            max_write_chunk: 256 * 1024,
            close_linger: Duration::from_secs(10),
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

impl H2Config {
    pub(crate) fn client_builder(&self) -> h2::client::Builder {
        let mut b = h2::client::Builder::new();
        b.initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.max_send_buffer)
            .enable_push(false)
            .max_header_list_size(64 * 1024);
        b
    }

    pub(crate) fn server_builder(&self, max_streams: u32) -> h2::server::Builder {
        let mut b = h2::server::Builder::new();
        b.initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.max_send_buffer)
            .max_concurrent_streams(max_streams)
            .max_header_list_size(64 * 1024);
        b
    }
}
