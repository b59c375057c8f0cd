//! Per-identity certificates, fetched on first use and renewed in the
//! background at half-life. Live connections keep the certificate they
//! handshook with; new handshakes pick up the renewed one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{CertError, CertificateAuthority, CertificateRequest, WorkloadCertificate};
use crate::identity::Identity;

#[derive(Clone, Debug)]
pub struct CertStoreConfig {
    /// Lifetime requested for each certificate.
    pub ttl: Duration,
    /// First retry delay after a failed fetch; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for CertStoreConfig {
    fn default() -> Self {
        Self {
            ttl: super::DEFAULT_CERT_TTL,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// The latest outcome for one identity.
#[derive(Clone, Debug)]
enum State {
    Pending,
    Ready(Arc<WorkloadCertificate>),
    /// The last attempt failed and no certificate was ever obtained.
    Failed(CertError),
}

struct Entry {
    state: watch::Receiver<State>,
    task: JoinHandle<()>,
}

/// Renewing certificate store, shared by every listener and connector of a
/// process. Dropping the store stops all renewals.
#[derive(Debug)]
pub struct CertStore {
    ca: Arc<dyn CertificateAuthority>,
    config: CertStoreConfig,
    entries: Mutex<HashMap<Identity, Entry>>,
}

/// A live view of one identity's certificate, for TLS configs that must see
/// renewals without being rebuilt.
#[derive(Clone, Debug)]
pub struct CertWatch {
    state: watch::Receiver<State>,
}

impl CertWatch {
    /// The newest certificate, if one has been obtained.
    pub fn current(&self) -> Option<Arc<WorkloadCertificate>> {
        match &*self.state.borrow() {
            State::Ready(cert) => Some(cert.clone()),
            State::Pending | State::Failed(_) => None,
        }
    }

    /// Waits until the certificate differs from `seen` (a renewal happened).
    pub async fn changed(&mut self) -> bool {
        self.state.changed().await.is_ok()
    }
}

impl CertStore {
    pub fn new(ca: Arc<dyn CertificateAuthority>, config: CertStoreConfig) -> Self {
        Self {
            ca,
            config,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The certificate for `identity`, fetching it on first use. Must be called
    /// within a tokio runtime.
    pub async fn get(&self, identity: &Identity) -> Result<Arc<WorkloadCertificate>, CertError> {
        let mut watch = self.watch(identity);
        loop {
            {
                let state = watch.state.borrow_and_update();
                match &*state {
                    State::Ready(cert) => return Ok(cert.clone()),
                    State::Failed(err) => return Err(err.clone()),
                    State::Pending => {}
                }
            }
            if watch.state.changed().await.is_err() {
                return Err(CertError::Unavailable(format!(
                    "renewal for {identity} stopped"
                )));
            }
        }
    }

    /// A live view of `identity`'s certificate, starting its fetch if needed.
    pub fn watch(&self, identity: &Identity) -> CertWatch {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get(identity)
            && !entry.task.is_finished()
        {
            return CertWatch {
                state: entry.state.clone(),
            };
        }
        let (tx, rx) = watch::channel(State::Pending);
        let task = tokio::spawn(renew_loop(
            self.ca.clone(),
            self.config.clone(),
            identity.clone(),
            tx,
        ));
        entries.insert(
            identity.clone(),
            Entry {
                state: rx.clone(),
                task,
            },
        );
        CertWatch { state: rx }
    }

    /// Stops renewing `identity` (its last workload left). Connections that
    /// already hold the certificate are unaffected.
    pub fn forget(&self, identity: &Identity) {
        let removed = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(identity);
        if let Some(entry) = removed {
            entry.task.abort();
        }
    }
}

impl Drop for CertStore {
    fn drop(&mut self) {
        let entries = self
            .entries
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for entry in entries.values() {
            entry.task.abort();
        }
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").finish_non_exhaustive()
    }
}

async fn fetch(
    ca: &dyn CertificateAuthority,
    identity: &Identity,
    ttl: Duration,
) -> Result<WorkloadCertificate, CertError> {
    let request = CertificateRequest::new(identity)?;
    let issued = ca.sign(identity, request.csr(), ttl).await?;
    request.into_certificate(issued)
}

async fn renew_loop(
    ca: Arc<dyn CertificateAuthority>,
    config: CertStoreConfig,
    identity: Identity,
    tx: watch::Sender<State>,
) {
    let mut backoff = config.initial_backoff;
    loop {
        let wait = match fetch(ca.as_ref(), &identity, config.ttl).await {
            Ok(cert) => {
                backoff = config.initial_backoff;
                let refresh_at = cert.refresh_at();
                info!(%identity, not_after = ?cert.not_after(), "workload certificate issued");
                tx.send_replace(State::Ready(Arc::new(cert)));
                refresh_at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            }
            Err(err) => {
                warn!(%identity, error = %err, retry_in = ?backoff, "workload certificate fetch failed");
                // Keep serving a still-valid certificate; report the error only
                // to callers that have nothing to use yet.
                tx.send_if_modified(|state| match state {
                    State::Ready(_) => false,
                    _ => {
                        *state = State::Failed(err.clone());
                        true
                    }
                });
                let wait = backoff;
                backoff = (backoff * 2).min(config.max_backoff);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}
