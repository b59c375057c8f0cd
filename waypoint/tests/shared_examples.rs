//! The vendored examples behave as their comments say.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use amesh_waypoint::route::{Decision, ProblemKind};
use common::*;
use http::HeaderMap;

const CANARY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/shared-examples/canary-header-and-weights.yaml"
));
const MIRROR: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/shared-examples/mirror-rewrite-headers.yaml"
));

const ORDER: &str = "order-service.production.svc.cluster.local";
const API: &str = "api.production.svc.cluster.local";

#[test]
fn canary_header_goes_to_canary_subset_only() {
    let t = clean_table(&[ORDER], CANARY);
    let mut rng = rng();
    for _ in 0..1_000 {
        let d = t.route_with(
            ORDER,
            8080,
            &req("GET", "/orders", &[("x-canary", "true")]),
            &mut rng,
        );
        let f = forward(d);
        assert_eq!(f.destination.host, ORDER);
        let subset = f.destination.subset.as_ref().unwrap();
        assert_eq!(subset.name, "canary");
        assert_eq!(
            subset.labels,
            [("version".to_owned(), "v2".to_owned())].into()
        );
        assert_eq!(f.route.rule_index, 0);
    }
}

#[test]
fn other_requests_split_90_10_between_stable_and_canary() {
    let t = clean_table(&[ORDER], CANARY);
    let mut rng = rng();
    let n = 10_000;
    let mut stable = 0;
    for _ in 0..n {
        // A different header value does not select the canary rule.
        let r = req("GET", "/orders", &[("x-canary", "false")]);
        match target(t.route_with(ORDER, 8080, &r, &mut rng)) {
            (host, Some(s)) if host == ORDER && s == "stable" => stable += 1,
            (host, Some(s)) if host == ORDER && s == "canary" => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // 9,000 expected; ±40 per 1,000 as the example states, scaled: ±400
    // is loose, ±150 is about 5 standard deviations.
    assert!((8_850..=9_150).contains(&stable), "stable {stable} of {n}");
    // The example's own claim: over 1,000 requests, 900 ± 40.
    let mut rng = common::rng();
    let stable_1k = (0..1_000)
        .filter(|_| {
            let f = forward(t.route_with(ORDER, 8080, &get("/"), &mut rng));
            f.destination.subset.as_ref().unwrap().labels["version"] == "v1"
        })
        .count();
    assert!(
        (860..=940).contains(&stable_1k),
        "stable {stable_1k} of 1000"
    );
}

#[test]
fn users_prefix_is_rewritten_for_user_service() {
    let (t, _) = table(&[API], MIRROR);
    let f = forward(t.route(API, 80, &get("/api/v1/users/42")));
    assert_eq!(
        f.destination.host,
        "user-service.production.svc.cluster.local"
    );
    assert_eq!(f.destination.port, Some(80));
    assert_eq!(f.path_and_query.as_deref(), Some("/users/42"));
    assert!(f.request_headers.is_empty());
}

#[test]
fn orders_get_header_set_and_removed() {
    let (t, _) = table(&[API], MIRROR);
    let r = req(
        "GET",
        "/api/v1/orders/7",
        &[
            ("x-internal-header", "secret"),
            ("x-forwarded-client", "someone"),
        ],
    );
    let f = forward(t.route(API, 80, &r));
    assert_eq!(
        f.destination.host,
        "order-service.production.svc.cluster.local"
    );
    assert_eq!(f.path_and_query, None, "no rewrite on this rule");
    let mut headers: HeaderMap = r.headers.clone();
    f.request_headers.apply(&mut headers);
    assert!(headers.get("x-internal-header").is_none());
    assert_eq!(
        headers
            .get_all("x-forwarded-client")
            .iter()
            .collect::<Vec<_>>(),
        ["waypoint"]
    );
}

#[test]
fn products_go_to_v1_and_mirror_is_reported_unsupported() {
    let (t, problems) = table(&[API], MIRROR);
    let (host, subset) = target(t.route(API, 80, &get("/api/v1/products/1")));
    assert_eq!(host, "product-service-v1.production.svc.cluster.local");
    assert_eq!(subset, None);
    let fields: Vec<_> = problems
        .iter()
        .map(|p| (p.kind, p.field.as_str(), p.to_string()))
        .collect();
    assert!(
        fields.iter().any(|(k, f, s)| *k == ProblemKind::Unsupported
            && *f == "spec.http[2].mirror"
            && s.starts_with("VirtualService production/api-routing: spec.http[2].mirror")),
        "{fields:#?}"
    );
    assert!(
        fields
            .iter()
            .any(|(_, f, _)| *f == "spec.http[2].mirrorPercentage")
    );
    // Nothing else is wrong with the example.
    assert!(
        problems.iter().all(|p| p.kind == ProblemKind::Unsupported),
        "{problems:#?}"
    );
    // Paths outside the three prefixes match no rule: 404.
    assert_eq!(t.route(API, 80, &get("/api/v2/users")), Decision::NotFound);
}
