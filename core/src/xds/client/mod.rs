//! Delta ADS client: subscribes to resource types on a control plane, hands
//! each push to a handler that accepts (ACK) or refuses (NACK) it, and
//! resumes after reconnects with the versions it holds.
//!
//! [`run`] is the protocol loop; [`watch_snapshot`] wraps it for the data
//! plane, publishing a [`crate::config::ConfigSnapshot`] built from the
//! resources.

mod backoff;
mod build;
pub(crate) mod channel;
mod error;
mod session;
mod snapshot;
mod state;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use tracing::{info, warn};

pub use build::snapshot_from_state;
pub use error::XdsError;
pub use snapshot::{first_push, watch_snapshot};
pub use state::{XdsEntry, XdsState};
/// Re-exported so callers need no tokio-util dependency of their own.
pub use tokio_util::sync::CancellationToken;

/// Where and as what a client subscribes.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `http://host:port` (plaintext) or `https://host:port` (TLS, needs `root_cert`).
    pub address: String,
    /// This node's name: the xDS node id.
    pub node: String,
    /// `ztunnel`, `node-agent` or `waypoint`: the xDS node cluster.
    pub role: String,
    /// Type URLs subscribed to (wildcard: every resource of each type).
    pub types: Vec<&'static str>,
    /// Bearer token file, re-read on every connect (tokens are rotated).
    pub token_file: Option<PathBuf>,
    /// PEM roots that verify the control plane's certificate.
    pub root_cert: Option<PathBuf>,
    /// Name expected in the control plane's certificate (default: the
    /// address' host).
    pub server_name: Option<String>,
    /// Longest wait between reconnect attempts.
    pub reconnect_max: Duration,
}

impl ClientConfig {
    /// A plaintext-or-TLS config with defaults for everything optional.
    pub fn new(
        address: impl Into<String>,
        node: impl Into<String>,
        role: impl Into<String>,
        types: Vec<&'static str>,
    ) -> Self {
        Self {
            address: address.into(),
            node: node.into(),
            role: role.into(),
            types,
            token_file: None,
            root_cert: None,
            server_name: None,
            reconnect_max: Duration::from_secs(15),
        }
    }

    /// Checks the address and reads the root certificate as [`run`] will,
    /// for a clear error at startup instead of a client that never connects.
    pub fn validate(&self) -> Result<(), XdsError> {
        channel::Target::parse(
            &self.address,
            self.root_cert.as_deref(),
            self.server_name.as_deref(),
        )
        .map(drop)
    }
}

/// Decides whether a push is applied. Called with the state as it would be
/// after the push; `Err` refuses the push (NACK) and the state stays as it
/// was. The message goes back to the control plane.
pub trait XdsHandler: Send + 'static {
    fn apply(&mut self, state: &XdsState) -> Result<(), String>;
}

impl<F> XdsHandler for F
where
    F: FnMut(&XdsState) -> Result<(), String> + Send + 'static,
{
    fn apply(&mut self, state: &XdsState) -> Result<(), String> {
        self(state)
    }
}

/// Subscribes and applies pushes until `cancel` fires, reconnecting with
/// jittered exponential backoff. Returns early only when the config itself
/// is unusable (bad address, unreadable root certificate).
pub async fn run(
    config: ClientConfig,
    mut handler: impl XdsHandler,
    cancel: CancellationToken,
) -> Result<(), XdsError> {
    let channel = channel::Target::parse(
        &config.address,
        config.root_cert.as_deref(),
        config.server_name.as_deref(),
    )?
    .connect_lazy()?;
    let mut state = XdsState::new(&config.types);
    let mut backoff = backoff::Backoff::new(config.reconnect_max);
    loop {
        let outcome = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            outcome = session::run(&config, channel.clone(), &mut state, &mut handler) => outcome,
        };
        if outcome.received {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        let retry_ms = delay.as_millis() as u64;
        match outcome.error {
            None => {
                info!(address = %config.address, retry_ms, "control plane closed the xDS stream; reconnecting")
            }
            Some(error) => {
                warn!(address = %config.address, retry_ms, %error, "xDS stream failed; reconnecting")
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}
