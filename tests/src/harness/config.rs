//! The YAML config both ztunnel and the node agent read: workloads and
//! services of the mesh, camelCase keys.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use amesh_core::config::enrollment::{
    DATAPLANE_MODE_AMBIENT, DATAPLANE_MODE_LABEL, DATAPLANE_MODE_NONE,
};
use anyhow::{Context, Result};

use super::topology::{Pod, Service};

/// Renders the config for `pods` and `services`.
pub fn render(pods: &[Pod], services: &[Service]) -> String {
    render_with(pods, services, true)
}

/// `explicit`: each pod's protocol and netns are written out.
fn render_with(pods: &[Pod], services: &[Service], explicit: bool) -> String {
    let mut out = String::new();
    if pods.is_empty() {
        out.push_str("workloads: []\n");
    } else {
        out.push_str("workloads:\n");
    }
    for pod in pods {
        // writeln! into a String cannot fail.
        let _ = writeln!(out, "  - uid: {}", scalar(&pod.uid));
        let _ = writeln!(out, "    name: {}", scalar(&pod.name));
        let _ = writeln!(out, "    namespace: {}", scalar(&pod.namespace));
        let _ = writeln!(out, "    serviceAccount: {}", scalar(&pod.service_account));
        let _ = writeln!(out, "    node: {}", scalar(&pod.node_name));
        let _ = writeln!(out, "    ips: [{}, {}]", pod.ip, pod.ip6());
        let _ = writeln!(out, "    labels: {{{}}}", flow_labels(&pod.labels));
        if explicit {
            let _ = writeln!(
                out,
                "    protocol: {}",
                if pod.mesh { "HBONE" } else { "TCP" }
            );
            let _ = writeln!(out, "    netns: {}", scalar(&pod.netns));
        }
    }
    if services.is_empty() {
        out.push_str("services: []\n");
    } else {
        out.push_str("services:\n");
    }
    for svc in services {
        let vips: Vec<String> = svc.vips.iter().map(|v| v.to_string()).collect();
        let ports: Vec<String> = svc
            .ports
            .iter()
            .map(|(port, target)| format!("{{port: {port}, targetPort: {target}}}"))
            .collect();
        let endpoints: Vec<String> = svc.endpoints.iter().map(|e| scalar(e)).collect();
        let _ = writeln!(out, "  - name: {}", scalar(&svc.name));
        let _ = writeln!(out, "    namespace: {}", scalar(&svc.namespace));
        let _ = writeln!(out, "    hostname: {}", scalar(&svc.hostname));
        let _ = writeln!(out, "    vips: [{}]", vips.join(", "));
        let _ = writeln!(out, "    ports: [{}]", ports.join(", "));
        let _ = writeln!(out, "    endpoints: [{}]", endpoints.join(", "));
    }
    out
}

/// Renders the config of a CNI mesh: namespaces with their labels, pods
/// without protocol or netns (the agent derives enrollment from the labels
/// and learns each pod's netns from the CNI plugin or by its IP).
pub fn render_cni(
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    pods: &[Pod],
    services: &[Service],
) -> String {
    let mut out = String::new();
    if namespaces.is_empty() {
        out.push_str("namespaces: []\n");
    } else {
        out.push_str("namespaces:\n");
    }
    for (name, labels) in namespaces {
        let _ = writeln!(out, "  - name: {}", scalar(name));
        let _ = writeln!(out, "    labels: {{{}}}", flow_labels(labels));
    }
    let mut rendered = Vec::with_capacity(pods.len());
    for pod in pods {
        let mut pod = pod.clone();
        if !pod.follows_namespace {
            let mode = if pod.mesh {
                DATAPLANE_MODE_AMBIENT
            } else {
                DATAPLANE_MODE_NONE
            };
            pod.labels
                .insert(DATAPLANE_MODE_LABEL.to_owned(), mode.to_owned());
        }
        rendered.push(pod);
    }
    out.push_str(&render_with(&rendered, services, false));
    out
}

fn flow_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{}: {}", scalar(k), scalar(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A YAML string: plain when that cannot be misread (as a number, bool,
/// null or flow syntax), otherwise double-quoted (JSON strings are YAML).
fn scalar(s: &str) -> String {
    let plain_chars = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric());
    let reserved = matches!(
        s.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
    );
    // YAML 1.1 also reads forms like 0x1F or 1_000 as numbers, so anything
    // starting with a digit is quoted, except dotted quads (IP addresses).
    let numeric = s.parse::<f64>().is_ok()
        || (s.starts_with(|c: char| c.is_ascii_digit()) && s.matches('.').count() < 3);
    if plain_chars && !reserved && !numeric {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

/// Replaces `path` with `text` atomically (temp file in the same directory,
/// then rename): the daemons watch the file and must never read half of it.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().context("config path has no directory")?;
    let name = path.file_name().context("config path has no file name")?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

/// Renders a control-plane mesh's folder: the same cluster as Kubernetes
/// objects (Namespaces, Pods with their node and addresses, Services with
/// an EndpointSlice each), as users' YAML reaches `amesh-control-plane`.
pub fn render_k8s(
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    pods: &[Pod],
    services: &[Service],
) -> String {
    let mut docs: Vec<String> = Vec::new();
    for (name, labels) in namespaces {
        docs.push(format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}, labels: {{{}}}}}\n",
            scalar(name),
            flow_labels(labels)
        ));
    }
    for pod in pods {
        let mut labels = pod.labels.clone();
        if !pod.follows_namespace {
            let mode = if pod.mesh {
                DATAPLANE_MODE_AMBIENT
            } else {
                DATAPLANE_MODE_NONE
            };
            labels.insert(DATAPLANE_MODE_LABEL.to_owned(), mode.to_owned());
        }
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\n\
             metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\n\
             spec: {{nodeName: {node}, serviceAccountName: {sa}}}\n\
             status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}, {{ip: \"{ip6}\"}}]}}\n",
            name = scalar(&pod.name),
            ns = scalar(&pod.namespace),
            labels = flow_labels(&labels),
            node = scalar(&pod.node_name),
            sa = scalar(&pod.service_account),
            ip = pod.ip,
            ip6 = pod.ip6(),
        ));
    }
    for svc in services {
        let vips: Vec<String> = svc.vips.iter().map(|v| v.to_string()).collect();
        let ports: Vec<String> = svc
            .ports
            .iter()
            .map(|(port, target)| format!("{{name: p{port}, port: {port}, targetPort: {target}}}"))
            .collect();
        docs.push(format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec: {{clusterIP: {ip}, clusterIPs: [{ips}], ports: [{ports}]}}\n",
            name = scalar(&svc.name),
            ns = scalar(&svc.namespace),
            ip = vips.first().map_or("None", String::as_str),
            ips = vips.join(", "),
            ports = ports.join(", "),
        ));
        let endpoints: Vec<String> = svc
            .endpoints
            .iter()
            .filter_map(|uid| pods.iter().find(|p| p.uid == *uid))
            .map(|p| {
                format!(
                    "  - {{addresses: [{}], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: {}, namespace: {}}}}}\n",
                    p.ip,
                    scalar(&p.name),
                    scalar(&p.namespace)
                )
            })
            .collect();
        let slice_ports: Vec<String> = svc
            .ports
            .iter()
            .map(|(port, target)| format!("{{name: p{port}, port: {target}}}"))
            .collect();
        docs.push(format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-v4, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{ports}]\nendpoints:{list}",
            name = scalar(&svc.name),
            ns = scalar(&svc.namespace),
            ports = slice_ports.join(", "),
            list = if endpoints.is_empty() {
                " []\n".to_owned()
            } else {
                format!("\n{}", endpoints.concat())
            },
        ));
    }
    docs.join("---\n")
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn scalars_quote_only_when_needed() {
        assert_eq!(scalar("default/client"), "default/client");
        assert_eq!(scalar("amt12x0-client"), "amt12x0-client");
        assert_eq!(
            scalar("echo.default.svc.cluster.local"),
            "echo.default.svc.cluster.local"
        );
        assert_eq!(scalar("true"), "\"true\"");
        assert_eq!(scalar("123"), "\"123\"");
        assert_eq!(scalar("1.5"), "\"1.5\"");
        assert_eq!(scalar("a b"), "\"a b\"");
        assert_eq!(scalar(""), "\"\"");
        assert_eq!(scalar("x: {y}"), "\"x: {y}\"");
    }

    #[test]
    fn renders_the_documented_format() {
        let pod = Pod {
            name: "client".into(),
            namespace: "default".into(),
            uid: "default/client".into(),
            service_account: "client".into(),
            labels: [("app".to_string(), "client".to_string())].into(),
            node: 0,
            node_name: "node-0".into(),
            ip: Ipv4Addr::new(10, 244, 0, 2),
            netns: "amt123x0-client".into(),
            mesh: true,
            follows_namespace: false,
            index: 0,
        };
        let svc = Service {
            name: "echo".into(),
            namespace: "default".into(),
            hostname: "echo.default.svc.cluster.local".into(),
            vips: vec![Ipv4Addr::new(10, 96, 0, 10)],
            ports: vec![(80, 8080)],
            endpoints: vec!["default/echo-0".into(), "default/echo-1".into()],
        };
        let expected = "\
workloads:
  - uid: default/client
    name: client
    namespace: default
    serviceAccount: client
    node: node-0
    ips: [10.244.0.2, fd00:10:244::2]
    labels: {app: client}
    protocol: HBONE
    netns: amt123x0-client
services:
  - name: echo
    namespace: default
    hostname: echo.default.svc.cluster.local
    vips: [10.96.0.10]
    ports: [{port: 80, targetPort: 8080}]
    endpoints: [default/echo-0, default/echo-1]
";
        assert_eq!(render(&[pod], &[svc]), expected);
        assert_eq!(render(&[], &[]), "workloads: []\nservices: []\n");
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.yaml");
        write_atomic(&path, "a: 1\n").unwrap();
        write_atomic(&path, "b: 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b: 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp files left behind");
    }
}
