//! Results of checking custom objects, kept across derivations: most
//! changes touch a few objects, and re-validating every policy and route
//! each time would dominate the derivation.

use std::collections::HashMap;
use std::sync::Arc;

use crate::store::{CustomObject, Kind};

type Key = (Kind, String, String);

/// Per-object results of one kind of check. An entry is reused while the
/// object is the same (same `Arc`, or equal).
#[derive(Debug)]
pub struct ObjectCache<T> {
    entries: HashMap<Key, (Arc<CustomObject>, T)>,
    /// Keys used by the current derivation; the others are dropped after it.
    used: HashMap<Key, ()>,
}

impl<T> Default for ObjectCache<T> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            used: HashMap::new(),
        }
    }
}

impl<T: Clone> ObjectCache<T> {
    pub fn get_or_insert(
        &mut self,
        object: &Arc<CustomObject>,
        check: impl FnOnce(&CustomObject) -> T,
    ) -> T {
        let key = (object.kind, object.namespace.clone(), object.name.clone());
        self.used.insert(key.clone(), ());
        if let Some((cached, value)) = self.entries.get(&key)
            && (Arc::ptr_eq(cached, object) || **cached == **object)
        {
            return value.clone();
        }
        let value = check(object);
        self.entries.insert(key, (object.clone(), value.clone()));
        value
    }

    /// Forgets objects the last derivation did not look at (deleted).
    pub fn end_round(&mut self) {
        let used = std::mem::take(&mut self.used);
        self.entries.retain(|k, _| used.contains_key(k));
    }
}
