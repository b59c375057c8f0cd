//! amesh-control-plane (being written).
fn main() {}
