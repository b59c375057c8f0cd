//! Istio kinds amesh does not implement: when their CRDs exist, every object
//! is reported as unsupported (never silently ignored). When a CRD is absent
//! there is nothing to report, so a 404 is only retried.

use std::sync::Arc;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::{debug, warn};

use super::reports::Reporter;
use super::watch::is_not_found;

/// group, version, kind, plural.
pub const KINDS: [(&str, &str, &str, &str); 9] = [
    (
        "networking.istio.io",
        "v1alpha3",
        "ServiceEntry",
        "serviceentries",
    ),
    ("networking.istio.io", "v1alpha3", "Sidecar", "sidecars"),
    (
        "networking.istio.io",
        "v1alpha3",
        "EnvoyFilter",
        "envoyfilters",
    ),
    ("networking.istio.io", "v1alpha3", "Gateway", "gateways"),
    (
        "networking.istio.io",
        "v1alpha3",
        "WorkloadEntry",
        "workloadentries",
    ),
    (
        "networking.istio.io",
        "v1alpha3",
        "WorkloadGroup",
        "workloadgroups",
    ),
    ("telemetry.istio.io", "v1alpha1", "Telemetry", "telemetries"),
    (
        "extensions.istio.io",
        "v1alpha1",
        "WasmPlugin",
        "wasmplugins",
    ),
    (
        "networking.istio.io",
        "v1beta1",
        "ProxyConfig",
        "proxyconfigs",
    ),
];

pub async fn run(client: Client, index: usize, reporter: Arc<Reporter>) {
    let Some(&(group, version, kind, plural)) = KINDS.get(index) else {
        return;
    };
    let resource = ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: format!("{group}/{version}"),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    };
    // Istio's Gateway shares its name with Gateway API's: say which one.
    let label = if group == "networking.istio.io" && kind == "Gateway" {
        "Gateway (networking.istio.io)"
    } else {
        kind
    };
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let config = watcher::Config::default();
    let stream = watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listing: Option<Vec<(String, String)>> = None;
    while let Some(event) = stream.next().await {
        let id = |o: &DynamicObject| (o.namespace().unwrap_or_default(), o.name_any());
        match event {
            Ok(watcher::Event::Init) => listing = Some(Vec::new()),
            Ok(watcher::Event::InitApply(o)) => listing.get_or_insert_with(Vec::new).push(id(&o)),
            Ok(watcher::Event::InitDone) => {
                reporter.set_unsupported(label, listing.take().unwrap_or_default());
            }
            Ok(watcher::Event::Apply(o)) => {
                let (ns, name) = id(&o);
                reporter.add_unsupported(label, &ns, &name);
            }
            Ok(watcher::Event::Delete(o)) => {
                let (ns, name) = id(&o);
                reporter.remove_unsupported(label, &ns, &name);
            }
            Err(error) if is_not_found(&error) => {
                debug!(kind, group, "CRD not installed: nothing to report");
            }
            Err(error) => warn!(kind, group, %error, "watch failed; retrying"),
        }
    }
}
