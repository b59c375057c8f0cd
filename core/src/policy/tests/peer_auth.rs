//! PeerAuthentication precedence.

use super::*;

fn mode(mode: &str) -> String {
    format!("  mtls:\n    mode: {mode}")
}

#[test]
fn default_is_permissive() {
    let mesh = Mesh::new("");
    assert_eq!(mesh.mtls(DB, 3306), MtlsMode::Permissive);
    let effective = mesh.policies().effective_mtls(&mesh.workload(DB), 3306);
    assert_eq!(effective.policy, None);
}

#[test]
fn mesh_wide_from_either_root_namespace() {
    for root in ["amesh-system", "istio-system"] {
        let mesh = Mesh::new(&peer(root, "default", &mode("STRICT")));
        for to in [DB, TOY, LEGACY, CTL] {
            assert_eq!(mesh.mtls(to, 80), MtlsMode::Strict, "{root}: {to}");
        }
    }
    // Any other namespace is just that namespace.
    let mesh = Mesh::new(&peer("sandbox", "default", &mode("STRICT")));
    assert_eq!(mesh.mtls(TOY, 80), MtlsMode::Strict);
    assert_eq!(mesh.mtls(DB, 80), MtlsMode::Permissive);
}

#[test]
fn configured_root_namespace() {
    let options = ParseOptions::new("cluster.local").root_namespace("mesh-root");
    let mesh = Mesh::with_options(&peer("mesh-root", "default", &mode("STRICT")), &options);
    assert_eq!(mesh.mtls(DB, 80), MtlsMode::Strict);
    // amesh-system is an ordinary namespace now.
    let mesh = Mesh::with_options(&peer("amesh-system", "default", &mode("STRICT")), &options);
    assert_eq!(mesh.mtls(CTL, 80), MtlsMode::Strict);
    assert_eq!(mesh.mtls(DB, 80), MtlsMode::Permissive);
}

#[test]
fn namespace_over_mesh_and_unset_inherits() {
    let mesh_strict = peer("amesh-system", "mesh", &mode("STRICT"));
    let mesh = Mesh::new(&format!(
        "{mesh_strict}{}",
        peer("production", "ns", &mode("PERMISSIVE"))
    ));
    assert_eq!(mesh.mtls(DB, 80), MtlsMode::Permissive);
    assert_eq!(mesh.mtls(TOY, 80), MtlsMode::Strict);
    let mesh = Mesh::new(&format!(
        "{mesh_strict}{}",
        peer("production", "ns", &mode("UNSET"))
    ));
    assert_eq!(mesh.mtls(DB, 80), MtlsMode::Strict);
    let effective = mesh.policies().effective_mtls(&mesh.workload(DB), 80);
    assert_eq!(effective.policy, Some(policy("amesh-system", "mesh")));
    // No mtls at all is UNSET too.
    let mesh = Mesh::new(&format!(
        "{mesh_strict}{}",
        peer("production", "ns", "  {}")
    ));
    assert_eq!(mesh.mtls(DB, 80), MtlsMode::Strict);
}

#[test]
fn workload_over_namespace_with_port_levels() {
    let ns = peer("production", "ns", &mode("STRICT"));
    let workload = peer(
        "production",
        "db",
        "  selector: {matchLabels: {app: database}}\n  mtls: {mode: UNSET}\n  \
         portLevelMtls:\n    3306: {mode: PERMISSIVE}\n    \"5432\": {mode: DISABLE}\n    8080: {mode: UNSET}",
    );
    let mesh = Mesh::new(&format!("{ns}{workload}"));
    assert_eq!(mesh.mtls(DB, 3306), MtlsMode::Permissive);
    // DISABLE is PERMISSIVE in ambient.
    assert_eq!(mesh.mtls(DB, 5432), MtlsMode::Permissive);
    // UNSET port and workload: the namespace's STRICT.
    assert_eq!(mesh.mtls(DB, 8080), MtlsMode::Strict);
    assert_eq!(mesh.mtls(DB, 1), MtlsMode::Strict);
    assert_eq!(mesh.mtls(ORDERS, 3306), MtlsMode::Strict);

    let workload = peer(
        "production",
        "db",
        "  selector: {matchLabels: {app: database}}\n  mtls: {mode: DISABLE}\n  \
         portLevelMtls:\n    3306: {mode: STRICT}",
    );
    let mesh = Mesh::new(&format!("{ns}{workload}"));
    assert_eq!(mesh.mtls(DB, 80), MtlsMode::Permissive);
    assert_eq!(mesh.mtls(DB, 3306), MtlsMode::Strict);
}

#[test]
fn first_in_file_wins_at_one_level() {
    let a = peer(
        "production",
        "a",
        &format!(
            "  selector: {{matchLabels: {{app: database}}}}\n{}",
            mode("STRICT")
        ),
    );
    let b = peer(
        "production",
        "b",
        &format!(
            "  selector: {{matchLabels: {{version: v1}}}}\n{}",
            mode("PERMISSIVE")
        ),
    );
    assert_eq!(Mesh::new(&format!("{a}{b}")).mtls(DB, 80), MtlsMode::Strict);
    assert_eq!(
        Mesh::new(&format!("{b}{a}")).mtls(DB, 80),
        MtlsMode::Permissive
    );
    let a = peer("production", "a", &mode("STRICT"));
    let b = peer("production", "b", &mode("PERMISSIVE"));
    assert_eq!(Mesh::new(&format!("{a}{b}")).mtls(DB, 80), MtlsMode::Strict);
    assert_eq!(
        Mesh::new(&format!("{b}{a}")).mtls(DB, 80),
        MtlsMode::Permissive
    );
}

#[test]
fn selector_must_match_and_stays_in_its_namespace() {
    let p = peer(
        "production",
        "db",
        &format!(
            "  selector: {{matchLabels: {{app: database, version: v2}}}}\n{}",
            mode("STRICT")
        ),
    );
    assert_eq!(Mesh::new(&p).mtls(DB, 80), MtlsMode::Permissive);
    let p = peer(
        "sandbox",
        "db",
        &format!(
            "  selector: {{matchLabels: {{app: database}}}}\n{}",
            mode("STRICT")
        ),
    );
    assert_eq!(Mesh::new(&p).mtls(DB, 80), MtlsMode::Permissive);
    // An empty selector is namespace-wide.
    let p = peer(
        "production",
        "all",
        &format!("  selector: {{matchLabels: {{}}}}\n{}", mode("STRICT")),
    );
    assert_eq!(Mesh::new(&p).mtls(ORDERS, 80), MtlsMode::Strict);
}

#[test]
fn root_namespace_selector_is_skipped_as_in_istio() {
    let p = peer(
        "istio-system",
        "db",
        &format!(
            "  selector: {{matchLabels: {{app: database}}}}\n{}",
            mode("STRICT")
        ),
    );
    let mesh = Mesh::new(&p);
    assert_eq!(mesh.mtls(DB, 80), MtlsMode::Permissive);
    let skipped: Vec<_> = mesh.policies().skipped().collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].kind, PolicyKind::PeerAuthentication);
    assert_eq!(skipped[0].policy, &policy("istio-system", "db"));
    assert!(
        skipped[0].reason.contains("root namespace"),
        "{}",
        skipped[0].reason
    );
}
