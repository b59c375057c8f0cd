//! What changed between consecutive derivations, computed once per push and
//! shared by every subscriber that was in sync with the previous one.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::derive::Derived;
use crate::resources::Resources;
use imbl::ordmap::DiffItem;

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
        let empty = Resources::new();
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

/// Names whose resource differs, was added or removed, in name order:
/// a walk over only the parts of the two maps that are not shared.
pub fn changed_names(old: &Resources, new: &Resources) -> Vec<String> {
    old.diff(new)
        .filter_map(|item| match item {
            DiffItem::Add(name, _) | DiffItem::Remove(name, _) => Some(name.clone()),
            DiffItem::Update {
                old: (name, a),
                new: (_, b),
            } => {
                let same = Arc::ptr_eq(a, b) || (a.version == b.version && a.node == b.node);
                (!same).then(|| name.clone())
            }
        })
        .collect()
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
