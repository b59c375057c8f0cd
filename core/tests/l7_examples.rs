//! Every L7 document in shared/examples parses with `amesh_core::l7::parse`
//! into the values the file states; bad specs are refused naming the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use amesh_core::l7::destination_rule::{H2UpgradePolicy, SimpleLb, TlsMode};
use amesh_core::l7::gateway_api::{FilterType, PathMatchType};
use amesh_core::l7::virtual_service::HttpRoute;
use amesh_core::l7::{
    DestinationRule, L7Kind, L7Spec, Parsed, SpecError, StringMatch, VirtualService, parse,
};
use serde::Deserialize;

// The verbatim copies (core/src/policy/tests/examples.rs checks they match
// ../shared/examples): CI builds a clean clone without the shared folder.
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/shared-examples");

/// Kinds in the examples that are not L7 (handled by core::policy).
const NOT_L7: &[&str] = &["AuthorizationPolicy", "PeerAuthentication"];

/// One YAML document of an example file.
struct Doc {
    file: String,
    index: usize,
    kind: String,
    name: String,
    api_version: String,
    spec: serde_json::Value,
}

fn load_examples() -> Vec<Doc> {
    let dir = PathBuf::from(EXAMPLES);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    let mut docs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for (index, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let yaml = serde_yaml::Value::deserialize(de)
                .unwrap_or_else(|e| panic!("{file} document {index}: {e}"));
            if yaml.is_null() {
                continue;
            }
            let json: serde_json::Value = serde_json::to_value(&yaml).unwrap();
            let text_of = |k: &str| json[k].as_str().unwrap_or_default().to_owned();
            docs.push(Doc {
                file: file.clone(),
                index,
                kind: text_of("kind"),
                api_version: text_of("apiVersion"),
                name: json["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                spec: json.get("spec").cloned().unwrap_or_default(),
            });
        }
    }
    docs
}

/// Parses every L7 example; key: (file, kind, name).
fn parsed_examples() -> BTreeMap<(String, String, String), Parsed> {
    let mut out = BTreeMap::new();
    for doc in load_examples() {
        let Some(kind) = L7Kind::from_type(&doc.api_version, &doc.kind) else {
            assert!(
                NOT_L7.contains(&doc.kind.as_str()),
                "{} document {}: unexpected kind {} {}",
                doc.file,
                doc.index,
                doc.api_version,
                doc.kind
            );
            continue;
        };
        let parsed = parse(kind, &doc.spec)
            .unwrap_or_else(|e| panic!("{} document {} ({}): {e}", doc.file, doc.index, doc.name));
        assert_eq!(
            parsed.unsupported,
            Vec::<String>::new(),
            "{} document {}: every field of the examples is supported",
            doc.file,
            doc.index
        );
        // Serializing and parsing again gives the same value.
        let again = parse(kind, &parsed.resource.to_json().unwrap()).unwrap();
        assert_eq!(again.resource, parsed.resource, "{} round trip", doc.file);
        out.insert((doc.file, doc.kind, doc.name), parsed);
    }
    out
}

fn example_vs(file: &str, name: &str) -> VirtualService {
    let all = parsed_examples();
    let key = (
        file.to_owned(),
        "VirtualService".to_owned(),
        name.to_owned(),
    );
    match all.get(&key).map(|p| &p.resource) {
        Some(L7Spec::VirtualService(vs)) => vs.clone(),
        other => panic!("{file}: VirtualService {name}: {other:?}"),
    }
}

fn example_dr(file: &str, name: &str) -> DestinationRule {
    let all = parsed_examples();
    let key = (
        file.to_owned(),
        "DestinationRule".to_owned(),
        name.to_owned(),
    );
    match all.get(&key).map(|p| &p.resource) {
        Some(L7Spec::DestinationRule(dr)) => (**dr).clone(),
        other => panic!("{file}: DestinationRule {name}: {other:?}"),
    }
}

fn header_exact(route: &HttpRoute, name: &str) -> Option<String> {
    match route.matches.first()?.headers.get(name)? {
        StringMatch::Exact(v) => Some(v.clone()),
        _ => None,
    }
}

fn weights(route: &HttpRoute) -> Vec<(Option<&str>, i32)> {
    route
        .route
        .iter()
        .map(|d| (d.destination.subset.as_deref(), d.weight))
        .collect()
}

#[test]
fn every_l7_example_parses() {
    let all = parsed_examples();
    let kinds: Vec<&str> = all.keys().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "VirtualService").count(), 4);
    assert_eq!(kinds.iter().filter(|k| **k == "DestinationRule").count(), 2);
}

#[test]
fn canary_header_and_weights() {
    let vs = example_vs("canary-header-and-weights.yaml", "order-service");
    assert_eq!(vs.hosts, ["order-service"]);
    assert_eq!(
        header_exact(&vs.http[0], "x-canary").as_deref(),
        Some("true")
    );
    assert_eq!(weights(&vs.http[0]), [(Some("canary"), 100)]);
    assert!(vs.http[1].matches.is_empty());
    assert_eq!(
        weights(&vs.http[1]),
        [(Some("stable"), 90), (Some("canary"), 10)]
    );

    let dr = example_dr("canary-header-and-weights.yaml", "order-service");
    assert_eq!(dr.host, "order-service");
    let tp = dr.traffic_policy.unwrap();
    let pool = tp.connection_pool.unwrap();
    assert_eq!(pool.tcp.unwrap().max_connections, Some(1000));
    let http = pool.http.unwrap();
    assert_eq!(http.http1_max_pending_requests, Some(1000));
    assert_eq!(http.h2_upgrade_policy, Some(H2UpgradePolicy::Default));
    assert_eq!(tp.load_balancer.unwrap().simple, Some(SimpleLb::RoundRobin));
    let subsets: Vec<(&str, &str)> = dr
        .subsets
        .iter()
        .map(|s| (s.name.as_str(), s.labels["version"].as_str()))
        .collect();
    assert_eq!(subsets, [("stable", "v1"), ("canary", "v2")]);
}

#[test]
fn retries_and_timeouts() {
    let vs = example_vs("retries-and-timeouts.yaml", "reviews");
    assert_eq!(
        vs.hosts,
        ["reviews", "reviews.production.svc.cluster.local"]
    );
    assert_eq!(
        header_exact(&vs.http[0], "x-canary").as_deref(),
        Some("true")
    );
    assert_eq!(weights(&vs.http[0]), [(Some("v2"), 0)]);
    let rest = &vs.http[1];
    assert_eq!(rest.timeout.unwrap().get(), Duration::from_secs(10));
    let retries = rest.retries.as_ref().unwrap();
    assert_eq!(retries.attempts, 3);
    assert_eq!(
        retries.per_try_timeout.unwrap().get(),
        Duration::from_secs(3)
    );
    assert_eq!(
        retries.retry_on_list(),
        ["connect-failure", "reset", "retriable-4xx", "503"]
    );

    let dr = example_dr("retries-and-timeouts.yaml", "reviews");
    let tp = dr.traffic_policy.unwrap();
    let pool = tp.connection_pool.unwrap();
    let tcp = pool.tcp.unwrap();
    assert_eq!(tcp.max_connections, Some(100));
    assert_eq!(tcp.connect_timeout.unwrap().get(), Duration::from_secs(30));
    let http = pool.http.unwrap();
    assert_eq!(http.http1_max_pending_requests, Some(100));
    assert_eq!(http.http2_max_requests, Some(1000));
    assert_eq!(http.max_requests_per_connection, Some(100));
    assert_eq!(http.max_retries, Some(3));
    let od = tp.outlier_detection.unwrap();
    assert_eq!(od.consecutive_5xx_errors, Some(5));
    assert_eq!(od.interval.unwrap().get(), Duration::from_secs(30));
    assert_eq!(
        od.base_ejection_time.unwrap().get(),
        Duration::from_secs(30)
    );
    assert_eq!(od.max_ejection_percent, Some(50));
    assert_eq!(od.min_health_percent, Some(30));
    assert_eq!(tp.tls.unwrap().mode, Some(TlsMode::IstioMutual));
    let v1 = dr.subsets[0].traffic_policy.as_ref().unwrap();
    assert_eq!(
        v1.load_balancer.as_ref().unwrap().simple,
        Some(SimpleLb::LeastConn)
    );
    let v2 = dr.subsets[1].traffic_policy.as_ref().unwrap();
    let v2_http = v2.connection_pool.as_ref().unwrap().http.as_ref().unwrap();
    assert_eq!(v2_http.http2_max_requests, Some(500));
}

#[test]
fn fault_injection() {
    let vs = example_vs("fault-injection.yaml", "ratings");
    assert_eq!(vs.http.len(), 4);
    // (delay %, delay, abort %, status) per rule.
    let faults: Vec<_> = vs
        .http
        .iter()
        .map(|r| {
            let f = r.fault.as_ref();
            let delay = f.and_then(|f| f.delay.as_ref());
            let abort = f.and_then(|f| f.abort.as_ref());
            (
                delay.and_then(|d| d.percentage).map(|p| p.value),
                delay.and_then(|d| d.fixed_delay).map(|d| d.get()),
                abort.and_then(|a| a.percentage).map(|p| p.value),
                abort.and_then(|a| a.http_status),
            )
        })
        .collect();
    let s = Duration::from_secs;
    assert_eq!(
        faults,
        [
            (Some(100.0), Some(s(7)), None, None),
            (None, None, Some(100.0), Some(500)),
            (Some(50.0), Some(s(2)), Some(10.0), Some(503)),
            (None, None, None, None),
        ]
    );
    assert_eq!(
        header_exact(&vs.http[0], "x-test-delay").as_deref(),
        Some("true")
    );
    assert_eq!(
        header_exact(&vs.http[1], "x-test-abort").as_deref(),
        Some("true")
    );
    assert_eq!(
        header_exact(&vs.http[2], "x-chaos").as_deref(),
        Some("true")
    );
    assert!(
        vs.http
            .iter()
            .all(|r| r.route[0].destination.host == "ratings")
    );
}

#[test]
fn mirror_rewrite_headers() {
    let vs = example_vs("mirror-rewrite-headers.yaml", "api-routing");
    let uri = |r: &HttpRoute| r.matches[0].uri.clone();
    let users = &vs.http[0];
    assert_eq!(
        uri(users),
        Some(StringMatch::Prefix("/api/v1/users".into()))
    );
    assert_eq!(
        users.rewrite.as_ref().unwrap().uri.as_deref(),
        Some("/users")
    );
    assert_eq!(users.route[0].destination.host, "user-service");
    assert_eq!(users.route[0].destination.port.unwrap().number, 80);

    let orders = &vs.http[1];
    assert_eq!(
        uri(orders),
        Some(StringMatch::Prefix("/api/v1/orders".into()))
    );
    let req = orders.headers.as_ref().unwrap().request.as_ref().unwrap();
    assert_eq!(req.set["x-forwarded-client"], "waypoint");
    assert_eq!(req.remove, ["x-internal-header"]);
    assert_eq!(orders.route[0].destination.host, "order-service");

    let products = &vs.http[2];
    assert_eq!(
        uri(products),
        Some(StringMatch::Prefix("/api/v1/products".into()))
    );
    assert_eq!(products.route[0].destination.host, "product-service-v1");
    assert_eq!(products.mirror.as_ref().unwrap().host, "product-service-v2");
    assert_eq!(products.mirror_percentage.unwrap().value, 50.0);
}

fn parse_yaml(kind: L7Kind, yaml: &str) -> Result<Parsed, SpecError> {
    let spec: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
    parse(kind, &spec)
}

fn vs_error(yaml: &str) -> SpecError {
    parse_yaml(L7Kind::VirtualService, yaml).unwrap_err()
}

#[test]
fn bad_duration_names_the_field() {
    let e = vs_error(
        r#"
hosts: [reviews]
http:
- route: [{destination: {host: reviews}}]
- route: [{destination: {host: reviews}}]
  retries: {attempts: 3, perTryTimeout: 3x}
"#,
    );
    assert_eq!(e.field, "spec.http[1].retries.perTryTimeout");
    assert_eq!(
        e.to_string(),
        "spec.http[1].retries.perTryTimeout: invalid duration \"3x\": expected e.g. 10s, 250ms"
    );
    let e = vs_error("hosts: [r]\nhttp: [{timeout: 10, route: [{destination: {host: r}}]}]");
    assert_eq!(e.field, "spec.http[0].timeout");
    assert!(e.message.contains("a duration string"), "{e}");
}

#[test]
fn unknown_field_names_the_field() {
    let e =
        vs_error("hosts: [r]\nhttp: [{retires: {attempts: 3}, route: [{destination: {host: r}}]}]");
    assert_eq!(e.field, "spec.http[0].retires");
    assert!(e.message.starts_with("unknown field `retires`"), "{e}");
    let e = parse_yaml(
        L7Kind::DestinationRule,
        "host: r\ntrafficPolicy: {connectionPool: {tcp: {maxConn: 1}}}",
    )
    .unwrap_err();
    assert_eq!(e.field, "spec.trafficPolicy.connectionPool.tcp.maxConn");
}

#[test]
fn weights_out_of_range_are_refused() {
    let e = vs_error(
        r#"
hosts: [r]
http:
- route:
  - {destination: {host: r, subset: a}, weight: 110}
  - {destination: {host: r, subset: b}, weight: -10}
"#,
    );
    assert_eq!(e.field, "spec.http[0].route[1].weight");
    assert!(e.message.contains("-10"), "{e}");
    let e = vs_error(
        "hosts: [r]\nhttp: [{route: [{destination: {host: r, subset: a}}, {destination: {host: r, subset: b}}]}]",
    );
    assert_eq!(e.field, "spec.http[0].route");
    assert!(e.message.contains("total destination weight = 0"), "{e}");
    // Like Istio today, weights are relative: 60/60 is 50/50.
    parse_yaml(
        L7Kind::VirtualService,
        "hosts: [r]\nhttp: [{route: [{destination: {host: r, subset: a}, weight: 60}, {destination: {host: r, subset: b}, weight: 60}]}]",
    )
    .unwrap();
}

#[test]
fn wrong_type_names_the_field() {
    let e = vs_error(
        "hosts: [r]\nhttp: [{route: [{destination: {host: r}}], retries: {attempts: three}}]",
    );
    assert_eq!(e.field, "spec.http[0].retries.attempts");
    assert!(
        e.message.starts_with("invalid type: string \"three\""),
        "{e}"
    );
    let e = parse_yaml(L7Kind::VirtualService, "hosts: reviews\nhttp: []").unwrap_err();
    assert_eq!(e.field, "spec.hosts");
    let e = parse_yaml(
        L7Kind::DestinationRule,
        "host: r\ntrafficPolicy: {loadBalancer: {simple: FASTEST}}",
    )
    .unwrap_err();
    assert_eq!(e.field, "spec.trafficPolicy.loadBalancer.simple");
    assert!(e.message.contains("unknown variant `FASTEST`"), "{e}");
}

#[test]
fn semantic_errors_name_the_field() {
    let route = "route: [{destination: {host: r}}]";
    let cases = [
        (
            format!(
                "hosts: [r]\nhttp: [{{ {route}, fault: {{abort: {{percentage: {{value: 150}}, httpStatus: 500}}}} }}]"
            ),
            "spec.http[0].fault.abort.percentage.value",
        ),
        (
            format!("hosts: [r]\nhttp: [{{ {route}, fault: {{abort: {{httpStatus: 700}}}} }}]"),
            "spec.http[0].fault.abort.httpStatus",
        ),
        (
            format!("hosts: [r]\nhttp: [{{ {route}, retries: {{attempts: -1}} }}]"),
            "spec.http[0].retries.attempts",
        ),
        (
            format!(
                "hosts: [r]\nhttp: [{{ {route}, retries: {{attempts: 2, retryOn: 'sometimes'}} }}]"
            ),
            "spec.http[0].retries.retryOn",
        ),
        (format!("hosts: []\nhttp: [{{ {route} }}]"), "spec.hosts"),
        (
            format!("hosts: [r]\nhttp: [{{ {route}, mirrorPercentage: {{value: -1}} }}]"),
            "spec.http[0].mirrorPercentage.value",
        ),
    ];
    for (yaml, field) in cases {
        let e = vs_error(&yaml);
        assert_eq!(e.field, field, "{yaml}: {e}");
    }
    let e = vs_error(&format!(
        "hosts: [r]\nhttp: [{{ {route}, match: [{{headers: {{x-user: {{regex: 'a(b'}}}}}}] }}]"
    ));
    assert_eq!(e.field, "spec.http[0].match[0].headers.x-user");
    assert!(e.message.starts_with("invalid regex \"a(b\""), "{e}");
    let e = parse_yaml(
        L7Kind::DestinationRule,
        "host: r\nsubsets: [{name: v1, labels: {version: v1}}, {name: v1, labels: {version: v2}}]",
    )
    .unwrap_err();
    assert_eq!(e.field, "spec.subsets[1].name");
    assert!(e.message.contains("duplicate subset name"), "{e}");
    let e = parse_yaml(
        L7Kind::DestinationRule,
        "host: r\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}",
    )
    .unwrap_err();
    assert_eq!(
        e.field,
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent"
    );
}

#[test]
fn unsupported_fields_are_listed_not_ignored() {
    let p = parse_yaml(
        L7Kind::VirtualService,
        r#"
hosts: [r]
gateways: [mesh, istio-system/ingress]
exportTo: ["."]
http:
- match: [{sourceLabels: {app: a}, uri: {prefix: /}}]
  corsPolicy: {allowOrigins: [{exact: "https://a"}]}
  route: [{destination: {host: r}}]
tcp:
- route: [{destination: {host: r}}]
"#,
    )
    .unwrap();
    assert_eq!(
        p.unsupported,
        [
            "spec.gateways[1]",
            "spec.http[0].match[0].sourceLabels",
            "spec.http[0].corsPolicy",
            "spec.tcp",
            "spec.exportTo",
        ]
    );
    let p = parse_yaml(
        L7Kind::DestinationRule,
        r#"
host: r
exportTo: ["*"]
trafficPolicy:
  loadBalancer: {consistentHash: {httpHeaderName: x-user}}
  tls: {mode: SIMPLE, sni: r.example}
"#,
    )
    .unwrap();
    assert_eq!(
        p.unsupported,
        [
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "spec.trafficPolicy.tls.mode",
            "spec.trafficPolicy.tls.sni",
            "spec.exportTo",
        ]
    );
}

#[test]
fn every_served_version_shares_one_schema() {
    let doc = "hosts: [r]\nhttp: [{route: [{destination: {host: r}}]}]";
    for v in ["v1alpha3", "v1beta1", "v1"] {
        let kind = L7Kind::from_type(&format!("networking.istio.io/{v}"), "VirtualService");
        assert_eq!(kind, Some(L7Kind::VirtualService));
        parse_yaml(kind.unwrap(), doc).unwrap();
    }
}

#[test]
fn request_authentication() {
    let p = parse_yaml(
        L7Kind::RequestAuthentication,
        r#"
targetRefs: [{kind: Service, group: "", name: order-service}]
jwtRules:
- issuer: https://issuer.example
  audiences: [orders]
  jwksUri: https://issuer.example/jwks.json
  fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
  fromParams: [token]
  outputPayloadToHeader: x-jwt-payload
  forwardOriginalToken: true
  outputClaimToHeaders: [{header: x-sub, claim: sub}]
"#,
    )
    .unwrap();
    let L7Spec::RequestAuthentication(ra) = p.resource else {
        panic!("wrong kind")
    };
    let rule = &ra.jwt_rules[0];
    assert_eq!(rule.issuer, "https://issuer.example");
    assert_eq!(rule.from_headers[0].prefix.as_deref(), Some("Bearer "));
    assert_eq!(rule.forward_original_token, Some(true));
    assert_eq!(rule.output_claim_to_headers[0].claim, "sub");
    assert_eq!(ra.target_refs[0].name, "order-service");

    let e = parse_yaml(
        L7Kind::RequestAuthentication,
        "jwtRules: [{issuer: a}, {audiences: [x]}]",
    )
    .unwrap_err();
    assert_eq!(e.field, "spec.jwtRules[1].issuer");
    let e = parse_yaml(
        L7Kind::RequestAuthentication,
        "selector: {matchLabels: {app: a}}\ntargetRefs: [{kind: Service, name: a}]",
    )
    .unwrap_err();
    assert_eq!(e.field, "spec.selector");
}

#[test]
fn gateway_api_http_route() {
    let p = parse_yaml(
        L7Kind::HttpRoute,
        r#"
parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
hostnames: [reviews]
rules:
- matches:
  - path: {type: PathPrefix, value: /v2}
    headers: [{name: x-canary, value: "true"}]
    method: GET
  filters:
  - type: RequestHeaderModifier
    requestHeaderModifier: {set: [{name: x-a, value: b}], remove: [x-internal]}
  - type: RequestMirror
    requestMirror: {backendRef: {name: reviews-shadow, port: 9080}, percent: 25}
  - type: URLRewrite
    urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
  backendRefs:
  - {name: reviews-v1, port: 9080, weight: 90}
  - {name: reviews-v2, port: 9080, weight: 10}
  timeouts: {request: 10s, backendRequest: 3s}
"#,
    )
    .unwrap();
    assert!(p.unsupported.is_empty(), "{:?}", p.unsupported);
    let L7Spec::HttpRoute(route) = p.resource else {
        panic!("wrong kind")
    };
    let rule = &route.rules[0];
    assert_eq!(route.parent_refs[0].kind.as_deref(), Some("Service"));
    assert_eq!(
        rule.matches[0].path.as_ref().unwrap().kind,
        Some(PathMatchType::PathPrefix)
    );
    let kinds: Vec<FilterType> = rule.filters.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [
            FilterType::RequestHeaderModifier,
            FilterType::RequestMirror,
            FilterType::UrlRewrite
        ]
    );
    let w: Vec<_> = rule.backend_refs.iter().map(|b| b.weight).collect();
    assert_eq!(w, [Some(90), Some(10)]);
    let t = rule.timeouts.as_ref().unwrap();
    assert_eq!(t.request.unwrap().get(), Duration::from_secs(10));
    assert_eq!(t.backend_request.unwrap().get(), Duration::from_secs(3));

    let e = parse_yaml(
        L7Kind::HttpRoute,
        "rules: [{filters: [{type: RequestMirror, requestHeaderModifier: {remove: [a]}}]}]",
    )
    .unwrap_err();
    assert_eq!(e.field, "spec.rules[0].filters[0].requestMirror");
    let e = parse_yaml(L7Kind::HttpRoute, "rules: [{backendRefs: [{name: a}]}]").unwrap_err();
    assert_eq!(e.field, "spec.rules[0].backendRefs[0].port");
    let e = parse_yaml(
        L7Kind::HttpRoute,
        "rules: [{backendRefs: [{name: a, port: 80, weight: 1000001}]}]",
    )
    .unwrap_err();
    assert_eq!(e.field, "spec.rules[0].backendRefs[0].weight");
    let e = parse_yaml(L7Kind::HttpRoute, "rules: [{filters: [{type: Teleport}]}]").unwrap_err();
    assert_eq!(e.field, "spec.rules[0].filters[0].type");
}

#[test]
fn gateway_api_waypoint_gateway() {
    let p = parse_yaml(
        L7Kind::Gateway,
        r#"
gatewayClassName: istio-waypoint
listeners:
- name: mesh
  port: 15008
  protocol: HBONE
  allowedRoutes: {namespaces: {from: Same}}
"#,
    )
    .unwrap();
    assert!(p.unsupported.is_empty());
    let L7Spec::Gateway(gw) = p.resource else {
        panic!("wrong kind")
    };
    assert_eq!(gw.gateway_class_name, "istio-waypoint");
    assert_eq!(gw.listeners[0].port, 15008);
    assert_eq!(gw.listeners[0].protocol, "HBONE");

    let e = parse_yaml(
        L7Kind::Gateway,
        "gatewayClassName: istio-waypoint\nlisteners: [{name: mesh, port: 70000, protocol: HBONE}]",
    )
    .unwrap_err();
    assert_eq!(e.field, "spec.listeners[0].port");
    let p = parse_yaml(
        L7Kind::Gateway,
        "gatewayClassName: istio-waypoint\nlisteners: [{name: mesh, port: 15008, protocol: HBONE}]\naddresses: [{type: IPAddress, value: 10.0.0.1}]",
    )
    .unwrap();
    assert_eq!(p.unsupported, ["spec.addresses"]);
}
