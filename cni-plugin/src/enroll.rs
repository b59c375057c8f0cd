//! Enrollment: keeps capture, the node's probe SNAT set and ztunnel's pod
//! list in step with the config.
//!
//! A pod is enrolled when its workload runs on this node and is in the mesh.
//! Enrolling: install capture (unless it already is: an agent restart must
//! not touch a working pod), add its IPs to the probe SNAT set, then hand it
//! to ztunnel. Leaving (gone from the config, out of the mesh, or its netns
//! gone or replaced): ztunnel first, then capture (if the netns still
//! exists), then the probe set. Failures are logged with the pod and retried
//! on the next pass: on every config change and every `recheck_interval`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use amesh_core::config::{ConfigSnapshot, Workload};
use amesh_core::zds::proto::WorkloadInfo;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::capture::{Capture, CaptureError, NodeProbeSnat, PodNetns};
use crate::netns::{self, Netns, NetnsId};
use crate::zds_server::{ZdsPod, ZdsRegistry};

#[derive(Debug, Clone)]
pub struct EnrollConfig {
    /// This node's name, as workloads' `node` says it.
    pub node: String,
    /// Where pod netns are bind-mounted (`/var/run/netns`).
    pub netns_dir: PathBuf,
    /// How often to look again at pods whose netns is missing or whose
    /// capture failed, and at enrolled pods' netns.
    pub recheck_interval: Duration,
    /// How long to wait for ztunnel to confirm a removal before removing
    /// capture anyway.
    pub zds_sync_timeout: Duration,
}

/// An enrolled pod.
#[derive(Debug)]
struct Enrolled {
    workload: Arc<Workload>,
    pod: PodNetns,
    netns_id: NetnsId,
    zds: Arc<ZdsPod>,
}

#[derive(Debug)]
pub struct Enroller {
    config: EnrollConfig,
    capture: Arc<dyn Capture>,
    probe: NodeProbeSnat,
    registry: ZdsRegistry,
    enrolled: BTreeMap<String, Enrolled>,
    /// Last problem logged per pod uid, so a pod that keeps failing the same
    /// way is logged at `warn` once, not every pass.
    problems: HashMap<String, String>,
    /// The probe set as last synced; `None` until the first sync succeeds.
    probe_synced: Option<BTreeSet<IpAddr>>,
    first_pass: bool,
    published: bool,
}

impl Enroller {
    pub fn new(
        config: EnrollConfig,
        capture: Arc<dyn Capture>,
        probe: NodeProbeSnat,
        registry: ZdsRegistry,
    ) -> Self {
        Self {
            config,
            capture,
            probe,
            registry,
            enrolled: BTreeMap::new(),
            problems: HashMap::new(),
            probe_synced: None,
            first_pass: true,
            published: false,
        }
    }

    /// Reconciles on every config change and every recheck interval, until
    /// the config watcher goes away.
    pub async fn run(mut self, mut config: watch::Receiver<Arc<ConfigSnapshot>>) {
        loop {
            let snapshot = config.borrow_and_update().clone();
            self.reconcile(&snapshot).await;
            tokio::select! {
                changed = config.changed() => {
                    if changed.is_err() {
                        warn!("config watcher stopped; enrollment stops");
                        return;
                    }
                }
                () = tokio::time::sleep(self.config.recheck_interval) => {}
            }
        }
    }

    /// One pass: removals, additions, probe set, then ztunnel.
    pub async fn reconcile(&mut self, snapshot: &ConfigSnapshot) {
        let desired: BTreeMap<&str, &Arc<Workload>> = snapshot
            .workloads()
            .filter(|w| w.node == self.config.node && w.in_mesh())
            .map(|w| (w.uid.as_str(), w))
            .collect();

        if self.first_pass {
            self.clean_up_opted_out(snapshot).await;
            self.first_pass = false;
        }
        self.remove_leaving(&desired).await;

        let mut added = false;
        for (uid, workload) in &desired {
            if let Some(enrolled) = self.enrolled.get_mut(*uid) {
                if enrolled.workload.ips != workload.ips {
                    update_ips(&self.capture, enrolled, workload).await;
                }
                continue;
            }
            match self.enroll(workload).await {
                Ok(enrolled) => {
                    info!(pod = %uid, netns = ?workload.netns, "pod enrolled");
                    self.problems.remove(*uid);
                    self.enrolled.insert(uid.to_string(), enrolled);
                    added = true;
                }
                Err(problem) => self.report(uid, &netns_name(workload), problem),
            }
        }
        self.problems
            .retain(|uid, _| desired.contains_key(uid.as_str()));

        self.sync_probe_set().await;
        // The first publish, even of an empty set, tells the ZDS server the
        // set is known and snapshots may be sent.
        if added || !self.published {
            self.publish();
            self.published = true;
        }
    }

    /// ZDS `Del` first, then capture.
    async fn remove_leaving(&mut self, desired: &BTreeMap<&str, &Arc<Workload>>) {
        let mut leaving = Vec::new();
        for (uid, enrolled) in &self.enrolled {
            let reason = match desired.get(uid.as_str()) {
                None => Some("left the mesh or this node"),
                Some(workload) if !same_pod(&enrolled.workload, workload) => {
                    Some("changed netns or identity")
                }
                Some(_) => match netns::id_at(&enrolled.pod.path) {
                    Ok(Some(id)) if id == enrolled.netns_id => None,
                    Ok(Some(_)) => Some("netns replaced"),
                    Ok(None) => Some("netns gone"),
                    Err(err) => {
                        warn!(pod = %uid, netns = %enrolled.pod.path.display(), error = %err, "cannot check netns");
                        None
                    }
                },
            };
            if let Some(reason) = reason {
                leaving.push((uid.clone(), reason));
            }
        }
        if leaving.is_empty() {
            return;
        }
        let removed: Vec<(Enrolled, &str)> = leaving
            .into_iter()
            .filter_map(|(uid, reason)| self.enrolled.remove(&uid).map(|e| (e, reason)))
            .collect();
        let generation = self.publish();
        if !self
            .registry
            .wait_synced(generation, self.config.zds_sync_timeout)
            .await
        {
            warn!(
                timeout = ?self.config.zds_sync_timeout,
                "ztunnel did not confirm pod removal in time; removing capture anyway"
            );
        }
        for (enrolled, reason) in removed {
            let uid = enrolled.workload.uid.clone();
            // Only the namespace we captured: a new one under the same name
            // belongs to a new pod (and gets enrolled afresh).
            let same_netns =
                matches!(netns::id_at(&enrolled.pod.path), Ok(Some(id)) if id == enrolled.netns_id);
            if same_netns {
                let capture = self.capture.clone();
                let pod = enrolled.pod.clone();
                match blocking(move || capture.remove(&pod)).await {
                    Ok(()) => info!(pod = %uid, %reason, "pod unenrolled, capture removed"),
                    Err(err) => {
                        error!(pod = %uid, %reason, error = %err, "pod unenrolled, but removing capture failed")
                    }
                }
            } else {
                info!(pod = %uid, %reason, "pod unenrolled (its netns is gone)");
            }
        }
    }

    async fn enroll(&self, workload: &Arc<Workload>) -> Result<Enrolled, Problem> {
        let name = &netns_name(workload);
        // The name comes from config: it must not reach outside the dir.
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Problem::BadNetnsName);
        }
        let path = self.config.netns_dir.join(name);
        let netns = Netns::open(&path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => Problem::NetnsMissing,
            std::io::ErrorKind::InvalidData => Problem::NetnsNotReady,
            _ => Problem::Netns(err),
        })?;
        let netns_id = netns.id().map_err(Problem::Netns)?;
        let pod = PodNetns {
            name: name.clone(),
            path,
            ips: workload.ips.clone(),
        };
        let capture = self.capture.clone();
        let check = pod.clone();
        let installed = blocking(move || capture.is_installed(&check)).await?;
        if installed {
            debug!(pod = %workload.uid, "capture already in place");
        } else {
            let capture = self.capture.clone();
            let target = pod.clone();
            blocking(move || capture.install(&target)).await?;
            info!(pod = %workload.uid, netns = %name, "capture installed");
        }
        let zds = Arc::new(ZdsPod {
            uid: workload.uid.clone(),
            info: WorkloadInfo {
                name: workload.name.clone(),
                namespace: workload.namespace.clone(),
                service_account: workload.service_account.clone(),
            },
            netns,
        });
        Ok(Enrolled {
            workload: workload.clone(),
            pod,
            netns_id,
            zds,
        })
    }

    /// Pods of this node that the config says are not in the mesh but still
    /// have capture: they left the mesh while the agent was down. Checked once
    /// at startup (enrolled pods that leave later are handled as they go).
    async fn clean_up_opted_out(&self, snapshot: &ConfigSnapshot) {
        let opted_out: Vec<PodNetns> = snapshot
            .workloads()
            .filter(|w| w.node == self.config.node && !w.in_mesh())
            .map(|w| (netns_name(w), w))
            .filter(|(n, _)| !n.is_empty() && !n.contains('/') && n != "." && n != "..")
            .map(|(n, w)| PodNetns {
                path: self.config.netns_dir.join(&n),
                name: n,
                ips: w.ips.clone(),
            })
            .filter(|pod| pod.path.exists())
            .collect();
        for pod in opted_out {
            let capture = self.capture.clone();
            let target = pod.clone();
            let result = blocking(move || {
                if capture.is_installed(&target)? {
                    capture.remove(&target)?;
                    return Ok(true);
                }
                Ok(false)
            })
            .await;
            match result {
                Ok(true) => {
                    info!(netns = %pod.name, "removed capture from a pod that left the mesh")
                }
                Ok(false) => {}
                Err(err) => {
                    warn!(netns = %pod.name, error = %err, "cannot clean up capture of a pod not in the mesh")
                }
            }
        }
    }

    async fn sync_probe_set(&mut self) {
        let ips: BTreeSet<IpAddr> = self
            .enrolled
            .values()
            .flat_map(|e| e.pod.ips.iter().copied())
            .collect();
        if self.probe_synced.as_ref() == Some(&ips) {
            return;
        }
        let probe = self.probe.clone();
        let target = ips.clone();
        match blocking(move || probe.sync(&target)).await {
            Ok(()) => self.probe_synced = Some(ips),
            // Retried on the next pass (probe_synced stays stale).
            Err(err) => error!(error = %err, "cannot update the kubelet probe SNAT set"),
        }
    }

    fn publish(&self) -> u64 {
        let pods = self
            .enrolled
            .iter()
            .map(|(uid, e)| (uid.clone(), e.zds.clone()))
            .collect();
        self.registry.publish(pods)
    }

    fn report(&mut self, uid: &str, netns: &str, problem: Problem) {
        let text = problem.to_string();
        if self.problems.get(uid) == Some(&text) {
            debug!(pod = %uid, %netns, problem = %text, "pod still not enrolled");
        } else {
            warn!(pod = %uid, %netns, problem = %text, "pod not enrolled; will retry");
            self.problems.insert(uid.to_owned(), text);
        }
    }
}

/// Why a pod could not be enrolled (this pass).
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("netns name is not a plain file name")]
    BadNetnsName,
    #[error("netns not found")]
    NetnsMissing,
    #[error("netns not mounted yet")]
    NetnsNotReady,
    #[error("cannot open netns: {0}")]
    Netns(std::io::Error),
    #[error(transparent)]
    Capture(#[from] CaptureError),
}

/// Same pod as far as capture and ztunnel care (IPs aside).
fn same_pod(a: &Workload, b: &Workload) -> bool {
    a.netns == b.netns
        && a.name == b.name
        && a.namespace == b.namespace
        && a.service_account == b.service_account
}

/// New IPs for an enrolled pod: the probe set follows on this pass; capture
/// is reinstalled (idempotent) since IPv6 routing depends on the addresses.
async fn update_ips(capture: &Arc<dyn Capture>, enrolled: &mut Enrolled, workload: &Arc<Workload>) {
    let mut pod = enrolled.pod.clone();
    pod.ips = workload.ips.clone();
    let capture = capture.clone();
    let target = pod.clone();
    match blocking(move || capture.install(&target)).await {
        Ok(()) => {
            info!(pod = %workload.uid, ips = ?workload.ips, "pod addresses changed");
            enrolled.pod = pod;
            enrolled.workload = workload.clone();
        }
        Err(err) => {
            error!(pod = %workload.uid, error = %err, "cannot update capture for new addresses; will retry")
        }
    }
}

/// Capture backends shell out and block: keep them off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CaptureError> + Send + 'static,
) -> Result<T, CaptureError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|err| Err(CaptureError::Task(err.to_string())))
}

fn netns_name(w: &Workload) -> String {
    w.netns.clone().unwrap_or_else(|| w.name.clone())
}
