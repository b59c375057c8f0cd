//! Generated protobuf and gRPC types (see `core/proto/`).
#![allow(
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub mod envoy {
    pub mod service {
        pub mod discovery {
            pub mod v3 {
                tonic::include_proto!("envoy.service.discovery.v3");
            }
        }
    }
}

pub mod istio {
    pub mod workload {
        tonic::include_proto!("istio.workload");
    }
    pub mod security {
        tonic::include_proto!("istio.security");
    }
    pub mod ca {
        tonic::include_proto!("istio.v1.auth");
    }
}

pub mod amesh {
    tonic::include_proto!("amesh.v1");
}
