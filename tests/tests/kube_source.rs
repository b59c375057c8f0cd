//! The control plane's Kubernetes source against the fake API server: the
//! initial list, updates and deletes, resuming a dropped watch without a
//! relist, relisting after an outage with compaction (objects deleted
//! meanwhile disappear), and a CRD installed after the source started.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use amesh_control_plane::source::kube::{SOURCE, run};
use amesh_control_plane::store::{Kind, Object, ObjectKey, Store, StoreSnapshot};
use amesh_tests::harness::fake_kube::{FakeApiServer, Options};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Generous: the watcher's backoff after an error is up to a few seconds.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Waits (bounded) until `cond` holds for the store, woken by its changes.
async fn wait_for(store: &Store, what: &str, mut cond: impl FnMut(&StoreSnapshot) -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    let mut changed = store.subscribe();
    loop {
        let snapshot = store.snapshot();
        if cond(&snapshot) {
            return;
        }
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            let keys: Vec<String> = snapshot.objects.keys().map(ToString::to_string).collect();
            panic!(
                "timed out after {TIMEOUT:?} waiting for {what}; store has {keys:#?}, reports {:#?}",
                snapshot.reports
            );
        }
    }
}

/// Waits (bounded, polling) until the fake's request log satisfies `cond`.
async fn wait_for_requests(api: &FakeApiServer, what: &str, cond: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond(&api.requests()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; requests: {:#?}",
            api.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn key(kind: Kind, ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(kind, ns, name)
}

fn pod(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "prod", "labels": labels,
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"huge\": true}",
                "ambient.istio.io/redirection": "enabled",
            },
        },
        "spec": {"nodeName": "node-1", "serviceAccountName": "web", "containers": [{"name": "app", "image": "app"}]},
        "status": {"podIP": "10.244.0.5"},
    })
}

fn seed(api: &FakeApiServer) {
    api.apply(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "prod", "labels": {"istio.io/dataplane-mode": "ambient"}},
    }));
    api.apply(pod("web-1", json!({"app": "web"})));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], "clusterIP": "10.96.0.10"},
    }));
    api.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "prod", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.5"]}],
        "ports": [{"port": 8080}],
    }));
    // Most users' YAML is v1alpha3.
    api.apply(json!({
        "apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "prod"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
    }));
    api.apply(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-all", "namespace": "prod"},
        "spec": {"action": "DENY", "rules": [{}]},
    }));
    api.apply(json!({
        "apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
        "metadata": {"name": "strict", "namespace": "prod"},
        "spec": {"mtls": {"mode": "STRICT"}},
    }));
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "waypoint", "namespace": "prod"},
        "spec": {"gatewayClassName": "istio-waypoint", "listeners": []},
    }));
}

fn custom(snapshot: &StoreSnapshot, key: &ObjectKey) -> Option<Value> {
    match snapshot.get(key)? {
        Object::Custom(o) => Some(o.spec.clone()),
        _ => None,
    }
}

fn lists_of(requests: &[String], path: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.starts_with(&format!("GET {path}?")) && !r.contains("watch=true"))
        .count()
}

fn watches_of(requests: &[String], path: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.starts_with(&format!("GET {path}?")) && r.contains("watch=true"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_source_follows_lists_watches_and_relists() {
    // Periodic bookmarks off: which resourceVersion a client resumes from
    // then depends only on what the test does.
    let api = FakeApiServer::start_with(Options {
        bookmark_interval: None,
        ..Options::default()
    })
    .await;
    let destination_rules = api
        .unregister_kind("networking.istio.io", "DestinationRule")
        .unwrap();
    seed(&api);

    let store = Arc::new(Store::new());
    let cancel = CancellationToken::new();
    let source = tokio::spawn(run(api.client().unwrap(), store.clone(), cancel.clone()));

    // The initial list lands, every kind.
    let vs = key(Kind::VirtualService, "prod", "reviews");
    let initial = [
        key(Kind::Namespace, "", "prod"),
        key(Kind::Pod, "prod", "web-1"),
        key(Kind::Service, "prod", "web"),
        key(Kind::EndpointSlice, "prod", "web-abc"),
        vs.clone(),
        key(Kind::AuthorizationPolicy, "prod", "deny-all"),
        key(Kind::PeerAuthentication, "prod", "strict"),
        key(Kind::Gateway, "prod", "waypoint"),
    ];
    wait_for(&store, "the initial list", |s| {
        initial.iter().all(|k| s.get(k).is_some())
    })
    .await;
    let snapshot = store.snapshot();
    let Some(Object::Custom(reviews)) = snapshot.get(&vs) else {
        panic!("VirtualService is not a custom object");
    };
    assert_eq!(reviews.spec["hosts"], json!(["reviews"]));
    assert_eq!(reviews.namespace, "prod");
    let Some(Object::Pod(web)) = snapshot.get(&key(Kind::Pod, "prod", "web-1")) else {
        panic!("pod missing");
    };
    let annotations = web.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.keys().collect::<Vec<_>>(),
        ["ambient.istio.io/redirection"],
        "pods keep only the annotations amesh reads"
    );

    // The missing DestinationRule CRD is reported, then picked up once
    // installed.
    wait_for(&store, "the missing-CRD report", |s| {
        s.reports.get(SOURCE).is_some_and(|r| {
            r.iter().any(|r| {
                r.message
                    .contains("CRD destinationrules.networking.istio.io not installed")
            })
        })
    })
    .await;
    api.register_kind(destination_rules);
    api.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "prod"},
        "spec": {"host": "reviews"},
    }));
    let dr = key(Kind::DestinationRule, "prod", "reviews");
    wait_for(
        &store,
        "the DestinationRule after its CRD is installed",
        |s| s.get(&dr).is_some() && s.reports.get(SOURCE).is_some_and(Vec::is_empty),
    )
    .await;

    // Updates and deletes arrive.
    api.apply(pod("web-1", json!({"app": "web", "version": "v2"})));
    api.delete("v1", "Service", "prod", "web");
    api.apply(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-all", "namespace": "prod"},
        "spec": {"action": "ALLOW"},
    }));
    let ap = key(Kind::AuthorizationPolicy, "prod", "deny-all");
    wait_for(&store, "the update and the delete", |s| {
        let labelled = matches!(s.get(&key(Kind::Pod, "prod", "web-1")),
            Some(Object::Pod(p)) if p.metadata.labels.as_ref().is_some_and(|l| l.get("version").is_some()));
        labelled
            && s.get(&key(Kind::Service, "prod", "web")).is_none()
            && custom(s, &ap).is_some_and(|spec| spec["action"] == "ALLOW")
    })
    .await;

    // A dropped watch resumes from its resourceVersion: no relist.
    let pods = "/api/v1/pods";
    let before = api.requests();
    api.drop_watches();
    api.apply(pod("web-2", json!({"app": "web"})));
    wait_for(&store, "a pod created after the watch dropped", |s| {
        s.get(&key(Kind::Pod, "prod", "web-2")).is_some()
    })
    .await;
    wait_for_requests(&api, "pods watched again", |r| {
        watches_of(r, pods) > watches_of(&before, pods)
    })
    .await;
    assert_eq!(
        lists_of(&api.requests(), pods),
        lists_of(&before, pods),
        "resuming a watch must not relist"
    );

    // An outage during which a pod is deleted and the history compacted:
    // the resumed watch gets 410 Gone, the source relists, and the pod
    // deleted meanwhile is gone.
    let before = api.requests();
    api.while_down(|api| {
        assert!(api.delete("v1", "Pod", "prod", "web-1"));
        api.compact();
    });
    wait_for(
        &store,
        "the relist dropping the pod deleted during the outage",
        |s| {
            s.get(&key(Kind::Pod, "prod", "web-1")).is_none()
                && s.get(&key(Kind::Pod, "prod", "web-2")).is_some()
        },
    )
    .await;
    assert!(
        lists_of(&api.requests(), pods) > lists_of(&before, pods),
        "a relist after 410 Gone"
    );
    // Everything else survived its own relist.
    wait_for(&store, "the other kinds after the relist", |s| {
        s.get(&vs).is_some() && s.get(&dr).is_some() && s.get(&ap).is_some()
    })
    .await;

    cancel.cancel();
    tokio::time::timeout(TIMEOUT, source)
        .await
        .expect("the source stops when cancelled")
        .unwrap()
        .unwrap();
}
