//! What the eBPF backend needs from the kernel, checked up front so that a
//! missing feature is named instead of surfacing as a verifier or attach
//! error (and so `auto` can choose nftables instead).

use aya::programs::ProgramType;
use aya::sys::is_program_supported;

use super::EbpfError;

const PROGRAM_TYPES: [(ProgramType, &str); 5] = [
    (
        ProgramType::CgroupSockAddr,
        "cgroup sock_addr programs (CONFIG_CGROUP_BPF)",
    ),
    (
        ProgramType::SockOps,
        "sock_ops programs (CONFIG_CGROUP_BPF)",
    ),
    (
        ProgramType::CgroupSockopt,
        "cgroup sockopt programs (Linux 5.3+)",
    ),
    (ProgramType::SkLookup, "sk_lookup programs (Linux 5.9+)"),
    (
        ProgramType::SkMsg,
        "sk_msg programs (CONFIG_BPF_STREAM_PARSER)",
    ),
];

/// Ok when every program type is supported; otherwise the first missing one.
pub fn check() -> Result<(), EbpfError> {
    for (program_type, feature) in PROGRAM_TYPES {
        match is_program_supported(program_type) {
            Ok(true) => {}
            Ok(false) => {
                return Err(EbpfError::Missing {
                    feature,
                    detail: "the kernel rejects this program type".into(),
                });
            }
            Err(err) => {
                return Err(EbpfError::Missing {
                    feature,
                    detail: format!("probing it failed: {err}"),
                });
            }
        }
    }
    Ok(())
}
