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
mod changes;
mod encode;
mod inputs;
mod l7;
mod policies;
mod reports;
mod services;
mod shard;
pub mod waypoints;
mod workloads;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use amesh_core::config::enrollment::namespace_is_ambient;
use amesh_core::config::{ConfigSnapshot, ModelParts, Namespace, Service};
use amesh_core::policy::PolicySet;
use amesh_core::xds::AUTHORIZATION_TYPE;
use amesh_core::xds::convert::policy_authorizations;
use amesh_core::xds::proto::istio::security::Authorization;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::resources::ResourceSet;
use crate::store::{Kind, ObjectKey, Objects, Report, Severity, Store, StoreSnapshot};
use changes::Dirty;
use shard::Shard;

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
    /// Sources' reports plus what the derivation skipped or ignores.
    pub reports: Vec<Report>,
    /// Namespaces derived again for this generation (the others were
    /// reused from the last one).
    pub namespaces_derived: usize,
    /// Built when first asked for (the CA, `/config_dump`): pushes do not
    /// wait for it.
    model: OnceLock<Arc<ConfigSnapshot>>,
    parts: Option<ModelSource>,
}

/// What the model is built from.
#[derive(Debug)]
struct ModelSource {
    shards: Vec<Arc<Shard>>,
    namespaces: Vec<Namespace>,
    policies: PolicySet,
    mesh_namespace: String,
}

impl Derived {
    /// A derivation with a ready model (tests, and callers that have one).
    pub fn with_model(generation: u64, resources: ResourceSet, model: ConfigSnapshot) -> Self {
        Self {
            generation,
            resources,
            model: OnceLock::from(Arc::new(model)),
            ..Default::default()
        }
    }

    /// Workloads (with node and identity), services and policies: what the
    /// CA checks callers against and `/config_dump` shows.
    pub fn model(&self) -> &Arc<ConfigSnapshot> {
        self.model.get_or_init(|| {
            let Some(parts) = &self.parts else {
                return Arc::default();
            };
            let started = Instant::now();
            let model = ConfigSnapshot::from_parts(ModelParts {
                namespaces: parts.namespaces.clone(),
                workloads: shard::workloads(parts.shards.iter()),
                services: parts
                    .shards
                    .iter()
                    .flat_map(|s| s.services.iter().map(|e| e.service.clone()))
                    .collect(),
                policies: parts.policies.clone(),
                mesh_namespace: parts.mesh_namespace.clone(),
            });
            tracing::debug!(
                generation = self.generation,
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "model built"
            );
            Arc::new(model)
        })
    }
}

/// Derives `snapshot` from scratch.
pub fn derive(snapshot: &StoreSnapshot, settings: &Settings) -> Derived {
    Deriver::new(settings.clone()).derive(snapshot)
}

/// What one derivation leaves for the next.
#[derive(Debug)]
struct Last {
    objects: Objects,
    shards: HashMap<String, Arc<Shard>>,
    resources: ResourceSet,
    waypoints: HashSet<(String, String)>,
}

/// Derives one store generation after another. Only namespaces the change
/// touched are derived again (see [`changes`]); checks of unchanged custom
/// objects (policies, L7 resources) and encodings of unchanged messages
/// are reused.
#[derive(Debug)]
pub struct Deriver {
    settings: Settings,
    policy_cache: policies::PolicyCache,
    l7_cache: l7::L7Cache,
    authorizations: encode::MessageCache<Authorization>,
    last: Option<Last>,
}

impl Deriver {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            policy_cache: Default::default(),
            l7_cache: Default::default(),
            authorizations: encode::MessageCache::new(AUTHORIZATION_TYPE),
            last: None,
        }
    }

    pub fn derive(&mut self, snapshot: &StoreSnapshot) -> Derived {
        let started = Instant::now();
        let settings = &self.settings;
        let global = inputs::Inputs::global(snapshot);
        let mut reports = reports::Reports::default();
        let mut waypoints = waypoints::Waypoints::new(&global, &mut self.l7_cache, &mut reports);
        let (policies, targeted) =
            policies::derive_policies(&global, settings, &mut self.policy_cache, &mut reports);
        let valid_l7 = l7::validate(&global, &mut self.l7_cache, targeted, &mut reports);
        self.policy_cache.end_round();
        self.l7_cache.end_round();

        let last = self.last.take();
        let dirty = changes::dirty(
            last.as_ref().map(|l| &l.objects),
            &snapshot.objects,
            &settings.mesh_namespace,
            |ns, name| {
                let key = (ns.to_owned(), name.to_owned());
                waypoints.by_key.contains_key(&key)
                    || last.as_ref().is_some_and(|l| l.waypoints.contains(&key))
            },
        );
        let (old_shards, previous) = match last {
            Some(l) => (l.shards, l.resources),
            None => Default::default(),
        };
        let names = namespace_names(snapshot);
        let todo = to_derive(&names, &dirty, &old_shards);
        let mut models: BTreeMap<String, shard::Model> = todo
            .into_iter()
            .map(|ns| {
                let model = shard::derive(snapshot, ns, settings, &mut waypoints, &policies);
                (ns.to_owned(), model)
            })
            .collect();
        // Services now pointing into a namespace not derived: it lists them.
        let pointed: Vec<&str> = models
            .values()
            .flat_map(|m| &m.foreign)
            .filter(|ns| !models.contains_key(*ns))
            .filter_map(|ns| names.get(ns.as_str()).copied())
            .collect();
        for ns in pointed {
            let model = shard::derive(snapshot, ns, settings, &mut waypoints, &policies);
            models.insert(ns.to_owned(), model);
        }
        let derived_count = models.len();
        let foreign = foreign_services(&names, &models, &old_shards);
        let mut shards: BTreeMap<String, Arc<Shard>> = BTreeMap::new();
        for ns in &names {
            let shard = match models.remove(*ns) {
                Some(model) => {
                    let into: Vec<&Service> =
                        foreign.get(*ns).map_or(Vec::new(), |v| v.iter().collect());
                    let previous_shard = old_shards.get(*ns).map(|s| &**s);
                    Arc::new(shard::encode(model, &into, &policies, previous_shard))
                }
                None => match old_shards.get(*ns) {
                    Some(shard) => shard.clone(),
                    None => continue,
                },
            };
            shards.insert((*ns).to_owned(), shard);
        }

        let mut bound = waypoints::Bound::default();
        for shard in shards.values() {
            bound.merge(&shard.bound);
        }
        let waypoint_configs =
            l7::waypoint_configs(&waypoints, &bound, &valid_l7, settings, &mut reports);
        let namespaces: Vec<Namespace> = names
            .iter()
            .map(|ns| Namespace {
                name: (*ns).to_owned(),
                labels: global.namespace_labels(ns).cloned().unwrap_or_default(),
            })
            .collect();
        let global_resources = global_resources(
            &mut self.authorizations,
            &settings.mesh_namespace,
            &policies,
            &shards,
            &namespaces,
            &waypoint_configs,
        );
        let resources = encode::resource_set(previous, &old_shards, &shards, global_resources);
        tracing::debug!(
            generation = snapshot.generation,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            namespaces = names.len(),
            derived = derived_count,
            resources = resources.len(),
            "derived"
        );
        let mut all_reports: Vec<Report> = snapshot.reports.values().flatten().cloned().collect();
        all_reports.extend(reports.list);
        for shard in shards.values() {
            all_reports.extend(shard.reports.iter().cloned());
        }
        self.last = Some(Last {
            objects: snapshot.objects.clone(),
            shards: shards
                .iter()
                .map(|(ns, s)| (ns.clone(), s.clone()))
                .collect(),
            resources: resources.clone(),
            waypoints: waypoints.by_key.keys().cloned().collect(),
        });
        Derived {
            generation: snapshot.generation,
            resources,
            reports: all_reports,
            namespaces_derived: derived_count,
            model: OnceLock::new(),
            parts: Some(ModelSource {
                shards: shards.into_values().collect(),
                namespaces,
                policies,
                mesh_namespace: settings.mesh_namespace.clone(),
            }),
        }
    }
}

/// Authorizations, namespace enrollments and waypoint configurations.
fn global_resources(
    cache: &mut encode::MessageCache<Authorization>,
    mesh_namespace: &str,
    policies: &PolicySet,
    shards: &BTreeMap<String, Arc<Shard>>,
    namespaces: &[Namespace],
    waypoint_configs: &[amesh_core::xds::proto::amesh::WaypointConfig],
) -> encode::GlobalResources {
    let mut messages = policy_authorizations(policies);
    let mut converted: BTreeMap<&String, &Authorization> = BTreeMap::new();
    for shard in shards.values() {
        converted.extend(shard.converted.iter());
    }
    messages.extend(converted.into_iter().map(|(k, v)| (k.clone(), v.clone())));
    let authorizations = messages
        .into_iter()
        .map(|(name, message)| cache.resource(name, message, None))
        .collect();
    cache.end_round();
    encode::GlobalResources {
        authorizations,
        namespaces: namespaces
            .iter()
            .map(|ns| {
                let ambient = ns.name != mesh_namespace && namespace_is_ambient(Some(&ns.labels));
                encode::namespace_enrollment(&ns.name, &ns.labels, ambient)
            })
            .collect(),
        waypoints: waypoint_configs
            .iter()
            .map(encode::waypoint_config)
            .collect(),
    }
}

/// Every namespace with a Namespace object, pod, service or EndpointSlice.
fn namespace_names(snapshot: &StoreSnapshot) -> BTreeSet<&str> {
    let mut names: BTreeSet<&str> = snapshot
        .of_kind(Kind::Namespace)
        .map(|(k, _)| k.name.as_str())
        .collect();
    for kind in [Kind::Pod, Kind::Service, Kind::EndpointSlice] {
        // One lookup per namespace: jump past each namespace's objects.
        let mut from = ObjectKey::new(kind, "", "");
        while let Some((key, _)) = snapshot.objects.range(from..).next() {
            if key.kind != kind {
                break;
            }
            names.insert(key.namespace.as_str());
            from = ObjectKey::new(kind, format!("{}\0", key.namespace), "");
        }
    }
    names
}

/// The namespaces to derive again: the dirty ones, new ones, and those
/// linked to them by services with endpoints in another namespace (either
/// side may change the other's resources).
fn to_derive<'a>(
    names: &BTreeSet<&'a str>,
    dirty: &Dirty,
    old: &HashMap<String, Arc<Shard>>,
) -> BTreeSet<&'a str> {
    let mut todo: BTreeSet<&str> = names
        .iter()
        .copied()
        .filter(|ns| dirty.contains(ns) || !old.contains_key(*ns))
        .collect();
    let linked: Vec<&str> = old
        .iter()
        .filter(|(_, s)| s.foreign.iter().any(|f| todo.contains(f.as_str())))
        .filter_map(|(ns, _)| names.get(ns.as_str()).copied())
        .collect();
    todo.extend(linked);
    let pointed: Vec<&str> = todo
        .iter()
        .filter_map(|ns| old.get(*ns))
        .flat_map(|s| &s.foreign)
        .filter_map(|f| names.get(f.as_str()).copied())
        .collect();
    todo.extend(pointed);
    todo
}

/// Services with endpoints in another namespace, by that namespace.
fn foreign_services(
    names: &BTreeSet<&str>,
    models: &BTreeMap<String, shard::Model>,
    old: &HashMap<String, Arc<Shard>>,
) -> HashMap<String, Vec<Service>> {
    let mut into: HashMap<String, Vec<Service>> = HashMap::new();
    let mut add = |services: &mut dyn Iterator<Item = &Service>, own: &str| {
        for service in services {
            let targets: BTreeSet<&str> = service
                .endpoints
                .iter()
                .filter_map(|uid| uid.split_once('/').map(|(ns, _)| ns))
                .filter(|ns| *ns != own)
                .collect();
            for ns in targets {
                into.entry(ns.to_owned()).or_default().push(service.clone());
            }
        }
    };
    for (ns, model) in models {
        if !model.foreign.is_empty() {
            add(&mut model.services.iter(), ns);
        }
    }
    for (ns, shard) in old {
        if !shard.foreign.is_empty() && !models.contains_key(ns) && names.contains(ns.as_str()) {
            add(&mut shard.services.iter().map(|e| &e.service), ns);
        }
    }
    into
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
