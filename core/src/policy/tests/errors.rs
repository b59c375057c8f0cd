//! Config errors in resource documents: file, line (within the whole
//! file), field and message.

use super::*;

fn error(policies: &str) -> (ConfigError, String) {
    let text = format!("{WORKLOADS}---\n{policies}");
    match parse_text(&text, &ParseOptions::default()) {
        Ok(_) => panic!("accepted:\n{policies}"),
        Err(err) => (err, text),
    }
}

/// 1-based line of the first line containing `needle`, after `after`.
fn line(text: &str, after: &str, needle: &str) -> usize {
    let start = text.find(after).unwrap_or_else(|| panic!("no {after:?}"));
    let at = start
        + text[start..]
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?}"));
    text[..at].matches('\n').count() + 1
}

#[test]
fn bad_cidr_names_line_and_field() {
    let (err, text) = error(&authz(
        "production",
        "no-sandbox",
        "  action: DENY\n  rules:\n    - from:\n        - source:\n            ipBlocks:\n              \
         - 10.0.0.0/8\n              - 10.0.0.0/33",
    ));
    assert_eq!(
        err.field,
        "AuthorizationPolicy production/no-sandbox: spec.rules[0].from[0].source.ipBlocks[1]"
    );
    assert_eq!(
        err.line,
        Some(line(&text, "no-sandbox", "10.0.0.0/33")),
        "{err}"
    );
    assert!(err.line > Some(16), "a line of the whole file: {err}");
    assert!(
        err.message
            .contains("\"10.0.0.0/33\" is not an IP address or CIDR"),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("mesh.yaml:{}:", err.line.unwrap_or(0)))
    );
}

#[test]
fn unsupported_kind_names_kind_and_line() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  \
              namespace: production\nspec:\n  hosts: [reviews]\n";
    let (err, text) = error(&format!("{}{vs}", authz("production", "ok", "  {}")));
    assert_eq!(
        err.line,
        Some(line(&text, "networking", "kind: VirtualService")),
        "{err}"
    );
    assert!(
        err.message.starts_with(
            "unsupported kind VirtualService (networking.istio.io/v1) in ztunnel config"
        ),
        "{err}"
    );
    assert_eq!(err.field, "VirtualService production/reviews: kind");
    let (err, _) = error(
        "apiVersion: security.istio.io/v1alpha1\nkind: AuthorizationPolicy\n\
                          metadata: {name: a, namespace: b}\n",
    );
    assert!(
        err.message
            .starts_with("unsupported apiVersion security.istio.io/v1alpha1"),
        "{err}"
    );
    let (err, _) = error("apiVersion: security.istio.io/v1\nmetadata: {name: a, namespace: b}\n");
    assert!(err.message.contains("`kind` is missing"), "{err}");
}

#[test]
fn namespace_is_required() {
    let doc = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: nons\n\
               spec: {}\n";
    let (err, text) = error(doc);
    assert_eq!(err.field, "AuthorizationPolicy nons: metadata.namespace");
    assert!(err.message.contains("`namespace` is required"), "{err}");
    assert_eq!(
        err.line,
        Some(line(&text, "kind: AuthorizationPolicy", "metadata:")),
        "{err}"
    );
}

#[test]
fn bad_values_are_located() {
    let cases = [
        (
            "  rules:\n    - to: [{operation: {ports: [\"abc\"]}}]",
            "spec.rules[0].to[0].operation.ports[0]",
            "\"abc\" is not a port number",
            "ports:",
        ),
        (
            "  action: ALOW",
            "spec.action",
            "unknown variant `ALOW`",
            "action:",
        ),
        ("  rulez: []", "spec", "unknown field `rulez`", "rulez"),
        (
            "  rules:\n    - from: [{source: {principal: [a]}}]",
            "spec.rules[0].from[0].source",
            "unknown field `principal`",
            "principal",
        ),
        (
            "  rules:\n    - from: [{source: {}}]",
            "spec.rules[0].from[0]",
            "`source` must not be empty",
            "source",
        ),
        (
            "  rules:\n    - when:\n        - key: source.ip\n          values: [nope]",
            "spec.rules[0].when[0].values[0]",
            "\"nope\" is not an IP address or CIDR",
            "values:",
        ),
        (
            "  action: CUSTOM",
            "spec.action",
            "needs `provider`",
            "action:",
        ),
        (
            "  selector: {matchLabels: {a: b}}\n  targetRef: {kind: Service, name: s}",
            "spec.selector",
            "only one of `selector` and `targetRef`",
            "selector:",
        ),
    ];
    for (spec, field, message, at) in cases {
        let (err, text) = error(&authz("production", "bad", spec));
        assert_eq!(
            err.field,
            format!("AuthorizationPolicy production/bad: {field}"),
            "{err}"
        );
        assert!(err.message.contains(message), "{err}");
        assert_eq!(err.line, Some(line(&text, "name: bad", at)), "{err}");
    }
}

#[test]
fn peer_authentication_errors() {
    let (err, text) = error(&peer("production", "p", "  mtls:\n    mode: STRICTER"));
    assert_eq!(err.field, "PeerAuthentication production/p: spec.mtls.mode");
    assert!(err.message.contains("unknown variant `STRICTER`"), "{err}");
    assert_eq!(err.line, Some(line(&text, "name: p", "STRICTER")));
    let (err, text) = error(&peer(
        "production",
        "p",
        "  mtls: {mode: STRICT}\n  portLevelMtls:\n    3306: {mode: PERMISSIVE}",
    ));
    assert_eq!(
        err.field,
        "PeerAuthentication production/p: spec.portLevelMtls"
    );
    assert!(err.message.contains("needs a workload selector"), "{err}");
    assert_eq!(err.line, Some(line(&text, "name: p", "portLevelMtls:")));
    let (err, _) = error(&peer(
        "production",
        "p",
        "  selector: {matchLabels: {app: x}}\n  portLevelMtls:\n    http: {mode: PERMISSIVE}",
    ));
    assert!(
        err.message.contains("\"http\" is not a port number"),
        "{err}"
    );
}

#[test]
fn duplicates_and_a_second_workload_document() {
    let p = authz("production", "twice", "  {}");
    let (err, text) = error(&format!("{p}{p}"));
    assert!(
        err.message
            .contains("AuthorizationPolicy production/twice is defined twice"),
        "{err}"
    );
    let second = text
        .rfind("name: twice")
        .map(|at| text[..at].matches('\n').count() + 1);
    assert_eq!(err.line, second, "{err}");
    // The same name in another kind is fine.
    Mesh::new(&format!("{p}{}", peer("production", "twice", "  {}")));

    let (err, text) = error("workloads: []\n");
    assert!(
        err.message.contains("a second document without `kind`"),
        "{err}"
    );
    assert_eq!(err.line, Some(text.lines().count()), "{err}");
}

#[test]
fn policies_without_workloads_and_empty_documents() {
    let text = format!(
        "---\n# nothing\n---\n{}---\n",
        authz("production", "p", "  {}")
    );
    let snap = parse_text(&text, &ParseOptions::default()).unwrap();
    assert_eq!(snap.workloads().count(), 0);
    assert_eq!(snap.policies().len(), 1);
    // Metadata beyond name and namespace, and status, are accepted.
    let doc = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: a\n  \
               namespace: b\n  labels: {x: y}\n  resourceVersion: \"12\"\nspec: {}\nstatus: {}\n";
    assert_eq!(
        parse_text(doc, &ParseOptions::default())
            .unwrap()
            .policies()
            .len(),
        1
    );
}
