//! Inbound connections that are open right now, so that a policy change
//! can close the ones it now denies (Istio's ztunnel does the same).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use amesh_core::Identity;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::pod::PodInfo;

/// What policy is evaluated on: fixed for the connection's life.
#[derive(Debug)]
pub struct LiveConn {
    /// The destination pod.
    pub pod: PodInfo,
    pub src_ip: IpAddr,
    /// `None`: plaintext (no mTLS peer).
    pub src_identity: Option<Identity>,
    pub dst: SocketAddr,
    revoked: CancellationToken,
}

#[derive(Debug, Default)]
pub struct LiveConnections {
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<LiveConn>>>,
}

/// Keeps a connection registered; unregisters it when dropped.
#[derive(Debug)]
pub struct LiveGuard {
    id: u64,
    conn: Arc<LiveConn>,
    registry: Arc<LiveConnections>,
}

impl LiveGuard {
    /// Resolves when a policy change revokes the connection.
    pub fn revoked(&self) -> WaitForCancellationFuture<'_> {
        self.conn.revoked.cancelled()
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl LiveConnections {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<LiveConn>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn register(
        self: &Arc<Self>,
        pod: &PodInfo,
        src_ip: IpAddr,
        src_identity: Option<&Identity>,
        dst: SocketAddr,
    ) -> LiveGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(LiveConn {
            pod: pod.clone(),
            src_ip,
            src_identity: src_identity.cloned(),
            dst,
            revoked: CancellationToken::new(),
        });
        self.lock().insert(id, conn.clone());
        LiveGuard {
            id,
            conn,
            registry: self.clone(),
        }
    }

    /// Closes every connection `still_allowed` now refuses; returns how many.
    pub fn revoke(&self, still_allowed: impl Fn(&LiveConn) -> bool) -> usize {
        // Decide outside the lock: connections come and go meanwhile.
        let conns: Vec<Arc<LiveConn>> = self.lock().values().cloned().collect();
        let mut revoked = 0;
        for conn in conns {
            if !conn.revoked.is_cancelled() && !still_allowed(&conn) {
                conn.revoked.cancel();
                revoked += 1;
            }
        }
        revoked
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn revoke_closes_only_what_is_now_denied_and_guards_unregister() {
        let live = Arc::new(LiveConnections::default());
        let dst: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let pod = |uid: &str| PodInfo {
            uid: uid.into(),
            name: uid.into(),
            namespace: "ns".into(),
            service_account: "default".into(),
        };
        let a = live.register(&pod("ns/a"), "10.0.0.1".parse().unwrap(), None, dst);
        let b = live.register(&pod("ns/b"), "10.0.0.3".parse().unwrap(), None, dst);
        assert_eq!(live.revoke(|c| c.pod.uid != "ns/b"), 1);
        tokio::time::timeout(std::time::Duration::from_secs(1), b.revoked())
            .await
            .expect("b revoked");
        assert!(!a.conn.revoked.is_cancelled());
        // Already revoked: not counted twice.
        assert_eq!(live.revoke(|c| c.pod.uid != "ns/b"), 0);
        drop(b);
        assert_eq!(live.len(), 1);
        drop(a);
        assert_eq!(live.len(), 0);
    }
}
