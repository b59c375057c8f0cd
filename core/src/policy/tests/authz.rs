//! AuthorizationPolicy semantics.

use super::*;

const ORDERS_PRINCIPAL: &str = "cluster.local/ns/production/sa/order-service";

fn deny_reason(d: &Decision) -> &DenyReason {
    match d {
        Decision::Deny { reason, .. } => reason,
        Decision::Allow { .. } => panic!("allowed"),
    }
}

#[test]
fn no_policy_allows() {
    let mesh = Mesh::new("");
    assert!(mesh.policies().is_empty());
    assert_eq!(mesh.decide(TOY, DB, 1), Decision::Allow { audited: vec![] });
    assert_eq!(mesh.decide(TOY, DB, 1).to_string(), "allowed");
}

#[test]
fn deny_is_checked_before_allow() {
    let allow = authz(
        "production",
        "allow-orders",
        &format!("  rules:\n    - from: [{{source: {{principals: [{ORDERS_PRINCIPAL}]}}}}]"),
    );
    let deny = authz(
        "production",
        "no-ssh",
        "  action: DENY\n  rules:\n    - to: [{operation: {ports: [\"22\"]}}]",
    );
    // Both orders of documents: the action decides, not the position.
    for text in [format!("{allow}{deny}"), format!("{deny}{allow}")] {
        let mesh = Mesh::new(&text);
        assert!(mesh.allowed(ORDERS, DB, 80));
        let d = mesh.decide(ORDERS, DB, 22);
        assert_eq!(d.to_string(), "denied by policy production/no-ssh");
        assert!(!mesh.allowed(PAYMENTS, DB, 80));
    }
}

#[test]
fn empty_spec_denies_all_and_empty_rule_allows_all() {
    let mesh = Mesh::new(&authz("production", "deny-all", "  {}"));
    for from in [ORDERS, TOY, LEGACY] {
        let d = mesh.decide(from, DB, 3306);
        assert_eq!(
            d.to_string(),
            "no ALLOW policy matched (production/deny-all)"
        );
    }
    assert!(mesh.allowed(ORDERS, TOY, 80));
    // Explicit ALLOW with no rules: the same.
    let mesh = Mesh::new(&authz(
        "production",
        "deny-all",
        "  action: ALLOW\n  rules: []",
    ));
    assert!(!mesh.allowed(ORDERS, DB, 80));
    // `rules: [{}]` matches everything, plaintext included.
    let mesh = Mesh::new(&authz("production", "allow-all", "  rules: [{}]"));
    assert!(mesh.allowed(LEGACY, DB, 80));
    // DENY without rules denies nothing.
    let mesh = Mesh::new(&authz("production", "nothing", "  action: DENY"));
    assert!(mesh.allowed(TOY, DB, 80));
    // DENY with `{}` denies everything.
    let mesh = Mesh::new(&authz("production", "all", "  action: DENY\n  rules: [{}]"));
    assert!(!mesh.allowed(ORDERS, DB, 80));
}

#[test]
fn mesh_wide_from_either_root_namespace() {
    let spec = "  action: DENY\n  rules:\n    - from: [{source: {namespaces: [sandbox]}}]";
    for root in ["amesh-system", "istio-system"] {
        let mesh = Mesh::new(&authz(root, "no-sandbox", spec));
        for to in [DB, LEGACY, CTL, TOY] {
            assert_eq!(
                mesh.decide(TOY, to, 80).to_string(),
                format!("denied by policy {root}/no-sandbox"),
                "{to}"
            );
        }
        assert!(mesh.allowed(ORDERS, DB, 80));
    }
    // In any other namespace it protects that namespace only.
    let mesh = Mesh::new(&authz("legacy", "no-sandbox", spec));
    assert!(!mesh.allowed(TOY, LEGACY, 80));
    assert!(mesh.allowed(TOY, DB, 80));
}

#[test]
fn mesh_wide_selector_selects_in_every_namespace() {
    let mesh = Mesh::new(&authz(
        "istio-system",
        "db-lockdown",
        "  selector: {matchLabels: {app: database}}\n  rules:\n    - to: [{operation: {ports: [\"3306\"]}}]",
    ));
    assert!(mesh.allowed(TOY, DB, 3306));
    assert!(!mesh.allowed(TOY, DB, 80));
    assert!(mesh.allowed(TOY, ORDERS, 80));
    assert_eq!(
        mesh.policies().policies_for(&mesh.workload(DB)),
        [policy("istio-system", "db-lockdown")]
    );
    assert!(
        mesh.policies()
            .policies_for(&mesh.workload(ORDERS))
            .is_empty()
    );
}

#[test]
fn configured_root_namespace() {
    let spec = "  action: DENY\n  rules:\n    - from: [{source: {namespaces: [sandbox]}}]";
    let options = ParseOptions::new("cluster.local").root_namespace("mesh-root");
    let mesh = Mesh::with_options(&authz("mesh-root", "p", spec), &options);
    assert_eq!(mesh.policies().root_namespace(), "mesh-root");
    assert!(!mesh.allowed(TOY, DB, 80));
    // amesh-system is not a root namespace any more; istio-system still is.
    let mesh = Mesh::with_options(&authz("amesh-system", "p", spec), &options);
    assert!(mesh.allowed(TOY, DB, 80));
    assert!(!mesh.allowed(TOY, CTL, 80));
    let mesh = Mesh::with_options(&authz("istio-system", "p", spec), &options);
    assert!(!mesh.allowed(TOY, DB, 80));
}

#[test]
fn selector_labels_must_all_match() {
    let spec = |labels: &str| {
        format!("  selector: {{matchLabels: {labels}}}\n  action: DENY\n  rules: [{{}}]")
    };
    let mesh = Mesh::new(&authz(
        "production",
        "p",
        &spec("{app: database, version: v1}"),
    ));
    assert!(!mesh.allowed(ORDERS, DB, 80));
    assert!(mesh.allowed(DB, ORDERS, 80));
    let mesh = Mesh::new(&authz(
        "production",
        "p",
        &spec("{app: database, version: v2}"),
    ));
    assert!(mesh.allowed(ORDERS, DB, 80));
}

#[test]
fn principal_and_namespace_wildcards() {
    let allow = |source: &str| {
        Mesh::new(&authz(
            "production",
            "p",
            &format!("  rules:\n    - from: [{{source: {source}}}]"),
        ))
    };
    // `*`: any identity, never plaintext.
    let mesh = allow("{principals: [\"*\"]}");
    assert!(mesh.allowed(TOY, DB, 80));
    assert!(!mesh.allowed(LEGACY, DB, 80));
    // Prefix, suffix, and spiffe:// written out.
    let mesh = allow("{principals: [\"cluster.local/ns/production/*\"]}");
    assert!(mesh.allowed(ORDERS, DB, 80) && !mesh.allowed(TOY, DB, 80));
    let mesh = allow("{principals: [\"*/sa/order-service\"]}");
    assert!(mesh.allowed(ORDERS, DB, 80) && !mesh.allowed(PAYMENTS, DB, 80));
    let mesh = allow(&format!(
        "{{principals: [\"spiffe://{ORDERS_PRINCIPAL}\"]}}"
    ));
    assert!(mesh.allowed(ORDERS, DB, 80) && !mesh.allowed(PAYMENTS, DB, 80));
    let mesh = allow("{namespaces: [\"prod*\"]}");
    assert!(mesh.allowed(ORDERS, DB, 80) && !mesh.allowed(TOY, DB, 80));
    let mesh = allow("{namespaces: [\"*box\"]}");
    assert!(mesh.allowed(TOY, DB, 80) && !mesh.allowed(ORDERS, DB, 80));
    let mesh = allow("{namespaces: [\"*\"]}");
    assert!(mesh.allowed(TOY, DB, 80) && !mesh.allowed(LEGACY, DB, 80));
    // Several fields in one source: all must match.
    let mesh = allow("{namespaces: [production], notPrincipals: [\"*/sa/payment-service\"]}");
    assert!(mesh.allowed(ORDERS, DB, 80));
    assert!(!mesh.allowed(PAYMENTS, DB, 80));
    // Service accounts (Istio 1.24+): `name` is in the policy's namespace.
    let mesh = allow("{serviceAccounts: [order-service, \"sandbox/default\"]}");
    assert!(mesh.allowed(ORDERS, DB, 80) && mesh.allowed(TOY, DB, 80));
    assert!(!mesh.allowed(PAYMENTS, DB, 80) && !mesh.allowed(LEGACY, DB, 80));
}

#[test]
fn negative_identity_fields_match_plaintext() {
    // Istio's STRICT-by-policy: deny whoever has no identity.
    let mesh = Mesh::new(&authz(
        "production",
        "require-mtls",
        "  action: DENY\n  rules:\n    - from: [{source: {notPrincipals: [\"*\"]}}]",
    ));
    assert!(!mesh.allowed(LEGACY, DB, 80));
    assert!(mesh.allowed(TOY, DB, 80));
    let mesh = Mesh::new(&authz(
        "production",
        "p",
        "  rules:\n    - from: [{source: {notNamespaces: [sandbox]}}]",
    ));
    assert!(mesh.allowed(LEGACY, DB, 80));
    assert!(mesh.allowed(ORDERS, DB, 80));
    assert!(!mesh.allowed(TOY, DB, 80));
}

#[test]
fn ip_blocks_v4_and_v6() {
    let mesh = Mesh::new(&authz(
        "production",
        "p",
        "  rules:\n    - from: [{source: {ipBlocks: [\"fd00:1::/64\", 10.0.2.1]}}]",
    ));
    assert!(mesh.allowed(V6, DB, 80));
    assert!(mesh.allowed(TOY, DB, 80));
    assert!(!mesh.allowed(ORDERS, DB, 80));
    let mesh = Mesh::new(&authz(
        "production",
        "p",
        "  action: DENY\n  rules:\n    - from: [{source: {notIpBlocks: [\"fd00::/16\"]}}]",
    ));
    assert!(mesh.allowed(V6, DB, 80));
    assert!(!mesh.allowed(ORDERS, DB, 80));
}

#[test]
fn ports_and_not_ports() {
    let mesh = Mesh::new(&authz(
        "production",
        "p",
        "  rules:\n    - to: [{operation: {ports: [3306, \"3307\"]}}, {operation: {notPorts: [\"1\", \"2\"]}}]",
    ));
    assert!(mesh.allowed(TOY, DB, 3306) && mesh.allowed(TOY, DB, 3307) && mesh.allowed(TOY, DB, 3));
    // Port 1 is neither in the first list nor outside the second.
    assert!(!mesh.allowed(TOY, DB, 1));
}

#[test]
fn when_conditions_with_values_and_not_values() {
    let rule = |when: &str| {
        Mesh::new(&authz(
            "production",
            "p",
            &format!("  rules:\n    - when:\n{when}"),
        ))
    };
    let mesh = rule("        - {key: source.namespace, notValues: [sandbox]}");
    assert!(mesh.allowed(ORDERS, DB, 80));
    assert!(!mesh.allowed(TOY, DB, 80));
    // Both: both must hold.
    let mesh = rule(
        "        - {key: destination.port, values: [\"3306\", \"3307\"], notValues: [\"3307\"]}",
    );
    assert!(mesh.allowed(TOY, DB, 3306));
    assert!(!mesh.allowed(TOY, DB, 3307));
    assert!(!mesh.allowed(TOY, DB, 3308));
    // All conditions must hold.
    let mesh = rule(
        "        - {key: source.ip, values: [10.0.0.0/16], notValues: [10.0.2.0/24]}\n        \
         - {key: source.principal, values: [\"*/sa/order-service\"]}",
    );
    assert!(mesh.allowed(ORDERS, DB, 80));
    assert!(!mesh.allowed(PAYMENTS, DB, 80));
    assert!(!mesh.allowed(TOY, DB, 80));
    let mesh = rule("        - {key: destination.ip, values: [\"fd00:1::5\"]}");
    assert!(mesh.allowed(ORDERS, V6, 80));
    let mesh = rule("        - {key: destination.ip, notValues: [\"fd00:1::5\"]}");
    assert!(!mesh.allowed(ORDERS, V6, 80));
}

#[test]
fn l7_rule_in_allow_fails_closed() {
    let mesh = Mesh::new(&authz(
        "production",
        "get-only",
        "  rules:\n    - from: [{source: {namespaces: [production]}}]\n      \
         to: [{operation: {methods: [GET], ports: [\"8080\"]}}]\n    \
         - from: [{source: {principals: [\"*/sa/payment-service\"]}}]",
    ));
    // The L4 parts match, but the rule needs HTTP: it never matches here.
    let d = mesh.decide(ORDERS, DB, 8080);
    assert_eq!(
        *deny_reason(&d),
        DenyReason::NoAllowMatch {
            allow_policies: vec![policy("production", "get-only")],
            needs_waypoint: vec![policy("production", "get-only")],
        }
    );
    assert!(d.needs_waypoint());
    assert_eq!(
        d.to_string(),
        "no ALLOW policy matched (production/get-only) \
         (policy production/get-only has L7 rules: they need a waypoint)"
    );
    // The pure L4 rule of the same policy still works.
    assert!(mesh.allowed(PAYMENTS, DB, 8080));
    let (p, attributes) = mesh.policies().needing_waypoint().next().unwrap();
    assert_eq!(
        (p, attributes),
        (&policy("production", "get-only"), vec!["methods"])
    );
}

#[test]
fn every_l7_attribute_fails_closed_in_allow() {
    for part in [
        "from: [{source: {requestPrincipals: [\"*\"]}}]",
        "from: [{source: {notRequestPrincipals: [\"x\"]}}]",
        "from: [{source: {remoteIpBlocks: [10.0.0.0/8]}}]",
        "from: [{source: {notRemoteIpBlocks: [10.0.0.0/8]}}]",
        "to: [{operation: {hosts: [a]}}]",
        "to: [{operation: {notHosts: [a]}}]",
        "to: [{operation: {methods: [GET]}}]",
        "to: [{operation: {notMethods: [GET]}}]",
        "to: [{operation: {paths: [/a]}}]",
        "to: [{operation: {notPaths: [/a]}}]",
        "when: [{key: \"request.headers[x-user]\", values: [a]}]",
        "when: [{key: connection.sni, values: [a]}]",
        "when: [{key: \"request.auth.claims[iss]\", notValues: [a]}]",
    ] {
        let mesh = Mesh::new(&authz(
            "production",
            "p",
            &format!("  rules:\n    - {part}"),
        ));
        let d = mesh.decide(ORDERS, DB, 80);
        assert!(!d.is_allowed() && d.needs_waypoint(), "{part}: {d}");
    }
}

#[test]
fn l7_rule_in_deny_denies_on_its_l4_parts() {
    let mesh = Mesh::new(&authz(
        "production",
        "no-sandbox-posts",
        "  action: DENY\n  rules:\n    - from: [{source: {namespaces: [sandbox]}}]\n      \
         to: [{operation: {methods: [POST], ports: [\"8080\"]}}]",
    ));
    let d = mesh.decide(TOY, DB, 8080);
    assert_eq!(
        *deny_reason(&d),
        DenyReason::DenyPolicy {
            needs_waypoint: true
        }
    );
    assert_eq!(
        d.to_string(),
        "denied by policy production/no-sandbox-posts (policy production/no-sandbox-posts \
         has L7 rules: they need a waypoint; enforced here on their L4 parts)"
    );
    // L4 parts still narrow it: other port, other namespace.
    assert!(mesh.allowed(TOY, DB, 9090));
    assert!(mesh.allowed(ORDERS, DB, 8080));
    // A rule that is all L7 denies everything.
    let mesh = Mesh::new(&authz(
        "production",
        "p",
        "  action: DENY\n  rules:\n    - when: [{key: \"request.headers[x]\", values: [a]}]",
    ));
    assert!(!mesh.allowed(ORDERS, DB, 80));
    // A matching pure L4 rule makes the denial certain.
    let mesh = Mesh::new(&authz(
        "production",
        "p",
        "  action: DENY\n  rules:\n    - to: [{operation: {paths: [/admin]}}]\n    \
         - from: [{source: {namespaces: [sandbox]}}]",
    ));
    assert!(!mesh.decide(TOY, DB, 80).needs_waypoint());
    assert!(mesh.decide(ORDERS, DB, 80).needs_waypoint());
}

#[test]
fn audit_never_changes_the_decision() {
    let audit = authz(
        "production",
        "watch-sandbox",
        "  action: AUDIT\n  rules:\n    - from: [{source: {namespaces: [sandbox]}}]",
    );
    let mesh = Mesh::new(&audit);
    let d = mesh.decide(TOY, DB, 80);
    assert_eq!(
        d,
        Decision::Allow {
            audited: vec![policy("production", "watch-sandbox")]
        }
    );
    assert_eq!(
        d.to_string(),
        "allowed; audited by production/watch-sandbox"
    );
    assert_eq!(
        mesh.decide(ORDERS, DB, 80),
        Decision::Allow { audited: vec![] }
    );
    // With a DENY: still denied, and audited.
    let deny = authz("production", "deny", "  action: DENY\n  rules: [{}]");
    let mesh = Mesh::new(&format!("{audit}{deny}"));
    let d = mesh.decide(TOY, DB, 80);
    assert!(!d.is_allowed());
    assert_eq!(d.audited(), [policy("production", "watch-sandbox")]);
    // An AUDIT policy alone is not an ALLOW policy: nothing becomes denied.
    let mesh = Mesh::new(&authz("production", "a", "  action: AUDIT\n  rules: []"));
    assert!(mesh.allowed(TOY, DB, 80));
    // L7 rules never match in AUDIT.
    let mesh = Mesh::new(&authz(
        "production",
        "a",
        "  action: AUDIT\n  rules:\n    - to: [{operation: {methods: [GET]}}]",
    ));
    assert_eq!(
        mesh.decide(TOY, DB, 80),
        Decision::Allow { audited: vec![] }
    );
}

#[test]
fn custom_fails_closed() {
    let mesh = Mesh::new(&authz(
        "production",
        "ext-authz",
        "  selector: {matchLabels: {app: database}}\n  action: CUSTOM\n  provider: {name: opa}\n  \
         rules:\n    - to: [{operation: {paths: [/admin]}}]",
    ));
    let d = mesh.decide(ORDERS, DB, 80);
    assert_eq!(
        d,
        Decision::Deny {
            policy: Some(policy("production", "ext-authz")),
            reason: DenyReason::CustomUnsupported,
            audited: vec![],
        }
    );
    assert!(
        d.to_string().contains("CUSTOM policy production/ext-authz"),
        "{d}"
    );
    assert!(mesh.allowed(ORDERS, PAYMENTS, 80));
}

#[test]
fn target_ref_policies_are_skipped() {
    let mesh = Mesh::new(&format!(
        "{}{}",
        authz(
            "production",
            "waypoint-deny",
            "  targetRefs:\n    - {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}\n  \
             action: DENY\n  rules: [{}]",
        ),
        authz(
            "production",
            "svc",
            "  targetRef: {kind: Service, name: database}\n  rules: []",
        )
    ));
    assert!(mesh.allowed(TOY, DB, 80));
    let skipped: Vec<_> = mesh
        .policies()
        .skipped()
        .map(|s| s.policy.to_string())
        .collect();
    assert_eq!(skipped, ["production/waypoint-deny", "production/svc"]);
    assert_eq!(mesh.policies().len(), 2);
}

#[test]
fn config_dump_shows_policies_as_written() {
    let mesh = Mesh::new(&format!(
        "{}{}",
        authz(
            "production",
            "db",
            "  selector: {matchLabels: {app: database}}\n  rules:\n    - from: [{source: {ipBlocks: [10.0.0.0/8]}}]\n      \
             to: [{operation: {ports: [3306], methods: [GET]}}]",
        ),
        peer("production", "default", "  mtls: {mode: STRICT}"),
    ));
    let dump = serde_yaml::to_string(mesh.policies()).unwrap();
    let expected = "\
rootNamespace: amesh-system
authorizationPolicies:
- namespace: production
  name: db
  meshWide: false
  l7Attributes:
  - methods
  spec:
    selector:
      matchLabels:
        app: database
    rules:
    - from:
      - source:
          ipBlocks:
          - 10.0.0.0/8
      to:
      - operation:
          ports:
          - '3306'
          methods:
          - GET
    action: ALLOW
peerAuthentications:
- namespace: production
  name: default
  level: namespace
  spec:
    mtls:
      mode: STRICT
";
    assert_eq!(dump, expected);
}
