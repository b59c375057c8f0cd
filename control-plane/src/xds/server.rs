//! `DeltaAggregatedResources`: one task per stream, wildcard subscriptions
//! per type, at most one unacknowledged response per type.
//!
//! A subscription always gets a response, even with zero resources (a
//! client reconnecting with `initial_resource_versions` that match the
//! current state gets an empty one), so the client knows it is current.

use std::collections::HashMap;
use std::sync::Arc;

use amesh_core::xds::proto::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use amesh_core::xds::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use amesh_core::xds::{
    ADDRESS_TYPE, AUTHORIZATION_TYPE, MORE_FOLLOWS_SUFFIX, NAMESPACE_ENROLLMENT_TYPE,
    POD_ENROLLMENT_TYPE, WAYPOINT_CONFIG_TYPE,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::diff::{Update, broadcast};
use super::metrics::XdsMetrics;
use super::state::{Answer, Delta, TypeState};
use crate::ca::auth::{Authenticator, Caller, bearer_token};
use crate::derive::Derived;

const KNOWN_TYPES: [&str; 5] = [
    ADDRESS_TYPE,
    AUTHORIZATION_TYPE,
    POD_ENROLLMENT_TYPE,
    NAMESPACE_ENROLLMENT_TYPE,
    WAYPOINT_CONFIG_TYPE,
];

/// Responses queued per stream; at most one per type is ever
/// unacknowledged, so this bounds nothing but the types.
const STREAM_QUEUE: usize = 8;

pub struct XdsServer {
    updates: watch::Receiver<Arc<Update>>,
    auth: Arc<dyn Authenticator>,
    metrics: Arc<XdsMetrics>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for XdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsServer").finish_non_exhaustive()
    }
}

impl XdsServer {
    /// Starts following `derived` (one diff per derivation, shared by all
    /// streams) until `cancel`.
    pub fn new(
        derived: watch::Receiver<Arc<Derived>>,
        auth: Arc<dyn Authenticator>,
        metrics: Arc<XdsMetrics>,
        cancel: CancellationToken,
    ) -> Self {
        let initial = Arc::new(Update::initial(derived.borrow().clone()));
        let (tx, updates) = watch::channel(initial);
        tokio::spawn(broadcast(derived, tx, cancel.clone()));
        Self {
            updates,
            auth,
            metrics,
            cancel,
        }
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let token = bearer_token(request.metadata()).map_err(|e| {
            tracing::warn!(error = %e, "discovery stream refused");
            Status::unauthenticated(e.to_string())
        })?;
        let caller = self.auth.authenticate(token).await.map_err(|e| {
            tracing::warn!(error = %e, "discovery stream refused");
            Status::unauthenticated(e.to_string())
        })?;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let stream = Subscriber {
            caller,
            node: None,
            types: HashMap::new(),
            nonces: 0,
            tx,
            metrics: self.metrics.clone(),
        };
        tokio::spawn(stream.run(
            request.into_inner(),
            self.updates.clone(),
            self.cancel.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Subscriber {
    caller: Caller,
    /// Resources scoped to a node go only to this node.
    node: Option<String>,
    types: HashMap<String, TypeState>,
    nonces: u64,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    metrics: Arc<XdsMetrics>,
}

/// The stream ends: the client left or the server shuts down.
struct Closed;

impl Subscriber {
    async fn run(
        mut self,
        mut inbound: Streaming<DeltaDiscoveryRequest>,
        mut updates: watch::Receiver<Arc<Update>>,
        cancel: CancellationToken,
    ) {
        let gauge = self.metrics.subscriber(&format!("{:?}", self.caller.role));
        gauge.inc();
        tracing::debug!(caller = %self.caller, "discovery stream opened");
        let mut latest = updates.borrow_and_update().clone();
        loop {
            let step = tokio::select! {
                () = cancel.cancelled() => Err(Closed),
                message = inbound.message() => match message {
                    Ok(Some(request)) => self.on_request(request, &latest).await,
                    Ok(None) => Err(Closed),
                    Err(status) => {
                        tracing::debug!(caller = %self.caller, %status, "discovery stream ended");
                        Err(Closed)
                    }
                },
                changed = updates.changed() => match changed {
                    Ok(()) => {
                        latest = updates.borrow_and_update().clone();
                        self.push_all(&latest).await
                    }
                    Err(_) => Err(Closed),
                },
            };
            if step.is_err() {
                break;
            }
        }
        gauge.dec();
        tracing::debug!(caller = %self.caller, "discovery stream closed");
    }

    async fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        latest: &Update,
    ) -> Result<(), Closed> {
        self.check_node(&request).await?;
        let type_url = request.type_url.clone();
        if request.response_nonce.is_empty() {
            if self.types.contains_key(&type_url) {
                // Wildcard already: named (un)subscriptions change nothing.
                return Ok(());
            }
            if !KNOWN_TYPES.contains(&type_url.as_str()) {
                tracing::warn!(caller = %self.caller, type_url, "subscription to a type this control plane does not serve; it stays empty");
            }
            let initial = request.initial_resource_versions.into_iter().collect();
            let state = TypeState::new(&type_url, initial);
            self.types.insert(type_url.clone(), state);
            return self.push(&type_url, latest, true).await;
        }
        let Some(state) = self.types.get_mut(&type_url) else {
            tracing::debug!(caller = %self.caller, type_url, "answer for a type never subscribed: ignored");
            return Ok(());
        };
        let nack = request.error_detail.as_ref();
        match state.answer(&request.response_nonce, nack.is_some()) {
            Answer::Stale => return Ok(()),
            Answer::Ack => {}
            Answer::Nack => {
                let message = nack.map(|s| s.message.as_str()).unwrap_or_default();
                tracing::warn!(caller = %self.caller, type_url, nonce = request.response_nonce, error = message, "client rejected a discovery response; it keeps its previous state");
                self.metrics.nacked(&type_url);
            }
        }
        // Anything that changed while the response was in flight.
        self.push(&type_url, latest, false).await
    }

    /// The node a client claims must be the one its token proves.
    async fn check_node(&mut self, request: &DeltaDiscoveryRequest) -> Result<(), Closed> {
        let claimed = request.node.as_ref().and_then(claimed_node);
        match (&self.caller.node, claimed) {
            (Some(own), Some(claimed)) if *own != claimed => {
                let status = Status::permission_denied(format!(
                    "caller is node {own} but the request names node {claimed}"
                ));
                tracing::warn!(caller = %self.caller, claimed, "discovery stream refused: node mismatch");
                let _ = self.tx.send(Err(status)).await;
                Err(Closed)
            }
            (Some(own), _) => {
                self.node = Some(own.clone());
                Ok(())
            }
            // No node in the credentials (a waypoint): node-scoped
            // resources follow the node it names.
            (None, claimed) => {
                if self.node.is_none() {
                    self.node = claimed;
                }
                Ok(())
            }
        }
    }

    async fn push_all(&mut self, latest: &Update) -> Result<(), Closed> {
        let types: Vec<String> = self.types.keys().cloned().collect();
        for type_url in types {
            self.push(&type_url, latest, false).await?;
        }
        Ok(())
    }

    async fn push(&mut self, type_url: &str, latest: &Update, force: bool) -> Result<(), Closed> {
        let Some(state) = self.types.get_mut(type_url) else {
            return Ok(());
        };
        let nonces = &mut self.nonces;
        let Some(delta) = state.prepare(latest, self.node.as_deref(), force, || {
            *nonces += 1;
            nonces.to_string()
        }) else {
            return Ok(());
        };
        let nonce = state.nonce().unwrap_or_default().to_owned();
        let response = response(type_url, nonce, latest, delta);
        self.metrics.pushed(type_url, response.resources.len());
        self.tx.send(Ok(response)).await.map_err(|_| Closed)
    }
}

fn response(
    type_url: &str,
    nonce: String,
    latest: &Update,
    delta: Delta,
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: if delta.more {
            format!("{}{MORE_FOLLOWS_SUFFIX}", latest.cur.generation)
        } else {
            latest.cur.generation.to_string()
        },
        resources: delta
            .resources
            .iter()
            .map(|r| Resource {
                version: r.version.clone(),
                resource: Some(r.body.clone()),
                name: r.name.clone(),
                aliases: Vec::new(),
                ttl: None,
            })
            .collect(),
        type_url: type_url.to_owned(),
        nonce,
        removed_resources: delta.removed,
    }
}

/// The node a request names: Istio's proxies send an id of the form
/// `type~ip~pod.ns~domain` and the node in metadata `NODE_NAME`; ours send
/// the node name as the id.
fn claimed_node(
    node: &amesh_core::xds::proto::envoy::service::discovery::v3::Node,
) -> Option<String> {
    use prost_types::value::Kind;
    if node.id.contains('~') {
        let field = node.metadata.as_ref()?.fields.get("NODE_NAME")?;
        match &field.kind {
            Some(Kind::StringValue(name)) if !name.is_empty() => Some(name.clone()),
            _ => None,
        }
    } else if node.id.is_empty() {
        None
    } else {
        Some(node.id.clone())
    }
}
