//! What changed between consecutive derivations, computed once per push and
//! shared by every subscriber that was in sync with the previous one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::derive::Derived;
use crate::resources::XdsResource;

/// One derivation and how it differs from the one before.
#[derive(Debug)]
pub struct Update {
    pub prev: Option<Arc<Derived>>,
    pub cur: Arc<Derived>,
    /// Per type URL: names added, changed or removed since `prev`.
    pub changes: HashMap<String, Vec<String>>,
}

impl Update {
    pub fn initial(cur: Arc<Derived>) -> Self {
        Self {
            prev: None,
            cur,
            changes: HashMap::new(),
        }
    }

    pub fn next(prev: Arc<Derived>, cur: Arc<Derived>) -> Self {
        let mut changes: HashMap<String, Vec<String>> = HashMap::new();
        let empty = BTreeMap::new();
        let types = prev
            .resources
            .by_type
            .keys()
            .chain(cur.resources.by_type.keys());
        for type_url in types {
            if changes.contains_key(*type_url) {
                continue;
            }
            let old = prev.resources.of_type(type_url).unwrap_or(&empty);
            let new = cur.resources.of_type(type_url).unwrap_or(&empty);
            changes.insert((*type_url).to_owned(), changed_names(old, new));
        }
        Self {
            prev: Some(prev),
            cur,
            changes,
        }
    }
}

/// Names whose resource differs (version or node), was added or removed:
/// one merge walk over the two sorted maps.
pub fn changed_names(
    old: &BTreeMap<String, Arc<XdsResource>>,
    new: &BTreeMap<String, Arc<XdsResource>>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((name, _)), None) => {
                out.push((*name).clone());
                a.next();
            }
            (None, Some((name, _))) => {
                out.push((*name).clone());
                b.next();
            }
            (Some((na, ra)), Some((nb, rb))) => match na.cmp(nb) {
                std::cmp::Ordering::Less => {
                    out.push((*na).clone());
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push((*nb).clone());
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    let same =
                        Arc::ptr_eq(ra, rb) || (ra.version == rb.version && ra.node == rb.node);
                    if !same {
                        out.push((*na).clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    out
}

/// Follows `derived`, publishing each new derivation with its diff.
pub async fn broadcast(
    mut derived: watch::Receiver<Arc<Derived>>,
    updates: watch::Sender<Arc<Update>>,
    cancel: CancellationToken,
) {
    let mut prev = derived.borrow_and_update().clone();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = derived.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let cur = derived.borrow_and_update().clone();
        if Arc::ptr_eq(&prev, &cur) {
            continue;
        }
        let update = Update::next(prev, cur.clone());
        prev = cur;
        updates.send_replace(Arc::new(update));
    }
}
