//! One DeltaAggregatedResources stream: subscribe to every type (with the
//! versions held, after a reconnect), then apply each push and ACK or NACK it.

use prost_types::{Struct, Value, value::Kind};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::state::XdsState;
use super::{ClientConfig, XdsError, XdsHandler, channel};
use crate::xds::MORE_FOLLOWS_SUFFIX;
use crate::xds::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Node, Status,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};

/// gRPC INVALID_ARGUMENT: the code Envoy and Istio NACK with.
const INVALID_ARGUMENT: i32 = 3;
/// Requests waiting to be sent: one subscription per type plus ACKs, which
/// are sent one per response.
const OUTBOX: usize = 16;
/// Largest push accepted (a full state of 10,000 workloads is several MB).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// How a stream ended.
#[derive(Debug)]
pub(super) struct SessionEnd {
    /// At least one push arrived: the connection worked.
    pub received: bool,
    /// Why, when not a clean close by the server.
    pub error: Option<XdsError>,
}

pub(super) async fn run(
    config: &ClientConfig,
    channel: Channel,
    state: &mut XdsState,
    handler: &mut impl XdsHandler,
) -> SessionEnd {
    let mut received = false;
    let error = stream(config, channel, state, handler, &mut received)
        .await
        .err();
    SessionEnd { received, error }
}

async fn stream(
    config: &ClientConfig,
    channel: Channel,
    state: &mut XdsState,
    handler: &mut impl XdsHandler,
    received: &mut bool,
) -> Result<(), XdsError> {
    let (outbox, requests) = mpsc::channel(OUTBOX);
    for type_url in &config.types {
        let subscribe = DeltaDiscoveryRequest {
            node: Some(node(config)),
            type_url: (*type_url).to_owned(),
            initial_resource_versions: state.versions(type_url).into_iter().collect(),
            ..Default::default()
        };
        // Cannot fail: the receiver is alive and the outbox has room.
        let _ = outbox.try_send(subscribe);
    }
    let mut request = tonic::Request::new(ReceiverStream::new(requests));
    if let Some(path) = &config.token_file {
        request
            .metadata_mut()
            .insert("authorization", channel::bearer(path)?);
    }
    // A full state of 10,000 workloads is several MB: above tonic's 4 MB default.
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let refused = |status: tonic::Status| match status.code() {
        // No connection (yet): not a verdict of the control plane.
        tonic::Code::Unavailable => XdsError::Stream {
            address: config.address.clone(),
            reason: format!("cannot open the stream: {}", status.message()),
        },
        code => XdsError::Refused {
            address: config.address.clone(),
            code: format!("{code:?}"),
            message: status.message().to_owned(),
        },
    };
    let mut responses = client
        .delta_aggregated_resources(request)
        .await
        .map_err(refused)?
        .into_inner();
    info!(address = %config.address, types = ?config.types, "subscribed to the control plane");
    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Ok(()),
            Err(status) => {
                return Err(XdsError::Stream {
                    address: config.address.clone(),
                    reason: format!("{:?}: {}", status.code(), status.message()),
                });
            }
        };
        *received = true;
        let reply = handle(config, state, handler, &response);
        if outbox.send(reply).await.is_err() {
            return Err(XdsError::Stream {
                address: config.address.clone(),
                reason: "the request stream closed".into(),
            });
        }
    }
}

/// Applies one push and returns its ACK or NACK.
fn handle(
    config: &ClientConfig,
    state: &mut XdsState,
    handler: &mut impl XdsHandler,
    response: &DeltaDiscoveryResponse,
) -> DeltaDiscoveryRequest {
    let partial = response.system_version_info.ends_with(MORE_FOLLOWS_SUFFIX);
    let outcome = if !config.types.contains(&response.type_url.as_str()) {
        Err(format!("type {} was not subscribed to", response.type_url))
    } else if partial {
        // Part of a larger change: the data plane sees it once whole.
        state.apply(response, true);
        Ok(())
    } else {
        let undo = state.apply(response, false);
        match handler.apply(state) {
            Ok(()) => Ok(()),
            Err(message) => {
                state.revert(undo);
                Err(message)
            }
        }
    };
    let error_detail = match outcome {
        Ok(()) => {
            debug!(
                type_url = %response.type_url,
                nonce = %response.nonce,
                updated = response.resources.len(),
                removed = response.removed_resources.len(),
                total = state.resources(&response.type_url).len(),
                "xDS push applied"
            );
            None
        }
        Err(message) => {
            warn!(
                type_url = %response.type_url,
                nonce = %response.nonce,
                reason = %message,
                "xDS push refused (NACK): keeping the previous configuration"
            );
            Some(Status {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            })
        }
    };
    DeltaDiscoveryRequest {
        type_url: response.type_url.clone(),
        response_nonce: response.nonce.clone(),
        error_detail,
        ..Default::default()
    }
}

/// Who we are: Istio reads the node name from metadata, Envoy the id.
fn node(config: &ClientConfig) -> Node {
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let fields = [
        ("NODE_NAME".to_owned(), text(&config.node)),
        ("ROLE".to_owned(), text(&config.role)),
    ]
    .into_iter()
    .collect();
    Node {
        id: config.node.clone(),
        cluster: config.role.clone(),
        metadata: Some(Struct { fields }),
    }
}
