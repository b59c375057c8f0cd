//! One subscriber's state for one type: what the client holds and the
//! response it has not acknowledged yet.
//!
//! What a client holds is stored compactly as "the visible resources of
//! derivation `base`, except `overrides`": a client in sync costs one
//! pointer, whatever the number of resources.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::derive::Derived;
use crate::resources::XdsResource;

use super::diff::Update;

/// name → version the client holds (`None`: it lacks the name).
type Versions = HashMap<String, Option<String>>;

#[derive(Clone, Debug, Default)]
struct Held {
    base: Option<Arc<Derived>>,
    overrides: Versions,
}

fn visible<'a>(
    derived: &'a Derived,
    type_url: &str,
    name: &str,
    node: Option<&str>,
) -> Option<&'a Arc<XdsResource>> {
    derived
        .resources
        .of_type(type_url)?
        .get(name)
        .filter(|r| r.node.is_none() || r.node.as_deref() == node)
}

impl Held {
    fn version(&self, type_url: &str, name: &str, node: Option<&str>) -> Option<String> {
        if let Some(v) = self.overrides.get(name) {
            return v.clone();
        }
        let base = self.base.as_deref()?;
        visible(base, type_url, name, node).map(|r| r.version.clone())
    }
}

#[derive(Debug)]
struct InFlight {
    nonce: String,
    /// What the client holds once it ACKs.
    next: Held,
    /// What the response carried (removals as `None`), remembered on NACK.
    sent: Versions,
}

/// A response to send.
#[derive(Debug, Default)]
pub struct Delta {
    pub resources: Vec<Arc<XdsResource>>,
    pub removed: Vec<String>,
}

/// How the client answered a nonce.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Ack,
    Nack,
    /// Not the response in flight: ignored.
    Stale,
}

#[derive(Debug)]
pub struct TypeState {
    type_url: String,
    held: Held,
    in_flight: Option<InFlight>,
    /// Versions the client rejected: not resent until they change, so a
    /// NACK does not loop.
    rejected: Versions,
}

impl TypeState {
    /// A subscription; `initial` is what the client says it already holds.
    pub fn new(type_url: &str, initial: HashMap<String, String>) -> Self {
        Self {
            type_url: type_url.to_owned(),
            held: Held {
                base: None,
                overrides: initial.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            },
            in_flight: None,
            rejected: Versions::new(),
        }
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The client answered `nonce` (`nack`: with an error).
    pub fn answer(&mut self, nonce: &str, nack: bool) -> Answer {
        match &self.in_flight {
            Some(f) if f.nonce == nonce => {}
            _ => return Answer::Stale,
        }
        let Some(flight) = self.in_flight.take() else {
            return Answer::Stale;
        };
        if nack {
            // The client kept its previous state: `held` stays.
            self.rejected.extend(flight.sent);
            Answer::Nack
        } else {
            self.held = flight.next;
            Answer::Ack
        }
    }

    /// The response that brings the client from what it holds to `update`,
    /// marked in flight under `nonce`. `None` while another response is
    /// unacknowledged (it is computed after the ACK, against the latest
    /// state), or when there is nothing to send and `force` is false.
    pub fn prepare(
        &mut self,
        update: &Update,
        node: Option<&str>,
        force: bool,
        nonce: impl FnOnce() -> String,
    ) -> Option<Delta> {
        if self.in_flight.is_some() {
            return None;
        }
        let cur = &update.cur;
        let type_url = self.type_url.as_str();
        let names = self.candidates(update);
        let mut delta = Delta::default();
        let mut sent = Versions::new();
        let mut kept = Versions::new();
        for name in names {
            let held = self.held.version(type_url, &name, node);
            let now = visible(cur, type_url, &name, node);
            let now_version = now.map(|r| r.version.clone());
            if held == now_version {
                continue;
            }
            if self.rejected.get(&name) == Some(&now_version) {
                kept.insert(name, held);
                continue;
            }
            match now {
                Some(resource) => delta.resources.push(resource.clone()),
                None => delta.removed.push(name.clone()),
            }
            self.rejected.remove(&name);
            sent.insert(name, now_version);
        }
        let next = Held {
            base: Some(cur.clone()),
            overrides: kept,
        };
        if delta.resources.is_empty() && delta.removed.is_empty() && !force {
            // Equivalent to what the client holds: rebase without sending,
            // so the next diff starts from `cur`.
            self.held = next;
            return None;
        }
        self.in_flight = Some(InFlight {
            nonce: nonce(),
            next,
            sent,
        });
        Some(delta)
    }

    /// The nonce of the response in flight.
    pub fn nonce(&self) -> Option<&str> {
        self.in_flight.as_ref().map(|f| f.nonce.as_str())
    }

    /// Names that may differ between what the client holds and `update.cur`.
    fn candidates(&self, update: &Update) -> Vec<String> {
        let overrides = self.held.overrides.keys().cloned();
        let base = self.held.base.as_ref();
        if base.is_some_and(|b| Arc::ptr_eq(b, &update.cur)) {
            return overrides.collect();
        }
        let from_prev = match (base, &update.prev) {
            (Some(b), Some(p)) => Arc::ptr_eq(b, p),
            _ => false,
        };
        if from_prev {
            let mut names: BTreeSet<String> = overrides.collect();
            if let Some(changed) = update.changes.get(&self.type_url) {
                names.extend(changed.iter().cloned());
            }
            return names.into_iter().collect();
        }
        // Behind by more than one derivation, or new: walk both sets.
        let mut names: BTreeSet<String> = overrides.collect();
        for derived in base.into_iter().chain(std::iter::once(&update.cur)) {
            if let Some(of_type) = derived.resources.of_type(&self.type_url) {
                names.extend(of_type.keys().cloned());
            }
        }
        names.into_iter().collect()
    }
}
