//! Istio `DestinationRule`: subsets, load balancing, connection pools and
//! outlier detection for one host.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::check::{self, Checked, Ctx, err};
use super::common::WorkloadSelector;
use super::duration::IstioDuration;
use super::virtual_service::PortSelector;

/// The `spec` of a DestinationRule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    /// The service this rule applies to.
    #[serde(default)]
    pub host: String,
    /// Policy for every subset unless the subset overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named groups of endpoints, selected by pod labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Not supported (sidecar-only in Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

/// `subsets[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// Name referenced by `destination.subset`.
    pub name: String,
    /// Endpoints whose pods carry all these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Overrides the rule's policy for this subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// `trafficPolicy`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Endpoint choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection and request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Only `ISTIO_MUTUAL` and `DISABLE` are supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<serde_json::Value>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<serde_json::Value>,
}

/// `portLevelSettings[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The service port these settings apply to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    /// Endpoint choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection and request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Only `ISTIO_MUTUAL` and `DISABLE` are supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// `loadBalancer`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// The algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<serde_json::Value>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<serde_json::Value>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<IstioDuration>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<serde_json::Value>,
}

/// `loadBalancer.simple`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Istio's default (least request).
    Unspecified,
    /// Deprecated alias of `LEAST_REQUEST` in Istio.
    LeastConn,
    /// Random endpoint.
    Random,
    /// Not supported: forward to the original destination.
    Passthrough,
    /// Round robin.
    RoundRobin,
    /// Fewest outstanding requests (power of two choices).
    LeastRequest,
}

/// `connectionPool`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    /// TCP limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// `connectionPool.tcp`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Most connections to the destination host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// TCP connect timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<IstioDuration>,
    /// SO_KEEPALIVE settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<IstioDuration>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<IstioDuration>,
}

/// `tcpKeepalive`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<IstioDuration>,
    /// Time between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<IstioDuration>,
}

/// `connectionPool.http`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Most requests queued waiting for a connection; past it: 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<u32>,
    /// Most active requests to the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<u32>,
    /// Requests per connection before it is closed (1 disables keep-alive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Most outstanding retries to the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Idle upstream connections close after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<IstioDuration>,
    /// Upgrade HTTP/1.1 to HTTP/2 upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Use the client's protocol upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
}

/// `h2UpgradePolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// Mesh default.
    Default,
    /// Keep HTTP/1.1.
    DoNotUpgrade,
    /// Upgrade to HTTP/2.
    Upgrade,
}

/// `outlierDetection`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated; not supported (use consecutive5xxErrors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i32>,
    /// Consecutive 5xx (or connect failures) before ejection; 0 disables.
    #[serde(
        default,
        rename = "consecutive5xxErrors",
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx_errors: Option<u32>,
    /// Consecutive 502/503/504 before ejection; 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Consecutive local-origin failures before ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// Count local-origin failures apart from the upstream's answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    /// Time between ejection sweeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<IstioDuration>,
    /// Minimum ejection time (multiplied by the number of ejections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<IstioDuration>,
    /// Most endpoints ejected at once, 0..100 %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i32>,
    /// Below this share of healthy endpoints, outlier detection is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i32>,
}

/// `tls` (client side, towards the destination).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// The TLS mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
}

/// `tls.mode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// Plain text (amesh still carries it over HBONE mTLS between nodes).
    Disable,
    /// Not supported: TLS originated to the destination.
    Simple,
    /// Not supported: mutual TLS with user certificates.
    Mutual,
    /// The mesh's own mutual TLS (what HBONE provides).
    IstioMutual,
}

impl DestinationRule {
    pub(crate) fn check(&self, at: &str, ctx: &mut Ctx) -> Checked {
        check::non_empty(&format!("{at}.host"), &self.host, "host")?;
        if self.host == "*" {
            return Err(err(format!("{at}.host"), "invalid destination host *"));
        }
        if let Some(tp) = &self.traffic_policy {
            tp.check(&format!("{at}.trafficPolicy"), ctx)?;
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.subsets.iter().enumerate() {
            let f = format!("{at}.subsets[{i}]");
            check::dns_label(&format!("{f}.name"), &s.name, "subset name")?;
            if !names.insert(s.name.as_str()) {
                return Err(err(
                    format!("{f}.name"),
                    format!("duplicate subset name {:?}", s.name),
                ));
            }
            if let Some(tp) = &s.traffic_policy {
                tp.check(&format!("{f}.trafficPolicy"), ctx)?;
            }
        }
        ctx.unsupported_if_any(at, "exportTo", !self.export_to.is_empty());
        ctx.unsupported_if(at, "workloadSelector", &self.workload_selector);
        Ok(())
    }
}

impl TrafficPolicy {
    fn check(&self, at: &str, ctx: &mut Ctx) -> Checked {
        if *self == Self::default() {
            return Err(err(at, "traffic policy must have at least one field"));
        }
        check_policy_parts(
            at,
            ctx,
            self.load_balancer.as_ref(),
            self.connection_pool.as_ref(),
            self.outlier_detection.as_ref(),
            self.tls.as_ref(),
        )?;
        let mut ports = BTreeSet::new();
        for (i, p) in self.port_level_settings.iter().enumerate() {
            let f = format!("{at}.portLevelSettings[{i}]");
            let Some(port) = p.port else {
                return Err(err(format!("{f}.port"), "port is required"));
            };
            check::port(&format!("{f}.port.number"), port.number)?;
            if !ports.insert(port.number) {
                return Err(err(
                    format!("{f}.port.number"),
                    format!("duplicate port {} in portLevelSettings", port.number),
                ));
            }
            check_policy_parts(
                &f,
                ctx,
                p.load_balancer.as_ref(),
                p.connection_pool.as_ref(),
                p.outlier_detection.as_ref(),
                p.tls.as_ref(),
            )?;
        }
        ctx.unsupported_if(at, "tunnel", &self.tunnel);
        ctx.unsupported_if(at, "proxyProtocol", &self.proxy_protocol);
        Ok(())
    }
}

fn check_policy_parts(
    at: &str,
    ctx: &mut Ctx,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) -> Checked {
    if let Some(lb) = lb {
        let at = format!("{at}.loadBalancer");
        if lb.simple.is_some() && lb.consistent_hash.is_some() {
            return Err(err(at, "only one of simple or consistentHash may be set"));
        }
        if lb.simple == Some(SimpleLb::Passthrough) {
            ctx.unsupported(format!("{at}.simple"));
        }
        ctx.unsupported_if(&at, "consistentHash", &lb.consistent_hash);
        ctx.unsupported_if(&at, "localityLbSetting", &lb.locality_lb_setting);
        ctx.unsupported_if(&at, "warmupDurationSecs", &lb.warmup_duration_secs);
        ctx.unsupported_if(&at, "warmup", &lb.warmup);
    }
    if let Some(pool) = pool {
        let at = format!("{at}.connectionPool");
        if *pool == ConnectionPoolSettings::default() {
            return Err(err(at, "connection pool must have at least one field"));
        }
        if let Some(tcp) = &pool.tcp {
            let at = format!("{at}.tcp");
            if let Some(t) = &tcp.connect_timeout {
                check::at_least_1ms(&format!("{at}.connectTimeout"), t)?;
            }
            if let Some(k) = &tcp.tcp_keepalive {
                if let Some(t) = &k.time {
                    check::at_least_1ms(&format!("{at}.tcpKeepalive.time"), t)?;
                }
                if let Some(t) = &k.interval {
                    check::at_least_1ms(&format!("{at}.tcpKeepalive.interval"), t)?;
                }
            }
            ctx.unsupported_if(&at, "maxConnectionDuration", &tcp.max_connection_duration);
            ctx.unsupported_if(&at, "idleTimeout", &tcp.idle_timeout);
        }
        if let Some(http) = &pool.http {
            let at = format!("{at}.http");
            if let Some(t) = &http.idle_timeout {
                check::at_least_1ms(&format!("{at}.idleTimeout"), t)?;
            }
            ctx.unsupported_if(&at, "maxConcurrentStreams", &http.max_concurrent_streams);
        }
    }
    if let Some(o) = outlier {
        let at = format!("{at}.outlierDetection");
        for (name, v) in [
            ("maxEjectionPercent", o.max_ejection_percent),
            ("minHealthPercent", o.min_health_percent),
        ] {
            if let Some(v) = v
                && !(0..=100).contains(&v)
            {
                return Err(err(
                    format!("{at}.{name}"),
                    format!("{v} is not in range 0..100"),
                ));
            }
        }
        if let Some(t) = &o.interval {
            check::at_least_1ms(&format!("{at}.interval"), t)?;
        }
        if let Some(t) = &o.base_ejection_time {
            check::at_least_1ms(&format!("{at}.baseEjectionTime"), t)?;
        }
        ctx.unsupported_if(&at, "consecutiveErrors", &o.consecutive_errors);
    }
    if let Some(tls) = tls {
        let at = format!("{at}.tls");
        match tls.mode {
            Some(TlsMode::IstioMutual | TlsMode::Disable) | None => {}
            Some(TlsMode::Simple | TlsMode::Mutual) => ctx.unsupported(format!("{at}.mode")),
        }
        ctx.unsupported_if(&at, "clientCertificate", &tls.client_certificate);
        ctx.unsupported_if(&at, "privateKey", &tls.private_key);
        ctx.unsupported_if(&at, "caCertificates", &tls.ca_certificates);
        ctx.unsupported_if(&at, "credentialName", &tls.credential_name);
        ctx.unsupported_if_any(&at, "subjectAltNames", !tls.subject_alt_names.is_empty());
        ctx.unsupported_if(&at, "sni", &tls.sni);
        ctx.unsupported_if(&at, "insecureSkipVerify", &tls.insecure_skip_verify);
        ctx.unsupported_if(&at, "caCrl", &tls.ca_crl);
    }
    Ok(())
}
