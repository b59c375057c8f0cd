//! Watch streams: newline-delimited JSON events from a resourceVersion on,
//! bookmarks, `410 Expired` when the history no longer reaches back far
//! enough, and the ways a stream ends (timeout, `drop_watches`, shutdown,
//! client gone).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Shared;
use super::kinds::ResourceKind;
use super::selector::Selectors;
use super::state::{Change, EventType, State, TypeKey};
use super::status::ApiError;

/// What one watch request asked for.
#[derive(Debug)]
pub struct WatchRequest {
    pub kind: ResourceKind,
    pub version: String,
    pub namespace: Option<String>,
    pub selectors: Selectors,
    pub bookmarks: bool,
    pub timeout: Duration,
}

impl WatchRequest {
    fn ty(&self) -> TypeKey {
        (self.kind.group.clone(), self.kind.plural.clone())
    }

    fn in_scope(&self, namespace: &str, object: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace) && self.selectors.matches(object)
    }

    /// The object as served in the requested version.
    pub fn served(&self, object: &Value) -> Value {
        served(&self.kind, &self.version, object)
    }

    fn line(&self, ty: &str, object: Value) -> Bytes {
        let mut line = json!({"type": ty, "object": object}).to_string();
        line.push('\n');
        Bytes::from(line)
    }

    /// The event a change makes for this watch, if any: a change that moves
    /// an object into or out of the selection is an ADDED or DELETED.
    fn event(&self, change: &Change) -> Option<Bytes> {
        let now = self.in_scope(&change.key.0, &change.object);
        let before = change
            .prev
            .as_ref()
            .is_some_and(|p| self.in_scope(&change.key.0, p));
        let ty = match (change.event, before, now) {
            (EventType::Deleted, true, _) => "DELETED",
            (EventType::Deleted, false, _) => return None,
            (_, true, true) => "MODIFIED",
            (_, false, true) => "ADDED",
            (_, true, false) => "DELETED",
            (_, false, false) => return None,
        };
        Some(self.line(ty, self.served(&change.object)))
    }

    fn bookmark(&self, rv: u64) -> Bytes {
        let object = json!({
            "kind": self.kind.kind,
            "apiVersion": self.kind.api_version(&self.version),
            "metadata": {"resourceVersion": rv.to_string()},
        });
        self.line("BOOKMARK", object)
    }

    fn error(&self, error: &ApiError) -> Bytes {
        self.line("ERROR", error.to_status())
    }
}

/// The object with `apiVersion` and `kind` of the version it is read in.
pub fn served(kind: &ResourceKind, version: &str, object: &Value) -> Value {
    let mut object = object.clone();
    object["apiVersion"] = json!(kind.api_version(version));
    object["kind"] = json!(kind.kind);
    object
}

/// Where a new watch starts.
#[derive(Debug)]
pub enum Start {
    /// No resourceVersion (or "0"): the current objects as ADDED events,
    /// then changes after `rv`.
    Current { objects: Vec<Value>, rv: u64 },
    /// Changes after this resourceVersion.
    After(u64),
    /// The resourceVersion is too old: one ERROR event, then the end.
    Expired(ApiError),
}

/// Decides where a watch from `resource_version` starts (under the lock,
/// so no change falls between the decision and the stream).
pub fn start(
    state: &State,
    request: &WatchRequest,
    resource_version: Option<&str>,
) -> Result<Start, ApiError> {
    match resource_version.filter(|rv| !rv.is_empty() && *rv != "0") {
        None => {
            let objects = state
                .snapshot_at(&request.ty(), state.rv)
                .unwrap_or_default()
                .into_iter()
                .filter(|((ns, _), o)| request.in_scope(ns, o))
                .map(|(_, o)| o)
                .collect();
            Ok(Start::Current {
                objects,
                rv: state.rv,
            })
        }
        Some(text) => {
            let rv: u64 = text.parse().map_err(|_| {
                ApiError::bad_request(format!("resourceVersion {text:?} is not valid"))
            })?;
            if rv < state.min_rv {
                return Ok(Start::Expired(ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    state.min_rv
                ))));
            }
            Ok(Start::After(rv))
        }
    }
}

/// Signals a watch stream listens to, subscribed when the request arrives.
#[derive(Debug)]
pub struct Signals {
    pub changes: watch::Receiver<u64>,
    pub drops: watch::Receiver<u64>,
    pub bookmarks: watch::Receiver<u64>,
    pub shutdown: watch::Receiver<bool>,
}

/// Feeds one watch stream until it ends.
pub async fn run(
    shared: Arc<Shared>,
    request: WatchRequest,
    start: Start,
    mut signals: Signals,
    tx: mpsc::Sender<Bytes>,
) {
    let mut position = match start {
        Start::Expired(error) => {
            let _ = tx.send(request.error(&error)).await;
            return;
        }
        Start::After(rv) => rv,
        Start::Current { objects, rv } => {
            for object in objects {
                if tx
                    .send(request.line("ADDED", request.served(&object)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            rv
        }
    };
    let deadline = Instant::now() + request.timeout;
    let period = shared.options.bookmark_interval;
    let mut next_bookmark = period.map(|p| Instant::now() + p);
    let mut bookmark_due = false;
    loop {
        // Send what changed since `position`, then (if due) a bookmark at
        // the position reached: a bookmark never skips an undelivered event.
        let (lines, expired) = {
            let state = shared.lock();
            match state.changes_after(&request.ty(), position, true) {
                None => (Vec::new(), true),
                Some(changes) => {
                    position = state.rv;
                    (
                        changes.iter().filter_map(|c| request.event(c)).collect(),
                        false,
                    )
                }
            }
        };
        if expired {
            let error = ApiError::expired(format!(
                "too old resource version: {position}: the watch fell behind"
            ));
            let _ = tx.send(request.error(&error)).await;
            return;
        }
        for line in lines {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if std::mem::take(&mut bookmark_due)
            && request.bookmarks
            && tx.send(request.bookmark(position)).await.is_err()
        {
            return;
        }
        let tick = async {
            match next_bookmark {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = signals.changes.changed() => if changed.is_err() { return },
            _ = signals.bookmarks.changed() => bookmark_due = true,
            () = tick => {
                bookmark_due = true;
                next_bookmark = period.map(|p| Instant::now() + p);
            }
            _ = signals.drops.changed() => return,
            _ = signals.shutdown.changed() => return,
            () = tokio::time::sleep_until(deadline) => return,
            () = tx.closed() => return,
        }
    }
}
