//! The Kubernetes source: one kube-rs watcher per kind (list + watch with
//! bookmarks, backoff on errors) writing into the [`Store`].
//!
//! A list (the first, or a relist after `410 Gone`) replaces the kind at
//! once, so objects deleted while the watch was down disappear. Istio
//! kinds are watched in the oldest version every Istio release serves
//! (security v1beta1, networking v1alpha3), so clusters with Istio's CRDs of
//! any age work; the API server converts objects written in other versions
//! (all versions share one schema). A CRD that is not installed is reported
//! (source `kubernetes`) and retried with backoff until it is.

mod reports;
mod unsupported;
mod watch;

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::reports::Reporter;
pub use self::reports::SOURCE;
use self::watch::Target;
use crate::crd::{JsonSpec, gateway, networking, security};
use crate::store::{CustomObject, Kind, Object, Origin, Store};

/// Watches every kind the store holds until `cancel` fires. Errors are
/// retried, never returned: a missing CRD or an unreachable API server is
/// reported or logged and waited out.
pub async fn run(
    client: Client,
    store: Arc<Store>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let ctx = Ctx {
        client,
        store: store.clone(),
        reporter: Arc::new(Reporter::new(store)),
    };
    let mut tasks: JoinSet<()> = JoinSet::new();
    tasks.spawn(ctx.builtin(Kind::Namespace, |o: Namespace| {
        Object::Namespace(Arc::new(o))
    }));
    tasks.spawn(ctx.watch(Target {
        kind: Kind::Pod,
        crd: None,
        trim: trim_pod,
        convert: Box::new(|o: Pod| Object::Pod(Arc::new(o))),
    }));
    tasks.spawn(ctx.builtin(Kind::Service, |o: Service| Object::Service(Arc::new(o))));
    tasks.spawn(ctx.builtin(Kind::EndpointSlice, |o: EndpointSlice| {
        Object::EndpointSlice(Arc::new(o))
    }));
    tasks.spawn(ctx.custom::<security::v1beta1::AuthorizationPolicy>(Kind::AuthorizationPolicy));
    tasks.spawn(ctx.custom::<security::v1beta1::PeerAuthentication>(Kind::PeerAuthentication));
    tasks
        .spawn(ctx.custom::<security::v1beta1::RequestAuthentication>(Kind::RequestAuthentication));
    tasks.spawn(ctx.custom::<networking::v1alpha3::VirtualService>(Kind::VirtualService));
    tasks.spawn(ctx.custom::<networking::v1alpha3::DestinationRule>(Kind::DestinationRule));
    tasks.spawn(ctx.custom::<gateway::v1::Gateway>(Kind::Gateway));
    tasks.spawn(ctx.custom::<gateway::v1::HTTPRoute>(Kind::HTTPRoute));
    for index in 0..unsupported::KINDS.len() {
        tasks.spawn(unsupported::run(
            ctx.client.clone(),
            index,
            ctx.reporter.clone(),
        ));
    }
    info!("watching the Kubernetes API");

    tokio::select! {
        () = cancel.cancelled() => {}
        Some(done) = tasks.join_next() => {
            // Watchers retry forever: one ending is a bug, but the others
            // keep the store current, so say so and carry on until cancelled.
            warn!(?done, "a Kubernetes watcher ended unexpectedly");
            cancel.cancelled().await;
        }
    }
    tasks.shutdown().await;
    Ok(())
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Ctx {
    client: Client,
    store: Arc<Store>,
    reporter: Arc<Reporter>,
}

impl Ctx {
    fn watch<K>(&self, target: Target<K>) -> Task
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let api = Api::<K>::all(self.client.clone());
        Box::pin(watch::run(
            api,
            target,
            self.store.clone(),
            self.reporter.clone(),
        ))
    }

    /// A built-in kind, stored as its k8s-openapi type.
    fn builtin<K>(&self, kind: Kind, convert: fn(K) -> Object) -> Task
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        self.watch(Target {
            kind,
            crd: None,
            trim: drop_managed_fields::<K>,
            convert: Box::new(convert),
        })
    }

    /// A custom kind, stored as a [`CustomObject`] with its spec as JSON.
    fn custom<K>(&self, kind: Kind) -> Task
    where
        K: Resource<DynamicType = ()>
            + JsonSpec
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
    {
        self.watch(Target {
            kind,
            crd: Some(format!("{}.{}", K::plural(&()), K::group(&()))),
            trim: drop_managed_fields::<K>,
            convert: Box::new(move |o: K| custom_object(kind, o)),
        })
    }
}

fn custom_object<K: Resource<DynamicType = ()> + JsonSpec>(kind: Kind, obj: K) -> Object {
    let api_version = K::api_version(&()).into_owned();
    let (meta, spec) = obj.into_parts();
    Object::Custom(Arc::new(CustomObject {
        kind,
        api_version,
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
        labels: meta.labels.unwrap_or_default(),
        spec,
        origin: Origin::Kubernetes,
    }))
}

fn drop_managed_fields<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// Pods are most of the store: keep only the annotations amesh reads (Istio's
/// and ours), dropping e.g. `kubectl.kubernetes.io/last-applied-configuration`.
fn trim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(annotations) = &mut pod.metadata.annotations {
        annotations.retain(|k, _| k.contains("istio.io") || k.contains("amesh"));
    }
}
