//! DestinationRule subsets by service host.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use amesh_core::l7::DestinationRule;

use super::decision::Subset;
use super::hosts;
use super::problem::{ProblemKind, Reporter};

/// Subsets of every host that has a DestinationRule.
#[derive(Debug, Default)]
pub(crate) struct Subsets {
    /// FQDN → the DestinationRule (`ns/name`) and its subsets.
    by_host: HashMap<String, (String, Vec<Subset>)>,
}

impl Subsets {
    /// Adds one DestinationRule. As in Istio, one rule per host applies:
    /// the first one given wins and later ones are reported.
    pub(crate) fn add(&mut self, dr: &DestinationRule, cluster_domain: &str, r: &mut Reporter<'_>) {
        let host = hosts::resolve(&dr.host, r.namespace, cluster_domain);
        let subsets = dr
            .subsets
            .iter()
            .map(|s| Subset {
                name: s.name.clone(),
                labels: s.labels.clone(),
            })
            .collect();
        match self.by_host.entry(host) {
            Entry::Vacant(e) => {
                e.insert((format!("{}/{}", r.namespace, r.name), subsets));
            }
            Entry::Occupied(e) => {
                let msg = format!(
                    "DestinationRule {} already applies to host {}: this one is ignored",
                    e.get().0,
                    e.key()
                );
                r.report(ProblemKind::Conflict, "spec.host", msg);
            }
        }
    }

    /// Subset `name` of `host`.
    pub(crate) fn get(&self, host: &str, name: &str) -> Option<&Subset> {
        self.by_host.get(host)?.1.iter().find(|s| s.name == name)
    }
}
