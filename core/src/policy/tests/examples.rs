//! The shared examples, loaded as they are, with the decisions their
//! comments describe.

use super::*;

// Verbatim copies of ../shared/examples (CI builds a clean clone, where the
// shared folder may not sit beside the repository); a test below checks the
// copies still match the originals wherever those are present.
const AUTHZ_L4: &str = include_str!("../../../../testdata/shared-examples/authz-l4.yaml");
const PEER_AUTHN: &str =
    include_str!("../../../../testdata/shared-examples/peer-authentication.yaml");

#[test]
fn every_vendored_example_matches_its_shared_original() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let copies = root.join("testdata/shared-examples");
    let Ok(originals) = std::fs::read_dir(root.join("../shared/examples")) else {
        // Absent outside the development machine: nothing to compare.
        return;
    };
    for entry in originals {
        let original = entry.unwrap().path();
        let name = original.file_name().unwrap();
        let copy = std::fs::read(copies.join(name))
            .unwrap_or_else(|e| panic!("testdata/shared-examples/{name:?} is missing: {e}"));
        assert_eq!(
            copy,
            std::fs::read(&original).unwrap(),
            "testdata/shared-examples/{name:?} differs from shared/"
        );
    }
}

#[test]
fn vendored_examples_match_the_shared_originals() {
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples");
    for (name, copy) in [
        ("authz-l4.yaml", AUTHZ_L4),
        ("peer-authentication.yaml", PEER_AUTHN),
    ] {
        // Absent outside the development machine: nothing to compare.
        if let Ok(original) = std::fs::read_to_string(shared.join(name)) {
            assert_eq!(
                copy, original,
                "testdata/shared-examples/{name} differs from shared/"
            );
        }
    }
}

#[test]
fn authz_l4_database_accepts_only_its_clients_on_3306() {
    let mesh = Mesh::new(AUTHZ_L4);
    assert_eq!(mesh.policies().len(), 2);
    assert!(mesh.allowed(ORDERS, DB, 3306));
    assert!(mesh.allowed(PAYMENTS, DB, 3306));
    // Right client, wrong port; wrong client, right port; no identity.
    for (from, port) in [(ORDERS, 5432), (PAYMENTS, 22), (V6, 3306), (LEGACY, 3306)] {
        let decision = mesh.decide(from, DB, port);
        assert_eq!(
            decision,
            Decision::Deny {
                policy: None,
                reason: DenyReason::NoAllowMatch {
                    allow_policies: vec![policy("production", "database-clients")],
                    needs_waypoint: vec![],
                },
                audited: vec![],
            },
            "{from} -> database:{port}"
        );
        assert_eq!(
            decision.to_string(),
            "no ALLOW policy matched (production/database-clients)"
        );
    }
    // The ALLOW policy selects the database only.
    assert!(mesh.allowed(ORDERS, PAYMENTS, 8080));
    assert!(mesh.allowed(LEGACY, ORDERS, 8080));
}

#[test]
fn authz_l4_nothing_from_sandbox_reaches_production() {
    let mesh = Mesh::new(AUTHZ_L4);
    for to in [DB, ORDERS, PAYMENTS, V6] {
        let decision = mesh.decide(TOY, to, 3306);
        assert_eq!(
            decision,
            Decision::Deny {
                policy: Some(policy("production", "no-sandbox")),
                reason: DenyReason::DenyPolicy {
                    needs_waypoint: false
                },
                audited: vec![],
            },
            "sandbox -> {to}"
        );
        assert_eq!(
            decision.to_string(),
            "denied by policy production/no-sandbox"
        );
    }
    // Only production is protected.
    assert!(mesh.allowed(TOY, LEGACY, 80));
    assert!(mesh.allowed(TOY, CTL, 80));
}

#[test]
fn peer_authentication_production_strict_database_3306_permissive() {
    let mesh = Mesh::new(PEER_AUTHN);
    for (to, port) in [
        (ORDERS, 8080),
        (PAYMENTS, 3306),
        (V6, 80),
        (DB, 5432),
        (DB, 80),
    ] {
        assert_eq!(mesh.mtls(to, port), MtlsMode::Strict, "{to}:{port}");
    }
    assert_eq!(mesh.mtls(DB, 3306), MtlsMode::Permissive);
    let db = mesh.workload(DB);
    let effective = mesh.policies().effective_mtls(&db, 3306);
    assert_eq!(effective.policy, Some(policy("production", "db-migration")));
    let effective = mesh.policies().effective_mtls(&mesh.workload(ORDERS), 80);
    assert_eq!(
        effective.to_string(),
        "STRICT (PeerAuthentication production/default)"
    );
    // Other namespaces keep the default.
    for to in [TOY, LEGACY, CTL] {
        assert_eq!(mesh.mtls(to, 3306), MtlsMode::Permissive, "{to}");
    }
}

#[test]
fn both_examples_in_one_file() {
    let mesh = Mesh::new(&format!("{AUTHZ_L4}\n---\n{PEER_AUTHN}"));
    assert_eq!(mesh.policies().len(), 4);
    assert!(mesh.allowed(ORDERS, DB, 3306));
    assert!(!mesh.allowed(TOY, ORDERS, 80));
    assert_eq!(mesh.mtls(DB, 3306), MtlsMode::Permissive);
    assert_eq!(mesh.mtls(DB, 3307), MtlsMode::Strict);
}
