//! Store → what the mesh runs on: enrollment, identities, service
//! endpoints, waypoint binding and policies per workload, encoded as the
//! resources discovery serves.
//!
//! Rules, as Istio's ambient mode:
//! - enrollment: [`amesh_core::config::enrollment::decide`] on the pod's and
//!   its namespace's labels;
//! - identity `spiffe://<trust-domain>/ns/<ns>/sa/<serviceAccountName>`;
//! - a Service's endpoints come from its EndpointSlices, else (the folder
//!   source has none) from its selector over the namespace's pods;
//! - waypoints and their binding: see [`waypoints`];
//! - AuthorizationPolicy/PeerAuthentication → the ztunnel [`PolicySet`];
//!   L7 kinds → the waypoints' [`WaypointConfig`]s (see [`l7`]).
//!
//! Whatever does not validate is reported (file, document, field) and left
//! out; the rest applies.
//!
//! [`PolicySet`]: amesh_core::policy::PolicySet
//! [`WaypointConfig`]: amesh_core::xds::proto::amesh::WaypointConfig

mod cache;
mod encode;
mod inputs;
mod l7;
mod policies;
mod reports;
mod services;
pub mod waypoints;
mod workloads;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amesh_core::config::{ConfigSnapshot, ModelParts, Namespace};
use amesh_core::xds::convert::authorization_resources;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::resources::ResourceSet;
use crate::store::{Report, Severity, Store, StoreSnapshot};

/// Mesh-wide settings the derivation needs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub trust_domain: String,
    /// The control plane's own namespace: the root namespace for
    /// mesh-wide policies; its pods are never enrolled.
    pub mesh_namespace: String,
    /// `cluster.local`: service hostnames are `<name>.<ns>.svc.<domain>`.
    pub cluster_domain: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            trust_domain: amesh_core::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            mesh_namespace: amesh_core::policy::DEFAULT_ROOT_NAMESPACE.to_owned(),
            cluster_domain: "cluster.local".to_owned(),
        }
    }
}

/// One derivation of one store generation.
#[derive(Debug, Default)]
pub struct Derived {
    /// The store generation this was derived from.
    pub generation: u64,
    pub resources: ResourceSet,
    /// Workloads (with node and identity), services and policies: what the
    /// CA checks callers against and `/config_dump` shows.
    pub model: Arc<ConfigSnapshot>,
    /// Sources' reports plus what the derivation skipped or ignores.
    pub reports: Vec<Report>,
}

/// Derives `snapshot` from scratch.
pub fn derive(snapshot: &StoreSnapshot, settings: &Settings) -> Derived {
    Deriver::new(settings.clone()).derive(snapshot)
}

/// Derives one store generation after another, reusing what it checked of
/// unchanged objects (policies, L7 resources) before.
#[derive(Debug)]
pub struct Deriver {
    settings: Settings,
    policy_cache: policies::PolicyCache,
    l7_cache: l7::L7Cache,
    encode_caches: encode::EncodeCaches,
}

impl Deriver {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            policy_cache: Default::default(),
            l7_cache: Default::default(),
            encode_caches: Default::default(),
        }
    }

    pub fn derive(&mut self, snapshot: &StoreSnapshot) -> Derived {
        let started = Instant::now();
        let settings = &self.settings;
        let inputs = inputs::Inputs::new(snapshot);
        let mut reports = reports::Reports::default();
        let mut waypoints = waypoints::Waypoints::new(&inputs, &mut self.l7_cache, &mut reports);
        let mut bound = waypoints::Bound::default();
        let mut pods = workloads::derive_workloads(
            &inputs,
            settings,
            &mut waypoints,
            &mut bound,
            &mut reports,
        );
        let services =
            services::derive_services(&inputs, settings, &mut waypoints, &mut bound, &mut reports);
        let (policies, targeted) =
            policies::derive_policies(&inputs, settings, &mut self.policy_cache, &mut reports);
        let valid_l7 = l7::validate(&inputs, &mut self.l7_cache, targeted, &mut reports);
        let waypoint_configs =
            l7::waypoint_configs(&waypoints, &bound, &valid_l7, settings, &mut reports);
        self.policy_cache.end_round();
        self.l7_cache.end_round();
        let mut authorizations =
            authorization_resources(&policies, pods.iter().map(|p| &p.workload));
        for pod in &mut pods {
            if let Some(bound) = authorizations.bindings.remove(&pod.workload.uid) {
                pod.workload.authorization_policies = bound;
            }
        }
        let pod_enrollments = pods
            .iter()
            .map(|p| encode::pod_enrollment(&mut self.encode_caches.pods, p))
            .collect();
        let namespaces = namespaces(&inputs, &pods);
        let model = ConfigSnapshot::from_parts(ModelParts {
            namespaces,
            workloads: pods.into_iter().map(|p| p.workload).collect(),
            services,
            policies,
            mesh_namespace: settings.mesh_namespace.clone(),
        });
        let resources = encode::resource_set(
            &mut self.encode_caches,
            &model,
            pod_enrollments,
            authorizations,
            waypoint_configs,
        );
        tracing::debug!(
            generation = snapshot.generation,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            resources = resources.len(),
            "derived"
        );
        let mut all_reports: Vec<Report> = snapshot.reports.values().flatten().cloned().collect();
        all_reports.extend(reports.list);
        Derived {
            generation: snapshot.generation,
            resources,
            model: Arc::new(model),
            reports: all_reports,
        }
    }
}

/// Namespace objects, plus namespaces only seen on pods (unlabelled).
fn namespaces(inputs: &inputs::Inputs<'_>, pods: &[workloads::PodWorkload]) -> Vec<Namespace> {
    let mut out: BTreeMap<&str, Namespace> = inputs
        .namespaces
        .iter()
        .map(|(name, labels)| {
            (
                *name,
                Namespace {
                    name: (*name).to_owned(),
                    labels: (*labels).clone(),
                },
            )
        })
        .collect();
    for pod in pods {
        let ns = pod.workload.namespace.as_str();
        out.entry(ns).or_insert_with(|| Namespace {
            name: ns.to_owned(),
            labels: BTreeMap::new(),
        });
    }
    out.into_values().collect()
}

/// Derives the store's current state now, then again after every change
/// (waiting `debounce` so bursts of changes derive once), until `cancel`.
/// The receiver always holds the latest derivation.
pub fn run(
    store: Arc<Store>,
    settings: Settings,
    debounce: Duration,
    cancel: CancellationToken,
) -> watch::Receiver<Arc<Derived>> {
    let mut deriver = Deriver::new(settings);
    let mut changes = store.subscribe();
    changes.borrow_and_update();
    let first = Arc::new(deriver.derive(&store.snapshot()));
    let mut logged = log_new_reports(&HashSet::new(), &first.reports);
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        let mut deriver = Some(deriver);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(debounce) => {}
            }
            changes.borrow_and_update();
            let snapshot = store.snapshot();
            let Some(mut d) = deriver.take() else { return };
            // Milliseconds of CPU at scale: off the async workers.
            let job = tokio::task::spawn_blocking(move || {
                let derived = d.derive(&snapshot);
                (derived, d)
            });
            let (derived, d) = match job.await {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(error = %e, "derivation failed; keeping the last one");
                    return;
                }
            };
            deriver = Some(d);
            logged = log_new_reports(&logged, &derived.reports);
            tx.send_replace(Arc::new(derived));
        }
    });
    rx
}

/// Logs each report not logged before, once; returns what is now logged.
fn log_new_reports(before: &HashSet<String>, reports: &[Report]) -> HashSet<String> {
    let mut now = HashSet::with_capacity(reports.len());
    for report in reports {
        let line = report.to_string();
        if !before.contains(&line) && !now.contains(&line) {
            match report.severity {
                Severity::Error => tracing::error!(report = %line, "configuration skipped"),
                Severity::Unsupported => tracing::warn!(report = %line, "configuration ignored"),
            }
        }
        now.insert(line);
    }
    now
}
