//! Deciding without the agent, from the node state file: an ambient pod
//! must not start uncaptured, any other pod must not be blocked.
//!
//! A state file that cannot be read or parsed counts as "maybe ambient":
//! a corrupt file must not let ambient pods start uncaptured. Only a
//! missing file (the agent never ran on this node) lets every pod start;
//! the agent enrolls running pods when it comes up.

use std::io;
use std::path::Path;

use tracing::{info, warn};

use crate::cni::protocol::PodRef;
use crate::cni::state::{NodeState, OfflineDecision, StateError};

use super::PluginError;
use super::netconf::NetConf;

/// What the state file says about the pod; `None` without a state file.
fn decide(conf: &NetConf, pod: &PodRef) -> Result<Option<OfflineDecision>, StateError> {
    Ok(NodeState::read(&conf.state_file)?.map(|state| state.decide(&pod.namespace, &pod.name)))
}

/// ADD with the agent unreachable: `Ok` lets the pod start.
pub fn add(
    conf: &NetConf,
    pod: &PodRef,
    socket: &Path,
    cause: &io::Error,
) -> Result<(), PluginError> {
    let key = pod.key();
    let unreachable = format!("amesh node agent unreachable at {}", socket.display());
    match decide(conf, pod) {
        Ok(None) => {
            warn!(
                "node agent unreachable and no state file: letting pod {key} start; the agent enrolls it when it comes up ({cause})"
            );
            Ok(())
        }
        Ok(Some(OfflineDecision::NotAmbient)) => {
            info!("{unreachable} ({cause}); pod {key} is not in the mesh: letting it start");
            Ok(())
        }
        Ok(Some(OfflineDecision::Ambient)) => Err(PluginError::TryAgain {
            msg: format!(
                "{unreachable}: pod {key} is in the mesh and must not start uncaptured; the runtime will retry"
            ),
            details: cause.to_string(),
        }),
        Err(state) => Err(PluginError::TryAgain {
            msg: format!(
                "{unreachable} and its state file is unusable: pod {key} may be in the mesh and must not start uncaptured; the runtime will retry"
            ),
            details: format!("{state}; connect: {cause}"),
        }),
    }
}

/// CHECK with the agent unreachable: only pods that should be captured
/// fail, since their capture cannot be verified.
pub fn check(
    conf: &NetConf,
    pod: &PodRef,
    socket: &Path,
    cause: &io::Error,
) -> Result<(), PluginError> {
    let key = pod.key();
    let msg = format!(
        "cannot verify capture of pod {key}: amesh node agent unreachable at {}",
        socket.display()
    );
    match decide(conf, pod) {
        Ok(None | Some(OfflineDecision::NotAmbient)) => {
            info!("{msg} ({cause}); the pod is not known to be in the mesh: CHECK passes");
            Ok(())
        }
        Ok(Some(OfflineDecision::Ambient)) => Err(PluginError::TryAgain {
            msg,
            details: cause.to_string(),
        }),
        Err(state) => Err(PluginError::TryAgain {
            msg,
            details: format!("{state}; connect: {cause}"),
        }),
    }
}
