//! Which namespaces a store change touches, so the derivation redoes only
//! those: the two store snapshots are persistent maps, so their difference
//! costs what changed.
//!
//! - a Pod, Service or EndpointSlice: its namespace;
//! - a Namespace: itself (its labels decide enrollment and waypoints);
//! - an AuthorizationPolicy or PeerAuthentication: its namespace's
//!   workloads, or every workload when it is in the root namespace;
//! - a Gateway, or the Service of a waypoint: every namespace (bindings);
//! - L7 kinds touch no namespace: the waypoints' configuration is derived
//!   again on every change anyway.

use std::collections::HashSet;

use imbl::ordmap::DiffItem;

use crate::store::{Kind, ObjectKey, Objects};

/// What must be derived again.
#[derive(Debug, PartialEq, Eq)]
pub enum Dirty {
    All,
    Namespaces(HashSet<String>),
}

impl Dirty {
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Dirty::All => true,
            Dirty::Namespaces(set) => set.contains(namespace),
        }
    }
}

/// What changed from `before` to `now`. `is_waypoint(namespace, name)`
/// tells a waypoint's Service (a Gateway of that name, before or now).
pub fn dirty(
    before: Option<&Objects>,
    now: &Objects,
    root_namespace: &str,
    is_waypoint: impl Fn(&str, &str) -> bool,
) -> Dirty {
    let Some(before) = before else {
        return Dirty::All;
    };
    let mut namespaces = HashSet::new();
    for item in before.diff(now) {
        let key: &ObjectKey = match item {
            DiffItem::Add(k, _) | DiffItem::Remove(k, _) => k,
            DiffItem::Update { new: (k, _), .. } => k,
        };
        match key.kind {
            Kind::Namespace => {
                namespaces.insert(key.name.clone());
            }
            Kind::Service if is_waypoint(&key.namespace, &key.name) => return Dirty::All,
            Kind::Pod | Kind::Service | Kind::EndpointSlice => {
                namespaces.insert(key.namespace.clone());
            }
            Kind::AuthorizationPolicy | Kind::PeerAuthentication => {
                if key.namespace == root_namespace {
                    return Dirty::All;
                }
                namespaces.insert(key.namespace.clone());
            }
            Kind::Gateway => return Dirty::All,
            Kind::RequestAuthentication
            | Kind::VirtualService
            | Kind::DestinationRule
            | Kind::HTTPRoute => {}
        }
    }
    Dirty::Namespaces(namespaces)
}
