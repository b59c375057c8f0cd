//! Service → `istio.workload.Service`, and back.

use super::{ConvertError, ip_bytes, ip_from_bytes};
use crate::config::{Service, ServicePort, WaypointRef};
use crate::hbone::HBONE_PORT;
use crate::xds::proto::istio::workload::{
    self as proto, GatewayAddress, NetworkAddress, gateway_address::Destination,
};

/// VIPs, ports and waypoint; endpoints are told by the workloads.
pub fn service_to_proto(s: &Service) -> proto::Service {
    proto::Service {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        hostname: s.hostname.clone(),
        addresses: s
            .vips
            .iter()
            .map(|&vip| NetworkAddress {
                network: String::new(),
                address: ip_bytes(vip),
            })
            .collect(),
        ports: ports_to_proto(&s.ports),
        waypoint: s.waypoint.as_ref().map(waypoint_to_proto),
        // A Kubernetes Service, not a ServiceEntry.
        canonical: true,
        ..proto::Service::default()
    }
}

pub(super) fn ports_to_proto(ports: &[ServicePort]) -> Vec<proto::Port> {
    ports
        .iter()
        .map(|p| proto::Port {
            service_port: u32::from(p.port),
            target_port: u32::from(p.target()),
        })
        .collect()
}

pub(super) fn waypoint_to_proto(w: &WaypointRef) -> GatewayAddress {
    GatewayAddress {
        destination: Some(Destination::Address(NetworkAddress {
            network: String::new(),
            address: ip_bytes(w.address),
        })),
        hbone_mtls_port: u32::from(w.port),
    }
}

/// Builds [`ConvertError`]s for one resource.
pub(super) struct At<'a>(pub &'a str);

impl At<'_> {
    pub(super) fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ConvertError {
        ConvertError {
            resource: self.0.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }
}

pub(super) fn waypoint_from_proto(
    at: &At<'_>,
    gw: &GatewayAddress,
) -> Result<WaypointRef, ConvertError> {
    let address = match &gw.destination {
        Some(Destination::Address(a)) => {
            ip_from_bytes(&a.address).map_err(|m| at.err("waypoint.address.address", m))?
        }
        Some(Destination::Hostname(h)) => {
            return Err(at.err(
                "waypoint.hostname",
                format!(
                    "waypoint {}/{} is given by hostname: only addresses are supported",
                    h.namespace, h.hostname
                ),
            ));
        }
        None => return Err(at.err("waypoint", "has neither address nor hostname")),
    };
    let port = match gw.hbone_mtls_port {
        0 => HBONE_PORT,
        p => u16::try_from(p)
            .map_err(|_| at.err("waypoint.hbone_mtls_port", format!("{p} is not a port")))?,
    };
    Ok(WaypointRef { address, port })
}

pub(super) fn port_from_proto(
    at: &At<'_>,
    field: &str,
    p: &proto::Port,
) -> Result<ServicePort, ConvertError> {
    let port = u16::try_from(p.service_port)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| {
            at.err(
                format!("{field}.service_port"),
                format!("{} is not a port (1-65535)", p.service_port),
            )
        })?;
    // 0: unknown (a named port istiod could not resolve): the service port.
    let target_port = match p.target_port {
        0 => None,
        t => Some(u16::try_from(t).map_err(|_| {
            at.err(
                format!("{field}.target_port"),
                format!("{t} is not a port (1-65535)"),
            )
        })?),
    };
    Ok(ServicePort { port, target_port })
}

/// A received service; `endpoints` are filled by the caller.
pub(super) fn service_from_proto(s: &proto::Service) -> Result<Service, ConvertError> {
    let label = format!("Address {}/{}", s.namespace, s.hostname);
    let at = At(&label);
    if s.namespace.is_empty() || s.hostname.is_empty() {
        return Err(at.err("hostname", "namespace and hostname must be set"));
    }
    let vips = s
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| ip_from_bytes(&a.address).map_err(|m| at.err(format!("addresses[{i}]"), m)))
        .collect::<Result<_, _>>()?;
    let ports = s
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| port_from_proto(&at, &format!("ports[{i}]"), p))
        .collect::<Result<_, _>>()?;
    let waypoint = s
        .waypoint
        .as_ref()
        .map(|w| waypoint_from_proto(&at, w))
        .transpose()?;
    Ok(Service {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        hostname: s.hostname.clone(),
        vips,
        ports,
        endpoints: Vec::new(),
        waypoint,
    })
}
