//! Where an outbound connection goes, decided from its original destination.

use std::net::SocketAddr;
use std::sync::Arc;

use amesh_core::Identity;
use amesh_core::config::{ConfigSnapshot, WaypointRef, Workload};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Over HBONE to `hbone_addr`, asking for `target`, expecting `expected`.
    Hbone {
        hbone_addr: SocketAddr,
        target: SocketAddr,
        expected: Identity,
        /// The service hostname when the destination was a VIP.
        service: Option<String>,
        via_waypoint: bool,
    },
    /// Plain TCP to `dst` (not in the mesh).
    Passthrough {
        dst: SocketAddr,
        service: Option<String>,
    },
    /// Nothing can serve it; the reason is logged and the client reset.
    Refuse(String),
}

pub fn route(snapshot: &ConfigSnapshot, dst: SocketAddr, hbone_port: u16) -> Route {
    if let Some(entry) = snapshot.service_by_vip(dst.ip()) {
        let service = &entry.service;
        let hostname = Some(service.hostname.clone());
        if let Some(waypoint) = service.waypoint {
            return to_waypoint(snapshot, waypoint, dst, hostname);
        }
        let Some(port) = service.port(dst.port()) else {
            return Route::Refuse(format!(
                "service {} has no port {}",
                service.hostname,
                dst.port()
            ));
        };
        let Some(endpoint) = entry.pick_endpoint() else {
            return Route::Refuse(format!(
                "service {} has no healthy endpoint",
                service.hostname
            ));
        };
        // The endpoint's address in the VIP's family, where it has one.
        let ip = endpoint
            .ips
            .iter()
            .find(|ip| ip.is_ipv4() == dst.is_ipv4())
            .or(endpoint.ips.first())
            .copied();
        return to_workload(endpoint, ip, port.target(), hbone_port, hostname);
    }
    if let Some(workload) = snapshot.workload_by_ip(dst.ip()) {
        if let Some(waypoint) = workload.waypoint {
            return to_waypoint(snapshot, waypoint, dst, None);
        }
        return to_workload(workload, Some(dst.ip()), dst.port(), hbone_port, None);
    }
    Route::Passthrough { dst, service: None }
}

fn to_workload(
    workload: &Arc<Workload>,
    ip: Option<std::net::IpAddr>,
    port: u16,
    hbone_port: u16,
    service: Option<String>,
) -> Route {
    let Some(ip) = ip else {
        return Route::Refuse(format!("endpoint {} has no IP", workload.uid));
    };
    let target = SocketAddr::new(ip, port);
    if workload.in_mesh() {
        Route::Hbone {
            hbone_addr: SocketAddr::new(ip, hbone_port),
            target,
            expected: workload.identity.clone(),
            service,
            via_waypoint: false,
        }
    } else {
        Route::Passthrough {
            dst: target,
            service,
        }
    }
}

fn to_waypoint(
    snapshot: &ConfigSnapshot,
    waypoint: WaypointRef,
    target: SocketAddr,
    service: Option<String>,
) -> Route {
    match snapshot.workload_by_ip(waypoint.address) {
        Some(w) => Route::Hbone {
            hbone_addr: SocketAddr::new(waypoint.address, waypoint.port),
            target,
            expected: w.identity.clone(),
            service,
            via_waypoint: true,
        },
        None => Route::Refuse(format!(
            "waypoint {} is not a known workload",
            waypoint.address
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const CONFIG: &str = "\
workloads:
  - {uid: d/a, name: a, namespace: d, serviceAccount: sa-a, ips: [10.0.0.2], protocol: HBONE}
  - {uid: d/b, name: b, namespace: d, serviceAccount: sa-b, ips: [10.0.0.3, 'fd00::3'], protocol: HBONE}
  - {uid: d/c, name: c, namespace: d, ips: [10.0.0.4]}
  - {uid: d/sick, name: sick, namespace: d, ips: [10.0.0.5], protocol: HBONE, status: Unhealthy}
  - {uid: d/wp, name: wp, namespace: d, serviceAccount: waypoint, ips: [10.0.0.9], protocol: HBONE}
  - {uid: d/behind, name: behind, namespace: d, ips: [10.0.0.6], protocol: HBONE, waypoint: {address: 10.0.0.9}}
services:
  - {name: s, namespace: d, vips: [10.96.0.1], ports: [{port: 80, targetPort: 8080}], endpoints: [d/a, d/sick, d/b]}
  - {name: plain, namespace: d, vips: [10.96.0.2], ports: [{port: 80}], endpoints: [d/c]}
  - {name: none, namespace: d, vips: [10.96.0.3], ports: [{port: 80}], endpoints: [d/sick]}
";

    fn snapshot() -> ConfigSnapshot {
        amesh_core::config::parse(CONFIG, Path::new("t.yaml"), "cluster.local").unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mesh_workload_goes_over_hbone_with_its_identity() {
        let r = route(&snapshot(), addr("10.0.0.3:9000"), 15008);
        let Route::Hbone {
            hbone_addr,
            target,
            expected,
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(hbone_addr, addr("10.0.0.3:15008"));
        assert_eq!(target, addr("10.0.0.3:9000"));
        assert_eq!(expected.to_string(), "spiffe://cluster.local/ns/d/sa/sa-b");
    }

    #[test]
    fn an_ipv6_destination_is_tunnelled_over_ipv6() {
        let r = route(&snapshot(), addr("[fd00::3]:9000"), 15008);
        let Route::Hbone {
            hbone_addr, target, ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(hbone_addr, addr("[fd00::3]:15008"));
        assert_eq!(target, addr("[fd00::3]:9000"));
    }

    #[test]
    fn vip_round_robins_over_healthy_endpoints_with_target_port() {
        let snap = snapshot();
        let mut targets = Vec::new();
        for _ in 0..4 {
            match route(&snap, addr("10.96.0.1:80"), 15008) {
                Route::Hbone {
                    target, service, ..
                } => {
                    assert_eq!(service.as_deref(), Some("s.d.svc.cluster.local"));
                    targets.push(target);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(targets.contains(&addr("10.0.0.2:8080")));
        assert!(targets.contains(&addr("10.0.0.3:8080")));
        assert!(!targets.iter().any(|t| t.ip().to_string() == "10.0.0.5"));
    }

    #[test]
    fn non_mesh_and_unknown_pass_through() {
        let snap = snapshot();
        assert_eq!(
            route(&snap, addr("10.0.0.4:80"), 15008),
            Route::Passthrough {
                dst: addr("10.0.0.4:80"),
                service: None
            }
        );
        assert_eq!(
            route(&snap, addr("192.0.2.1:443"), 15008),
            Route::Passthrough {
                dst: addr("192.0.2.1:443"),
                service: None
            }
        );
        assert!(matches!(
            route(&snap, addr("10.96.0.2:80"), 15008),
            Route::Passthrough { dst, .. } if dst == addr("10.0.0.4:80")
        ));
    }

    #[test]
    fn vip_without_port_or_endpoints_is_refused() {
        let snap = snapshot();
        assert!(matches!(
            route(&snap, addr("10.96.0.1:81"), 15008),
            Route::Refuse(_)
        ));
        assert!(matches!(
            route(&snap, addr("10.96.0.3:80"), 15008),
            Route::Refuse(_)
        ));
    }

    #[test]
    fn workload_with_waypoint_goes_to_the_waypoint() {
        let r = route(&snapshot(), addr("10.0.0.6:80"), 15008);
        let Route::Hbone {
            hbone_addr,
            target,
            expected,
            via_waypoint,
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert!(via_waypoint);
        assert_eq!(hbone_addr, addr("10.0.0.9:15008"));
        assert_eq!(target, addr("10.0.0.6:80"));
        assert_eq!(expected.service_account(), "waypoint");
    }
}
