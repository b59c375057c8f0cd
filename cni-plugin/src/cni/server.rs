//! The agent's end of the plugin protocol ([`super::protocol`]): a unix
//! socket only root on the node can reach (0700 directory, 0600 socket; no
//! pod mounts it), one request per connection.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use amesh_core::config::ConfigSnapshot;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::protocol::{ErrorReply, MAX_LINE, PodAttachment, Reply, Request, codes};
use crate::enroll::{CniCommand, CniPod};
use crate::netns;
use crate::node_netns::NetnsScanner;

/// Bound on reading a request (the plugin writes it at once).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct CniServer {
    listener: UnixListener,
    path: PathBuf,
    commands: mpsc::Sender<CniCommand>,
    config: watch::Receiver<Arc<ConfigSnapshot>>,
    /// How long an ADD for a pod of an ambient namespace waits for the pod
    /// to appear in the config.
    pod_wait: Duration,
    host: NetnsScanner,
}

impl CniServer {
    /// Binds `path`, replacing a stale socket from an earlier run.
    pub fn bind(
        path: &Path,
        commands: mpsc::Sender<CniCommand>,
        config: watch::Receiver<Arc<ConfigSnapshot>>,
        pod_wait: Duration,
    ) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        match std::fs::remove_file(path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            commands,
            config,
            pod_wait,
            host: NetnsScanner::new(Vec::new(), false),
        })
    }

    pub async fn run(self) {
        info!(socket = %self.path.display(), "CNI socket listening");
        let shared = Arc::new(self);
        let mut connections = JoinSet::new();
        loop {
            let stream = match shared.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    error!(socket = %shared.path.display(), error = %err, "CNI accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            while connections.try_join_next().is_some() {}
            let server = shared.clone();
            connections.spawn(async move { server.serve(stream).await });
        }
    }

    async fn serve(&self, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read.take(MAX_LINE as u64));
        let mut line = String::new();
        let request = match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => serde_json::from_str::<Request>(&line).map_err(|err| {
                ErrorReply::new(
                    codes::DECODE_FAILURE,
                    "cannot decode the plugin's request",
                    err.to_string(),
                )
            }),
            Ok(Ok(_)) => return,
            Ok(Err(err)) => {
                warn!(error = %err, "reading a CNI request");
                return;
            }
            Err(_) => {
                warn!("CNI request not received in time");
                return;
            }
        };
        let reply = match request {
            Ok(request) => self.dispatch(request).await,
            Err(err) => Reply::Error(err),
        };
        if let Reply::Error(err) = &reply {
            warn!(code = err.code, msg = %err.msg, details = %err.details, "CNI request failed");
        }
        let mut text = serde_json::to_string(&reply).unwrap_or_else(|_| {
            r#"{"outcome":"error","code":5,"msg":"cannot encode the reply"}"#.to_owned()
        });
        text.push('\n');
        if let Err(err) = write.write_all(text.as_bytes()).await {
            debug!(error = %err, "the plugin went away before the reply");
        }
    }

    async fn dispatch(&self, request: Request) -> Reply {
        let (reply, wait) = oneshot::channel();
        let command = match request {
            Request::Status => return Reply::Ok,
            Request::Add(add) => match self.prepare_add(add).await {
                Ok(pod) => CniCommand::Add { pod, reply },
                Err(early) => return early,
            },
            Request::Del(del) => {
                info!(pod = %del.pod.key(), container = %del.attachment.container_id, "CNI DEL");
                CniCommand::Del {
                    attachment: del.attachment,
                    pod: del.pod,
                    netns: del.netns,
                    reply,
                }
            }
            Request::Check(check) => CniCommand::Check {
                attachment: check.attachment,
                pod: check.pod,
                netns: check.netns,
                reply,
            },
            Request::Gc { valid } => CniCommand::Gc { valid, reply },
        };
        if self.commands.send(command).await.is_err() {
            return Reply::Error(ErrorReply::new(
                codes::TRY_AGAIN_LATER,
                "the node agent is shutting down",
                "",
            ));
        }
        wait.await.unwrap_or_else(|_| {
            Reply::Error(ErrorReply::new(
                codes::TRY_AGAIN_LATER,
                "the node agent dropped the request",
                "",
            ))
        })
    }

    /// Checks the netns and, for a pod of an ambient namespace the config
    /// does not list yet, waits (bounded) for it to appear.
    async fn prepare_add(&self, add: PodAttachment) -> Result<CniPod, Reply> {
        let key = add.pod.key();
        info!(pod = %key, container = %add.attachment.container_id, netns = %add.netns.display(), "CNI ADD");
        let netns_id = match netns::Netns::open(&add.netns).and_then(|ns| ns.id()) {
            Ok(id) => id,
            Err(err) => {
                return Err(Reply::Error(ErrorReply::new(
                    codes::UNKNOWN_CONTAINER,
                    format!("pod {key}: cannot open CNI_NETNS {}", add.netns.display()),
                    err.to_string(),
                )));
            }
        };
        if self.host.is_host(netns_id) {
            return Err(Reply::Error(ErrorReply::new(
                codes::INVALID_CONFIG,
                format!(
                    "pod {key}: CNI_NETNS {} is the node's own netns; amesh never captures the node",
                    add.netns.display()
                ),
                "",
            )));
        }
        let mut config = self.config.clone();
        let listed = |s: &Arc<ConfigSnapshot>| {
            s.workload_by_name(&add.pod.namespace, &add.pod.name)
                .is_some()
        };
        let current = config.borrow_and_update().clone();
        if !listed(&current) && current.namespace_is_ambient(&add.pod.namespace) {
            debug!(pod = %key, wait = ?self.pod_wait, "pod not in the config yet; waiting");
            let _ = tokio::time::timeout(self.pod_wait, config.wait_for(|s| listed(s))).await;
        }
        Ok(CniPod {
            attachment: add.attachment,
            pod: add.pod,
            netns: add.netns,
            netns_id,
            ips: add.ips,
            fresh: true,
        })
    }
}
