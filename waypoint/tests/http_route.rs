//! Gateway API HTTPRoutes bound to Services, observed through decisions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use amesh_waypoint::route::{Decision, ProblemKind, RouteSource, RouteTable};
use common::*;
use http::{HeaderMap, StatusCode};

const REVIEWS: &str = "reviews.shop.svc.cluster.local";

/// An HTTPRoute `name` in `shop` bound to Service `reviews` with `rules`.
fn route(name: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: shop}}
spec:
  parentRefs: [{{group: '', kind: Service, name: reviews}}]
  rules:
{rules}"
    )
}

fn backend_of(t: &RouteTable, r: &http::request::Parts) -> String {
    match t.route(REVIEWS, 9080, r) {
        Decision::Forward(f) => f.destination.host.split('.').next().unwrap().to_owned(),
        Decision::NotFound => "404".to_owned(),
        Decision::Direct(d) => d.status.as_str().to_owned(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn path_matches_exact_prefix_regex() {
    let t = clean_table(
        &[REVIEWS],
        &route(
            "paths",
            "
  - matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /pre/}}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{path: {type: RegularExpression, value: '/re/[0-9]+'}}]
    backendRefs: [{name: c, port: 80}]
",
        ),
    );
    assert_eq!(backend_of(&t, &get("/exact")), "a");
    assert_eq!(backend_of(&t, &get("/exact/")), "404");
    assert_eq!(
        backend_of(&t, &get("/pre")),
        "b",
        "prefix is element-wise, trailing / ignored"
    );
    assert_eq!(backend_of(&t, &get("/pre/x")), "b");
    assert_eq!(backend_of(&t, &get("/prefix")), "404", "not a path element");
    assert_eq!(backend_of(&t, &get("/re/12")), "c");
    assert_eq!(backend_of(&t, &get("/re/12/x")), "404");
}

#[test]
fn headers_method_and_query_params() {
    let t = clean_table(
        &[REVIEWS],
        &route(
            "conds",
            "
  - matches: [{headers: [{name: X-Env, value: canary}]}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{headers: [{type: RegularExpression, name: x-v, value: 'v[12]'}]}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{method: DELETE}]
    backendRefs: [{name: c, port: 80}]
  - matches: [{queryParams: [{name: mode, value: fast}]}]
    backendRefs: [{name: d, port: 80}]
  - matches: [{queryParams: [{type: RegularExpression, name: id, value: '[0-9]+'}]}]
    backendRefs: [{name: e, port: 80}]
",
        ),
    );
    assert_eq!(
        backend_of(&t, &req("GET", "/", &[("x-env", "canary")])),
        "a"
    );
    assert_eq!(backend_of(&t, &req("GET", "/", &[("x-v", "v2")])), "b");
    assert_eq!(backend_of(&t, &req("GET", "/", &[("x-v", "v3")])), "404");
    assert_eq!(backend_of(&t, &req("DELETE", "/", &[])), "c");
    assert_eq!(backend_of(&t, &get("/?mode=fast")), "d");
    assert_eq!(
        backend_of(&t, &get("/?Mode=fast")),
        "404",
        "names are case-sensitive"
    );
    assert_eq!(backend_of(&t, &get("/?id=7")), "e");
    assert_eq!(backend_of(&t, &get("/")), "404");
}

#[test]
fn precedence_orders_rules_across_routes() {
    // Written least specific first, in two routes: precedence decides.
    let yaml = format!(
        "{}---\n{}",
        route(
            "general",
            "
  - backendRefs: [{name: root, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: api, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}, method: GET}]
    backendRefs: [{name: api-get, port: 80}]
",
        ),
        route(
            "specific",
            "
  - matches: [{path: {type: PathPrefix, value: /api}, method: GET, headers: [{name: x-a, value: '1'}]}]
    backendRefs: [{name: api-get-header, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api/v2}}]
    backendRefs: [{name: api-v2, port: 80}]
  - matches: [{path: {type: Exact, value: /api}}]
    backendRefs: [{name: api-exact, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}, method: GET, headers: [{name: x-a, value: '1'}], queryParams: [{name: q, value: '1'}]}]
    backendRefs: [{name: api-most, port: 80}]
",
        )
    );
    let t = clean_table(&[REVIEWS], &yaml);
    assert_eq!(backend_of(&t, &get("/api")), "api-exact");
    assert_eq!(
        backend_of(&t, &get("/api/v2/x")),
        "api-v2",
        "longest prefix"
    );
    assert_eq!(backend_of(&t, &req("POST", "/api/x", &[])), "api");
    assert_eq!(
        backend_of(&t, &get("/api/x")),
        "api-get",
        "method beats no method"
    );
    assert_eq!(
        backend_of(&t, &req("GET", "/api/x", &[("x-a", "1")])),
        "api-get-header",
        "more headers"
    );
    assert_eq!(
        backend_of(&t, &req("GET", "/api/x?q=1", &[("x-a", "1")])),
        "api-most",
        "more query params"
    );
    assert_eq!(backend_of(&t, &get("/other")), "root");
    let d = t.route(REVIEWS, 9080, &get("/api"));
    let info = d.route().unwrap();
    assert_eq!(info.source, RouteSource::HttpRoute);
    assert_eq!((info.name.as_str(), info.rule_index), ("specific", 2));
}

#[test]
fn weighted_backends_and_no_backends() {
    let t = clean_table(
        &[REVIEWS],
        &route(
            "w",
            "
  - matches: [{path: {value: /split}}]
    backendRefs: [{name: a, port: 80, weight: 80}, {name: b, port: 80, weight: 20}, {name: z, port: 80, weight: 0}]
  - matches: [{path: {value: /none}}]
  - matches: [{path: {value: /zero}}]
    backendRefs: [{name: a, port: 80, weight: 0}]
  - matches: [{path: {value: /other-ns}}]
    backendRefs: [{name: a, namespace: other, port: 8080}]
",
        ),
    );
    let mut rng = rng();
    let a = (0..10_000)
        .filter(|_| {
            let f = forward(t.route_with(REVIEWS, 9080, &get("/split"), &mut rng));
            assert_eq!(f.destination.port, Some(80));
            f.destination.host == "a.shop.svc.cluster.local"
        })
        .count();
    assert!((7_850..=8_150).contains(&a), "a {a}");
    assert_eq!(backend_of(&t, &get("/none")), "500");
    assert_eq!(backend_of(&t, &get("/zero")), "500");
    let f = forward(t.route(REVIEWS, 9080, &get("/other-ns")));
    assert_eq!(f.destination.host, "a.other.svc.cluster.local");
    assert_eq!(f.destination.port, Some(8080));
}

#[test]
fn filters_headers_rewrite_redirect() {
    let t = clean_table(
        &[REVIEWS],
        &route(
            "f",
            "
  - matches: [{path: {value: /hdr}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set, value: s}]
        add: [{name: x-add, value: a}]
        remove: [x-drop]
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-resp, value: r}]}
    backendRefs:
    - name: a
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-backend, value: b}]}
  - matches: [{path: {value: /old}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: new.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: Exact, value: /full}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /replaced}}
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {value: /go}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: secure.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /gone}}
  - matches: [{path: {value: /perm}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {port: 8443, statusCode: 301}
",
        ),
    );
    let r = req("GET", "/hdr", &[("x-drop", "1")]);
    let f = forward(t.route(REVIEWS, 9080, &r));
    let mut h = r.headers.clone();
    f.request_headers.apply(&mut h);
    assert!(h.get("x-drop").is_none());
    assert_eq!(h["x-set"], "s");
    assert_eq!(h["x-add"], "a");
    assert_eq!(h["x-backend"], "b");
    let mut resp = HeaderMap::new();
    f.response_headers.apply(&mut resp);
    assert_eq!(resp["x-resp"], "r");

    let f = forward(t.route(REVIEWS, 9080, &get("/old/x?y=1")));
    assert_eq!(f.path_and_query.as_deref(), Some("/new/x?y=1"));
    assert_eq!(f.authority.as_deref(), Some("new.example"));
    let f = forward(t.route(REVIEWS, 9080, &get("/full")));
    assert_eq!(f.path_and_query.as_deref(), Some("/replaced"));

    let host = |p: &str| req("GET", p, &[("host", "reviews:9080")]);
    match t.route(REVIEWS, 9080, &host("/go/a")) {
        Decision::Redirect(rd) => {
            assert_eq!(rd.status, StatusCode::FOUND, "Gateway API default 302");
            assert_eq!(rd.location, "https://secure.example/gone/a");
        }
        other => panic!("{other:?}"),
    }
    match t.route(REVIEWS, 9080, &host("/perm")) {
        Decision::Redirect(rd) => {
            assert_eq!(rd.status, StatusCode::MOVED_PERMANENTLY);
            assert_eq!(rd.location, "http://reviews:8443/perm");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn parent_port_limits_the_route_and_gateway_parents_are_not_services() {
    let yaml = "
kind: HTTPRoute
metadata: {name: p, namespace: shop}
spec:
  parentRefs:
  - {kind: Service, name: reviews, port: 9080}
  - {name: waypoint}
  rules: [{backendRefs: [{name: a, port: 80}]}]
";
    let t = clean_table(&[REVIEWS], yaml);
    assert_eq!(backend_of(&t, &get("/")), "a");
    // Other ports of the service: the route does not apply; routes exist
    // for the service, so nothing matches.
    assert_eq!(t.route(REVIEWS, 8080, &get("/")), Decision::NotFound);
}

#[test]
fn http_route_wins_over_virtual_service_and_mirror_is_unsupported() {
    let yaml = format!(
        "{}---
kind: VirtualService
metadata: {{name: vs, namespace: shop}}
spec:
  hosts: [reviews]
  http: [{{route: [{{destination: {{host: from-vs}}}}]}}]
",
        route(
            "r",
            "
  - filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}}
    backendRefs: [{name: from-route, port: 80}]
",
        )
    );
    let (t, problems) = table(&[REVIEWS], &yaml);
    assert_eq!(backend_of(&t, &get("/")), "from-route");
    let kinds: Vec<_> = problems
        .iter()
        .map(|p| (p.kind, p.resource_kind.as_str(), p.field.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                ProblemKind::Unsupported,
                "HTTPRoute",
                "spec.rules[0].filters[0].type"
            ),
            (ProblemKind::Conflict, "VirtualService", "spec.hosts"),
        ]
    );
}

#[test]
fn bad_regex_reported_and_never_matches_or_skipped() {
    let yaml = route(
        "bad",
        "
  - matches: [{path: {type: RegularExpression, value: '(open'}}]
    backendRefs: [{name: a, port: 80}]
",
    );
    let (t, problems) = table(&[REVIEWS], &yaml);
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0]
            .to_string()
            .starts_with("HTTPRoute shop/bad: spec.rules[0].matches[0].path.value: invalid regex")
    );
    // The route is skipped whole: the service routes to itself.
    assert_eq!(
        forward(t.route(REVIEWS, 9080, &get("/open"))).route.source,
        RouteSource::Default
    );
}
