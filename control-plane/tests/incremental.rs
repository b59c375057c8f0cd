//! The derivation redoes only the namespaces a change touches. Whatever it
//! reuses, the result must be exactly what deriving from scratch gives:
//! every step of a sequence of edits (pods, namespaces, services, slices
//! across namespaces, policies in a namespace and in the root namespace,
//! waypoints, deletions) is checked against a fresh derivation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use amesh_control_plane::derive::{self, Derived, Deriver, Settings};
use amesh_control_plane::source::folder::parse_file;
use amesh_control_plane::store::{Object, ObjectKey, Store};

fn settings() -> Settings {
    Settings {
        trust_domain: "cluster.local".into(),
        mesh_namespace: "amesh-system".into(),
        cluster_domain: "cluster.local".into(),
    }
}

const NAMESPACES: &str = r#"
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
metadata: {name: a, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {istio.io/dataplane-mode: ambient}}
"#;

const PROD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: reviews-0, namespace: prod, labels: {app: reviews, version: v1}}
spec:
  nodeName: node-0
  serviceAccountName: reviews
  containers: [{name: app, ports: [{name: http, containerPort: 9080}]}]
status: {podIP: 10.0.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-1, namespace: prod, labels: {app: reviews, version: v2}}
spec: {nodeName: node-1, serviceAccountName: reviews}
status: {podIP: 10.0.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: prod, labels: {app: client}}
spec: {nodeName: node-0, serviceAccountName: client}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: prod, labels: {istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: 10.96.0.10
  selector: {app: reviews}
  ports: [{port: 80, targetPort: http}]
"#;

const LEGACY: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: legacy, labels: {app: old}}
spec: {nodeName: node-1}
status: {podIP: 10.0.1.1}
"#;

const B: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: b, labels: {app: db}}
spec: {nodeName: node-0, serviceAccountName: db}
status: {podIP: 10.0.2.1}
"#;

const CROSS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: db-proxy, namespace: a}
spec: {clusterIP: 10.96.1.1, ports: [{port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-proxy-1
  namespace: a
  labels: {kubernetes.io/service-name: db-proxy}
addressType: IPv4
endpoints:
  - addresses: [10.0.2.1]
    targetRef: {kind: Pod, name: db, namespace: b}
"#;

const WAYPOINT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: prod}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: prod}
spec: {clusterIP: 10.96.0.50, ports: [{port: 15008}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"#;

const PROD_POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: prod}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/prod/sa/client"]}}]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: prod}
spec: {mtls: {mode: STRICT}}
"#;

const ROOT_POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: amesh-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-legacy, namespace: amesh-system}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [legacy]}}]}]
"#;

/// The folder source's way of applying an edit: one file's objects
/// replaced, the other files' objects left as the same `Arc`s.
struct Files {
    store: Store,
    files: BTreeMap<String, Vec<(ObjectKey, Object)>>,
}

impl Files {
    fn new() -> Self {
        Self {
            store: Store::new(),
            files: BTreeMap::new(),
        }
    }

    fn write(&mut self, name: &str, text: &str) {
        let contents = parse_file(Path::new(name), text);
        assert!(
            contents.reports.is_empty(),
            "{name}: {:?}",
            contents.reports
        );
        let new: Vec<(ObjectKey, Object)> = contents
            .entries
            .into_iter()
            .map(|e| (e.key, e.object))
            .collect();
        self.replace(name, new);
    }

    fn remove(&mut self, name: &str) {
        self.replace(name, Vec::new());
    }

    fn replace(&mut self, name: &str, new: Vec<(ObjectKey, Object)>) {
        let keys: BTreeSet<&ObjectKey> = new.iter().map(|(k, _)| k).collect();
        let removed = self
            .files
            .get(name)
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
            .filter(|k| !keys.contains(k))
            .cloned()
            .collect();
        self.store.apply_batch(removed, new.clone());
        self.files.insert(name.to_owned(), new);
    }
}

/// (type, name) → (version, node).
type Versions = BTreeMap<(String, String), (String, Option<String>)>;

/// The resources' versions and the reports of a derivation.
fn summary(d: &Derived) -> (Versions, Vec<String>) {
    let mut resources = BTreeMap::new();
    for (type_url, of_type) in &d.resources.by_type {
        for (name, r) in of_type {
            resources.insert(
                ((*type_url).to_owned(), name.clone()),
                (r.version.clone(), r.node.clone()),
            );
        }
    }
    let mut reports: Vec<String> = d.reports.iter().map(ToString::to_string).collect();
    reports.sort();
    (resources, reports)
}

fn workloads(d: &Derived) -> Vec<String> {
    d.model().workloads().map(|w| format!("{w:?}")).collect()
}

#[test]
fn every_step_matches_a_derivation_from_scratch() {
    let mut files = Files::new();
    let mut deriver = Deriver::new(settings());
    // (step, edit, namespaces it must derive again: None = every one)
    type Edit = Box<dyn Fn(&mut Files)>;
    let steps: Vec<(&str, Edit)> = vec![
        (
            "initial",
            Box::new(|f: &mut Files| {
                f.write("namespaces.yaml", NAMESPACES);
                f.write("prod.yaml", PROD);
                f.write("legacy.yaml", LEGACY);
                f.write("b.yaml", B);
                f.write("waypoint.yaml", WAYPOINT);
            }),
        ),
        (
            "a pod leaves the service's selector",
            Box::new(|f| {
                f.write(
                    "prod.yaml",
                    &PROD.replacen("app: reviews, version: v2", "app: other, version: v2", 1),
                )
            }),
        ),
        (
            "a namespace is labelled ambient",
            Box::new(|f| {
                f.write(
                    "namespaces.yaml",
                    &NAMESPACES.replace(
                        "metadata: {name: legacy}",
                        "metadata: {name: legacy, labels: {istio.io/dataplane-mode: ambient}}",
                    ),
                )
            }),
        ),
        (
            "policies in a namespace",
            Box::new(|f| f.write("prod-policy.yaml", PROD_POLICY)),
        ),
        (
            "policies in the root namespace",
            Box::new(|f| f.write("root.yaml", ROOT_POLICY)),
        ),
        ("the root policies go", Box::new(|f| f.remove("root.yaml"))),
        (
            "a service in a points at a pod in b",
            Box::new(|f| f.write("cross.yaml", CROSS)),
        ),
        (
            "the pod in b changes",
            Box::new(|f| f.write("b.yaml", &B.replace("10.0.2.1", "10.0.2.2"))),
        ),
        (
            "the cross-namespace service changes its port",
            Box::new(|f| f.write("cross.yaml", &CROSS.replace("port: 5432", "port: 5433"))),
        ),
        (
            "the cross-namespace slice goes",
            Box::new(|f| f.write("cross.yaml", &CROSS[..CROSS.find("---").unwrap()])),
        ),
        (
            "the waypoint's service changes address",
            Box::new(|f| {
                f.write(
                    "waypoint.yaml",
                    &WAYPOINT.replace("10.96.0.50", "10.96.0.51"),
                )
            }),
        ),
        (
            "the waypoint goes",
            Box::new(|f| f.write("waypoint.yaml", &WAYPOINT[WAYPOINT.rfind("---").unwrap()..])),
        ),
        (
            "a namespace's pods go",
            Box::new(|f| f.remove("legacy.yaml")),
        ),
        (
            "service ports change",
            Box::new(|f| f.write("prod.yaml", &PROD.replace("port: 80,", "port: 8080,"))),
        ),
        ("namespaces go", Box::new(|f| f.remove("namespaces.yaml"))),
    ];
    // Namespaces each step must derive again, where not all of them.
    let expected: BTreeMap<&str, usize> = [
        ("a pod leaves the service's selector", 1),
        ("a namespace is labelled ambient", 1),
        ("policies in a namespace", 1),
        // a's service lists b's pod: both.
        ("a service in a points at a pod in b", 2),
        ("the pod in b changes", 2),
        ("the cross-namespace service changes its port", 2),
        ("the cross-namespace slice goes", 2),
        ("a namespace's pods go", 1),
        ("service ports change", 1),
    ]
    .into();
    let mut last = None;
    for (step, edit) in &steps {
        edit(&mut files);
        let snapshot = files.store.snapshot();
        let incremental = deriver.derive(&snapshot);
        if let Some(&n) = expected.get(step) {
            assert_eq!(incremental.namespaces_derived, n, "{step}");
        }
        let fresh = derive::derive(&snapshot, &settings());
        assert_eq!(summary(&incremental), summary(&fresh), "after: {step}");
        assert_eq!(workloads(&incremental), workloads(&fresh), "after: {step}");
        let now = summary(&incremental).0;
        assert_ne!(
            last.as_ref(),
            Some(&now),
            "{step}: changed nothing the mesh sees"
        );
        last = Some(now);
    }
}
