//! One watcher per kind, turning watch events into store writes: a (re)list
//! replaces the kind at once, so objects deleted while the watch was down
//! disappear; single events apply or delete one object.

use std::fmt::Debug;
use std::sync::Arc;

use futures_util::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use super::reports::Reporter;
use crate::store::{Kind, Object, ObjectKey, Store};

/// How a watched kind maps into the store.
pub struct Target<K> {
    pub kind: Kind,
    /// `<plural>.<group>` for custom resources: a 404 on list means the CRD
    /// is not installed, which is reported rather than fatal.
    pub crd: Option<String>,
    /// Drops what the store never reads, before the object is kept.
    pub trim: fn(&mut K),
    pub convert: Box<dyn Fn(K) -> Object + Send + Sync>,
}

/// Runs until the task is aborted: the watcher retries every error with
/// backoff.
pub async fn run<K>(api: Api<K>, target: Target<K>, store: Arc<Store>, reporter: Arc<Reporter>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let stream = watcher(api, watcher::Config::default())
        .modify(target.trim)
        .default_backoff();
    let mut stream = std::pin::pin!(stream);
    // Objects of the list in progress, `None` outside a list.
    let mut listing: Option<Vec<(ObjectKey, Object)>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listing = Some(Vec::new()),
            Ok(watcher::Event::InitApply(obj)) => {
                let entry = (key(target.kind, &obj), (target.convert)(obj));
                listing.get_or_insert_with(Vec::new).push(entry);
            }
            Ok(watcher::Event::InitDone) => {
                let objects = listing.take().unwrap_or_default();
                debug!(kind = %target.kind, count = objects.len(), "listed");
                store.replace_kind(target.kind, objects);
                if let Some(crd) = &target.crd {
                    reporter.crd_present(crd);
                }
            }
            Ok(watcher::Event::Apply(obj)) => {
                store.apply(key(target.kind, &obj), (target.convert)(obj));
            }
            Ok(watcher::Event::Delete(obj)) => store.delete(&key(target.kind, &obj)),
            Err(error) => on_error(&target, &reporter, &error),
        }
    }
}

fn on_error<K>(target: &Target<K>, reporter: &Reporter, error: &watcher::Error) {
    if let (Some(crd), true) = (&target.crd, is_not_found(error)) {
        if reporter.crd_missing(crd, &target.kind.to_string()) {
            info!(kind = %target.kind, crd, "CRD not installed: kind ignored until it is");
        }
        return;
    }
    warn!(kind = %target.kind, %error, "watch failed; retrying");
}

/// A 404 from the list or the watch: the resource is not served.
pub fn is_not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 404,
        _ => false,
    }
}

pub fn key<K: Resource>(kind: Kind, obj: &K) -> ObjectKey {
    ObjectKey::new(kind, obj.namespace().unwrap_or_default(), obj.name_any())
}
