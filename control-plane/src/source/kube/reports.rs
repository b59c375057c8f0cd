//! What the Kubernetes source reports: Istio or Gateway API CRDs that are
//! not installed, and objects of Istio kinds amesh does not support. Kept
//! per cause so each is reported once and withdrawn when it goes away.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::store::{Report, Severity, Store};

/// The source name under which reports are stored.
pub const SOURCE: &str = "kubernetes";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cause {
    /// A CRD (by name) that is not installed.
    MissingCrd(String),
    /// An object of an unsupported kind: kind, namespace, name.
    Unsupported(String, String, String),
}

/// Collects the Kubernetes source's reports and writes them to the store as
/// one list whenever they change.
#[derive(Debug)]
pub struct Reporter {
    store: Arc<Store>,
    reports: Mutex<BTreeMap<Cause, Report>>,
}

impl Reporter {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            reports: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records that the CRD `crd` is not installed. Returns whether this is
    /// news (so the caller logs it once).
    pub fn crd_missing(&self, crd: &str, kind: &str) -> bool {
        let report = Report {
            severity: Severity::Unsupported,
            origin: SOURCE.to_owned(),
            object: String::new(),
            field: String::new(),
            message: format!("CRD {crd} not installed: kind {kind} ignored"),
        };
        self.change(|r| {
            r.insert(Cause::MissingCrd(crd.to_owned()), report)
                .is_none()
        })
    }

    /// The CRD `crd` is installed (its list succeeded).
    pub fn crd_present(&self, crd: &str) {
        self.change(|r| r.remove(&Cause::MissingCrd(crd.to_owned())).is_some());
    }

    /// Replaces the unsupported objects of `kind` (after a relist).
    pub fn set_unsupported(&self, kind: &str, objects: Vec<(String, String)>) {
        self.change(|r| {
            let before = r.len();
            r.retain(|c, _| !matches!(c, Cause::Unsupported(k, _, _) if k == kind));
            let removed = before != r.len();
            let added = !objects.is_empty();
            for (ns, name) in objects {
                r.insert(
                    Cause::Unsupported(kind.to_owned(), ns.clone(), name.clone()),
                    unsupported(kind, &ns, &name),
                );
            }
            removed || added
        });
    }

    pub fn add_unsupported(&self, kind: &str, ns: &str, name: &str) {
        let cause = Cause::Unsupported(kind.to_owned(), ns.to_owned(), name.to_owned());
        self.change(|r| r.insert(cause, unsupported(kind, ns, name)).is_none());
    }

    pub fn remove_unsupported(&self, kind: &str, ns: &str, name: &str) {
        let cause = Cause::Unsupported(kind.to_owned(), ns.to_owned(), name.to_owned());
        self.change(|r| r.remove(&cause).is_some());
    }

    /// Applies `f`; when it says something changed, rewrites the store's
    /// reports. Returns what `f` returned.
    fn change(&self, f: impl FnOnce(&mut BTreeMap<Cause, Report>) -> bool) -> bool {
        let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = f(&mut reports);
        if changed {
            // Written under the lock so concurrent changes reach the store
            // in order.
            self.store
                .set_reports(SOURCE, reports.values().cloned().collect());
        }
        changed
    }
}

fn unsupported(kind: &str, ns: &str, name: &str) -> Report {
    let object = if ns.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {ns}/{name}")
    };
    Report {
        severity: Severity::Unsupported,
        origin: SOURCE.to_owned(),
        object,
        field: String::new(),
        message: format!("{kind} is not supported by amesh: ignored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_crd_is_reported_once_and_withdrawn() {
        let store = Arc::new(Store::new());
        let reporter = Reporter::new(store.clone());
        assert!(reporter.crd_missing("virtualservices.networking.istio.io", "VirtualService"));
        let generation = store.snapshot().generation;
        assert!(!reporter.crd_missing("virtualservices.networking.istio.io", "VirtualService"));
        assert_eq!(store.snapshot().generation, generation);
        let reports = &store.snapshot().reports[SOURCE];
        assert_eq!(reports.len(), 1);
        assert_eq!(
            reports[0].message,
            "CRD virtualservices.networking.istio.io not installed: kind VirtualService ignored"
        );
        reporter.crd_present("virtualservices.networking.istio.io");
        assert!(store.snapshot().reports[SOURCE].is_empty());
    }

    #[test]
    fn unsupported_objects_are_replaced_on_relist() {
        let store = Arc::new(Store::new());
        let reporter = Reporter::new(store.clone());
        reporter.add_unsupported("ServiceEntry", "a", "x");
        reporter.set_unsupported("ServiceEntry", vec![("b".into(), "y".into())]);
        let reports = &store.snapshot().reports[SOURCE];
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].object, "ServiceEntry b/y");
        reporter.remove_unsupported("ServiceEntry", "b", "y");
        assert!(store.snapshot().reports[SOURCE].is_empty());
    }
}
