//! Helpers shared by the routing tests: tables from YAML, requests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use amesh_waypoint::route::{
    BoundService, BuildProblem, Decision, Forward, L7Input, RouteInputs, RouteTable,
};
use http::request::Parts;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Deserialize;

/// The L7 resources of a multi-document YAML, as the control plane sends
/// them.
pub fn resources(yaml: &str) -> Vec<L7Input> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde_yaml::Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .map(|doc| {
            let json: serde_json::Value = serde_json::to_value(&doc).unwrap();
            L7Input {
                kind: json["kind"].as_str().unwrap().to_owned(),
                namespace: json["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned(),
                name: json["metadata"]["name"].as_str().unwrap().to_owned(),
                spec_json: json["spec"].to_string(),
            }
        })
        .collect()
}

/// A table for `services` (FQDNs, any port) from `yaml`.
pub fn table(services: &[&str], yaml: &str) -> (RouteTable, Vec<BuildProblem>) {
    RouteTable::build(&RouteInputs {
        services: services.iter().map(|s| BoundService::new(*s)).collect(),
        resources: resources(yaml),
        ..RouteInputs::default()
    })
}

/// A table that must build without problems.
pub fn clean_table(services: &[&str], yaml: &str) -> RouteTable {
    let (t, problems) = table(services, yaml);
    assert!(problems.is_empty(), "{problems:#?}");
    t
}

/// Request head: `GET /path?q` with headers.
pub fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

pub fn get(uri: &str) -> Parts {
    req("GET", uri, &[])
}

/// A seeded RNG so weighted splits are reproducible.
pub fn rng() -> StdRng {
    StdRng::seed_from_u64(42)
}

/// The forward decision, or a panic naming what was decided instead.
pub fn forward(d: Decision) -> Forward {
    match d {
        Decision::Forward(f) => f,
        other => panic!("expected Forward, got {other:?}"),
    }
}

/// `host` and subset name of a forward decision.
pub fn target(d: Decision) -> (String, Option<String>) {
    let f = forward(d);
    (
        f.destination.host.clone(),
        f.destination.subset.as_ref().map(|s| s.name.clone()),
    )
}
