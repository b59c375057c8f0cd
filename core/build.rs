//! Compiles the discovery and CA protos (`proto/`) with protox, a pure-Rust
//! protobuf compiler, so building needs no `protoc`.

use std::path::Path;

const PROTOS: &[&str] = &[
    "envoy/service/discovery/v3/discovery.proto",
    "istio/workload/workload.proto",
    "istio/security/authorization.proto",
    "istio/v1/auth/ca.proto",
    "amesh/v1/amesh.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let files = protox::compile(PROTOS, [root])?;
    tonic_prost_build::configure()
        // Ordered maps encode the same message to the same bytes every
        // time, so content-hash versions do not change at random.
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(files)?;
    Ok(())
}
