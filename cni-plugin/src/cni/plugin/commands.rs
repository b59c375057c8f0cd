//! ADD, DEL, CHECK, STATUS and GC: the request each sends the agent, and
//! what each does with the reply or without one.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tracing::{info, warn};

use crate::cni::protocol::{Attachment, PodAttachment, Reply, Request};

use super::PluginError;
use super::agent::{self, AgentError};
use super::env::{CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS, CniEnv};
use super::netconf::{NetConf, pass_through, result_ips};
use super::offline;

/// How long DEL, CHECK, STATUS and GC wait for the agent's reply (ADD
/// waits `addTimeoutSecs`: capture and ztunnel must be in place first).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Enrolls the pod (or learns it is not in the mesh) and passes the
/// previous result through.
pub fn add(conf: &NetConf, env: &CniEnv) -> Result<Value, PluginError> {
    let (request, prev) = pod_request(conf, env)?;
    let key = request.pod.key();
    let pod = request.pod.clone();
    match agent::call(&conf.socket, &Request::Add(request), conf.add_timeout) {
        Ok(Reply::Enrolled) => info!("pod {key} enrolled"),
        Ok(Reply::Skipped { reason }) => info!("pod {key} not enrolled: {reason}"),
        Ok(Reply::Error(reply)) => return Err(PluginError::Agent(reply)),
        Ok(Reply::Ok) => {
            return Err(PluginError::TryAgain {
                msg: format!(
                    "amesh node agent did not confirm capture of pod {key} (unexpected reply to ADD); the runtime will retry"
                ),
                details: "reply: ok".into(),
            });
        }
        Err(AgentError::Unreachable { socket, source }) => {
            offline::add(conf, &pod, &socket, &source)?;
        }
        Err(err @ AgentError::NoReply { .. }) => {
            return Err(PluginError::TryAgain {
                msg: format!(
                    "amesh node agent did not confirm capture of pod {key}; the runtime will retry"
                ),
                details: err.to_string(),
            });
        }
    }
    Ok(pass_through(prev, &conf.cni_version))
}

/// Un-enrolls. Succeeds whenever it can: a failing DEL keeps the runtime
/// from tearing the pod down.
pub fn del(conf: &NetConf, env: &CniEnv) -> Result<(), PluginError> {
    let container_id = env.required(CNI_CONTAINERID)?;
    let request = PodAttachment {
        attachment: Attachment {
            container_id: container_id.clone(),
            ifname: env.required(CNI_IFNAME)?,
        },
        // Absent when the netns is already gone.
        netns: env.netns(),
        pod: env.pod_or_empty(),
        ips: conf
            .prev_result
            .as_ref()
            .and_then(|prev| result_ips(prev).ok())
            .unwrap_or_default(),
    };
    match agent::call(&conf.socket, &Request::Del(request), REPLY_TIMEOUT) {
        Ok(Reply::Error(reply)) => Err(PluginError::Agent(reply)),
        Ok(_) => Ok(()),
        Err(err) => {
            warn!(
                "{err}; DEL of container {container_id} succeeds anyway (the agent reconciles pods when it runs)"
            );
            Ok(())
        }
    }
}

/// Asks the agent whether the pod's capture is as it should be.
pub fn check(conf: &NetConf, env: &CniEnv) -> Result<(), PluginError> {
    let (request, _) = pod_request(conf, env)?;
    let key = request.pod.key();
    let pod = request.pod.clone();
    match agent::call(&conf.socket, &Request::Check(request), REPLY_TIMEOUT) {
        Ok(Reply::Error(reply)) => Err(PluginError::Agent(reply)),
        Ok(_) => Ok(()),
        Err(AgentError::Unreachable { socket, source }) => {
            offline::check(conf, &pod, &socket, &source)
        }
        Err(err @ AgentError::NoReply { .. }) => Err(PluginError::TryAgain {
            msg: format!("cannot verify capture of pod {key}: the amesh node agent gave no reply"),
            details: err.to_string(),
        }),
    }
}

/// Fails only when the agent answers that it is not ready. An unreachable
/// agent is reported ready: a failing STATUS stops the runtime from calling
/// ADD for every pod, which would block pods outside the mesh while the
/// agent is down; ADD decides per pod instead (ambient pods fail and are
/// retried, others start).
pub fn status(conf: &NetConf) -> Result<(), PluginError> {
    match agent::call(&conf.socket, &Request::Status, REPLY_TIMEOUT) {
        Ok(Reply::Error(reply)) => Err(PluginError::NotAvailable(reply)),
        Ok(_) => Ok(()),
        Err(err) => {
            warn!("{err}; STATUS reports ready so pods outside the mesh keep starting");
            Ok(())
        }
    }
}

/// Forwards the runtime's list of attachments still in use.
pub fn gc(conf: &NetConf) -> Result<(), PluginError> {
    // No list is not an empty list: an empty one would tell the agent to
    // forget every pod.
    let Some(valid) = conf.valid_attachments()? else {
        warn!("GC without cni.dev/valid-attachments: nothing to do");
        return Ok(());
    };
    match agent::call(&conf.socket, &Request::Gc { valid }, REPLY_TIMEOUT) {
        Ok(Reply::Error(reply)) => Err(PluginError::Agent(reply)),
        Ok(_) => Ok(()),
        Err(err) => {
            warn!("{err}; GC skipped (the agent reconciles pods when it runs)");
            Ok(())
        }
    }
}

/// ADD's and CHECK's request: the full environment, the pod in CNI_ARGS
/// and the previous result are required.
fn pod_request<'a>(
    conf: &'a NetConf,
    env: &CniEnv,
) -> Result<(PodAttachment, &'a serde_json::Map<String, Value>), PluginError> {
    let container_id = env.required(CNI_CONTAINERID)?;
    let netns = PathBuf::from(env.required(CNI_NETNS)?);
    let ifname = env.required(CNI_IFNAME)?;
    let pod = env.pod()?;
    let prev = conf.require_prev_result()?;
    let request = PodAttachment {
        attachment: Attachment {
            container_id,
            ifname,
        },
        netns,
        pod,
        ips: result_ips(prev)?,
    };
    Ok((request, prev))
}
