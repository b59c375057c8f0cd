//! Enrollment: keeps capture, the node's probe SNAT set and ztunnel's pod
//! list in step with the config and with what the CNI plugin reports.
//!
//! A pod is enrolled when its workload runs on this node and is in the mesh
//! ([`amesh_core::config::enrollment`]). Its netns comes from, in order: the
//! CNI plugin's ADD (the runtime's netns path), the config's `netns` name,
//! or the node's namespace that holds the pod's IP ([`crate::node_netns`]:
//! pods running before their namespace was labelled, and every pod after
//! an agent restart).
//!
//! Enrolling: install capture (unless it already is: an agent restart must
//! not touch a working pod); a running pod captured now has its established
//! connections reset, so none keeps bypassing ztunnel; add its IPs to the
//! probe SNAT set; hand it to ztunnel. Leaving (gone from the config, out of
//! the mesh, CNI DEL, or its netns gone or replaced): ztunnel first (it
//! closes the pod's connections), then capture (if the netns still exists),
//! then the probe set. Failures are logged with the pod and retried on the
//! next pass: on every config change and every `recheck_interval`.

mod cni;
mod reset;
mod resolve;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use amesh_core::config::{ConfigSnapshot, Workload};
use amesh_core::zds::proto::WorkloadInfo;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

pub use self::cni::{CniCommand, CniPod};
use self::resolve::{NetnsOrigin, Resolved};
use crate::capture::{Capture, CaptureError, NodeProbeSnat, PodNetns};
use crate::cni::state::NodeState;
use crate::netns::{self, Netns, NetnsId};
use crate::node_netns::NetnsScanner;
use crate::zds_server::{ZdsPod, ZdsRegistry};

#[derive(Debug, Clone)]
pub struct EnrollConfig {
    /// This node's name, as workloads' `node` says it.
    pub node: String,
    /// Where pod netns named by the config are bind-mounted
    /// (`/var/run/netns`); also searched for pods' netns by IP.
    pub netns_dir: PathBuf,
    /// Search the namespaces of running processes too.
    pub scan_proc: bool,
    /// How often to look again at pods whose netns is missing or whose
    /// capture failed, and at enrolled pods' netns.
    pub recheck_interval: Duration,
    /// How long to wait for ztunnel to confirm a removal before removing
    /// capture anyway.
    pub zds_sync_timeout: Duration,
    /// How long a CNI ADD waits for ztunnel to serve the pod.
    pub serve_timeout: Duration,
    /// The node state file the CNI plugin reads when the agent is down.
    pub state_file: Option<PathBuf>,
    /// Where the enrolled pods' netns are recorded, for an uninstall that
    /// must find every captured pod, whatever told the agent about it.
    pub enrolled_file: Option<PathBuf>,
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
    scanner: NetnsScanner,
    snapshot: Arc<ConfigSnapshot>,
    /// The config's latest version, read when a CNI request comes in (it
    /// may be newer than the last pass).
    latest: Option<watch::Receiver<Arc<ConfigSnapshot>>>,
    enrolled: BTreeMap<String, Enrolled>,
    /// Pods the CNI plugin added, by `<namespace>/<name>`.
    cni_pods: BTreeMap<String, CniPod>,
    /// Namespaces of pods the CNI plugin deleted that still exist (the
    /// runtime removes them after DEL): never rediscovered.
    tombstones: HashMap<NetnsId, PathBuf>,
    /// Last problem logged per pod uid, so a pod that keeps failing the same
    /// way is logged at `warn` once, not every pass.
    problems: HashMap<String, String>,
    /// The probe set as last synced; `None` until the first sync succeeds.
    probe_synced: Option<BTreeSet<IpAddr>>,
    state_written: Option<NodeState>,
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
        let scanner = NetnsScanner::new(vec![config.netns_dir.clone()], config.scan_proc);
        Self {
            config,
            capture,
            probe,
            registry,
            scanner,
            snapshot: Arc::new(ConfigSnapshot::default()),
            latest: None,
            enrolled: BTreeMap::new(),
            cni_pods: BTreeMap::new(),
            tombstones: HashMap::new(),
            problems: HashMap::new(),
            probe_synced: None,
            state_written: None,
            first_pass: true,
            published: false,
        }
    }

    /// Reconciles on every config change and every recheck interval, and
    /// serves the CNI plugin's requests, until the config watcher goes away.
    pub async fn run(
        mut self,
        mut config: watch::Receiver<Arc<ConfigSnapshot>>,
        mut commands: mpsc::Receiver<CniCommand>,
    ) {
        let mut recheck = tokio::time::interval(self.config.recheck_interval);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commands_open = true;
        self.snapshot = config.borrow_and_update().clone();
        self.latest = Some(config.clone());
        loop {
            tokio::select! {
                changed = config.changed() => {
                    if changed.is_err() {
                        warn!("config watcher stopped; enrollment stops");
                        return;
                    }
                    self.snapshot = config.borrow_and_update().clone();
                    self.reconcile(true).await;
                }
                _ = recheck.tick() => self.reconcile(true).await,
                command = commands.recv(), if commands_open => match command {
                    Some(command) => self.handle(command).await,
                    None => commands_open = false,
                },
            }
        }
    }

    /// One pass over the current snapshot: removals, additions, probe set,
    /// then ztunnel. `discover`: also search the node for pods whose netns
    /// is unknown (not on the CNI path: a scan costs milliseconds).
    pub async fn reconcile(&mut self, discover: bool) {
        self.write_state();
        self.pass(discover).await;
        self.sync_probe_set().await;
    }

    /// [`Self::reconcile`] without the probe set, which a CNI request
    /// updates after it has replied: kubelet probes start only after the
    /// pod's containers, long after the reply.
    async fn pass(&mut self, discover: bool) {
        let snapshot = self.snapshot.clone();
        let desired: BTreeMap<&str, &Arc<Workload>> = snapshot
            .workloads()
            .filter(|w| w.node == self.config.node && w.in_mesh())
            .map(|w| (w.uid.as_str(), w))
            .collect();

        if self.first_pass {
            self.clean_up_opted_out(&snapshot).await;
            self.first_pass = false;
        }
        self.prune_registrations();
        let resolved = resolve::resolve_all(self, &desired, discover).await;
        self.remove_leaving(&desired, &resolved).await;

        let mut added = false;
        for (uid, workload) in &desired {
            if let Some(enrolled) = self.enrolled.get_mut(*uid) {
                let ips = pod_ips(workload, &self.cni_pods);
                if enrolled.pod.ips != ips {
                    update_ips(&self.capture, enrolled, workload, ips).await;
                }
                continue;
            }
            let outcome = match resolved.get(*uid) {
                Some(Ok(found)) => self.enroll(workload, found).await,
                Some(Err(problem)) => Err(problem.clone()),
                None => continue,
            };
            match outcome {
                Ok(enrolled) => {
                    info!(pod = %uid, netns = %enrolled.pod.path.display(), "pod enrolled");
                    self.problems.remove(*uid);
                    self.enrolled.insert(uid.to_string(), enrolled);
                    added = true;
                }
                Err(problem) => self.report(uid, problem),
            }
        }
        self.problems
            .retain(|uid, _| desired.contains_key(uid.as_str()));

        // The first publish, even of an empty set, tells the ZDS server the
        // set is known and snapshots may be sent.
        if added || !self.published {
            self.publish();
            self.published = true;
        }
    }

    /// The state file follows the config: rewritten when its content would
    /// change (CNI requests do not change it, so only full passes look).
    fn write_state(&mut self) {
        let Some(path) = &self.config.state_file else {
            return;
        };
        let state = NodeState::from_snapshot(&self.snapshot, &self.config.node);
        if self.state_written.as_ref() == Some(&state) {
            return;
        }
        match state.write(path) {
            Ok(()) => {
                debug!(path = %path.display(), "node state file written");
                self.state_written = Some(state);
            }
            Err(err) => error!(error = %err, "cannot write the node state file; will retry"),
        }
    }

    /// Drops CNI registrations whose netns is gone or was replaced, and
    /// tombstones of namespaces that no longer exist.
    fn prune_registrations(&mut self) {
        self.cni_pods.retain(|key, pod| {
            let live = matches!(netns::id_at(&pod.netns), Ok(Some(id)) if id == pod.netns_id);
            if !live {
                debug!(pod = %key, "CNI registration dropped: its netns is gone");
            }
            live
        });
        self.tombstones
            .retain(|id, path| matches!(netns::id_at(path), Ok(Some(now)) if now == *id));
    }

    /// ZDS `Del` first, then capture.
    async fn remove_leaving(
        &mut self,
        desired: &BTreeMap<&str, &Arc<Workload>>,
        resolved: &HashMap<String, Result<Resolved, Problem>>,
    ) {
        let mut leaving = Vec::new();
        for (uid, enrolled) in &self.enrolled {
            let reason = match desired.get(uid.as_str()) {
                None => Some("left the mesh or this node"),
                Some(workload) if !same_pod(&enrolled.workload, workload) => {
                    Some("changed identity")
                }
                Some(_) => match resolved.get(uid) {
                    // A new netns for the pod (its sandbox was recreated).
                    Some(Ok(found)) if found.netns_id != enrolled.netns_id => {
                        Some("netns replaced")
                    }
                    _ if self.tombstones.contains_key(&enrolled.netns_id) => {
                        Some("deleted by the runtime (CNI DEL)")
                    }
                    _ => match netns::id_at(&enrolled.pod.path) {
                        Ok(Some(id)) if id == enrolled.netns_id => None,
                        Ok(Some(_)) => Some("netns replaced"),
                        Ok(None) => Some("netns gone"),
                        Err(err) => {
                            warn!(pod = %uid, netns = %enrolled.pod.path.display(), error = %err, "cannot check netns");
                            None
                        }
                    },
                },
            };
            if let Some(reason) = reason {
                leaving.push((uid.clone(), reason));
            }
        }
        self.unenroll(leaving).await;
    }

    /// Takes `pods` out: one ZDS publish for all, then capture per pod.
    async fn unenroll(&mut self, pods: Vec<(String, &'static str)>) {
        if pods.is_empty() {
            return;
        }
        let removed: Vec<(Enrolled, &str)> = pods
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
            // Only the namespace we captured: a new one under the same path
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

    async fn enroll(
        &self,
        workload: &Arc<Workload>,
        found: &Resolved,
    ) -> Result<Enrolled, Problem> {
        let netns = Netns::open(&found.path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => Problem::NetnsMissing,
            std::io::ErrorKind::InvalidData => Problem::NetnsNotReady,
            _ => Problem::Netns(err.to_string()),
        })?;
        let netns_id = netns.id().map_err(|e| Problem::Netns(e.to_string()))?;
        if netns_id != found.netns_id {
            return Err(Problem::NetnsMissing);
        }
        if self.scanner.is_host(netns_id) {
            return Err(Problem::HostNetns);
        }
        let pod = PodNetns {
            name: pin_key(&workload.uid),
            path: found.path.clone(),
            ips: pod_ips(workload, &self.cni_pods),
        };
        // A sandbox fresh from CNI ADD has nothing to keep: install straight
        // away (install is idempotent; the check costs processes per pod).
        let installed = if found.origin == NetnsOrigin::Cni {
            false
        } else {
            let capture = self.capture.clone();
            let check = pod.clone();
            blocking(move || capture.is_installed(&check)).await?
        };
        if installed {
            debug!(pod = %workload.uid, "capture already in place");
        } else {
            let capture = self.capture.clone();
            let target = pod.clone();
            if found.origin == NetnsOrigin::Cni {
                blocking(move || capture.install_fresh(&target)).await?;
            } else {
                blocking(move || capture.install(&target)).await?;
            }
            info!(pod = %workload.uid, netns = %found.path.display(), origin = ?found.origin, "capture installed");
            if matches!(
                found.origin,
                NetnsOrigin::Discovered | NetnsOrigin::Registered
            ) {
                // Already running: connections it opened before now would
                // bypass ztunnel (and policy) for as long as they last.
                let target = netns.clone();
                match tokio::task::spawn_blocking(move || reset::established(&target)).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => {
                        info!(pod = %workload.uid, connections = n, "pre-mesh connections reset")
                    }
                    Ok(Err(err)) => {
                        warn!(pod = %workload.uid, error = %err, "cannot reset pre-mesh connections")
                    }
                    Err(err) => warn!(pod = %workload.uid, error = %err, "reset task failed"),
                }
            }
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
    /// Only pods whose netns the config names: others are found when they
    /// come back, and [`crate::uninstall`] removes the rest.
    async fn clean_up_opted_out(&self, snapshot: &ConfigSnapshot) {
        let opted_out: Vec<PodNetns> = snapshot
            .workloads()
            .filter(|w| w.node == self.config.node && !w.in_mesh())
            .filter_map(|w| {
                let name = w.netns.as_ref()?;
                Some(PodNetns {
                    name: pin_key(&w.uid),
                    path: self.config.netns_dir.join(name),
                    ips: w.ips.clone(),
                })
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
                    info!(netns = %pod.path.display(), "removed capture from a pod that left the mesh")
                }
                Ok(false) => {}
                Err(err) => {
                    warn!(netns = %pod.path.display(), error = %err, "cannot clean up capture of a pod not in the mesh")
                }
            }
        }
    }

    pub(super) async fn sync_probe_set(&mut self) {
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
        let previous = self.probe_synced.clone();
        let synced = blocking(move || {
            if let Some(previous) = previous {
                let add = target.difference(&previous).copied().collect();
                let remove = previous.difference(&target).copied().collect();
                match probe.apply_delta(&add, &remove) {
                    Ok(()) => return Ok(()),
                    Err(err) => debug!(error = %err, "probe SNAT delta failed; full sync"),
                }
            }
            probe.sync(&target)
        })
        .await;
        match synced {
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
        if let Some(path) = &self.config.enrolled_file {
            let record: EnrolledRecord = self
                .enrolled
                .iter()
                .map(|(uid, e)| (uid.clone(), e.pod.path.clone()))
                .collect();
            if let Err(err) = write_record(path, &record) {
                warn!(path = %path.display(), error = %err, "cannot record the enrolled pods");
            }
        }
        self.registry.publish(pods)
    }

    fn report(&mut self, uid: &str, problem: Problem) {
        let text = problem.to_string();
        if self.problems.get(uid) == Some(&text) {
            debug!(pod = %uid, problem = %text, "pod still not enrolled");
        } else {
            warn!(pod = %uid, problem = %text, "pod not enrolled; will retry");
            self.problems.insert(uid.to_owned(), text);
        }
    }
}

/// Enrolled pod uid → the netns path it was captured through.
pub type EnrolledRecord = BTreeMap<String, PathBuf>;

/// Reads the record; absent or unreadable is empty (uninstall then relies
/// on the config alone).
pub fn read_record(path: &std::path::Path) -> EnrolledRecord {
    std::fs::read(path)
        .ok()
        .and_then(|text| serde_json::from_slice(&text).ok())
        .unwrap_or_default()
}

fn write_record(path: &std::path::Path, record: &EnrolledRecord) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(record).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

/// Why a pod could not be enrolled (this pass).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Problem {
    #[error("netns not found")]
    NetnsMissing,
    #[error("netns not mounted yet")]
    NetnsNotReady,
    #[error("cannot open netns: {0}")]
    Netns(String),
    #[error("no netns on this node holds the pod's IPs {0:?} (no CNI ADD seen for it)")]
    NotFound(Vec<IpAddr>),
    #[error("the pod has no IPs yet and no CNI ADD was seen for it")]
    NoIps,
    #[error("{ip} is held by more than one netns ({}): refusing to guess", paths.join(", "))]
    Ambiguous { ip: IpAddr, paths: Vec<String> },
    #[error("its netns is the node's own: the node is never captured")]
    HostNetns,
    #[error("{0}")]
    Capture(String),
}

impl From<CaptureError> for Problem {
    fn from(err: CaptureError) -> Self {
        Problem::Capture(err.to_string())
    }
}

/// Same pod as far as capture and ztunnel care (IPs and netns aside).
fn same_pod(a: &Workload, b: &Workload) -> bool {
    a.name == b.name && a.namespace == b.namespace && a.service_account == b.service_account
}

/// The pod's IPs: the config's, else those the CNI plugin reported (a pod
/// the source has not seen addresses for yet).
fn pod_ips(workload: &Workload, cni_pods: &BTreeMap<String, CniPod>) -> Vec<IpAddr> {
    if !workload.ips.is_empty() {
        return workload.ips.clone();
    }
    cni_pods
        .get(&format!("{}/{}", workload.namespace, workload.name))
        .map(|p| p.ips.clone())
        .unwrap_or_default()
}

/// A name for the pod's pins and logs that is a plain file name (bpffs
/// names cannot hold '.' or '/'): the uid with other bytes replaced, plus a
/// hash of the uid when anything was replaced, so names stay distinct.
pub fn pin_key(uid: &str) -> String {
    let clean: String = uid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == uid {
        return clean;
    }
    // FNV-1a: stable across runs and builds (unlike the std hasher).
    let hash = uid.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{clean}-{:08x}", hash as u32)
}

/// New IPs for an enrolled pod: the probe set follows on this pass; capture
/// is reinstalled (idempotent) since IPv6 routing depends on the addresses.
async fn update_ips(
    capture: &Arc<dyn Capture>,
    enrolled: &mut Enrolled,
    workload: &Arc<Workload>,
    ips: Vec<IpAddr>,
) {
    let mut pod = enrolled.pod.clone();
    pod.ips = ips;
    let capture = capture.clone();
    let target = pod.clone();
    match blocking(move || capture.install(&target)).await {
        Ok(()) => {
            info!(pod = %workload.uid, ips = ?pod.ips, "pod addresses changed");
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

#[cfg(test)]
mod tests {
    use super::pin_key;

    #[test]
    fn pin_keys_are_file_names_and_distinct() {
        assert_eq!(pin_key("3f2c-11aa"), "3f2c-11aa");
        let a = pin_key("default/web.v1");
        let b = pin_key("default/web_v1");
        assert!(a.starts_with("default_web_v1-"), "{a}");
        assert_ne!(a, b);
        assert!(!a.contains('.') && !a.contains('/'));
    }
}
