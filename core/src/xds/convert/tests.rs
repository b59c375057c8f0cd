#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use prost::Message;

use super::*;
use crate::config::{ConfigSnapshot, ParseOptions, Protocol, parse_with};
use crate::identity::Identity;
use crate::policy::Connection;
use crate::xds::proto::amesh::{NamespaceEnrollment, PodEnrollment};
use crate::xds::proto::istio::security::{
    self as sec, Authorization, Clause, Match, Scope, StringMatch, string_match::MatchType,
};
use crate::xds::proto::istio::workload::{self as wl, address};
use crate::xds::{ADDRESS_TYPE, AUTHORIZATION_TYPE};

const MESH: &str = "\
namespaces:
  - {name: prod, labels: {istio.io/dataplane-mode: ambient}}
workloads:
  - {uid: prod/db, name: db, namespace: prod, serviceAccount: db, node: n1,
     ips: [10.0.1.1], labels: {app: db, version: v2}}
  - {uid: prod/web, name: web, namespace: prod, serviceAccount: web, node: n1,
     ips: [10.0.1.2], labels: {app: web}, waypoint: {address: 10.0.1.9}}
  - {uid: prod/batch, name: batch, namespace: prod, serviceAccount: batch,
     ips: [\"fd00::3\"], labels: {app: batch}}
  - {uid: sandbox/toy, name: toy, namespace: sandbox, ips: [10.0.2.1], protocol: HBONE}
  - {uid: ext/guarded, name: guarded, namespace: ext, ips: [10.0.4.1], protocol: HBONE}
  - {uid: legacy/old, name: old, namespace: legacy, ips: [10.0.3.1], hostNetwork: true}
services:
  - {name: db, namespace: prod, vips: [10.96.0.1], ports: [{port: 5432}, {port: 80, targetPort: 9090}],
     endpoints: [prod/db]}
  - {name: web, namespace: prod, vips: [10.96.0.2], ports: [{port: 80}], endpoints: [prod/web, prod/batch]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-allow, namespace: prod}
spec:
  selector: {matchLabels: {app: db}}
  rules:
    - from: [{source: {principals: [cluster.local/ns/prod/sa/web]}}]
      to: [{operation: {ports: ['5432']}}]
    - from: [{source: {ipBlocks: [10.0.3.0/24]}}]
      to: [{operation: {ports: ['9090']}}]
    - from: [{source: {serviceAccounts: [batch], notPrincipals: ['*/sa/web']}}]
      when: [{key: destination.ip, values: [10.0.1.0/24]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-sandbox, namespace: prod}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [sandbox]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-6666, namespace: amesh-system}
spec:
  action: DENY
  rules: [{to: [{operation: {ports: ['6666']}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-from-mesh, namespace: istio-system}
spec:
  selector: {matchLabels: {app: web}}
  rules:
    - from: [{source: {principals: ['*']}}]
    - from: [{source: {notIpBlocks: ['10.0.0.0/8']}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: watch, namespace: prod}
spec:
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: ext}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: prod}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: db-metrics, namespace: prod}
spec:
  selector: {matchLabels: {app: db}}
  portLevelMtls: {'9090': {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: toy, namespace: sandbox}
spec:
  selector: {matchLabels: {app: none}}
  portLevelMtls: {'7000': {mode: STRICT}}
";

fn file_snapshot(text: &str) -> ConfigSnapshot {
    parse_with(text, Path::new("mesh.yaml"), &ParseOptions::default()).unwrap()
}

fn to_any<T: Message>(type_url: &str, m: &T) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url.to_owned(),
        value: m.encode_to_vec(),
    }
}

/// The control plane's resources, through the wire, into a client snapshot.
fn through_xds(file: &ConfigSnapshot) -> (ConfigSnapshot, AuthorizationOutput) {
    let out = authorization_resources(file.policies(), file.workloads().map(Arc::as_ref));
    let addresses: Vec<wl::Address> = address_resources(file)
        .iter()
        .map(|(_, a)| decode(&to_any(ADDRESS_TYPE, a), ADDRESS_TYPE).unwrap())
        .collect();
    let auths: Vec<Authorization> = out
        .resources
        .iter()
        .map(|(_, a)| decode(&to_any(AUTHORIZATION_TYPE, a), AUTHORIZATION_TYPE).unwrap())
        .collect();
    let input = XdsInput {
        addresses: addresses.iter().collect(),
        authorizations: auths.iter().collect(),
        ..XdsInput::default()
    };
    (
        snapshot_from_xds(input, &ClientOptions::default()).unwrap(),
        out,
    )
}

/// What ztunnel decides: plaintext is checked against the mTLS mode, then
/// the policies.
fn admits(
    snap: &ConfigSnapshot,
    src: (IpAddr, Option<&Identity>),
    dst_uid: &str,
    port: u16,
) -> bool {
    let dst = snap.workload_by_uid(dst_uid).unwrap();
    if src.1.is_none() && !snap.policies().mtls_mode(dst, port).allows_plaintext() {
        return false;
    }
    let conn = Connection {
        src_ip: src.0,
        src_identity: src.1,
        dst_ip: dst.ips[0],
        dst_port: port,
    };
    snap.policies().authorize(&conn, dst).is_allowed()
}

#[test]
fn round_trip_keeps_every_decision() {
    let file = file_snapshot(MESH);
    let (xds, _) = through_xds(&file);
    let uids: Vec<String> = file.workloads().map(|w| w.uid.clone()).collect();
    let mut decisions = 0;
    for src in file.workloads() {
        for identity in [Some(&src.identity), None] {
            for dst in &uids {
                for port in [80, 5432, 6666, 7000, 9090] {
                    let from = (src.ips[0], identity);
                    let want = admits(&file, from, dst, port);
                    let got = admits(&xds, from, dst, port);
                    assert_eq!(
                        got,
                        want,
                        "{} ({}) → {dst}:{port}",
                        src.uid,
                        if identity.is_some() {
                            "mTLS"
                        } else {
                            "plaintext"
                        }
                    );
                    decisions += 1;
                }
            }
        }
    }
    assert_eq!(decisions, 6 * 2 * 6 * 5);

    // The cases the model is about, so that equality is not vacuous.
    let id = |uid: &str| file.workload_by_uid(uid).unwrap().identity.clone();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let (web, batch, toy) = (id("prod/web"), id("prod/batch"), id("sandbox/toy"));
    for snap in [&file, &xds] {
        assert!(admits(snap, (ip("10.0.1.2"), Some(&web)), "prod/db", 5432));
        assert!(!admits(snap, (ip("10.0.1.2"), Some(&web)), "prod/db", 80));
        assert!(admits(snap, (ip("fd00::3"), Some(&batch)), "prod/db", 80));
        // STRICT namespace: plaintext refused, except on db's PERMISSIVE port.
        assert!(!admits(snap, (ip("10.0.3.1"), None), "prod/db", 5432));
        assert!(admits(snap, (ip("10.0.3.1"), None), "prod/db", 9090));
        assert!(!admits(snap, (ip("10.0.3.1"), None), "prod/web", 80));
        assert!(!admits(snap, (ip("10.0.2.1"), Some(&toy)), "prod/web", 80));
        assert!(admits(
            snap,
            (ip("10.0.1.2"), Some(&web)),
            "sandbox/toy",
            80
        ));
        assert!(!admits(
            snap,
            (ip("10.0.1.2"), Some(&web)),
            "sandbox/toy",
            6666
        ));
        // CUSTOM fails closed.
        assert!(!admits(
            snap,
            (ip("10.0.1.2"), Some(&web)),
            "ext/guarded",
            80
        ));
    }
}

#[test]
fn resources_are_scoped_and_bound_as_istio_does() {
    let file = file_snapshot(MESH);
    let (xds, out) = through_xds(&file);
    let scope_of = |name: &str| {
        let (_, auth) = out
            .resources
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", out.resources));
        (Scope::try_from(auth.scope).unwrap(), auth.action)
    };
    let deny = i32::from(sec::Action::Deny);
    assert_eq!(scope_of("prod/db-allow").0, Scope::WorkloadSelector);
    assert_eq!(scope_of("prod/no-sandbox"), (Scope::Namespace, deny));
    assert_eq!(scope_of("amesh-system/no-6666"), (Scope::Global, deny));
    assert_eq!(scope_of("ext/ext-authz"), (Scope::Namespace, deny));
    assert_eq!(
        scope_of("prod/converted_peer_authentication_default"),
        (Scope::WorkloadSelector, deny)
    );
    assert_eq!(
        scope_of("prod/converted_peer_authentication_db-metrics").0,
        Scope::WorkloadSelector
    );
    assert!(
        out.resources.iter().all(|(n, _)| n != "prod/watch"),
        "AUDIT is not sent"
    );
    // The toy PeerAuthentication selects no one: nothing converted.
    assert!(
        out.resources
            .iter()
            .all(|(n, _)| !n.starts_with("sandbox/"))
    );

    assert_eq!(
        out.bindings["prod/db"],
        [
            "prod/db-allow",
            "prod/converted_peer_authentication_db-metrics"
        ]
    );
    assert_eq!(
        out.bindings["prod/web"],
        [
            "istio-system/web-from-mesh",
            "prod/converted_peer_authentication_default"
        ]
    );
    assert!(!out.bindings.contains_key("sandbox/toy"));
    // Workloads carry the same bindings.
    for w in xds.workloads() {
        let want = out.bindings.get(&w.uid).cloned().unwrap_or_default();
        assert_eq!(w.authorization_policies, want, "{}", w.uid);
    }

    let db = workload_to_proto(&file, file.workload_by_uid("prod/db").unwrap());
    assert_eq!(db.canonical_name, "db");
    assert_eq!(db.canonical_revision, "v2");
    assert_eq!(db.trust_domain, "cluster.local");
    assert_eq!(db.addresses, [vec![10, 0, 1, 1]]);
    let mut services: Vec<_> = db.services.keys().cloned().collect();
    services.sort();
    assert_eq!(services, ["prod/db.prod.svc.cluster.local"]);
    let ports = &db.services["prod/db.prod.svc.cluster.local"].ports;
    assert_eq!((ports[1].service_port, ports[1].target_port), (80, 9090));
    let index = ServiceIndex::new(&file);
    assert_eq!(
        index.workload_to_proto(file.workload_by_uid("prod/db").unwrap()),
        db
    );

    // The rebuilt model.
    let web = xds.workload_by_uid("prod/web").unwrap();
    assert!(web.in_mesh());
    assert_eq!(
        web.waypoint.unwrap().address,
        "10.0.1.9".parse::<IpAddr>().unwrap()
    );
    assert_eq!(web.waypoint.unwrap().port, 15008);
    assert_eq!(
        web.identity.to_string(),
        "spiffe://cluster.local/ns/prod/sa/web"
    );
    let old = xds.workload_by_uid("legacy/old").unwrap();
    assert!(old.host_network && !old.in_mesh());
    let svc = xds.service_by_vip("10.96.0.2".parse().unwrap()).unwrap();
    let endpoints: Vec<_> = svc.endpoints.iter().map(|w| w.uid.as_str()).collect();
    assert_eq!(endpoints, ["prod/batch", "prod/web"]);
    assert_eq!(svc.service.port(80).unwrap().target(), 80);
    assert_eq!(
        xds.service_by_vip("10.96.0.1".parse().unwrap())
            .unwrap()
            .service
            .port(80)
            .unwrap()
            .target(),
        9090
    );

    // config_dump of what came over xDS: the compiled rules.
    let dump = serde_json::to_value(xds.policies()).unwrap();
    let text = dump.to_string();
    assert!(text.contains("\"scope\":\"WORKLOAD_SELECTOR\""), "{text}");
    assert!(text.contains("cluster.local/ns/prod/sa/web"), "{text}");
    assert!(text.contains("10.0.3.0/24"), "{text}");
}

#[test]
fn mesh_wide_strict_alone_is_one_global_policy() {
    let text = format!(
        "{}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: default, namespace: amesh-system}}\nspec: {{mtls: {{mode: STRICT}}}}\n",
        MESH.split("---").next().unwrap()
    );
    let file = file_snapshot(&text);
    let (xds, out) = through_xds(&file);
    let names: Vec<_> = out.resources.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["amesh-system/converted_peer_authentication_default"]
    );
    assert_eq!(out.resources[0].1.scope, i32::from(Scope::Global));
    assert!(out.bindings.is_empty());
    let web = file.workload_by_uid("prod/web").unwrap();
    let id = &web.identity;
    for snap in [&file, &xds] {
        assert!(!admits(snap, (web.ips[0], None), "sandbox/toy", 80));
        assert!(admits(snap, (web.ips[0], Some(id)), "sandbox/toy", 80));
    }
}

#[test]
fn field_numbers_match_istio() {
    let w = wl::Workload {
        uid: "u".into(),
        ..wl::Workload::default()
    };
    assert_eq!(w.encode_to_vec(), [0xa2, 0x01, 1, b'u']);
    let w = wl::Workload {
        authorization_policies: vec!["a".into()],
        ..wl::Workload::default()
    };
    assert_eq!(w.encode_to_vec(), [0x82, 0x01, 1, b'a']);
    let w = wl::Workload {
        network_mode: wl::NetworkMode::HostNetwork.into(),
        ..wl::Workload::default()
    };
    assert_eq!(w.encode_to_vec(), [0xc8, 0x01, 1]);
    let m = Match {
        not_destination_ports: vec![80],
        ..Match::default()
    };
    assert_eq!(m.encode_to_vec(), [0x52, 1, 80]);
    let a = Authorization {
        scope: Scope::WorkloadSelector.into(),
        ..Authorization::default()
    };
    assert_eq!(a.encode_to_vec(), [0x18, 2]);
}

fn workload_address(w: wl::Workload) -> wl::Address {
    wl::Address {
        r#type: Some(address::Type::Workload(w)),
    }
}

fn good_workload() -> wl::Workload {
    wl::Workload {
        uid: "prod/a".into(),
        name: "a".into(),
        namespace: "prod".into(),
        addresses: vec![vec![10, 0, 0, 1]],
        ..wl::Workload::default()
    }
}

fn convert_one(addr: wl::Address) -> Result<ConfigSnapshot, ConvertError> {
    let input = XdsInput {
        addresses: vec![&addr],
        ..XdsInput::default()
    };
    snapshot_from_xds(input, &ClientOptions::default())
}

#[test]
fn bad_workloads_are_refused_naming_the_field() {
    let snap = convert_one(workload_address(good_workload())).unwrap();
    let a = snap.workload_by_uid("prod/a").unwrap();
    assert_eq!(
        a.identity.to_string(),
        "spiffe://cluster.local/ns/prod/sa/default"
    );
    assert_eq!(a.protocol, Protocol::Tcp);

    let mut w = good_workload();
    w.addresses.push(vec![1, 2, 3, 4, 5]);
    let err = convert_one(workload_address(w)).unwrap_err();
    assert_eq!(err.resource, "Address prod/a");
    assert_eq!(err.field, "addresses[1]");
    assert!(err.message.contains("4 or 16 bytes"), "{err}");

    let mut w = good_workload();
    w.tunnel_protocol = 7;
    let err = convert_one(workload_address(w)).unwrap_err();
    assert_eq!(err.field, "workload.tunnel_protocol", "{err}");
    assert!(err.to_string().contains("unknown value 7"), "{err}");

    let mut w = good_workload();
    w.uid.clear();
    let err = convert_one(workload_address(w)).unwrap_err();
    assert_eq!(err.field, "workload.uid", "{err}");

    let mut w = good_workload();
    w.service_account = "Bad_SA".into();
    let err = convert_one(workload_address(w)).unwrap_err();
    assert_eq!(err.field, "service_account", "{err}");

    let mut w = good_workload();
    w.waypoint = Some(wl::GatewayAddress {
        destination: Some(wl::gateway_address::Destination::Hostname(
            wl::NamespacedHostname {
                namespace: "prod".into(),
                hostname: "wp".into(),
            },
        )),
        hbone_mtls_port: 15008,
    });
    let err = convert_one(workload_address(w)).unwrap_err();
    assert_eq!(err.field, "waypoint.hostname", "{err}");

    let err = convert_one(wl::Address { r#type: None }).unwrap_err();
    assert_eq!(err.field, "type", "{err}");
}

fn auth_with(m: Match) -> Authorization {
    Authorization {
        name: "p".into(),
        namespace: "prod".into(),
        rules: vec![sec::Rule {
            clauses: vec![Clause { matches: vec![m] }],
        }],
        ..Authorization::default()
    }
}

#[test]
fn bad_authorizations_are_refused_naming_the_field() {
    let m = Match {
        source_ips: vec![sec::Address {
            address: vec![10, 0, 0, 0],
            length: 33,
        }],
        ..Match::default()
    };
    let err = crate::policy::PolicySet::from_authorizations(vec![auth_with(m)], "amesh-system")
        .unwrap_err();
    assert_eq!(err.resource, "Authorization prod/p");
    assert_eq!(err.field, "rules[0].clauses[0].matches[0].source_ips[0]");
    assert!(err.message.contains("length 33"), "{err}");

    let m = Match {
        principals: vec![StringMatch { match_type: None }],
        destination_ports: vec![70000],
        ..Match::default()
    };
    let err = crate::policy::PolicySet::from_authorizations(vec![auth_with(m)], "amesh-system")
        .unwrap_err();
    assert_eq!(err.field, "rules[0].clauses[0].matches[0].principals[0]");

    let m = Match {
        destination_ports: vec![70000],
        ..Match::default()
    };
    let err = crate::policy::PolicySet::from_authorizations(vec![auth_with(m)], "amesh-system")
        .unwrap_err();
    assert_eq!(
        err.field,
        "rules[0].clauses[0].matches[0].destination_ports[0]"
    );

    let mut a = auth_with(Match::default());
    a.scope = 9;
    let err = crate::policy::PolicySet::from_authorizations(vec![a], "amesh-system").unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.message.as_str()),
        ("scope", "unknown scope 9")
    );

    let err = decode::<Authorization>(&to_any(ADDRESS_TYPE, &good_workload()), AUTHORIZATION_TYPE)
        .unwrap_err();
    assert_eq!(err.field, "type_url", "{err}");
}

#[test]
fn istiod_style_principals_with_spiffe_prefix_match() {
    let m = Match {
        principals: vec![StringMatch {
            match_type: Some(MatchType::Exact(
                "spiffe://cluster.local/ns/prod/sa/web".into(),
            )),
        }],
        ..Match::default()
    };
    let mut auth = auth_with(m);
    auth.scope = Scope::Namespace.into();
    let policies =
        crate::policy::PolicySet::from_authorizations(vec![auth], "amesh-system").unwrap();
    let snap = convert_one(workload_address(good_workload())).unwrap();
    let dst = snap.workload_by_uid("prod/a").unwrap();
    let web = Identity::new("cluster.local", "prod", "web").unwrap();
    let other = Identity::new("cluster.local", "prod", "other").unwrap();
    let conn = |id| Connection {
        src_ip: "10.0.0.9".parse().unwrap(),
        src_identity: Some(id),
        dst_ip: dst.ips[0],
        dst_port: 80,
    };
    assert!(policies.authorize(&conn(&web), dst).is_allowed());
    assert!(!policies.authorize(&conn(&other), dst).is_allowed());
}

#[test]
fn node_agent_snapshot_from_pods_only() {
    let pod = PodEnrollment {
        uid: "u-1".into(),
        name: "web-0".into(),
        namespace: "prod".into(),
        node: "n1".into(),
        addresses: vec![vec![10, 0, 0, 5]],
        ambient: true,
        netns: "cni-42".into(),
        labels: [("app".to_owned(), "web".to_owned())].into(),
        service_account: "web".into(),
        ..PodEnrollment::default()
    };
    let ns = NamespaceEnrollment {
        name: "prod".into(),
        labels: [("istio.io/dataplane-mode".to_owned(), "ambient".to_owned())].into(),
        ambient: true,
    };
    let input = XdsInput {
        pods: vec![&pod],
        namespaces: vec![&ns],
        ..XdsInput::default()
    };
    let snap = snapshot_from_xds(input, &ClientOptions::default()).unwrap();
    let w = snap.workload_by_ip("10.0.0.5".parse().unwrap()).unwrap();
    assert!(w.in_mesh());
    assert_eq!(w.netns.as_deref(), Some("cni-42"));
    assert_eq!(w.labels["app"], "web");
    assert_eq!(
        w.identity.to_string(),
        "spiffe://cluster.local/ns/prod/sa/web"
    );
    assert!(snap.namespace_is_ambient("prod"));

    let bad = PodEnrollment {
        netns: "../x".into(),
        ..pod.clone()
    };
    let input = XdsInput {
        pods: vec![&bad],
        ..XdsInput::default()
    };
    let err = snapshot_from_xds(input, &ClientOptions::default()).unwrap_err();
    assert_eq!(
        (err.resource.as_str(), err.field.as_str()),
        ("PodEnrollment u-1", "netns")
    );
}
