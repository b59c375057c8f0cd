//! Node side of kubelet health probes, as Istio does it: connections from
//! the node itself (kubelet) to an enrolled pod are SNATed to the probe
//! address, which the pod's capture rules let through uncaptured. Traffic
//! that merely crosses the node (other pods, kube-proxy DNAT from elsewhere)
//! keeps its source and is captured.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use tracing::debug;

use super::cmd::{run, run_json};
use super::{CaptureConfig, CaptureError};
use crate::netns::Netns;

/// The table's name in the node netns (family `inet`).
pub const NODE_TABLE: &str = "amesh-node";
const SET_V4: &str = "pods_v4";
const SET_V6: &str = "pods_v6";
const RULES_VERSION: u32 = 1;

/// The probe SNAT table and its set of enrolled pod IPs.
#[derive(Debug, Clone)]
pub struct NodeProbeSnat {
    /// `None`: the agent's own netns (the node).
    netns: Option<Netns>,
    config: CaptureConfig,
}

impl NodeProbeSnat {
    /// In the agent's own netns (the agent runs with host network).
    pub fn new(config: CaptureConfig) -> Self {
        Self {
            netns: None,
            config,
        }
    }

    /// In another netns standing for the node (tests, nested setups).
    pub fn in_netns(netns: Netns, config: CaptureConfig) -> Self {
        Self {
            netns: Some(netns),
            config,
        }
    }

    fn comment(&self) -> String {
        format!(
            "amesh node v{RULES_VERSION}: kubelet probe SNAT to {},{}",
            self.config.probe_snat_v4, self.config.probe_snat_v6
        )
    }

    /// The whole table with `ips` as the set contents, replacing any
    /// previous table in one transaction.
    pub fn script(&self, ips: &BTreeSet<IpAddr>) -> String {
        let (v4, v6) = elements(ips);
        let c = &self.config;
        let mut s = String::new();
        // writeln! into a String cannot fail.
        let _ = writeln!(s, "add table inet {NODE_TABLE}");
        let _ = writeln!(s, "delete table inet {NODE_TABLE}");
        let _ = writeln!(s, "table inet {NODE_TABLE} {{");
        let _ = writeln!(s, "\tcomment \"{}\"", self.comment());
        let _ = writeln!(s, "\tset {SET_V4} {{\n\t\ttype ipv4_addr\n\t}}");
        let _ = writeln!(s, "\tset {SET_V6} {{\n\t\ttype ipv6_addr\n\t}}");
        let _ = writeln!(s, "\tchain postrouting {{");
        let _ = writeln!(
            s,
            "\t\ttype nat hook postrouting priority srcnat; policy accept;"
        );
        // `fib saddr type local`: the packet comes from this node's own
        // stack (kubelet), not from a pod or from elsewhere.
        let _ = writeln!(
            s,
            "\t\tmeta l4proto tcp fib saddr type local ip daddr @{SET_V4} snat ip to {}",
            c.probe_snat_v4
        );
        let _ = writeln!(
            s,
            "\t\tmeta l4proto tcp fib saddr type local ip6 daddr @{SET_V6} snat ip6 to {}",
            c.probe_snat_v6
        );
        let _ = writeln!(s, "\t}}");
        let _ = writeln!(s, "}}");
        s.push_str(&add_elements(&v4, &v6));
        s
    }

    /// Makes the set of probe-SNATed pod IPs exactly `ips`, creating the
    /// table if it is missing or was made with other settings. Idempotent
    /// and atomic (one `nft -f` transaction).
    pub fn sync(&self, ips: &BTreeSet<IpAddr>) -> Result<(), CaptureError> {
        let script = if self.table_matches()? {
            let (v4, v6) = elements(ips);
            format!(
                "flush set inet {NODE_TABLE} {SET_V4}\nflush set inet {NODE_TABLE} {SET_V6}\n{}",
                add_elements(&v4, &v6)
            )
        } else {
            self.script(ips)
        };
        run(self.netns.as_ref(), "nft", &["-f", "-"], Some(&script))?;
        debug!(pods = ips.len(), "probe SNAT set synced");
        Ok(())
    }

    /// Adds and removes single members in one `nft -f` run, without
    /// looking first (a pod add pays for every process spawned). Fails if
    /// the table is not what the last sync left (removed by someone, or a
    /// member already gone): the caller then does a full [`Self::sync`].
    pub fn apply_delta(
        &self,
        add: &BTreeSet<IpAddr>,
        remove: &BTreeSet<IpAddr>,
    ) -> Result<(), CaptureError> {
        let (add4, add6) = elements(add);
        let (del4, del6) = elements(remove);
        let script = format!(
            "{}{}",
            add_elements(&add4, &add6),
            add_elements(&del4, &del6).replace("add element", "delete element")
        );
        if script.is_empty() {
            return Ok(());
        }
        run(self.netns.as_ref(), "nft", &["-f", "-"], Some(&script))?;
        debug!(
            added = add.len(),
            removed = remove.len(),
            "probe SNAT set updated"
        );
        Ok(())
    }

    /// Deletes the table; a no-op when there is none.
    pub fn remove(&self) -> Result<(), CaptureError> {
        let script = format!("add table inet {NODE_TABLE}\ndelete table inet {NODE_TABLE}\n");
        run(self.netns.as_ref(), "nft", &["-f", "-"], Some(&script))?;
        Ok(())
    }

    /// The pod IPs currently in the sets (empty when there is no table).
    pub fn members(&self) -> Result<BTreeSet<IpAddr>, CaptureError> {
        if !self.table_exists()? {
            return Ok(BTreeSet::new());
        }
        let mut members = BTreeSet::new();
        for set in [SET_V4, SET_V6] {
            let listing: serde_json::Value = run_json(
                self.netns.as_ref(),
                "nft",
                &["-j", "list", "set", "inet", NODE_TABLE, set],
            )?;
            let elements = listing["nftables"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| item["set"]["elem"].as_array())
                .flatten()
                .filter_map(|elem| elem.as_str())
                .filter_map(|text| text.parse::<IpAddr>().ok());
            members.extend(elements);
        }
        Ok(members)
    }

    fn table_exists(&self) -> Result<bool, CaptureError> {
        let tables = run(
            self.netns.as_ref(),
            "nft",
            &["list", "tables", "inet"],
            None,
        )?;
        let wanted = format!("table inet {NODE_TABLE}");
        Ok(tables.lines().any(|line| line.trim() == wanted))
    }

    fn table_matches(&self) -> Result<bool, CaptureError> {
        if !self.table_exists()? {
            return Ok(false);
        }
        let table = run(
            self.netns.as_ref(),
            "nft",
            &["list", "table", "inet", NODE_TABLE],
            None,
        )?;
        let comment = format!("comment \"{}\"", self.comment());
        Ok(table.lines().any(|line| line.trim() == comment))
    }
}

fn elements(ips: &BTreeSet<IpAddr>) -> (Vec<String>, Vec<String>) {
    let v4 = ips
        .iter()
        .filter(|ip| ip.is_ipv4())
        .map(ToString::to_string)
        .collect();
    let v6 = ips
        .iter()
        .filter(|ip| ip.is_ipv6())
        .map(ToString::to_string)
        .collect();
    (v4, v6)
}

fn add_elements(v4: &[String], v6: &[String]) -> String {
    let mut s = String::new();
    for (set, ips) in [(SET_V4, v4), (SET_V6, v6)] {
        // An empty `{ }` is a syntax error: skip empty sets.
        if !ips.is_empty() {
            let _ = writeln!(
                s,
                "add element inet {NODE_TABLE} {set} {{ {} }}",
                ips.join(", ")
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_splits_families() {
        let snat = NodeProbeSnat::new(CaptureConfig::default());
        let ips: BTreeSet<IpAddr> = ["10.0.0.2", "fd00::2", "10.0.0.3"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        let script = snat.script(&ips);
        assert!(script.contains("add element inet amesh-node pods_v4 { 10.0.0.2, 10.0.0.3 }\n"));
        assert!(script.contains("add element inet amesh-node pods_v6 { fd00::2 }\n"));
        assert!(script.contains("snat ip to 169.254.7.127"));
        let empty = snat.script(&BTreeSet::new());
        assert!(!empty.contains("add element"));
    }
}
