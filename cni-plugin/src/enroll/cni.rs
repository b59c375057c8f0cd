//! The CNI plugin's requests, as the enroller serves them.
//!
//! ADD registers the pod's netns and enrolls it on the spot when it is in
//! the mesh; the reply waits (on a task of its own, so other pods are not
//! held up) until ztunnel serves the pod. DEL removes the pod and
//! remembers its netns so the search by IP does not find it again while the
//! runtime tears it down. CHECK compares what the pod has with what it
//! should have.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use amesh_core::config::enrollment::{self, Enrollment, PodFacts};
use amesh_core::config::{ConfigSnapshot, Workload};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::{Enroller, blocking};
use crate::cni::protocol::{Attachment, ErrorReply, PodRef, Reply, codes};
use crate::netns::{self, NetnsId};

/// A pod the CNI plugin added.
#[derive(Debug, Clone)]
pub struct CniPod {
    pub attachment: Attachment,
    pub pod: PodRef,
    /// CNI_NETNS, as the runtime gave it.
    pub netns: PathBuf,
    pub netns_id: NetnsId,
    /// From the previous plugin's result.
    pub ips: Vec<IpAddr>,
    /// Until its ADD is answered: nothing runs in the sandbox yet. A pod
    /// enrolled later (its namespace labelled) is running, and is treated
    /// as such.
    pub fresh: bool,
}

#[derive(Debug)]
pub enum CniCommand {
    Add {
        pod: CniPod,
        reply: oneshot::Sender<Reply>,
    },
    Del {
        attachment: Attachment,
        pod: PodRef,
        netns: PathBuf,
        reply: oneshot::Sender<Reply>,
    },
    Check {
        attachment: Attachment,
        pod: PodRef,
        netns: PathBuf,
        reply: oneshot::Sender<Reply>,
    },
    Gc {
        valid: Vec<Attachment>,
        reply: oneshot::Sender<Reply>,
    },
}

impl Enroller {
    pub(super) async fn handle(&mut self, command: CniCommand) {
        if let Some(latest) = &self.latest {
            self.snapshot = latest.borrow().clone();
        }
        match command {
            CniCommand::Add { pod, reply } => {
                self.cni_add(pod, reply).await;
                self.sync_probe_set().await;
            }
            CniCommand::Del {
                attachment,
                pod,
                netns,
                reply,
            } => {
                self.cni_del(&attachment, &pod, &netns).await;
                let _ = reply.send(Reply::Ok);
                self.sync_probe_set().await;
            }
            CniCommand::Check {
                attachment,
                pod,
                netns,
                reply,
            } => {
                let _ = reply.send(self.cni_check(&attachment, &pod, &netns).await);
            }
            CniCommand::Gc { valid, reply } => {
                let stale: Vec<CniPod> = self
                    .cni_pods
                    .values()
                    .filter(|p| !valid.contains(&p.attachment))
                    .cloned()
                    .collect();
                for pod in stale {
                    info!(pod = %pod.pod.key(), container = %pod.attachment.container_id, "CNI GC: attachment no longer valid");
                    self.cni_del(&pod.attachment, &pod.pod, &pod.netns).await;
                }
                let _ = reply.send(Reply::Ok);
                self.sync_probe_set().await;
            }
        }
    }

    async fn cni_add(&mut self, pod: CniPod, reply: oneshot::Sender<Reply>) {
        let key = pod.pod.key();
        self.tombstones.remove(&pod.netns_id);
        let netns_id = pod.netns_id;
        let pod_ref = pod.pod.clone();
        self.cni_pods.insert(key.clone(), pod);
        let snapshot = self.snapshot.clone();
        let Some(workload) = snapshot.workload_by_name(&pod_ref.namespace, &pod_ref.name) else {
            let _ = reply.send(unknown_pod(&snapshot, &key));
            return;
        };
        if !workload.node.is_empty() && workload.node != self.config.node {
            let _ = reply.send(Reply::Error(ErrorReply::new(
                codes::TRY_AGAIN_LATER,
                format!(
                    "pod {key} runs on node {}, but the mesh config places it on node {}",
                    self.config.node, workload.node
                ),
                "",
            )));
            return;
        }
        if !workload.in_mesh() {
            if let Some(registered) = self.cni_pods.get_mut(&key) {
                registered.fresh = false;
            }
            let reason = out_reason(&snapshot, workload);
            debug!(pod = %key, %reason, "CNI ADD: not in the mesh");
            let _ = reply.send(Reply::Skipped { reason });
            return;
        }
        self.pass(false).await;
        if let Some(registered) = self.cni_pods.get_mut(&key) {
            registered.fresh = false;
        }
        let uid = workload.uid.clone();
        let Some(enrolled) = self.enrolled.get(&uid).filter(|e| e.netns_id == netns_id) else {
            let problem = self
                .problems
                .get(&uid)
                .cloned()
                .unwrap_or_else(|| "not enrolled".into());
            let _ = reply.send(Reply::Error(ErrorReply::new(
                codes::CAPTURE_FAILED,
                format!("cannot capture pod {key}"),
                problem,
            )));
            return;
        };
        debug!(pod = %key, netns = %enrolled.pod.path.display(), "CNI ADD: capture in place, waiting for ztunnel");
        let generation = self.registry.current().generation;
        let registry = self.registry.clone();
        let timeout = self.config.serve_timeout;
        tokio::spawn(async move {
            let outcome = match registry.wait_served(&uid, generation, timeout).await {
                Ok(()) => Reply::Enrolled,
                Err(err) => Reply::Error(ErrorReply::new(
                    codes::TRY_AGAIN_LATER,
                    format!("pod {key} is captured but ztunnel does not serve it yet"),
                    err.to_string(),
                )),
            };
            let _ = reply.send(outcome);
        });
    }

    async fn cni_del(&mut self, attachment: &Attachment, pod: &PodRef, netns: &Path) {
        let key = pod.key();
        let registered = self
            .cni_pods
            .iter()
            .find(|(k, p)| {
                p.attachment.container_id == attachment.container_id
                    && (pod.name.is_empty() || **k == key)
            })
            .map(|(k, _)| k.clone());
        let mut netns_ids: Vec<(NetnsId, PathBuf)> = Vec::new();
        if let Some(k) = registered
            && let Some(p) = self.cni_pods.remove(&k)
        {
            netns_ids.push((p.netns_id, p.netns));
        }
        if !netns.as_os_str().is_empty()
            && let Ok(Some(id)) = netns::id_at(netns)
            && !self.scanner.is_host(id)
        {
            netns_ids.push((id, netns.to_owned()));
        }
        let mut leaving = Vec::new();
        for (id, path) in netns_ids {
            // The runtime deletes the netns after DEL; until then the search
            // by IP must not enroll it again.
            if matches!(netns::id_at(&path), Ok(Some(now)) if now == id) {
                self.tombstones.insert(id, path);
            }
            leaving.extend(
                self.enrolled
                    .iter()
                    .filter(|(_, e)| e.netns_id == id)
                    .map(|(uid, _)| (uid.clone(), "deleted by the runtime (CNI DEL)")),
            );
        }
        leaving.sort();
        leaving.dedup();
        if leaving.is_empty() {
            debug!(pod = %key, container = %attachment.container_id, "CNI DEL: nothing enrolled");
        }
        self.unenroll(leaving).await;
    }

    async fn cni_check(&mut self, attachment: &Attachment, pod: &PodRef, netns: &Path) -> Reply {
        let key = pod.key();
        let snapshot = self.snapshot.clone();
        let Some(workload) = snapshot.workload_by_name(&pod.namespace, &pod.name) else {
            return match unknown_pod(&snapshot, &key) {
                Reply::Error(e) => Reply::Error(e),
                _ => Reply::Ok,
            };
        };
        if !workload.in_mesh() || workload.node != self.config.node {
            return Reply::Ok;
        }
        let registered = self
            .cni_pods
            .get(&key)
            .filter(|p| p.attachment.container_id == attachment.container_id)
            .map(|p| p.netns_id);
        let netns_id = match registered {
            Some(id) => Some(id),
            None => netns::id_at(netns).ok().flatten(),
        };
        let drift =
            |code, msg: String, details: String| Reply::Error(ErrorReply::new(code, msg, details));
        let Some(enrolled) = self
            .enrolled
            .get(&workload.uid)
            .filter(|e| Some(e.netns_id) == netns_id)
        else {
            let problem = self
                .problems
                .get(&workload.uid)
                .cloned()
                .unwrap_or_default();
            return drift(
                codes::CAPTURE_DRIFT,
                format!("pod {key} is in the mesh but not enrolled"),
                problem,
            );
        };
        let capture = self.capture.clone();
        let target = enrolled.pod.clone();
        match blocking(move || capture.is_installed(&target)).await {
            Ok(true) => {}
            Ok(false) => {
                return drift(
                    codes::CAPTURE_DRIFT,
                    format!("pod {key}: capture is not in place in its netns"),
                    enrolled.pod.path.display().to_string(),
                );
            }
            Err(err) => {
                return drift(
                    codes::CAPTURE_DRIFT,
                    format!("pod {key}: cannot inspect capture"),
                    err.to_string(),
                );
            }
        }
        if let Err(err) = self.registry.served(&workload.uid) {
            warn!(pod = %key, error = %err, "CNI CHECK: ztunnel does not serve the pod");
            return drift(
                codes::ZTUNNEL_DRIFT,
                format!("pod {key}: ztunnel does not serve it"),
                err.to_string(),
            );
        }
        Reply::Ok
    }
}

/// A pod the config does not list (yet): an ambient namespace's pod must
/// wait for it (identity and labels come from there); others start.
fn unknown_pod(snapshot: &ConfigSnapshot, key: &str) -> Reply {
    let namespace = key.split_once('/').map_or(key, |(ns, _)| ns);
    if snapshot.namespace_is_ambient(namespace) {
        Reply::Error(ErrorReply::new(
            codes::TRY_AGAIN_LATER,
            format!(
                "pod {key} is not in the mesh config yet, and its namespace is ambient: \
                 it cannot start uncaptured; the runtime will retry"
            ),
            "",
        ))
    } else {
        Reply::Skipped {
            reason: format!("pod {key} is not in the mesh config and its namespace is not ambient"),
        }
    }
}

fn out_reason(snapshot: &ConfigSnapshot, workload: &Workload) -> String {
    let labels = snapshot
        .namespaces()
        .get(&workload.namespace)
        .map(|n| &n.labels);
    let facts = PodFacts {
        namespace: &workload.namespace,
        labels: &workload.labels,
        host_network: workload.host_network,
    };
    match enrollment::decide(facts, labels, snapshot.mesh_namespace()) {
        Enrollment::Out(reason) => reason.to_string(),
        Enrollment::Ambient => "the mesh config states protocol TCP for it".into(),
    }
}
