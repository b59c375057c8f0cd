//! amesh test support: PKI and HBONE fixtures shared by the integration tests
//! and `meshbench`.

// Test support: a failed expectation here is a test failure, so panicking is right.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod bench;
pub mod fixtures;
pub mod harness;
