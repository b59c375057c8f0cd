//! What fills the [`crate::store::Store`]: a local folder of YAML
//! ([`folder`]) or the Kubernetes API ([`kube`]).

pub mod folder;
pub mod kube;
