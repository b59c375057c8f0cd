//! The agent's ZDS server: hands enrolled pods (netns fd + identity) to
//! ztunnel over [`amesh_core::zds`].
//!
//! The enroller publishes the full set of enrolled pods in a [`ZdsRegistry`];
//! each ztunnel connection diffs what it has sent against the latest set, so
//! the first diff (against nothing) is the snapshot and later ones are the
//! deltas, and nothing is lost when changes come faster than acks. Every
//! connected ztunnel is served: during an upgrade the new ztunnel starts
//! beside the old one, both serve every pod (their listeners share each
//! SO_REUSEPORT group) until the old one drains and leaves. Dropping the old
//! connection instead would make it reconnect and push the new one out in
//! turn. The newest connection is the one whose progress [`ZdsStatus`]
//! reports. Capture stays in place while no ztunnel is connected, so pods'
//! traffic is refused rather than sent around the mesh.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amesh_core::zds::proto::{
    Version, WorkloadInfo, WorkloadRequest, WorkloadResponse, ZdsHello, workload_response,
};
use amesh_core::zds::{ZdsConnection, ZdsError, ZdsListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::netns::Netns;

/// A pod as ztunnel gets it.
#[derive(Debug)]
pub struct ZdsPod {
    pub uid: String,
    pub info: WorkloadInfo,
    /// Sent with every `AddWorkload` (a new fd each time).
    pub netns: Netns,
}

/// One version of the enrolled set.
#[derive(Debug, Default)]
pub struct PodSet {
    /// Increases with every publish; 0 = nothing published yet (no snapshot
    /// is sent before the first publish).
    pub generation: u64,
    pub pods: BTreeMap<String, Arc<ZdsPod>>,
}

/// The newest connection and how far it has caught up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZdsStatus {
    /// The connection being served, once ztunnel said hello.
    pub connection: Option<u64>,
    /// The latest [`PodSet::generation`] that connection has fully applied
    /// (every message acked); 0 before its snapshot is complete.
    pub synced_generation: u64,
}

/// Shared between the enroller (publishes) and the server (serves).
#[derive(Debug, Clone)]
pub struct ZdsRegistry {
    pods: Arc<watch::Sender<Arc<PodSet>>>,
    status: Arc<watch::Sender<ZdsStatus>>,
    /// Per pod uid, what ztunnel answered to its latest `AddWorkload`
    /// (empty: served). The CNI ADD reply and CHECK read it.
    acks: Arc<Mutex<HashMap<String, String>>>,
}

/// Why a pod is not (yet) served by ztunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotServed {
    #[error("no ztunnel is connected to the node agent (waited {0:?})")]
    NoZtunnel(Duration),
    #[error("ztunnel did not take the pod within {0:?}")]
    Timeout(Duration),
    #[error("ztunnel refused the pod: {0}")]
    Refused(String),
}

impl Default for ZdsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl ZdsRegistry {
    pub fn new() -> Self {
        Self {
            pods: Arc::new(watch::Sender::new(Arc::new(PodSet::default()))),
            status: Arc::new(watch::Sender::new(ZdsStatus::default())),
            acks: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Waits until a connected ztunnel has applied `generation`, then
    /// reports whether it serves `uid`. Unlike [`Self::wait_synced`], no
    /// ztunnel is a failure: a pod is only ready once ztunnel listens in it.
    pub async fn wait_served(
        &self,
        uid: &str,
        generation: u64,
        timeout: Duration,
    ) -> Result<(), NotServed> {
        let mut status = self.status.subscribe();
        let done = status.wait_for(|s| s.connection.is_some() && s.synced_generation >= generation);
        if !matches!(tokio::time::timeout(timeout, done).await, Ok(Ok(_))) {
            return Err(if self.status.borrow().connection.is_none() {
                NotServed::NoZtunnel(timeout)
            } else {
                NotServed::Timeout(timeout)
            });
        }
        self.served(uid)
    }

    /// Whether the connected ztunnel took `uid` (without waiting).
    pub fn served(&self, uid: &str) -> Result<(), NotServed> {
        if self.status.borrow().connection.is_none() {
            return Err(NotServed::NoZtunnel(Duration::ZERO));
        }
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        match acks.get(uid) {
            Some(error) if error.is_empty() => Ok(()),
            Some(error) => Err(NotServed::Refused(error.clone())),
            None => Err(NotServed::Timeout(Duration::ZERO)),
        }
    }

    fn record_ack(&self, uid: &str, error: Option<&str>) {
        let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            Some(error) => {
                acks.insert(uid.to_owned(), error.to_owned());
            }
            None => {
                acks.remove(uid);
            }
        }
    }

    /// Replaces the enrolled set; returns its generation.
    pub fn publish(&self, pods: BTreeMap<String, Arc<ZdsPod>>) -> u64 {
        let mut generation = 0;
        self.pods.send_modify(|set| {
            generation = set.generation + 1;
            *set = Arc::new(PodSet { generation, pods });
        });
        generation
    }

    pub fn current(&self) -> Arc<PodSet> {
        self.pods.borrow().clone()
    }

    pub fn status(&self) -> watch::Receiver<ZdsStatus> {
        self.status.subscribe()
    }

    /// Waits until the connected ztunnel has applied `generation`. Returns
    /// `true` when it has, or when no ztunnel is connected (there is no one
    /// to tell); `false` after `timeout`.
    pub async fn wait_synced(&self, generation: u64, timeout: Duration) -> bool {
        let mut status = self.status.subscribe();
        let done = status.wait_for(|s| s.connection.is_none() || s.synced_generation >= generation);
        matches!(tokio::time::timeout(timeout, done).await, Ok(Ok(_)))
    }

    /// Records `connection`'s progress unless a newer connection said hello.
    fn set_status(&self, connection: u64, synced_generation: u64) {
        self.status.send_if_modified(|status| {
            if status.connection.is_some_and(|newest| newest > connection) {
                return false;
            }
            *status = ZdsStatus {
                connection: Some(connection),
                synced_generation,
            };
            true
        });
    }
}

/// Clears the status when its connection ends, unless a newer one took over.
struct StatusGuard {
    registry: ZdsRegistry,
    connection: u64,
}

impl Drop for StatusGuard {
    fn drop(&mut self) {
        self.registry.status.send_if_modified(|status| {
            if status.connection == Some(self.connection) {
                *status = ZdsStatus::default();
                true
            } else {
                false
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Zds(#[from] ZdsError),
    #[error("ztunnel did not {0} within {1:?}")]
    Timeout(&'static str, Duration),
}

#[derive(Debug)]
pub struct ZdsServer {
    listener: ZdsListener,
    registry: ZdsRegistry,
    /// Bound on every wait: hello, each send and each ack.
    timeout: Duration,
}

impl ZdsServer {
    pub fn new(listener: ZdsListener, registry: ZdsRegistry, timeout: Duration) -> Self {
        Self {
            listener,
            registry,
            timeout,
        }
    }

    /// Accepts ztunnel connections until dropped, serving each of them.
    pub async fn run(self) {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        // Aborts every connection's task when the server is dropped.
        let mut connections = JoinSet::new();
        let mut accept_errors = 0u32;
        loop {
            let conn = match self.listener.accept().await {
                Ok(conn) => {
                    accept_errors = 0;
                    conn
                }
                Err(err) => {
                    // E.g. EMFILE: back off rather than spin; the listener
                    // stays open so ztunnel can retry.
                    accept_errors = accept_errors.saturating_add(1);
                    error!(socket = %self.listener.path().display(), error = %err, "ZDS accept failed");
                    let backoff = Duration::from_millis(100u64 << accept_errors.min(5));
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            // Reap finished connections so the set stays small.
            while connections.try_join_next().is_some() {}
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            info!(
                connection = id,
                others = connections.len(),
                "ztunnel connected"
            );
            let registry = self.registry.clone();
            let timeout = self.timeout;
            connections.spawn(async move {
                match serve(conn, id, registry, timeout).await {
                    Ok(()) => info!(connection = id, "ztunnel disconnected"),
                    Err(err) => warn!(connection = id, error = %err, "ZDS connection dropped"),
                }
            });
        }
    }
}

/// Serves one connection until it closes or fails.
pub async fn serve(
    conn: ZdsConnection,
    id: u64,
    registry: ZdsRegistry,
    timeout: Duration,
) -> Result<(), ServeError> {
    let (hello, fd) = tokio::time::timeout(timeout, conn.recv::<ZdsHello>())
        .await
        .map_err(|_| ServeError::Timeout("say hello", timeout))??;
    drop(fd);
    if hello.version != Version::V1 as i32 {
        return Err(
            ZdsError::Protocol(format!("unsupported ZDS version {}", hello.version)).into(),
        );
    }
    let _guard = StatusGuard {
        registry: registry.clone(),
        connection: id,
    };
    registry.set_status(id, 0);

    // Until the enroller's first pass has published, the agent does not know
    // the enrolled pods (e.g. just after an agent restart): a snapshot now
    // would be empty and make ztunnel drop every pod it serves.
    let mut pods = registry.pods.subscribe();
    if pods.wait_for(|set| set.generation > 0).await.is_err() {
        return Ok(());
    }
    let mut sent = BTreeMap::new();
    let set = pods.borrow_and_update().clone();
    apply(&conn, &registry, &mut sent, &set.pods, timeout).await?;
    request(&conn, &WorkloadRequest::snapshot_sent(), None, timeout).await?;
    info!(
        connection = id,
        pods = sent.len(),
        "snapshot sent to ztunnel"
    );
    registry.set_status(id, set.generation);

    loop {
        tokio::select! {
            changed = pods.changed() => {
                if changed.is_err() {
                    // The registry is gone: the agent is shutting down.
                    return Ok(());
                }
                let set = pods.borrow_and_update().clone();
                apply(&conn, &registry, &mut sent, &set.pods, timeout).await?;
                registry.set_status(id, set.generation);
            }
            // ztunnel speaks only when spoken to: this is EOF (or a
            // protocol violation). Receiving is cancel-safe.
            unsolicited = conn.recv::<WorkloadResponse>() => {
                return match unsolicited {
                    Err(ZdsError::Closed) => Ok(()),
                    Err(err) => Err(err.into()),
                    Ok(_) => Err(ZdsError::Protocol("message from ztunnel without a request".into()).into()),
                };
            }
        }
    }
}

/// Sends what turns `sent` into `wanted`: `DelWorkload` for pods that left
/// (or were replaced by a new netns under the same uid), then `AddWorkload`
/// with the netns fd for new ones.
async fn apply(
    conn: &ZdsConnection,
    registry: &ZdsRegistry,
    sent: &mut BTreeMap<String, Arc<ZdsPod>>,
    wanted: &BTreeMap<String, Arc<ZdsPod>>,
    timeout: Duration,
) -> Result<(), ServeError> {
    let stale: Vec<String> = sent
        .iter()
        .filter(|(uid, pod)| wanted.get(*uid).is_none_or(|new| !Arc::ptr_eq(new, pod)))
        .map(|(uid, _)| uid.clone())
        .collect();
    for uid in stale {
        let ack = request(conn, &WorkloadRequest::del(uid.as_str()), None, timeout).await?;
        sent.remove(&uid);
        registry.record_ack(&uid, None);
        if ack.is_empty() {
            debug!(%uid, "ztunnel removed pod");
        } else {
            error!(%uid, error = %ack, "ztunnel failed to remove pod");
        }
    }
    for (uid, pod) in wanted {
        if sent.contains_key(uid) {
            continue;
        }
        let add = WorkloadRequest::add(uid.as_str(), pod.info.clone());
        let ack = request(conn, &add, Some(pod), timeout).await?;
        // Recorded even when ztunnel refused it: resending would fail the
        // same way; the pod's capture stays, so its traffic is refused
        // (fail closed) until ztunnel reconnects and gets a new snapshot.
        sent.insert(uid.clone(), pod.clone());
        registry.record_ack(uid, Some(&ack));
        if ack.is_empty() {
            debug!(%uid, "ztunnel added pod");
        } else {
            error!(%uid, error = %ack, "ztunnel failed to add pod");
        }
    }
    Ok(())
}

/// One request and its ack; returns the ack's error text (empty = success).
async fn request(
    conn: &ZdsConnection,
    msg: &WorkloadRequest,
    pod: Option<&ZdsPod>,
    timeout: Duration,
) -> Result<String, ServeError> {
    let fd = pod.map(|pod| pod.netns.as_fd());
    tokio::time::timeout(timeout, conn.send(msg, fd))
        .await
        .map_err(|_| ServeError::Timeout("take a message", timeout))??;
    let (response, fd) = tokio::time::timeout(timeout, conn.recv::<WorkloadResponse>())
        .await
        .map_err(|_| ServeError::Timeout("ack", timeout))??;
    if fd.is_some() {
        warn!("ztunnel sent an fd with an ack; closed it");
    }
    match response.payload {
        Some(workload_response::Payload::Ack(ack)) => Ok(ack.error),
        None => Err(ZdsError::Protocol("response without an ack".into()).into()),
    }
}
