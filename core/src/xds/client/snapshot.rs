//! The data plane's use of the client: every accepted push becomes a new
//! [`ConfigSnapshot`] on a watch channel, as the config file watcher does.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::{ClientConfig, XdsError, XdsState, run};
use crate::config::ConfigSnapshot;

/// The value a receiver holds until the first complete push: recognisable by
/// identity, so [`first_push`] works on any clone of the receiver.
fn placeholder() -> Arc<ConfigSnapshot> {
    static EMPTY: OnceLock<Arc<ConfigSnapshot>> = OnceLock::new();
    EMPTY.get_or_init(Arc::default).clone()
}

/// Runs the client, publishing `build`'s snapshot of every accepted push.
/// `build` decides acceptance: its `Err` is the NACK's message.
///
/// Until every subscribed type has had a push, pushes are checked (built)
/// but not published: a ztunnel must not serve workloads without their
/// policies. The receiver holds an empty snapshot until then; wait for the
/// real one with [`first_push`].
pub fn watch_snapshot(
    config: ClientConfig,
    mut build: impl FnMut(&XdsState) -> Result<ConfigSnapshot, String> + Send + 'static,
    cancel: CancellationToken,
) -> (watch::Receiver<Arc<ConfigSnapshot>>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(placeholder());
    let address = config.address.clone();
    let handler = move |state: &XdsState| {
        let snapshot = build(state)?;
        if state.complete() {
            tx.send_replace(Arc::new(snapshot));
        }
        Ok(())
    };
    let task = tokio::spawn(async move {
        if let Err(err) = run(config, handler, cancel).await {
            error!(%address, error = %err, "xDS client stopped");
        }
    });
    (rx, task)
}

/// Waits until `rx` (from [`watch_snapshot`]) holds the control plane's
/// first complete snapshot; `None` waits without bound.
pub async fn first_push(
    rx: &mut watch::Receiver<Arc<ConfigSnapshot>>,
    timeout: Option<Duration>,
) -> Result<Arc<ConfigSnapshot>, XdsError> {
    let empty = placeholder();
    let wait = rx.wait_for(|snapshot| !Arc::ptr_eq(snapshot, &empty));
    let outcome = match timeout {
        Some(limit) => tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| XdsError::FirstPushTimeout(limit))?,
        None => wait.await,
    };
    outcome
        .map(|snapshot| snapshot.clone())
        .map_err(|_| XdsError::Stopped)
}
