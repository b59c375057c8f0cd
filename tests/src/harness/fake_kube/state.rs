//! The fake API server's storage: objects by resource type, one global
//! resourceVersion, and a bounded history of changes that watches replay and
//! paged lists read consistent snapshots from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};

use super::kinds::{ResourceKind, builtin};
use super::status::ApiError;
use super::token::TokenUser;

/// `(group, plural)`: one resource type, whatever version it is read in.
pub type TypeKey = (String, String);
/// `(namespace, name)`; namespace empty for cluster-scoped objects.
pub type ObjKey = (String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as stored in the history.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub ty: TypeKey,
    pub key: ObjKey,
    pub event: EventType,
    /// The object after the change (for deletes: as deleted, with the
    /// deletion's resourceVersion).
    pub object: Value,
    /// The object before the change (`None` for adds).
    pub prev: Option<Value>,
}

#[derive(Debug)]
pub struct State {
    pub kinds: BTreeMap<TypeKey, ResourceKind>,
    objects: BTreeMap<TypeKey, BTreeMap<ObjKey, Value>>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// The latest resourceVersion handed out.
    pub rv: u64,
    /// New watches and continue tokens need a resourceVersion at least this.
    pub min_rv: u64,
    /// The newest change dropped from the history: an open watch that has
    /// not delivered it has lost events.
    pub evicted_rv: u64,
    uids: u64,
    pub tokens: BTreeMap<String, TokenUser>,
    pub requests: Vec<String>,
    /// Requests fail with 503 (see `FakeApiServer::while_down`).
    pub down: bool,
}

impl State {
    pub fn new(history_limit: usize) -> Self {
        Self {
            kinds: builtin()
                .into_iter()
                .map(|k| ((k.group.clone(), k.plural.clone()), k))
                .collect(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            // Kubernetes resourceVersions are opaque; starting above 0 keeps
            // "0" meaning "any version".
            rv: 1,
            min_rv: 1,
            evicted_rv: 0,
            uids: 0,
            tokens: BTreeMap::new(),
            requests: Vec::new(),
            down: false,
        }
    }

    pub fn kind_by_plural(&self, group: &str, plural: &str) -> Option<&ResourceKind> {
        self.kinds.get(&(group.to_owned(), plural.to_owned()))
    }

    pub fn kind_by_name(&self, group: &str, kind: &str) -> Option<&ResourceKind> {
        self.kinds
            .values()
            .find(|k| k.group == group && k.kind == kind)
    }

    pub fn register(&mut self, kind: ResourceKind) {
        self.kinds
            .insert((kind.group.clone(), kind.plural.clone()), kind);
    }

    /// Removes a resource type and, as deleting a CRD does, its objects
    /// (each with a DELETED event).
    pub fn unregister(&mut self, group: &str, kind: &str) -> Option<ResourceKind> {
        let found = self.kind_by_name(group, kind)?.clone();
        let ty = (found.group.clone(), found.plural.clone());
        let keys: Vec<ObjKey> = self
            .objects
            .get(&ty)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            let _ = self.delete(&ty, &key);
        }
        self.kinds.remove(&ty);
        Some(found)
    }

    pub fn get(&self, ty: &TypeKey, key: &ObjKey) -> Option<&Value> {
        self.objects.get(ty)?.get(key)
    }

    /// Creates an object; `object.metadata.name` must be set.
    pub fn create(
        &mut self,
        ty: &TypeKey,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        let name = object_name(&mut object, self.uids)?;
        let key = (namespace.to_owned(), name.clone());
        if self.get(ty, &key).is_some() {
            return Err(ApiError::already_exists(&ty.1, &name));
        }
        self.uids += 1;
        let meta = meta_mut(&mut object)?;
        meta.insert(
            "uid".into(),
            json!(format!("00000000-0000-4000-8000-{:012x}", self.uids)),
        );
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        set_namespace(meta, namespace);
        Ok(self.commit(ty, key, EventType::Added, object, None))
    }

    /// Replaces an object. When `object` carries a resourceVersion, it must
    /// be the current one (optimistic concurrency, as the API server checks).
    pub fn update(
        &mut self,
        ty: &TypeKey,
        key: &ObjKey,
        mut object: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let Some(prev) = self.get(ty, key).cloned() else {
            return Err(ApiError::not_found(&ty.1, &key.1));
        };
        let sent_rv = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        let current_rv = prev["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if !sent_rv.is_empty() && sent_rv != current_rv {
            return Err(ApiError::conflict(&ty.1, &key.1));
        }
        if status_only {
            // The status subresource changes status and nothing else.
            let status = object.get("status").cloned();
            object = prev.clone();
            match status {
                Some(s) => object["status"] = s,
                None => {
                    if let Some(o) = object.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        let generation = prev["metadata"]["generation"].as_i64().unwrap_or(1);
        let spec_changed = object.get("spec") != prev.get("spec");
        let meta = meta_mut(&mut object)?;
        meta.insert("name".into(), json!(key.1));
        set_namespace(meta, &key.0);
        for kept in ["uid", "creationTimestamp"] {
            match prev["metadata"].get(kept) {
                Some(v) => meta.insert(kept.into(), v.clone()),
                None => meta.remove(kept),
            };
        }
        meta.insert(
            "generation".into(),
            json!(generation + i64::from(spec_changed)),
        );
        Ok(self.commit(ty, key.clone(), EventType::Modified, object, Some(prev)))
    }

    pub fn delete(&mut self, ty: &TypeKey, key: &ObjKey) -> Result<Value, ApiError> {
        let Some(prev) = self.get(ty, key).cloned() else {
            return Err(ApiError::not_found(&ty.1, &key.1));
        };
        Ok(self.commit(
            ty,
            key.clone(),
            EventType::Deleted,
            prev.clone(),
            Some(prev),
        ))
    }

    fn commit(
        &mut self,
        ty: &TypeKey,
        key: ObjKey,
        event: EventType,
        mut object: Value,
        prev: Option<Value>,
    ) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let objects = self.objects.entry(ty.clone()).or_default();
        if event == EventType::Deleted {
            objects.remove(&key);
        } else {
            objects.insert(key.clone(), object.clone());
        }
        self.history.push_back(Arc::new(Change {
            rv: self.rv,
            ty: ty.clone(),
            key,
            event,
            object: object.clone(),
            prev,
        }));
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.min_rv = self.min_rv.max(old.rv);
                self.evicted_rv = old.rv;
            }
        }
        object
    }

    /// Forgets the history, as an etcd compaction does: every
    /// resourceVersion handed out so far is expired for new watches and
    /// continue tokens. Open watches are not affected.
    pub fn compact(&mut self) {
        if let Some(last) = self.history.back() {
            self.evicted_rv = last.rv;
        }
        self.history.clear();
        self.rv += 1;
        self.min_rv = self.rv;
    }

    /// The changes to `ty` after `rv`, or `None` if some were forgotten.
    pub fn changes_after(
        &self,
        ty: &TypeKey,
        rv: u64,
        open_watch: bool,
    ) -> Option<Vec<Arc<Change>>> {
        let expired = if open_watch {
            rv < self.evicted_rv
        } else {
            rv < self.min_rv
        };
        if expired {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|c| c.rv > rv && &c.ty == ty)
                .cloned()
                .collect(),
        )
    }

    /// The objects of `ty` as they were at `rv` (`None` if forgotten).
    pub fn snapshot_at(&self, ty: &TypeKey, rv: u64) -> Option<BTreeMap<ObjKey, Value>> {
        let mut objects = self.objects.get(ty).cloned().unwrap_or_default();
        if rv >= self.rv {
            return Some(objects);
        }
        // Undo, newest first, what happened after `rv`.
        for change in self.changes_after(ty, rv, false)?.iter().rev() {
            match &change.prev {
                Some(prev) => objects.insert(change.key.clone(), prev.clone()),
                None => objects.remove(&change.key),
            };
        }
        Some(objects)
    }
}

fn meta_mut(object: &mut Value) -> Result<&mut serde_json::Map<String, Value>, ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    }
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata is not an object"))
}

/// The name of a new object; `generateName` gets a unique suffix.
fn object_name(object: &mut Value, unique: u64) -> Result<String, ApiError> {
    let meta = meta_mut(object)?;
    if let Some(name) = meta.get("name").and_then(Value::as_str) {
        return Ok(name.to_owned());
    }
    let Some(prefix) = meta.get("generateName").and_then(Value::as_str) else {
        return Err(ApiError::invalid(
            "metadata.name: Required value: name or generateName is required",
        ));
    };
    let name = format!("{prefix}{:05x}", unique + 1);
    meta.insert("name".into(), json!(name));
    Ok(name)
}

fn set_namespace(meta: &mut serde_json::Map<String, Value>, namespace: &str) {
    if namespace.is_empty() {
        meta.remove("namespace");
    } else {
        meta.insert("namespace".into(), json!(namespace));
    }
}
