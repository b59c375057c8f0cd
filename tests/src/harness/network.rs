//! The links, addresses, routes and sysctls of a mesh, set up with a few
//! batched `ip` calls (one per netns) so a 20-pod mesh builds in well under
//! a second.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::netns;
use super::topology::{Node, Pod, v6_hextet};

/// Fabric bridge, and the per-node pod bridge (as the CNI bridge plugin names it).
/// Both without multicast snooping: IPv6 neighbour discovery is multicast, and
/// a snooping bridge drops it towards ports that have not sent an MLD report yet.
const FABRIC_BRIDGE: &str = "br0";
const POD_BRIDGE: &str = "cni0";

/// Pod netns sysctls: connection-rate benchmarks exhaust the default
/// ephemeral port range within about a second.
pub(super) const POD_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_local_port_range", "1024 65000"),
    ("net.ipv4.tcp_tw_reuse", "1"),
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv6.conf.eth0.accept_dad", "0"),
];
/// New namespaces do not forward; nodes route between pods and nodes.
/// Duplicate address detection is off (set before any link comes up):
/// while a link-local address is tentative, neighbour discovery fails and
/// the first IPv6 connections get "no route to host".
const NODE_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv6.conf.eth0.accept_dad", "0"),
];

/// Creates the fabric netns with its bridge and every node netns joined to
/// it, with cni0 and routes to every other node's pod range. Names are
/// recorded in `created` before anything exists, so a failure part-way
/// still gets cleaned up.
pub fn create_nodes(created: &mut Vec<String>, fabric: &str, nodes: &[Node]) -> Result<()> {
    let mut names = vec![fabric.to_string()];
    names.extend(nodes.iter().map(|n| n.netns.clone()));
    created.extend(names.iter().cloned());

    // Both ends of each veth are created directly in their target netns.
    let mut root = String::new();
    for name in &names {
        let _ = writeln!(root, "netns add {name}");
    }
    for node in nodes {
        let _ = writeln!(
            root,
            "link add n{} netns {fabric} type veth peer name eth0 netns {}",
            node.index, node.netns
        );
    }
    netns::add_batch(&root).context("create node namespaces")?;

    let mut script = format!(
        "link set lo up\nlink add {FABRIC_BRIDGE} type bridge mcast_snooping 0\nlink set {FABRIC_BRIDGE} up\n"
    );
    for node in nodes {
        let _ = writeln!(script, "link set n{} master {FABRIC_BRIDGE}", node.index);
        let _ = writeln!(script, "link set n{} up", node.index);
    }
    netns::ip_batch(Some(fabric), &script).context("configure fabric")?;

    for node in nodes {
        let mut script = String::from("link set lo up\n");
        let _ = writeln!(script, "addr add {}/24 dev eth0", node.underlay_ip);
        // nodad: addresses are usable at once, not after duplicate detection.
        let _ = writeln!(script, "addr add {}/64 dev eth0 nodad", node.underlay_ip6());
        script.push_str("link set eth0 up\n");
        let _ = writeln!(script, "link add {POD_BRIDGE} type bridge mcast_snooping 0");
        let _ = writeln!(script, "addr add {}/24 dev {POD_BRIDGE}", node.pod_gateway);
        let _ = writeln!(
            script,
            "addr add {}/64 dev {POD_BRIDGE} nodad",
            node.pod_gateway6()
        );
        let _ = writeln!(script, "link set {POD_BRIDGE} up");
        for other in nodes.iter().filter(|o| o.index != node.index) {
            let [_, range, index, _] = other.pod_gateway.octets();
            let _ = writeln!(
                script,
                "route add 10.{range}.{index}.0/24 via {}",
                other.underlay_ip
            );
            let _ = writeln!(
                script,
                "route add fd00:10:{:x}:{index:x}::/64 via {}",
                v6_hextet(range),
                other.underlay_ip6()
            );
        }
        netns::sysctls(&node.netns, NODE_SYSCTLS)?;
        netns::ip_batch(Some(&node.netns), &script)
            .with_context(|| format!("configure {}", node.name))?;
    }
    Ok(())
}

/// Creates each pod's netns and its veth to the node's cni0.
pub fn create_pods(created: &mut Vec<String>, nodes: &[Node], pods: &[Pod]) -> Result<()> {
    if pods.is_empty() {
        return Ok(());
    }
    created.extend(pods.iter().map(|p| p.netns.clone()));

    let mut root = String::new();
    for pod in pods {
        let _ = writeln!(root, "netns add {}", pod.netns);
    }
    let mut per_node: BTreeMap<usize, String> = BTreeMap::new();
    for pod in pods {
        let node = nodes
            .get(pod.node)
            .with_context(|| format!("pod {} on missing node {}", pod.name, pod.node))?;
        let _ = writeln!(
            root,
            "link add vp{} netns {} type veth peer name eth0 netns {}",
            pod.index, node.netns, pod.netns
        );
        let script = per_node.entry(pod.node).or_default();
        let _ = writeln!(script, "link set vp{} master {POD_BRIDGE}", pod.index);
        let _ = writeln!(script, "link set vp{} up", pod.index);
    }
    netns::add_batch(&root).context("create pod namespaces")?;

    for (index, script) in &per_node {
        let node = &nodes[*index];
        netns::ip_batch(Some(&node.netns), script)
            .with_context(|| format!("attach pods to {}", node.name))?;
    }
    for pod in pods {
        let gateway = nodes[pod.node].pod_gateway;
        let gateway6 = nodes[pod.node].pod_gateway6();
        let script = format!(
            "link set lo up\naddr add {}/24 dev eth0\naddr add {}/64 dev eth0 nodad\nlink set eth0 up\n\
             route add default via {gateway}\nroute add default via {gateway6}\n",
            pod.ip,
            pod.ip6()
        );
        netns::sysctls(&pod.netns, POD_SYSCTLS)?;
        netns::ip_batch(Some(&pod.netns), &script)
            .with_context(|| format!("configure pod {}", pod.name))?;
    }
    Ok(())
}
