//! The capture backends the end-to-end suites run with: `#[apply(backends)]`
//! on a test taking `#[case] capture: Capture` runs it once per backend
//! (test names end in `::case_1_nftables` / `::case_2_ebpf`). Included by
//! each suite with `mod cases; use cases::backends;`.

use rstest_reuse::template;

#[template]
#[rstest::rstest]
#[case::nftables(amesh_tests::harness::Capture::Nftables)]
#[case::ebpf(amesh_tests::harness::Capture::Ebpf)]
pub fn backends(#[case] capture: amesh_tests::harness::Capture) {}
