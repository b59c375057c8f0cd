//! Istio's four TCP series, with a workload index so that the series of a
//! deleted workload can be dropped.
//!
//! Why drop them: every (source, destination) pair that ever talked leaves a
//! label set behind. Pods come and go (deployments roll, jobs finish), so
//! without dropping, the exported series, the scrape size and this process's
//! memory grow for as long as ztunnel runs. Prometheus keeps the history; we
//! only stop exporting series whose workload no longer exists.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

use super::labels::ConnectionLabels;

type TcpFamily = Family<ConnectionLabels, Counter>;

/// (namespace, name) of a workload as it appears in the labels.
type WorkloadKey = (Arc<str>, Arc<str>);

/// Label sets by the workloads they mention (source and destination).
///
/// Invariant: every label set present in the four families is in the index
/// under both its workloads. Series are only created while holding the index
/// lock, and label sets leave the index together with their series, so the
/// index is never larger than the exported series.
type Index = HashMap<WorkloadKey, HashSet<ConnectionLabels>>;

/// The `istio_tcp_*` counters. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct TcpMetrics {
    opened: TcpFamily,
    closed: TcpFamily,
    sent: TcpFamily,
    received: TcpFamily,
    index: Arc<Mutex<Index>>,
}

impl TcpMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = TcpMetrics {
            opened: Family::default(),
            closed: Family::default(),
            sent: Family::default(),
            received: Family::default(),
            index: Arc::default(),
        };
        // prometheus-client appends the unit and `_total` itself.
        registry.register(
            "istio_tcp_connections_opened",
            "Total TCP connections opened",
            m.opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "Total TCP connections closed",
            m.closed.clone(),
        );
        registry.register_with_unit(
            "istio_tcp_sent",
            "Total bytes sent during response in case of a TCP connection",
            Unit::Bytes,
            m.sent.clone(),
        );
        registry.register_with_unit(
            "istio_tcp_received",
            "Total bytes received during request in case of a TCP connection",
            Unit::Bytes,
            m.received.clone(),
        );
        m
    }

    /// Counts a connection opened.
    pub fn opened(&self, labels: &ConnectionLabels) {
        self.add(&self.opened, labels, 1);
    }

    /// Counts a connection closed (whatever the outcome).
    pub fn closed(&self, labels: &ConnectionLabels) {
        self.add(&self.closed, labels, 1);
    }

    /// Adds bytes sent towards the client (Istio: "during response").
    pub fn add_sent(&self, labels: &ConnectionLabels, bytes: u64) {
        self.add(&self.sent, labels, bytes);
    }

    /// Adds bytes received from the client (Istio: "during request").
    pub fn add_received(&self, labels: &ConnectionLabels, bytes: u64) {
        self.add(&self.received, labels, bytes);
    }

    /// Counts a connection opened and returns its counters, so that the copy
    /// loop can count bytes with one atomic add each, without hashing the
    /// label set. Dropping the handle counts the connection closed.
    ///
    /// If the workload is forgotten while the connection is open, the
    /// handle's counts go to series that are no longer exported.
    pub fn open_connection(&self, labels: &ConnectionLabels) -> ConnectionCounters {
        self.opened(labels);
        ConnectionCounters {
            closed: self.counter(&self.closed, labels),
            sent: self.counter(&self.sent, labels),
            received: self.counter(&self.received, labels),
        }
    }

    fn counter(&self, family: &TcpFamily, labels: &ConnectionLabels) -> Counter {
        if let Some(c) = family.get(labels) {
            return c.clone();
        }
        let _index = self.create(labels);
        family.get_or_create_owned(labels)
    }

    fn add(&self, family: &TcpFamily, labels: &ConnectionLabels, v: u64) {
        // Fast path: the series exists; a read lock and an atomic add.
        if let Some(c) = family.get(labels) {
            c.inc_by(v);
            return;
        }
        // Still under the index lock: a concurrent `forget_workload` must not
        // remove the series between its creation and this increment, or the
        // increment would re-create it unindexed.
        let _index = self.create(labels);
        family.get_or_create(labels).inc_by(v);
    }

    /// Creates the four series of `labels` (at zero) and indexes them.
    /// Returns the index lock: series may only be created while it is held.
    #[cold]
    fn create(&self, labels: &ConnectionLabels) -> MutexGuard<'_, Index> {
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        for key in keys(labels) {
            let set = index.entry(key).or_default();
            if !set.contains(labels) {
                set.insert(labels.clone());
            }
        }
        // Under the index lock, so that `forget_workload` cannot run between
        // indexing and creating (which would leave an unindexed series).
        for f in self.families() {
            drop(f.get_or_create(labels));
        }
        index
    }

    /// Removes every series whose source or destination workload is
    /// `namespace/name`. Returns how many label sets were removed.
    pub fn forget_workload(&self, namespace: &str, name: &str) -> usize {
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let key: WorkloadKey = (Arc::from(namespace), Arc::from(name));
        let Some(sets) = index.remove(&key) else {
            return 0;
        };
        for labels in &sets {
            for f in self.families() {
                f.remove(labels);
            }
            // Unlink from the peer workload's entry too.
            for other in keys(labels) {
                if other == key {
                    continue;
                }
                if let Some(peer) = index.get_mut(&other) {
                    peer.remove(labels);
                    if peer.is_empty() {
                        index.remove(&other);
                    }
                }
            }
        }
        sets.len()
    }

    fn families(&self) -> [&TcpFamily; 4] {
        [&self.opened, &self.closed, &self.sent, &self.received]
    }

    #[cfg(test)]
    pub(crate) fn index_sizes(&self) -> (usize, usize) {
        let index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        (index.len(), index.values().map(HashSet::len).sum())
    }
}

fn keys(labels: &ConnectionLabels) -> [WorkloadKey; 2] {
    [
        (
            labels.source_workload_namespace.clone(),
            labels.source_workload.clone(),
        ),
        (
            labels.destination_workload_namespace.clone(),
            labels.destination_workload.clone(),
        ),
    ]
}

/// One connection's counters; see [`TcpMetrics::open_connection`].
/// Dropping it counts the connection closed.
#[derive(Debug)]
pub struct ConnectionCounters {
    closed: Counter,
    sent: Counter,
    received: Counter,
}

impl ConnectionCounters {
    /// Adds bytes sent towards the client.
    pub fn add_sent(&self, bytes: u64) {
        self.sent.inc_by(bytes);
    }

    /// Adds bytes received from the client.
    pub fn add_received(&self, bytes: u64) {
        self.received.inc_by(bytes);
    }
}

impl Drop for ConnectionCounters {
    fn drop(&mut self) {
        self.closed.inc();
    }
}
