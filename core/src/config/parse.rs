//! YAML → validated [`ConfigSnapshot`], with errors that name the file,
//! line and field.
//!
//! A file is a stream of YAML documents (`---`): at most one without
//! `apiVersion`/`kind` holds the workloads and services; the others are
//! Istio resources ([`crate::policy`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};

use super::enrollment::{PodFacts, decide};
use super::error::ConfigError;
use super::model::{
    HealthStatus, Namespace, Protocol, Service, ServicePort, WaypointRef, Workload,
};
use super::snapshot::ConfigSnapshot;
use crate::identity::{DEFAULT_TRUST_DOMAIN, Identity};
use crate::policy::{DEFAULT_ROOT_NAMESPACE, Header, PolicySet, ReadError, ResourceReader};

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    namespaces: Vec<NamespaceSpec>,
    #[serde(default)]
    workloads: Vec<WorkloadSpec>,
    #[serde(default)]
    services: Vec<ServiceSpec>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NamespaceSpec {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkloadSpec {
    uid: String,
    name: String,
    namespace: String,
    #[serde(default = "default_service_account")]
    service_account: String,
    #[serde(default)]
    node: String,
    #[serde(default)]
    ips: Vec<IpAddr>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    protocol: Option<Protocol>,
    #[serde(default)]
    host_network: bool,
    #[serde(default)]
    netns: Option<String>,
    #[serde(default)]
    status: HealthStatus,
    #[serde(default)]
    waypoint: Option<WaypointRef>,
}

fn default_service_account() -> String {
    "default".to_owned()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceSpec {
    name: String,
    namespace: String,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    vips: Vec<IpAddr>,
    #[serde(default)]
    ports: Vec<ServicePort>,
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    waypoint: Option<WaypointRef>,
}

/// What parsing needs besides the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseOptions {
    /// Of the workloads' identities.
    pub trust_domain: String,
    /// Policies here (and in `istio-system`) apply mesh-wide.
    pub root_namespace: String,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self::new(DEFAULT_TRUST_DOMAIN)
    }
}

impl ParseOptions {
    /// With the default root namespace, [`DEFAULT_ROOT_NAMESPACE`].
    pub fn new(trust_domain: impl Into<String>) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_owned(),
        }
    }

    pub fn root_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.root_namespace = namespace.into();
        self
    }
}

/// Reads and validates `path`, with the default root namespace.
pub fn load_file(path: &Path, trust_domain: &str) -> Result<ConfigSnapshot, ConfigError> {
    load_file_with(path, &ParseOptions::new(trust_domain))
}

/// Reads and validates `path`.
pub fn load_file_with(path: &Path, options: &ParseOptions) -> Result<ConfigSnapshot, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
        file: path.to_owned(),
        line: None,
        column: None,
        field: String::new(),
        message: format!("cannot read: {err}"),
    })?;
    parse_with(&text, path, options)
}

/// Parses and validates config text, with the default root namespace;
/// `path` only labels errors.
pub fn parse(text: &str, path: &Path, trust_domain: &str) -> Result<ConfigSnapshot, ConfigError> {
    parse_with(text, path, &ParseOptions::new(trust_domain))
}

/// Parses and validates config text; `path` only labels errors.
pub fn parse_with(
    text: &str,
    path: &Path,
    options: &ParseOptions,
) -> Result<ConfigSnapshot, ConfigError> {
    // Pass one: what each document is. serde_yaml reads a document once, so
    // pass two reads the text again with the right type for each; its
    // locations are within the whole file.
    let mut headers = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        // Return at the first error: after a syntax error the iterator
        // would repeat it forever.
        headers.push(Option::<Header>::deserialize(doc).map_err(|err| yaml_error(path, &err))?);
    }
    let mut spec: Option<FileSpec> = None;
    let mut reader = ResourceReader::default();
    let mut resources = Vec::new();
    for (doc, header) in serde_yaml::Deserializer::from_str(text).zip(&headers) {
        // An empty document (a trailing `---`, only comments) holds nothing.
        let Some(header) = header else { continue };
        if header.is_resource() {
            let resource = reader
                .read(header, doc)
                .map_err(|err| resource_error(path, text, &header.label(), err))?;
            resources.push(resource);
        } else if spec.is_some() {
            let err = Refuse(
                "a second document without `kind`: workloads and services must all be \
                 in one document (every other document is an Istio resource with \
                 apiVersion and kind)",
            )
            .deserialize(doc)
            .err();
            return Err(match err {
                Some(err) => yaml_error(path, &err),
                None => ConfigError {
                    file: path.to_owned(),
                    line: None,
                    column: None,
                    field: String::new(),
                    message: "more than one document without `kind`".into(),
                },
            });
        } else {
            spec = Some(FileSpec::deserialize(doc).map_err(|err| yaml_error(path, &err))?);
        }
    }
    let snapshot = Validator {
        path,
        text,
        trust_domain: &options.trust_domain,
        mesh_namespace: &options.root_namespace,
    }
    .validate(spec.unwrap_or_default())?;
    Ok(snapshot.with_policies(PolicySet::build(resources, &options.root_namespace)))
}

/// Fails on any mapping, to locate an error at a document's start.
struct Refuse(&'static str);

impl<'de> DeserializeSeed<'de> for Refuse {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Refuse {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        Err(de::Error::custom(self.0))
    }
}

/// An error in a resource document; its field is prefixed with the
/// resource (`AuthorizationPolicy production/no-sandbox: spec.rules[0]...`).
fn resource_error(path: &Path, text: &str, label: &str, err: ReadError) -> ConfigError {
    let mut error = yaml_error(path, &err.yaml);
    match err.failure {
        // Found once the document was read: serde_yaml locates it at the
        // document's start; the field's key is the first one below.
        Some(failure) => {
            error.line = error
                .line
                .map(|start| line_of_key(text, start, failure.key).unwrap_or(start));
            error.column = None;
            error.field = format!("{label}: {}", failure.field);
            error.message = failure.message;
        }
        None if error.field.is_empty() => error.field = label.to_owned(),
        None => error.field = format!("{label}: {}", error.field),
    }
    error
}

/// The first line at or after `from` (1-based) that holds `key:`.
fn line_of_key(text: &str, from: usize, key: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, line)| {
            let line = line.trim_start();
            let line = line.strip_prefix("- ").unwrap_or(line);
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|(i, _)| i + 1)
}

fn yaml_error(path: &Path, err: &serde_yaml::Error) -> ConfigError {
    let location = err.location();
    // serde_yaml renders "<field path>: <message> at line L column C".
    let rendered = err.to_string();
    let without_location = match rendered.rfind(" at line ") {
        Some(at) => &rendered[..at],
        None => rendered.as_str(),
    };
    let (field, message) = match without_location.split_once(": ") {
        Some((field, message)) if !field.contains(' ') => (field.to_owned(), message.to_owned()),
        _ => (String::new(), without_location.to_owned()),
    };
    ConfigError {
        file: path.to_owned(),
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        field,
        message,
    }
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    trust_domain: &'a str,
    /// The mesh's own namespace: its pods are never enrolled.
    mesh_namespace: &'a str,
}

impl Validator<'_> {
    fn error(&self, field: String, value: &str, message: String) -> ConfigError {
        ConfigError {
            file: self.path.to_owned(),
            line: line_of(self.text, value),
            column: None,
            field,
            message,
        }
    }

    fn validate(&self, spec: FileSpec) -> Result<ConfigSnapshot, ConfigError> {
        let mut namespaces: BTreeMap<String, Namespace> = BTreeMap::new();
        for (i, ns) in spec.namespaces.into_iter().enumerate() {
            if ns.name.is_empty() {
                return Err(self.error(
                    format!("namespaces[{i}].name"),
                    "",
                    "must not be empty".into(),
                ));
            }
            if namespaces.contains_key(&ns.name) {
                return Err(self.error(
                    format!("namespaces[{i}].name"),
                    &ns.name,
                    format!("namespace {:?} is listed twice", ns.name),
                ));
            }
            namespaces.insert(
                ns.name.clone(),
                Namespace {
                    name: ns.name,
                    labels: ns.labels,
                },
            );
        }
        let mut workloads = Vec::with_capacity(spec.workloads.len());
        let mut uids = HashSet::new();
        let mut ips: HashMap<IpAddr, String> = HashMap::new();
        for (i, w) in spec.workloads.into_iter().enumerate() {
            let at = |field: &str| format!("workloads[{i}].{field}");
            if w.uid.is_empty() {
                return Err(self.error(at("uid"), &w.name, "must not be empty".into()));
            }
            if !uids.insert(w.uid.clone()) {
                return Err(self.error(at("uid"), &w.uid, format!("duplicate uid {:?}", w.uid)));
            }
            if w.name.is_empty() {
                return Err(self.error(at("name"), &w.uid, "must not be empty".into()));
            }
            let identity = Identity::new(self.trust_domain, &w.namespace, &w.service_account)
                .map_err(|err| {
                    self.error(at("serviceAccount"), &w.service_account, err.to_string())
                })?;
            let protocol = match w.protocol {
                Some(Protocol::Hbone) if w.host_network => {
                    return Err(self.error(
                        at("protocol"),
                        &w.uid,
                        "a hostNetwork pod is never in the mesh (its netns is the node's)".into(),
                    ));
                }
                Some(Protocol::Hbone) if w.ips.is_empty() => {
                    return Err(self.error(
                        at("ips"),
                        &w.uid,
                        "a workload with protocol HBONE needs at least one IP".into(),
                    ));
                }
                Some(protocol) => protocol,
                None => {
                    let facts = PodFacts {
                        namespace: &w.namespace,
                        labels: &w.labels,
                        host_network: w.host_network,
                    };
                    let ns_labels = namespaces.get(&w.namespace).map(|n| &n.labels);
                    if decide(facts, ns_labels, self.mesh_namespace).is_ambient() {
                        Protocol::Hbone
                    } else {
                        Protocol::Tcp
                    }
                }
            };
            for (j, ip) in w.ips.iter().enumerate() {
                if let Some(other) = ips.insert(*ip, w.uid.clone()) {
                    return Err(self.error(
                        format!("workloads[{i}].ips[{j}]"),
                        &ip.to_string(),
                        format!("{ip} is already the IP of workload {other:?}"),
                    ));
                }
            }
            if let Some(netns) = &w.netns
                && (netns.is_empty() || netns.contains('/') || netns == "." || netns == "..")
            {
                return Err(self.error(
                    at("netns"),
                    netns,
                    format!("{netns:?} is not a network namespace name"),
                ));
            }
            workloads.push(Workload {
                uid: w.uid,
                name: w.name,
                namespace: w.namespace,
                service_account: w.service_account,
                node: w.node,
                ips: w.ips,
                labels: w.labels,
                protocol,
                netns: w.netns,
                host_network: w.host_network,
                status: w.status,
                waypoint: w.waypoint,
                identity,
                authorization_policies: Vec::new(),
            });
        }

        let mut services = Vec::with_capacity(spec.services.len());
        let mut vips: HashMap<IpAddr, String> = HashMap::new();
        for (i, s) in spec.services.into_iter().enumerate() {
            let at = |field: String| format!("services[{i}].{field}");
            if s.name.is_empty() || s.namespace.is_empty() {
                return Err(self.error(
                    at("name".into()),
                    &s.name,
                    "name and namespace must not be empty".into(),
                ));
            }
            let key = format!("{}/{}", s.namespace, s.name);
            for (j, vip) in s.vips.iter().enumerate() {
                if let Some(other) = vips.insert(*vip, key.clone()) {
                    return Err(self.error(
                        at(format!("vips[{j}]")),
                        &vip.to_string(),
                        format!("{vip} is already a VIP of service {other}"),
                    ));
                }
                if let Some(owner) = ips.get(vip) {
                    return Err(self.error(
                        at(format!("vips[{j}]")),
                        &vip.to_string(),
                        format!("{vip} is already the IP of workload {owner:?}"),
                    ));
                }
            }
            let mut seen_ports = HashSet::new();
            for (j, port) in s.ports.iter().enumerate() {
                if port.port == 0 || port.target_port == Some(0) {
                    return Err(self.error(
                        at(format!("ports[{j}]")),
                        "port",
                        "port and targetPort must be 1-65535".into(),
                    ));
                }
                if !seen_ports.insert(port.port) {
                    return Err(self.error(
                        at(format!("ports[{j}].port")),
                        &port.port.to_string(),
                        format!("port {} is listed twice", port.port),
                    ));
                }
            }
            for (j, uid) in s.endpoints.iter().enumerate() {
                if !uids.contains(uid) {
                    return Err(self.error(
                        at(format!("endpoints[{j}]")),
                        uid,
                        format!("no workload has uid {uid:?}"),
                    ));
                }
            }
            let hostname = s
                .hostname
                .unwrap_or_else(|| format!("{}.{}.svc.cluster.local", s.name, s.namespace));
            services.push(Service {
                name: s.name,
                namespace: s.namespace,
                hostname,
                vips: s.vips,
                ports: s.ports,
                endpoints: s.endpoints,
                waypoint: s.waypoint,
            });
        }
        Ok(ConfigSnapshot::new(workloads, services)
            .with_namespaces(namespaces, self.mesh_namespace))
    }
}

/// Best-effort line of a value that failed a cross-field check (serde gives
/// locations only for syntax and type errors).
fn line_of(text: &str, value: &str) -> Option<usize> {
    if value.is_empty() {
        return None;
    }
    text.lines()
        .position(|line| line.contains(value))
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TD: &str = "cluster.local";

    fn parse_str(text: &str) -> Result<ConfigSnapshot, ConfigError> {
        parse(text, Path::new("mesh.yaml"), TD)
    }

    const GOOD: &str = "\
workloads:
  - uid: default/a
    name: a
    namespace: default
    serviceAccount: sa-a
    node: node-0
    ips: [10.0.0.2]
    protocol: HBONE
  - uid: default/b
    name: b
    namespace: default
    ips: [10.0.0.3]
    status: Unhealthy
services:
  - name: svc
    namespace: default
    vips: [10.96.0.1]
    ports: [{port: 80, targetPort: 8080}, {port: 81}]
    endpoints: [default/a, default/b]
";

    #[test]
    fn parses_workloads_and_services() {
        let snap = parse_str(GOOD).unwrap();
        let a = snap.workload_by_ip("10.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(
            a.identity.to_string(),
            "spiffe://cluster.local/ns/default/sa/sa-a"
        );
        assert!(a.in_mesh());
        assert_eq!(a.netns, None);
        let b = snap.workload_by_uid("default/b").unwrap();
        assert_eq!(b.service_account, "default");
        assert!(!b.in_mesh() && !b.is_healthy());
        let svc = snap.service_by_vip("10.96.0.1".parse().unwrap()).unwrap();
        assert_eq!(svc.service.hostname, "svc.default.svc.cluster.local");
        assert_eq!(svc.service.port(80).unwrap().target(), 8080);
        assert_eq!(svc.service.port(81).unwrap().target(), 81);
        assert_eq!(svc.endpoints.len(), 2);
    }

    #[test]
    fn type_error_names_line_and_field() {
        let bad = GOOD.replace("ips: [10.0.0.3]", "ips: [10.0.0.999]");
        let err = parse_str(&bad).unwrap_err();
        assert_eq!(err.line, Some(12), "{err}");
        assert_eq!(err.field, "workloads[1].ips[0]", "{err}");
        assert!(err.to_string().starts_with("mesh.yaml:12:"), "{err}");
    }

    #[test]
    fn unknown_field_is_refused() {
        let bad = GOOD.replace("serviceAccount: sa-a", "serviceAcount: sa-a");
        let err = parse_str(&bad).unwrap_err();
        assert!(err.message.contains("serviceAcount"), "{err}");
        assert_eq!(err.line, Some(5), "{err}");
    }

    #[test]
    fn cross_references_are_checked() {
        let bad = GOOD.replace(
            "endpoints: [default/a, default/b]",
            "endpoints: [default/a, default/zz]",
        );
        let err = parse_str(&bad).unwrap_err();
        assert_eq!(err.field, "services[0].endpoints[1]");
        assert_eq!(err.line, Some(19));
        let dup = GOOD.replace("ips: [10.0.0.3]", "ips: [10.0.0.2]");
        let err = parse_str(&dup).unwrap_err();
        assert_eq!(err.field, "workloads[1].ips[0]");
        assert!(err.message.contains("default/a"), "{err}");
    }

    #[test]
    fn mesh_workload_needs_an_ip() {
        let bad = GOOD.replace("    ips: [10.0.0.2]\n", "");
        let err = parse_str(&bad).unwrap_err();
        assert_eq!(err.field, "workloads[0].ips");
    }

    #[test]
    fn empty_file_is_an_empty_config() {
        let snap = parse_str("").unwrap();
        assert_eq!(snap.workloads().count(), 0);
    }
}
