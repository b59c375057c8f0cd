//! What the client holds: per type URL, the current resources by name.
//! Pushes are applied in place with an undo log, so refusing one restores
//! the previous state exactly without copying the whole state per push.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::xds::proto::envoy::service::discovery::v3::DeltaDiscoveryResponse;

/// One resource as last pushed.
#[derive(Clone, Debug, PartialEq)]
pub struct XdsEntry {
    pub version: String,
    pub body: prost_types::Any,
}

/// Resources of every subscribed type.
#[derive(Clone, Debug, Default)]
pub struct XdsState {
    by_type: BTreeMap<String, BTreeMap<String, XdsEntry>>,
    /// Types that have had at least one push: until every subscribed type
    /// has, the state is partial (e.g. workloads without their policies).
    received: BTreeSet<String>,
}

static EMPTY: BTreeMap<String, XdsEntry> = BTreeMap::new();

impl XdsState {
    pub fn new(types: &[&str]) -> Self {
        Self {
            by_type: types
                .iter()
                .map(|t| ((*t).to_owned(), BTreeMap::new()))
                .collect(),
            received: BTreeSet::new(),
        }
    }

    /// Resources of `type_url` by name (empty when none or not subscribed).
    pub fn resources(&self, type_url: &str) -> &BTreeMap<String, XdsEntry> {
        self.by_type.get(type_url).unwrap_or(&EMPTY)
    }

    pub fn get(&self, type_url: &str, name: &str) -> Option<&XdsEntry> {
        self.resources(type_url).get(name)
    }

    /// Bodies of `type_url`, in name order.
    pub fn bodies(&self, type_url: &str) -> impl Iterator<Item = &prost_types::Any> {
        self.resources(type_url).values().map(|e| &e.body)
    }

    /// Name → version of `type_url`: a reconnect's `initial_resource_versions`.
    pub fn versions(&self, type_url: &str) -> HashMap<String, String> {
        self.resources(type_url)
            .iter()
            .map(|(name, entry)| (name.clone(), entry.version.clone()))
            .collect()
    }

    /// Subscribed type URLs.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.by_type.keys().map(String::as_str)
    }

    /// Whether `type_url` has had a push since the client started.
    pub fn received(&self, type_url: &str) -> bool {
        self.received.contains(type_url)
    }

    /// Whether every subscribed type has had a push: the state is whole.
    pub fn complete(&self) -> bool {
        self.by_type.keys().all(|t| self.received.contains(t))
    }

    /// Applies `response` and returns how to take it back. A `partial`
    /// response (more of the same change follows) does not count as the
    /// type's first push: the type is whole only after the last part.
    pub(super) fn apply(&mut self, response: &DeltaDiscoveryResponse, partial: bool) -> Undo {
        let type_url = response.type_url.clone();
        let mut undo = Undo {
            type_url: type_url.clone(),
            first_push: !partial && self.received.insert(type_url.clone()),
            changes: Vec::new(),
        };
        let entries = self.by_type.entry(type_url).or_default();
        for resource in &response.resources {
            let entry = XdsEntry {
                version: resource.version.clone(),
                body: resource.resource.clone().unwrap_or_default(),
            };
            let previous = entries.insert(resource.name.clone(), entry);
            undo.changes.push((resource.name.clone(), previous));
        }
        for name in &response.removed_resources {
            if let Some(previous) = entries.remove(name) {
                undo.changes.push((name.clone(), Some(previous)));
            }
        }
        undo
    }

    /// Restores the state from before the push `undo` came from.
    pub(super) fn revert(&mut self, undo: Undo) {
        if undo.first_push {
            self.received.remove(&undo.type_url);
        }
        let Some(entries) = self.by_type.get_mut(&undo.type_url) else {
            return;
        };
        for (name, previous) in undo.changes.into_iter().rev() {
            match previous {
                Some(entry) => entries.insert(name, entry),
                None => entries.remove(&name),
            };
        }
    }
}

/// The entries a push replaced (None: the name was new).
#[derive(Debug)]
pub(super) struct Undo {
    type_url: String,
    first_push: bool,
    changes: Vec<(String, Option<XdsEntry>)>,
}
