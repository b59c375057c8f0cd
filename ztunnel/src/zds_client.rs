//! ZDS client: receives the node's enrolled pods (with their network
//! namespaces) from the node agent, acking each message. Wire-compatible
//! with Istio's ZDS.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use amesh_core::admin::Readiness;
use amesh_core::metrics::Metrics;
use amesh_core::zds::proto::{
    Ack, Version, WorkloadRequest, WorkloadResponse, ZdsHello, workload_request::Payload,
    workload_response,
};
use amesh_core::zds::{ZdsConnection, ZdsError};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::pod::{PodInfo, PodRegistry};

const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the ZDS session reports to: counters, and readiness (ready once the
/// first snapshot is applied; a reconnect does not make ztunnel unready, its
/// pods keep being served).
#[derive(Debug)]
pub struct Observers {
    pub metrics: Metrics,
    pub ready: watch::Sender<Readiness>,
}

/// Connects to the node agent and serves its requests, reconnecting for as
/// long as ztunnel runs. Pods keep being served while disconnected.
pub async fn run(path: &Path, registry: Arc<PodRegistry>, observers: Observers) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match session(path, &registry, &observers, &mut backoff).await {
            Ok(()) => info!("node agent closed the ZDS connection; reconnecting"),
            Err(err) => {
                warn!(socket = %path.display(), error = %err, "ZDS connection failed; retrying")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn session(
    path: &Path,
    registry: &PodRegistry,
    observers: &Observers,
    backoff: &mut Duration,
) -> Result<(), ZdsError> {
    let conn = ZdsConnection::connect(path).await?;
    conn.send(
        &ZdsHello {
            version: Version::V1 as i32,
        },
        None,
    )
    .await?;
    info!(socket = %path.display(), "connected to the node agent");
    *backoff = MIN_BACKOFF;
    let mut snapshot = HashSet::new();
    loop {
        let (request, fd) = match conn.recv::<WorkloadRequest>().await {
            Ok(received) => received,
            Err(ZdsError::Closed) => return Ok(()),
            Err(err) => return Err(err),
        };
        let kind = match &request.payload {
            Some(Payload::Add(_)) => "add",
            Some(Payload::Keep(_)) => "keep",
            Some(Payload::Del(_)) => "delete",
            Some(Payload::SnapshotSent(_)) => "snapshot_sent",
            None => "other",
        };
        observers.metrics.zds_message(kind);
        let outcome = match request.payload {
            Some(Payload::Add(add)) => {
                snapshot.insert(add.uid.clone());
                let info = add.workload_info.unwrap_or_default();
                let pod = PodInfo {
                    uid: add.uid,
                    name: info.name,
                    namespace: info.namespace,
                    service_account: info.service_account,
                };
                match fd {
                    Some(fd) => registry.add(pod, fd).await.map_err(|e| e.to_string()),
                    None => Err("AddWorkload came without a network namespace fd".to_owned()),
                }
            }
            Some(Payload::Keep(keep)) => {
                snapshot.insert(keep.uid.clone());
                if registry.contains(&keep.uid) {
                    Ok(())
                } else {
                    Err(format!("KeepWorkload for unknown workload {}", keep.uid))
                }
            }
            Some(Payload::Del(del)) => {
                registry.remove(&del.uid);
                Ok(())
            }
            Some(Payload::SnapshotSent(_)) => {
                registry.retain(&snapshot);
                info!(pods = snapshot.len(), "node agent snapshot received");
                observers.ready.send_replace(Readiness::ready());
                Ok(())
            }
            None => Err("empty or unknown ZDS request".to_owned()),
        };
        if let Err(err) = &outcome {
            warn!(error = %err, "ZDS request failed");
        }
        let ack = WorkloadResponse {
            payload: Some(workload_response::Payload::Ack(Ack {
                error: outcome.err().unwrap_or_default(),
            })),
        };
        conn.send(&ack, None).await?;
    }
}
