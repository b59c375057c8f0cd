//! VirtualService routing, observed through `RouteTable::route` decisions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use amesh_waypoint::route::{Decision, ProblemKind, RouteSource};
use common::*;
use http::{HeaderMap, HeaderValue, StatusCode};

const REVIEWS: &str = "reviews.shop.svc.cluster.local";

/// A VirtualService for `reviews` in `shop` with these `http` rules.
fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews]
  http:
{http}"
    )
}

/// One rule per destination subset-less host, so the chosen host tells
/// which rule matched.
fn host_of(t: &amesh_waypoint::route::RouteTable, r: &http::request::Parts) -> String {
    match t.route(REVIEWS, 9080, r) {
        Decision::Forward(f) => f.destination.host.split('.').next().unwrap().to_owned(),
        Decision::NotFound => "404".to_owned(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn uri_exact_prefix_regex_and_ignore_case() {
    let t = clean_table(
        &[REVIEWS],
        &vs("
  - match: [{uri: {exact: /exact}}]
    route: [{destination: {host: a}}]
  - match: [{uri: {prefix: /pre}}]
    route: [{destination: {host: b}}]
  - match: [{uri: {regex: '/re/[0-9]+'}}]
    route: [{destination: {host: c}}]
  - match: [{uri: {exact: /CaSe}, ignoreUriCase: true}]
    route: [{destination: {host: d}}]
  - match: [{uri: {regex: '/rx[a-z]', }, ignoreUriCase: true}]
    route: [{destination: {host: e}}]
"),
    );
    assert_eq!(host_of(&t, &get("/exact")), "a");
    assert_eq!(
        host_of(&t, &get("/exact?q=1")),
        "a",
        "query is not part of the path"
    );
    assert_eq!(host_of(&t, &get("/exact/")), "404");
    assert_eq!(host_of(&t, &get("/prefix/x")), "b");
    assert_eq!(
        host_of(&t, &get("/PREfix")),
        "404",
        "case-sensitive by default"
    );
    assert_eq!(host_of(&t, &get("/re/123")), "c");
    assert_eq!(
        host_of(&t, &get("/re/123x")),
        "404",
        "regex matches the whole path"
    );
    assert_eq!(host_of(&t, &get("/x/re/1")), "404");
    assert_eq!(host_of(&t, &get("/case")), "d");
    assert_eq!(host_of(&t, &get("/RXA")), "e");
}

#[test]
fn headers_exact_prefix_regex_and_presence() {
    let t = clean_table(
        &[REVIEWS],
        &vs("
  - match: [{headers: {x-a: {exact: one}}}]
    route: [{destination: {host: a}}]
  - match: [{headers: {x-b: {prefix: pre}}}]
    route: [{destination: {host: b}}]
  - match: [{headers: {x-c: {regex: 'v[0-9]'}}}]
    route: [{destination: {host: c}}]
  - match: [{headers: {x-d: {}}}]
    route: [{destination: {host: d}}]
"),
    );
    let h = |k: &str, v: &str| req("GET", "/", &[(k, v)]);
    assert_eq!(host_of(&t, &h("x-a", "one")), "a");
    assert_eq!(
        host_of(&t, &h("X-A", "one")),
        "a",
        "names are case-insensitive"
    );
    assert_eq!(host_of(&t, &h("x-a", "One")), "404", "values are not");
    assert_eq!(host_of(&t, &h("x-b", "prefixed")), "b");
    assert_eq!(host_of(&t, &h("x-c", "v7")), "c");
    assert_eq!(host_of(&t, &h("x-c", "v77")), "404");
    assert_eq!(host_of(&t, &h("x-d", "")), "d", "{{}} means present");
    assert_eq!(host_of(&t, &h("x-d", "anything")), "d");
    assert_eq!(host_of(&t, &get("/")), "404");
    // A repeated header is matched as its values joined by ','.
    let r = req("GET", "/", &[("x-a", "one"), ("x-a", "two")]);
    assert_eq!(host_of(&t, &r), "404");
    let r = req("GET", "/", &[("x-c", "v1"), ("x-c", "v2")]);
    assert_eq!(host_of(&t, &r), "404");
}

#[test]
fn method_query_params_without_headers_authority_and_port() {
    let t = clean_table(
        &[REVIEWS],
        &vs("
  - match: [{method: {exact: POST}}]
    route: [{destination: {host: a}}]
  - match: [{queryParams: {v: {exact: '2'}}}]
    route: [{destination: {host: b}}]
  - match: [{queryParams: {debug: {}}}]
    route: [{destination: {host: c}}]
  - match: [{queryParams: {id: {regex: '[0-9]+'}}}]
    route: [{destination: {host: d}}]
  - match: [{uri: {prefix: /wo}, withoutHeaders: {x-skip: {}}}]
    route: [{destination: {host: e}}]
  - match: [{authority: {prefix: reviews.other}}]
    route: [{destination: {host: f}}]
  - match: [{port: 9999}]
    route: [{destination: {host: g}}]
"),
    );
    assert_eq!(host_of(&t, &req("POST", "/", &[])), "a");
    assert_eq!(host_of(&t, &get("/?v=2")), "b");
    assert_eq!(host_of(&t, &get("/?x=1&v=2")), "b");
    assert_eq!(host_of(&t, &get("/?v=22")), "404");
    assert_eq!(host_of(&t, &get("/?debug")), "c");
    assert_eq!(host_of(&t, &get("/?id=42")), "d");
    assert_eq!(host_of(&t, &get("/?id=4a")), "404");
    assert_eq!(host_of(&t, &get("/wo")), "e");
    assert_eq!(host_of(&t, &req("GET", "/wo", &[("x-skip", "1")])), "404");
    assert_eq!(
        host_of(&t, &req("GET", "/", &[("host", "reviews.other:9080")])),
        "f"
    );
    assert_eq!(
        host_of(&t, &get("http://reviews.other/")),
        "f",
        "absolute-form authority"
    );
    let d = t.route(REVIEWS, 9999, &get("/"));
    assert_eq!(
        forward(d).destination.host,
        "g.shop.svc.cluster.local",
        "port match"
    );
}

#[test]
fn match_entries_are_ored_fields_anded_and_first_rule_wins() {
    let t = clean_table(
        &[REVIEWS],
        &vs("
  - name: both
    match:
    - {uri: {prefix: /a}, headers: {x-user: {exact: jason}}}
    - {uri: {prefix: /b}}
    route: [{destination: {host: first}}]
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: second}}]
  - route: [{destination: {host: fallback}}]
"),
    );
    assert_eq!(
        host_of(&t, &req("GET", "/a", &[("x-user", "jason")])),
        "first"
    );
    assert_eq!(
        host_of(&t, &get("/a")),
        "second",
        "one field failing fails the entry"
    );
    assert_eq!(
        host_of(&t, &get("/b")),
        "first",
        "any entry selects the rule"
    );
    assert_eq!(host_of(&t, &get("/zzz")), "fallback");
    let d = t.route(REVIEWS, 9080, &get("/b"));
    let info = d.route().unwrap();
    assert_eq!(info.source, RouteSource::VirtualService);
    assert_eq!(
        (info.namespace.as_str(), info.name.as_str()),
        ("shop", "reviews")
    );
    assert_eq!(
        (info.rule_index, info.rule_name.as_deref()),
        (0, Some("both"))
    );
}

#[test]
fn no_matching_rule_is_not_found() {
    let t = clean_table(
        &[REVIEWS],
        &vs("
  - match: [{uri: {prefix: /only}}]
    route: [{destination: {host: reviews}}]
"),
    );
    assert_eq!(t.route(REVIEWS, 9080, &get("/other")), Decision::NotFound);
    assert!(t.route(REVIEWS, 9080, &get("/only")).route().is_some());
}

#[test]
fn service_without_routes_goes_to_itself_and_unbound_is_not_found() {
    let other = "ratings.shop.svc.cluster.local";
    let t = clean_table(
        &[REVIEWS, other],
        &vs("
  - route: [{destination: {host: reviews}}]
"),
    );
    let f = forward(t.route(other, 9080, &get("/x?y")));
    assert_eq!(f.destination.host, other);
    assert_eq!(f.destination.port, Some(9080));
    assert_eq!(f.destination.subset, None);
    assert_eq!(f.path_and_query, None);
    assert_eq!(f.route.source, RouteSource::Default);
    assert_eq!(f.route.namespace, "shop");
    assert_eq!(
        t.route("details.shop.svc.cluster.local", 9080, &get("/")),
        Decision::NotFound
    );
    assert!(t.serves(other) && !t.serves("details.shop.svc.cluster.local"));
}

#[test]
fn bound_ports_limit_the_service() {
    use amesh_waypoint::route::{BoundService, RouteInputs, RouteTable};
    let (t, problems) = RouteTable::build(&RouteInputs {
        services: vec![BoundService {
            hostname: REVIEWS.to_owned(),
            ports: vec![9080],
        }],
        ..RouteInputs::default()
    });
    assert!(problems.is_empty());
    assert!(matches!(
        t.route(REVIEWS, 9080, &get("/")),
        Decision::Forward(_)
    ));
    assert_eq!(t.route(REVIEWS, 80, &get("/")), Decision::NotFound);
}

#[test]
fn hosts_resolve_relative_to_the_virtual_service_namespace() {
    // Written in namespace `web`: `reviews.shop` names the shop service,
    // a short destination name is in `web`.
    let yaml = "
kind: VirtualService
metadata: {name: cross, namespace: web}
spec:
  hosts: [reviews.shop, ratings, details.shop.svc.cluster.local]
  http:
  - route: [{destination: {host: backend}, weight: 1}, {destination: {host: backend.shop.svc}, weight: 0}]
";
    let ratings = "ratings.web.svc.cluster.local";
    let details = "details.shop.svc.cluster.local";
    let t = clean_table(&[REVIEWS, ratings, details], yaml);
    for svc in [REVIEWS, ratings, details] {
        let f = forward(t.route(svc, 80, &get("/")));
        assert_eq!(f.destination.host, "backend.web.svc.cluster.local", "{svc}");
    }
}

#[test]
fn weights_are_relative_and_zero_never_chosen() {
    let t = clean_table(
        &[REVIEWS],
        &vs("
  - route:
    - {destination: {host: a}, weight: 1}
    - {destination: {host: b}, weight: 3}
    - {destination: {host: z}, weight: 0}
"),
    );
    let mut rng = rng();
    let (mut a, mut b) = (0, 0);
    for _ in 0..10_000 {
        let f = forward(t.route_with(REVIEWS, 9080, &get("/"), &mut rng));
        match f.destination.host.as_str() {
            "a.shop.svc.cluster.local" => a += 1,
            "b.shop.svc.cluster.local" => b += 1,
            other => panic!("{other}"),
        }
    }
    assert!((2_350..=2_650).contains(&a), "a {a} b {b}");
    assert_eq!(a + b, 10_000);
    // A single destination takes everything, whatever its weight.
    let t = clean_table(
        &[REVIEWS],
        &vs("
  - route: [{destination: {host: a}, weight: 0}]
"),
    );
    assert!(matches!(
        t.route(REVIEWS, 9080, &get("/")),
        Decision::Forward(_)
    ));
}

#[test]
fn subsets_come_from_the_destination_rule_of_the_host() {
    let yaml = format!(
        "{}
---
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews.shop.svc.cluster.local
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2, track: fast}}}}
",
        vs("
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: reviews, subset: v2, port: {number: 9090}}}]
  - match: [{uri: {prefix: /v9}}]
    route: [{destination: {host: reviews, subset: v9}}]
  - route: [{destination: {host: reviews, subset: v1}}]
")
    );
    let (t, problems) = table(&[REVIEWS], &yaml);
    let f = forward(t.route(REVIEWS, 9080, &get("/v2/x")));
    let subset = f.destination.subset.as_ref().unwrap();
    assert_eq!(subset.name, "v2");
    assert_eq!(subset.labels.len(), 2);
    assert_eq!(f.destination.port, Some(9090));
    let pod = [("version", "v2"), ("track", "fast"), ("app", "reviews")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    assert!(subset.selects(&pod));
    let f = forward(t.route(REVIEWS, 9080, &get("/")));
    assert_eq!(f.destination.subset.as_ref().unwrap().name, "v1");
    assert!(!f.destination.subset.as_ref().unwrap().selects(&pod));
    assert_eq!(f.destination.port, None, "no port: the request's");
    // An undefined subset is an error at build and 503 at request time.
    match t.route(REVIEWS, 9080, &get("/v9")) {
        Decision::Direct(d) => assert_eq!(d.status, StatusCode::SERVICE_UNAVAILABLE),
        other => panic!("{other:?}"),
    }
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(
        problems[0].field,
        "spec.http[1].route[0].destination.subset"
    );
    assert_eq!(problems[0].kind, ProblemKind::Error);
}

#[test]
fn rewrite_uri_and_authority() {
    let t = clean_table(
        &[REVIEWS],
        &vs("
  - match: [{uri: {prefix: /old}}]
    rewrite: {uri: /new, authority: backend.example}
    route: [{destination: {host: a}}]
  - match: [{uri: {exact: /exact}}]
    rewrite: {uri: /replaced}
    route: [{destination: {host: a}}]
  - match: [{uri: {regex: '/r/.*'}}]
    rewrite: {uri: /whole}
    route: [{destination: {host: a}}]
  - match: [{uri: {prefix: /CI}, ignoreUriCase: true}]
    rewrite: {uri: /ci}
    route: [{destination: {host: a}}]
"),
    );
    let f = forward(t.route(REVIEWS, 9080, &get("/old/path?x=1")));
    assert_eq!(f.path_and_query.as_deref(), Some("/new/path?x=1"));
    assert_eq!(f.authority.as_deref(), Some("backend.example"));
    let f = forward(t.route(REVIEWS, 9080, &get("/exact?k=v")));
    assert_eq!(f.path_and_query.as_deref(), Some("/replaced?k=v"));
    assert_eq!(f.authority, None);
    let f = forward(t.route(REVIEWS, 9080, &get("/r/a/b")));
    assert_eq!(f.path_and_query.as_deref(), Some("/whole"));
    let f = forward(t.route(REVIEWS, 9080, &get("/ci/x")));
    assert_eq!(f.path_and_query.as_deref(), Some("/ci/x"));
}

#[test]
fn request_and_response_headers_at_rule_and_destination_level() {
    let t = clean_table(
        &[REVIEWS],
        &vs("
  - headers:
      request:
        set: {x-rule: rule, x-both: rule}
        add: {x-added: r}
        remove: [x-secret]
      response:
        set: {x-served-by: waypoint}
        remove: [server]
    route:
    - destination: {host: a}
      headers:
        request: {set: {x-both: dest, x-dest: dest}}
        response: {add: {x-dest-resp: d}}
"),
    );
    let r = req("GET", "/", &[("x-secret", "s"), ("x-added", "orig")]);
    let f = forward(t.route(REVIEWS, 9080, &r));
    let mut h = r.headers.clone();
    f.request_headers.apply(&mut h);
    assert!(h.get("x-secret").is_none());
    assert_eq!(h["x-rule"], "rule");
    assert_eq!(h["x-dest"], "dest");
    assert_eq!(h["x-both"], "rule", "the rule's set is applied last");
    assert_eq!(
        h.get_all("x-added").iter().collect::<Vec<_>>(),
        ["orig", "r"]
    );
    let mut resp = HeaderMap::new();
    resp.insert("server", HeaderValue::from_static("backend"));
    f.response_headers.apply(&mut resp);
    assert!(resp.get("server").is_none());
    assert_eq!(resp["x-served-by"], "waypoint");
    assert_eq!(resp["x-dest-resp"], "d");
}

#[test]
fn redirects() {
    let t = clean_table(
        &[REVIEWS],
        &vs("
  - match: [{uri: {exact: /moved}}]
    redirect: {uri: /new-home}
  - match: [{uri: {exact: /elsewhere}}]
    redirect: {authority: other.example:8443, redirectCode: 302}
  - match: [{uri: {exact: /secure}}]
    redirect: {scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}
  - match: [{uri: {exact: /port}}]
    redirect: {uri: /p, port: 8081}
  - match: [{uri: {exact: /reqport}}]
    redirect: {authority: x.example, derivePort: FROM_REQUEST_PORT}
"),
    );
    let redirect = |r: http::request::Parts| match t.route(REVIEWS, 9080, &r) {
        Decision::Redirect(rd) => (rd.location, rd.status.as_u16()),
        other => panic!("{other:?}"),
    };
    let host = |path: &str| req("GET", path, &[("host", "reviews:9080")]);
    assert_eq!(
        redirect(host("/moved?a=1")),
        ("http://reviews:9080/new-home?a=1".to_owned(), 301),
        "default code 301, query kept"
    );
    assert_eq!(
        redirect(host("/elsewhere")),
        ("http://other.example:8443/elsewhere".to_owned(), 302)
    );
    assert_eq!(
        redirect(host("/secure")),
        ("https://reviews/secure".to_owned(), 301)
    );
    assert_eq!(
        redirect(host("/port")),
        ("http://reviews:8081/p".to_owned(), 301)
    );
    assert_eq!(
        redirect(get("/reqport")),
        ("http://x.example:9080/reqport".to_owned(), 301),
        "no Host port: the port the request came in on"
    );
}

#[test]
fn direct_response() {
    let t = clean_table(
        &[REVIEWS],
        &vs("
  - directResponse: {status: 503, body: {string: maintenance}}
"),
    );
    match t.route(REVIEWS, 9080, &get("/")) {
        Decision::Direct(d) => {
            assert_eq!(d.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(&d.body[..], b"maintenance");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_resources_are_reported_and_never_panic() {
    let yaml = format!(
        "{}
---
kind: VirtualService
metadata: {{name: broken-json, namespace: shop}}
spec: {{hosts: [ratings], http: [{{route: [{{destination: {{}}}}]}}]}}
",
        vs("
  - match: [{uri: {prefix: /ok}}, {uri: {regex: '(unclosed'}}]
    route: [{destination: {host: a}}]
")
    );
    let ratings = "ratings.shop.svc.cluster.local";
    let (t, problems) = table(&[REVIEWS, ratings], &yaml);
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 2, "{text:#?}");
    assert!(
        text[0].starts_with("VirtualService shop/reviews: spec.http[0].match[1].uri"),
        "{text:#?}"
    );
    assert!(text[0].contains("regex"), "{text:#?}");
    assert!(
        text[1]
            .starts_with("VirtualService shop/broken-json: spec.http[0].route[0].destination.host")
    );
    // Skipped resources leave their services on the default route.
    assert_eq!(
        forward(t.route(REVIEWS, 9080, &get("/x"))).route.source,
        RouteSource::Default
    );
    // A spec that is not JSON at all.
    use amesh_waypoint::route::{BoundService, L7Input, RouteInputs, RouteTable};
    let (_, problems) = RouteTable::build(&RouteInputs {
        services: vec![BoundService::new(REVIEWS)],
        resources: vec![L7Input {
            kind: "VirtualService".into(),
            namespace: "shop".into(),
            name: "garbage".into(),
            spec_json: "{not json".into(),
        }],
        ..RouteInputs::default()
    });
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "spec");
}

#[test]
fn first_virtual_service_for_a_host_wins() {
    let yaml = format!(
        "{}
---
kind: VirtualService
metadata: {{name: late, namespace: shop}}
spec:
  hosts: [reviews]
  http: [{{route: [{{destination: {{host: b}}}}]}}]
",
        vs("
  - route: [{destination: {host: a}}]
")
    );
    let (t, problems) = table(&[REVIEWS], &yaml);
    assert_eq!(host_of(&t, &get("/")), "a");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].kind, ProblemKind::Conflict);
    assert_eq!(
        (problems[0].name.as_str(), problems[0].field.as_str()),
        ("late", "spec.hosts[0]")
    );
}

#[test]
fn policies_and_unknown_kinds_are_ignored_quietly() {
    let yaml = "
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec: {action: DENY}
---
kind: RequestAuthentication
metadata: {name: ra, namespace: shop}
spec: {}
";
    let t = clean_table(&[REVIEWS], yaml);
    assert_eq!(
        forward(t.route(REVIEWS, 1, &get("/"))).route.source,
        RouteSource::Default
    );
}

#[test]
fn gateway_only_virtual_services_do_not_apply() {
    let yaml = "
kind: VirtualService
metadata: {name: ingress, namespace: shop}
spec:
  hosts: [reviews]
  gateways: [shop/ingress]
  http: [{route: [{destination: {host: elsewhere}}]}]
";
    let (t, problems) = table(&[REVIEWS], yaml);
    assert_eq!(
        forward(t.route(REVIEWS, 80, &get("/"))).route.source,
        RouteSource::Default
    );
    assert!(problems.iter().any(|p| p.field == "spec.gateways"));
}

#[test]
fn invalid_header_name_makes_only_its_entry_never_match() {
    let (t, problems) = table(
        &[REVIEWS],
        &vs("
  - match:
    - {uri: {prefix: /a}, withoutHeaders: {'bad name': {}}}
    - {uri: {prefix: /b}}
    route: [{destination: {host: a}}]
"),
    );
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(
        problems[0].field,
        "spec.http[0].match[0].withoutHeaders.bad name"
    );
    assert_eq!(
        host_of(&t, &get("/a")),
        "404",
        "a negated invalid condition still never matches"
    );
    assert_eq!(host_of(&t, &get("/b")), "a");
}
