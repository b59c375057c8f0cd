//! One subscriber's state for one type: what the client holds and the
//! response it has not acknowledged yet.
//!
//! What a client holds is stored compactly as "the visible resources of
//! derivation `base`, except `overrides`": a client in sync costs one
//! pointer, whatever the number of resources.
//!
//! A response carries at most about [`MAX_RESPONSE_BYTES`] of resources;
//! a larger change (a new subscriber's full state) goes out in several,
//! each acknowledged before the next. Why: tonic keeps each stream's encode
//! buffer at the size of the largest message it sent, so sending 10,000
//! workloads at once would leave megabytes allocated per subscriber.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::derive::Derived;
use crate::resources::XdsResource;

use super::diff::Update;

/// name → version the client holds (`None`: it lacks the name).
type Versions = HashMap<String, Option<String>>;

/// What a client holds: the visible resources of `base`, except names up
/// to an `ahead.through`, which are as in that `ahead.cur` (a change in
/// parts, part of it received; the newest first, as a change in parts
/// interrupted by a newer derivation starts again), except `overrides`.
#[derive(Clone, Debug, Default)]
struct Held {
    base: Option<Arc<Derived>>,
    ahead: Vec<Ahead>,
    overrides: Versions,
}

#[derive(Clone, Debug)]
struct Ahead {
    cur: Arc<Derived>,
    through: String,
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
        let ahead = self.ahead.iter().rev().find(|a| name <= a.through.as_str());
        let from = match ahead {
            Some(ahead) => &ahead.cur,
            None => self.base.as_ref()?,
        };
        visible(from, type_url, name, node).map(|r| r.version.clone())
    }
}

/// Resources of one response, at most (one larger resource goes alone).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What the client holds once it ACKs.
#[derive(Debug)]
enum Next {
    /// Everything was sent: exactly this.
    Whole(Held),
    /// One part of a larger change: names through `ahead.through` are now
    /// as in `ahead.cur`, except the `kept` ones (rejected before, the
    /// client keeps what it had).
    Part {
        ahead: Ahead,
        sent: Vec<String>,
        kept: Versions,
    },
}

#[derive(Debug)]
struct InFlight {
    nonce: String,
    next: Next,
    /// What the response carried (removals as `None`), remembered on NACK.
    sent: Versions,
}

/// Names of a change not sent yet, and the derivation they lead to.
#[derive(Debug)]
struct Pending {
    cur: Arc<Derived>,
    names: Vec<String>,
    /// Rejected names passed over by the earlier parts (the client keeps
    /// what it had).
    kept: Versions,
}

/// A response to send.
#[derive(Debug, Default)]
pub struct Delta {
    pub resources: Vec<Arc<XdsResource>>,
    pub removed: Vec<String>,
    /// Part of a larger change: more responses follow.
    pub more: bool,
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
    /// The rest of a change sent in parts.
    pending: Option<Pending>,
    max_bytes: usize,
}

impl TypeState {
    /// A subscription; `initial` is what the client says it already holds.
    pub fn new(type_url: &str, initial: HashMap<String, String>) -> Self {
        Self::with_limit(type_url, initial, MAX_RESPONSE_BYTES)
    }

    /// As [`TypeState::new`], with responses of at most `max_bytes`.
    pub fn with_limit(type_url: &str, initial: HashMap<String, String>, max_bytes: usize) -> Self {
        Self {
            type_url: type_url.to_owned(),
            held: Held {
                base: None,
                ahead: Vec::new(),
                overrides: initial.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            },
            in_flight: None,
            rejected: Versions::new(),
            pending: None,
            max_bytes,
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
            // The client kept its previous state: `held` stays. The rest of
            // a change in parts is recomputed from scratch, so the rejected
            // names end up among what the client is known to keep.
            self.rejected.extend(flight.sent);
            self.pending = None;
            Answer::Nack
        } else {
            match flight.next {
                Next::Whole(held) => self.held = held,
                Next::Part { ahead, sent, kept } => {
                    for name in &sent {
                        self.held.overrides.remove(name);
                    }
                    self.held.overrides.extend(kept);
                    match self.held.ahead.last_mut() {
                        // The same change, further along.
                        Some(last) if Arc::ptr_eq(&last.cur, &ahead.cur) => *last = ahead,
                        _ => self.held.ahead.push(ahead),
                    }
                }
            }
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
        let (names, earlier_kept) = self.candidates(update);
        let type_url = self.type_url.as_str();
        let mut names = names.into_iter();
        let mut delta = Delta::default();
        let mut sent = Versions::new();
        let mut kept = Versions::new();
        let mut budget = self.max_bytes;
        let mut through = None;
        let mut rest = None;
        while let Some(name) = names.next() {
            let held = self.held.version(type_url, &name, node);
            let now = visible(cur, type_url, &name, node);
            let now_version = now.map(|r| r.version.clone());
            if held == now_version {
                through = Some(name);
                continue;
            }
            if self.rejected.get(&name) == Some(&now_version) {
                kept.insert(name.clone(), held);
                through = Some(name);
                continue;
            }
            let size = name.len() + now.map_or(0, |r| r.body.value.len());
            let sending = delta.resources.len() + delta.removed.len();
            if sending > 0 && size > budget {
                // Full: this name and the rest go in the next response.
                rest = Some(std::iter::once(name).chain(names).collect::<Vec<_>>());
                break;
            }
            budget = budget.saturating_sub(size);
            match now {
                Some(resource) => delta.resources.push(resource.clone()),
                None => delta.removed.push(name.clone()),
            }
            self.rejected.remove(&name);
            sent.insert(name.clone(), now_version);
            through = Some(name);
        }
        let next = match (rest, through) {
            (Some(names), Some(through)) => {
                delta.more = true;
                let mut all_kept = earlier_kept;
                all_kept.extend(kept.iter().map(|(k, v)| (k.clone(), v.clone())));
                self.pending = Some(Pending {
                    cur: cur.clone(),
                    names,
                    kept: all_kept,
                });
                Next::Part {
                    ahead: Ahead {
                        cur: cur.clone(),
                        through,
                    },
                    sent: sent.keys().cloned().collect(),
                    kept,
                }
            }
            _ => {
                self.pending = None;
                let mut all_kept = earlier_kept;
                all_kept.extend(kept);
                Next::Whole(Held {
                    base: Some(cur.clone()),
                    ahead: Vec::new(),
                    overrides: all_kept,
                })
            }
        };
        if delta.resources.is_empty() && delta.removed.is_empty() && !force {
            // Equivalent to what the client holds: rebase without sending,
            // so the next diff starts from `cur`.
            if let Next::Whole(held) = next {
                self.held = held;
            }
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

    /// Names that may differ between what the client holds and
    /// `update.cur`, and the rejected names already passed over.
    fn candidates(&mut self, update: &Update) -> (Vec<String>, Versions) {
        if let Some(pending) = self.pending.take()
            && Arc::ptr_eq(&pending.cur, &update.cur)
        {
            // The rest of a change in parts, still current.
            return (pending.names, pending.kept);
        }
        (self.changed_names(update), Versions::new())
    }

    /// In name order, so a change in parts can say how far it got.
    fn changed_names(&self, update: &Update) -> Vec<String> {
        let overrides = self.held.overrides.keys().cloned();
        let base = self.held.base.as_ref();
        if self.held.ahead.is_empty() {
            if base.is_some_and(|b| Arc::ptr_eq(b, &update.cur)) {
                let mut names: Vec<String> = overrides.collect();
                names.sort_unstable();
                return names;
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
        }
        // Behind by more than one derivation, part-way through a change,
        // or new: walk every set involved.
        let mut names: BTreeSet<String> = overrides.collect();
        let ahead = self.held.ahead.iter().map(|a| &a.cur);
        for derived in base
            .into_iter()
            .chain(ahead)
            .chain(std::iter::once(&update.cur))
        {
            if let Some(of_type) = derived.resources.of_type(&self.type_url) {
                names.extend(of_type.keys().cloned());
            }
        }
        names.into_iter().collect()
    }
}
