//! The folder source end to end: YAML files → store → derivation, as a
//! user of the local mesh sees it (workloads, identities, endpoints,
//! waypoints, reports), and edits applied while running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amesh_control_plane::derive::{self, Derived, Settings};
use amesh_control_plane::source::folder;
use amesh_control_plane::store::{Kind, ObjectKey, Severity, Store};
use amesh_core::config::{Protocol, Workload};
use amesh_core::xds::proto::amesh::{PodEnrollment, WaypointConfig};
use amesh_core::xds::{
    ADDRESS_TYPE, NAMESPACE_ENROLLMENT_TYPE, POD_ENROLLMENT_TYPE, WAYPOINT_CONFIG_TYPE,
};
use prost::Message;
use tokio_util::sync::CancellationToken;

// The verbatim copies (core/src/policy/tests/examples.rs checks they match
// ../shared/examples): CI builds a clean clone without the shared folder.
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/shared-examples");

const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Namespace
metadata:
  name: wpns
  labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: missing}
---
apiVersion: v1
kind: Namespace
metadata: {name: amesh-system, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: prod
  labels: {app: client, istio.io/use-waypoint: wl-waypoint}
spec: {nodeName: node-0, serviceAccountName: client}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: opted-out, namespace: prod, labels: {istio.io/dataplane-mode: none}}
spec: {nodeName: node-0}
status: {podIPs: [{ip: 10.0.0.2}, {ip: "fd00::2"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: host, namespace: prod}
spec: {nodeName: node-0, hostNetwork: true}
status: {podIP: 192.168.0.10}
---
apiVersion: v1
kind: Pod
metadata:
  name: waypoint-0
  namespace: prod
  labels: {gateway.networking.k8s.io/gateway-class-name: istio-waypoint}
spec: {nodeName: node-1}
status: {podIP: 10.0.0.9}
---
apiVersion: v1
kind: Pod
metadata: {name: ztunnel-a, namespace: amesh-system}
spec: {nodeName: node-0}
status: {podIP: 10.0.9.1}
---
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: legacy}
spec: {nodeName: node-1}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: opted-in, namespace: legacy, labels: {istio.io/dataplane-mode: ambient}}
spec: {nodeName: node-1}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: legacy}
status: {phase: Succeeded, podIP: 10.0.1.3}
---
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: wpns}
spec: {nodeName: node-1, serviceAccountName: app}
status:
  podIP: 10.0.2.1
  conditions: [{type: Ready, status: "False"}]
"#;

const SERVICES: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: reviews-1
  namespace: prod
  labels: {app: reviews, istio.io/use-waypoint: waypoint}
spec:
  nodeName: node-1
  serviceAccountName: reviews
  containers: [{name: app, ports: [{name: http, containerPort: 9080}]}]
status: {podIP: 10.0.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-0, namespace: prod, labels: {app: reviews}}
spec: {nodeName: node-0, serviceAccountName: reviews}
status: {podIP: 10.0.0.10}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: prod, labels: {istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: 10.96.0.10
  selector: {app: reviews}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: prod}
spec:
  clusterIPs: [10.96.0.11, "fd00:96::11"]
  selector: {app: nobody}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ratings-abc
  namespace: prod
  labels: {kubernetes.io/service-name: ratings}
addressType: IPv4
endpoints:
  - addresses: [10.0.0.1]
    targetRef: {kind: Pod, name: client, namespace: prod}
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: prod}
spec: {clusterIP: 10.96.0.50, ports: [{port: 15008}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: prod}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wl-waypoint, namespace: prod, labels: {istio.io/waypoint-for: workload}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
  addresses: [{type: IPAddress, value: 10.96.0.99}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"#;

const BAD: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: broken, namespace: prod}
spec:
  ports:
    - port: eighty
---
apiVersion: v1
kind: Pod
metadata: {name: late, namespace: prod}
spec: {nodeName: node-0}
status: {podIP: 10.0.0.30}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: prod}
spec: {hosts: [example.com]}
"#;

fn settings() -> Settings {
    Settings {
        trust_domain: "cluster.local".into(),
        mesh_namespace: "amesh-system".into(),
        cluster_domain: "cluster.local".into(),
    }
}

fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, Arc<Store>, Derived) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let store = Arc::new(Store::new());
    folder::load_dir(dir.path(), &store).unwrap();
    let derived = derive::derive(&store.snapshot(), &settings());
    (dir, store, derived)
}

fn workload<'a>(d: &'a Derived, uid: &str) -> &'a Workload {
    d.model()
        .workload_by_uid(uid)
        .unwrap_or_else(|| panic!("no workload {uid}"))
}

fn reports_about<'a>(d: &'a Derived, needle: &str) -> Vec<&'a amesh_control_plane::store::Report> {
    d.reports
        .iter()
        .filter(|r| r.to_string().contains(needle))
        .collect()
}

#[test]
fn enrollment_identity_and_health_follow_istio_rules() {
    let (_dir, _store, d) = load(&[("mesh.yaml", MESH)]);
    let client = workload(&d, "prod/client");
    assert_eq!(client.protocol, Protocol::Hbone);
    assert_eq!(
        client.identity.to_string(),
        "spiffe://cluster.local/ns/prod/sa/client"
    );
    assert_eq!(client.node, "node-0");
    assert_eq!(client.ips, ["10.0.0.1".parse::<IpAddr>().unwrap()]);

    let opted_out = workload(&d, "prod/opted-out");
    assert_eq!(opted_out.protocol, Protocol::Tcp);
    assert_eq!(opted_out.ips.len(), 2, "podIPs win over podIP");
    assert_eq!(
        opted_out.identity.to_string(),
        "spiffe://cluster.local/ns/prod/sa/default"
    );
    for never in ["prod/host", "prod/waypoint-0", "amesh-system/ztunnel-a"] {
        assert_eq!(workload(&d, never).protocol, Protocol::Tcp, "{never}");
    }
    assert_eq!(workload(&d, "legacy/old").protocol, Protocol::Tcp);
    assert_eq!(workload(&d, "legacy/opted-in").protocol, Protocol::Hbone);
    assert!(
        d.model().workload_by_uid("legacy/done").is_none(),
        "finished pods are gone"
    );
    assert!(!workload(&d, "wpns/app").is_healthy(), "Ready=False");
    assert!(client.is_healthy());

    // Node agents get each decision with its reason, only on their node.
    let enrollments = d.resources.of_type(POD_ENROLLMENT_TYPE).unwrap();
    let host = &enrollments["prod/host"];
    assert_eq!(host.node.as_deref(), Some("node-0"));
    let host = PodEnrollment::decode(host.body.value.as_slice()).unwrap();
    assert!(!host.ambient);
    assert!(host.reason.contains("hostNetwork"), "{}", host.reason);
    let namespaces = d.resources.of_type(NAMESPACE_ENROLLMENT_TYPE).unwrap();
    assert!(namespaces.contains_key("prod") && namespaces.contains_key("legacy"));
    assert!(
        d.resources
            .of_type(ADDRESS_TYPE)
            .unwrap()
            .contains_key("prod/client")
    );
}

#[test]
fn endpoints_come_from_slices_else_selectors() {
    let (_dir, _store, d) = load(&[("mesh.yaml", MESH), ("services.yaml", SERVICES)]);
    let service = |name: &str| {
        d.model()
            .services()
            .find(|s| s.service.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
            .service
            .clone()
    };
    let reviews = service("reviews");
    assert_eq!(reviews.hostname, "reviews.prod.svc.cluster.local");
    assert_eq!(reviews.endpoints, ["prod/reviews-0", "prod/reviews-1"]);
    assert_eq!(reviews.vips, ["10.96.0.10".parse::<IpAddr>().unwrap()]);
    // Named targetPort: the container port of that name on an endpoint.
    assert_eq!(reviews.ports[0].target(), 9080);
    let ratings = service("ratings");
    assert_eq!(
        ratings.endpoints,
        ["prod/client"],
        "the slice, not the selector"
    );
    assert_eq!(ratings.vips.len(), 2);
    assert_eq!(ratings.ports[0].target(), 8080);
}

#[test]
fn waypoints_bind_by_service_pod_and_namespace_labels() {
    let (_dir, _store, d) = load(&[("mesh.yaml", MESH), ("services.yaml", SERVICES)]);
    let wp = |ip: &str| Some(format!("{ip}:15008"));
    let reviews = d
        .model()
        .services()
        .find(|s| s.service.name == "reviews")
        .unwrap();
    assert_eq!(
        reviews
            .service
            .waypoint
            .map(|w| format!("{}:{}", w.address, w.port)),
        wp("10.96.0.50"),
        "service label → the Service named like the Gateway"
    );
    let client = workload(&d, "prod/client");
    assert_eq!(
        client.waypoint.map(|w| format!("{}:{}", w.address, w.port)),
        wp("10.96.0.99"),
        "pod label → a workload waypoint at its spec.addresses"
    );
    // reviews-1 asks a service-only waypoint: refused, reported.
    assert_eq!(workload(&d, "prod/reviews-1").waypoint, None);
    let refused = reports_about(&d, "Pod prod/reviews-1");
    assert_eq!(refused.len(), 1, "{:#?}", d.reports);
    assert_eq!(refused[0].severity, Severity::Error);
    assert!(refused[0].message.contains("does not serve workloads"));
    assert!(refused[0].origin.ends_with("services.yaml (document 0)"));
    // The namespace names a waypoint that does not exist: reported once.
    assert_eq!(workload(&d, "wpns/app").waypoint, None);
    let missing = reports_about(&d, "wpns/missing");
    assert_eq!(missing.len(), 1, "{:#?}", d.reports);
    assert_eq!(missing[0].object, "Namespace wpns");

    // The waypoint learns what it serves and the L7 resources for it.
    let configs = d.resources.of_type(WAYPOINT_CONFIG_TYPE).unwrap();
    let config = WaypointConfig::decode(configs["prod/waypoint"].body.value.as_slice()).unwrap();
    assert_eq!(config.services, ["prod/reviews.prod.svc.cluster.local"]);
    assert_eq!(config.resources.len(), 1);
    assert_eq!(config.resources[0].kind, "VirtualService");
    let wl = WaypointConfig::decode(configs["prod/wl-waypoint"].body.value.as_slice()).unwrap();
    assert_eq!(wl.workloads, ["prod/client"]);
}

#[test]
fn a_bad_document_is_reported_and_the_rest_applies() {
    let (_dir, store, d) = load(&[("mesh.yaml", MESH), ("bad.yaml", BAD)]);
    let bad = reports_about(&d, "Service prod/broken");
    assert_eq!(bad.len(), 1, "{:#?}", d.reports);
    assert_eq!(bad[0].severity, Severity::Error);
    assert!(
        bad[0].origin.ends_with("bad.yaml (document 0)"),
        "{}",
        bad[0].origin
    );
    assert_eq!(bad[0].field, "spec.ports[0].port");
    assert!(bad[0].message.contains("line 7"), "{}", bad[0].message);
    assert!(workload(&d, "prod/late").in_mesh(), "document 1 applies");
    let unsupported = reports_about(&d, "ServiceEntry");
    assert_eq!(unsupported.len(), 1);
    assert_eq!(unsupported[0].severity, Severity::Unsupported);
    assert!(unsupported[0].origin.ends_with("bad.yaml (document 2)"));
    assert!(unsupported[0].message.contains("not supported by amesh"));
    assert!(
        store
            .snapshot()
            .get(&ObjectKey::new(Kind::Service, "prod", "broken"))
            .is_none()
    );
}

#[test]
fn a_policy_that_does_not_validate_is_skipped_with_its_field() {
    let policy = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: typo, namespace: prod}
spec:
  action: DENY
  rules: [{from: [{source: {principal: [x]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: fine, namespace: prod}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [sandbox]}}]}]}
"#;
    let (_dir, _store, d) = load(&[("mesh.yaml", MESH), ("policy.yaml", policy)]);
    let typo = reports_about(&d, "AuthorizationPolicy prod/typo");
    assert_eq!(typo.len(), 1, "{:#?}", d.reports);
    assert_eq!(typo[0].severity, Severity::Error);
    assert!(typo[0].origin.ends_with("policy.yaml (document 0)"));
    assert_eq!(typo[0].field, "spec.rules[0].from[0].source");
    assert!(typo[0].message.contains("`principal`"), "{}", typo[0]);
    assert_eq!(d.model().policies().len(), 1);
}

#[test]
fn every_example_loads_without_errors() {
    let store = Store::new();
    folder::load_dir(Path::new(EXAMPLES), &store).unwrap();
    let snapshot = store.snapshot();
    assert!(
        snapshot.objects.len() >= 10,
        "examples not found at {EXAMPLES}"
    );
    let d = derive::derive(&snapshot, &settings());
    let errors: Vec<String> = d
        .reports
        .iter()
        .filter(|r| r.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Polls `check` until it holds or `timeout` passes.
async fn poll(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_file_name(".tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn edits_apply_while_running() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let store = Arc::new(Store::new());
    let cancel = CancellationToken::new();
    let watching = folder::start(dir.path(), &store).unwrap();
    let task = tokio::spawn(watching.run(store.clone(), cancel.clone()));
    let derived = derive::run(
        store.clone(),
        settings(),
        Duration::from_millis(10),
        cancel.clone(),
    );
    assert!(
        derived
            .borrow()
            .model()
            .workload_by_uid("prod/client")
            .is_some()
    );

    // A new file.
    let late = dir.path().join("late.yaml");
    write_atomic(&late, BAD);
    poll(Duration::from_secs(10), "the new file's pod", || {
        derived
            .borrow()
            .model()
            .workload_by_uid("prod/late")
            .is_some()
    })
    .await;
    // An edit: the pod moves to another IP.
    write_atomic(&late, &BAD.replace("10.0.0.30", "10.0.0.31"));
    poll(Duration::from_secs(10), "the edited pod", || {
        derived
            .borrow()
            .model()
            .workload_by_uid("prod/late")
            .is_some_and(|w| w.ips == ["10.0.0.31".parse::<IpAddr>().unwrap()])
    })
    .await;
    // A rename keeps the objects; a removal drops them and their reports.
    let renamed = dir.path().join("renamed.yml");
    std::fs::rename(&late, &renamed).unwrap();
    poll(
        Duration::from_secs(10),
        "the renamed file's reports",
        || {
            derived
                .borrow()
                .reports
                .iter()
                .any(|r| r.origin.contains("renamed.yml"))
        },
    )
    .await;
    assert!(
        derived
            .borrow()
            .model()
            .workload_by_uid("prod/late")
            .is_some()
    );
    std::fs::remove_file(&renamed).unwrap();
    poll(
        Duration::from_secs(10),
        "the removed file's pod to go",
        || {
            let d = derived.borrow();
            d.model().workload_by_uid("prod/late").is_none()
                && !d.reports.iter().any(|r| r.origin.contains("renamed.yml"))
        },
    )
    .await;

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// 10,000 pods, 1,000 services, 500 policies in 50 namespaces: derivation
/// time is printed (not asserted: debug builds vary too much).
#[test]
fn derive_at_scale() {
    let dir = tempfile::tempdir().unwrap();
    let (namespaces, pods, services, policies) = (50, 200, 20, 10);
    for ns in 0..namespaces {
        let mut out = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{ns}, labels: {{istio.io/dataplane-mode: ambient}}}}\n"
        );
        for p in 0..pods {
            let k = ns * pods + p + 1;
            let _ = write!(
                out,
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{p}, namespace: ns-{ns}, labels: {{app: app-{app}}}}}\n\
                 spec: {{nodeName: node-{node}, serviceAccountName: sa-{app}}}\nstatus: {{podIP: 10.128.{a}.{b}}}\n",
                app = p % services,
                node = k % 100,
                a = k / 250,
                b = k % 250 + 1,
            );
        }
        for s in 0..services {
            let k = ns * services + s;
            let _ = write!(
                out,
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: ns-{ns}}}\n\
                 spec: {{clusterIP: 10.96.{}.{}, ports: [{{port: 80, targetPort: 8080}}], selector: {{app: app-{s}}}}}\n",
                k / 250,
                k % 250 + 1,
            );
        }
        for a in 0..policies {
            let _ = write!(
                out,
                "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-{a}, namespace: ns-{ns}}}\n\
                 spec:\n  selector: {{matchLabels: {{app: app-{a}}}}}\n  action: ALLOW\n  rules:\n    - from: [{{source: {{principals: [cluster.local/ns/ns-{ns}/sa/sa-1]}}}}]\n"
            );
        }
        std::fs::write(dir.path().join(format!("ns-{ns}.yaml")), out).unwrap();
    }
    let store = Store::new();
    let started = Instant::now();
    folder::load_dir(dir.path(), &store).unwrap();
    let load = started.elapsed();
    let snapshot = store.snapshot();
    let mut deriver = derive::Deriver::new(settings());
    let started = Instant::now();
    let first = deriver.derive(&snapshot);
    let cold = started.elapsed();
    let started = Instant::now();
    let again = deriver.derive(&snapshot);
    let warm = started.elapsed();
    assert_eq!(first.model().workloads().count(), namespaces * pods);
    assert_eq!(first.resources, again.resources);
    assert!(first.reports.is_empty(), "{:#?}", &first.reports[..3]);
    eprintln!(
        "10k pods: folder load {:.1} ms, derive cold {:.1} ms, warm {:.1} ms, {} resources",
        load.as_secs_f64() * 1e3,
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        first.resources.len()
    );
}
