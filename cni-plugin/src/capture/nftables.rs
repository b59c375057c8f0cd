//! The nftables backend: one `inet` table in the pod netns (IPv4 and IPv6),
//! the nftables equivalent of Istio's in-pod iptables rules, plus mark-based
//! policy routing.

use std::fmt::Write as _;

use tracing::debug;

use super::cmd::run;
use super::policy_route;
use super::{CONNMARK, Capture, CaptureConfig, CaptureError, MARK_MASK, PodNetns, ZTUNNEL_MARK};
use crate::netns::Netns;

/// The table's name in the pod netns (family `inet`).
pub const TABLE: &str = "amesh";

/// Bumped whenever the rules change meaning, so that an agent upgrade
/// replaces tables an older agent installed.
const RULES_VERSION: u32 = 1;

#[derive(Debug, Clone)]
pub struct NftablesCapture {
    config: CaptureConfig,
}

impl NftablesCapture {
    pub fn new(config: CaptureConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &CaptureConfig {
        &self.config
    }

    /// The table comment: names the rule version and every setting, so
    /// [`Capture::is_installed`] can tell a table made with other settings.
    /// nft allows at most 128 characters; the longest possible is ~101.
    fn comment(&self) -> String {
        let c = &self.config;
        format!(
            "amesh v{RULES_VERSION} out={} in={} hbone={} probe={},{}",
            c.outbound_port,
            c.inbound_plaintext_port,
            c.inbound_port,
            c.probe_snat_v4,
            c.probe_snat_v6
        )
    }

    /// The `nft -f` script that atomically replaces the table: the leading
    /// `add` makes the `delete` succeed when there is no table yet, and all
    /// three statements are one transaction.
    pub fn script(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let mark = format!("meta mark & {MARK_MASK:#x} == {ZTUNNEL_MARK:#x}");
        let conn_marked = format!("meta mark & {MARK_MASK:#x} == {CONNMARK:#x}");
        // writeln! into a String cannot fail.
        let _ = writeln!(s, "add table inet {TABLE}");
        let _ = writeln!(s, "delete table inet {TABLE}");
        let _ = writeln!(s, "table inet {TABLE} {{");
        let _ = writeln!(s, "\tcomment \"{}\"", self.comment());
        // Connections ztunnel opens to the app: remember them on the
        // conntrack entry so the app's replies can be marked (below).
        let _ = writeln!(s, "\tchain prerouting_mangle {{");
        let _ = writeln!(
            s,
            "\t\ttype filter hook prerouting priority mangle; policy accept;"
        );
        let _ = writeln!(
            s,
            "\t\t{mark} ct mark set ct mark & {:#x} | {CONNMARK:#x}",
            !MARK_MASK
        );
        let _ = writeln!(s, "\t}}");
        // Inbound: everything but HBONE to the plaintext port.
        let _ = writeln!(s, "\tchain prerouting_nat {{");
        let _ = writeln!(
            s,
            "\t\ttype nat hook prerouting priority dstnat; policy accept;"
        );
        let _ = writeln!(s, "\t\tiifname \"lo\" accept");
        let _ = writeln!(
            s,
            "\t\tip saddr {} meta l4proto tcp accept",
            c.probe_snat_v4
        );
        let _ = writeln!(
            s,
            "\t\tip6 saddr {} meta l4proto tcp accept",
            c.probe_snat_v6
        );
        let _ = writeln!(s, "\t\t{mark} accept");
        let _ = writeln!(
            s,
            "\t\ttcp dport != {} redirect to :{}",
            c.inbound_port, c.inbound_plaintext_port
        );
        let _ = writeln!(s, "\t}}");
        // The app's replies on connections ztunnel opened get the connmark
        // as fwmark; a `route` chain re-routes after the change, so policy
        // routing sends them to ztunnel's transparent socket.
        let _ = writeln!(s, "\tchain output_route {{");
        let _ = writeln!(
            s,
            "\t\ttype route hook output priority mangle; policy accept;"
        );
        let _ = writeln!(
            s,
            "\t\tct mark & {MARK_MASK:#x} == {CONNMARK:#x} meta mark set ct mark"
        );
        let _ = writeln!(s, "\t}}");
        // Outbound: everything the app sends off-pod to ztunnel. nft 1.0.6
        // names `dstnat` only for prerouting; -100 is its value.
        let _ = writeln!(s, "\tchain output_nat {{");
        let _ = writeln!(s, "\t\ttype nat hook output priority -100; policy accept;");
        let _ = writeln!(s, "\t\toifname \"lo\" accept");
        let _ = writeln!(
            s,
            "\t\tip daddr {} meta l4proto tcp accept",
            c.probe_snat_v4
        );
        let _ = writeln!(
            s,
            "\t\tip6 daddr {} meta l4proto tcp accept",
            c.probe_snat_v6
        );
        let _ = writeln!(s, "\t\t{conn_marked} accept");
        let _ = writeln!(s, "\t\t{mark} accept");
        let _ = writeln!(s, "\t\tmeta l4proto tcp redirect to :{}", c.outbound_port);
        let _ = writeln!(s, "\t}}");
        let _ = writeln!(s, "}}");
        s
    }

    /// [`Self::script`] for a netns without our table: `create` fails if
    /// it exists after all. The comment (what `is_installed` compares) only
    /// takes on creation, so it goes on the `create`.
    fn fresh_script(&self) -> String {
        let full = self.script();
        let body = full
            .split_once(&format!("delete table inet {TABLE}\n"))
            .map_or(full.as_str(), |(_, body)| body);
        format!(
            "create table inet {TABLE} {{\n\tcomment \"{}\"\n}}\n{body}",
            self.comment()
        )
    }

    fn table_matches(&self, netns: &Netns) -> Result<bool, CaptureError> {
        let tables = run(Some(netns), "nft", &["list", "tables", "inet"], None)?;
        let wanted = format!("table inet {TABLE}");
        if !tables.lines().any(|line| line.trim() == wanted) {
            return Ok(false);
        }
        let table = run(Some(netns), "nft", &["list", "table", "inet", TABLE], None)?;
        let comment = format!("comment \"{}\"", self.comment());
        Ok(table.lines().any(|line| line.trim() == comment))
    }
}

fn open(pod: &PodNetns) -> Result<Netns, CaptureError> {
    Netns::open(&pod.path).map_err(|source| CaptureError::Netns {
        path: pod.path.clone(),
        source,
    })
}

impl Capture for NftablesCapture {
    fn install(&self, pod: &PodNetns) -> Result<(), CaptureError> {
        let netns = open(pod)?;
        // The return path first: once the nft table exists, connections are
        // captured and their replies need it.
        policy_route::ensure_for(&netns, pod)?;
        run(Some(&netns), "nft", &["-f", "-"], Some(&self.script()))?;
        debug!(netns = %pod.name, "nftables capture installed");
        Ok(())
    }

    /// `create table` instead of `add`+`delete`: replacing a table makes
    /// the kernel wait for an RCU grace period (about 12 ms here), creating
    /// one does not.
    fn install_fresh(&self, pod: &PodNetns) -> Result<(), CaptureError> {
        let netns = open(pod)?;
        policy_route::ensure_for(&netns, pod)?;
        match run(
            Some(&netns),
            "nft",
            &["-f", "-"],
            Some(&self.fresh_script()),
        ) {
            Ok(_) => {
                debug!(netns = %pod.name, "nftables capture installed (fresh netns)");
                Ok(())
            }
            // Ours is there already (an ADD retried): replace it.
            Err(CaptureError::Command { .. }) => self.install(pod),
            Err(other) => Err(other),
        }
    }

    fn remove(&self, pod: &PodNetns) -> Result<(), CaptureError> {
        let netns = open(pod)?;
        let script = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
        run(Some(&netns), "nft", &["-f", "-"], Some(&script))?;
        policy_route::remove_for(&netns, pod)?;
        debug!(netns = %pod.name, "nftables capture removed");
        Ok(())
    }

    fn is_installed(&self, pod: &PodNetns) -> Result<bool, CaptureError> {
        let netns = open(pod)?;
        Ok(self.table_matches(&netns)? && policy_route::installed_for(&netns, pod)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_uses_configured_ports() {
        let capture = NftablesCapture::new(CaptureConfig {
            outbound_port: 25001,
            inbound_plaintext_port: 25006,
            inbound_port: 25008,
            ..CaptureConfig::default()
        });
        let script = capture.script();
        assert!(script.starts_with("add table inet amesh\ndelete table inet amesh\n"));
        assert!(script.contains("tcp dport != 25008 redirect to :25006\n"));
        assert!(script.contains("meta l4proto tcp redirect to :25001\n"));
        assert!(script.contains("ip saddr 169.254.7.127 meta l4proto tcp accept"));
        assert!(
            script.contains("meta mark & 0xfff == 0x539 ct mark set ct mark & 0xfffff000 | 0x111")
        );
        assert!(script.contains("out=25001 in=25006 hbone=25008"));
    }

    #[test]
    fn a_fresh_install_creates_the_table_with_its_comment() {
        let capture = NftablesCapture::new(CaptureConfig::default());
        let script = capture.fresh_script();
        assert!(script.starts_with(&format!(
            "create table inet amesh {{\n\tcomment \"{}\"\n}}\ntable inet amesh {{\n",
            capture.comment()
        )));
        assert!(!script.contains("delete table"));
        assert!(script.contains("redirect to :15001"));
    }

    #[test]
    fn comment_fits_nft_limit() {
        let capture = NftablesCapture::new(CaptureConfig {
            outbound_port: 65535,
            inbound_plaintext_port: 65535,
            inbound_port: 65535,
            probe_snat_v4: "255.255.255.255".parse().unwrap(),
            probe_snat_v6: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe".parse().unwrap(),
        });
        assert!(capture.comment().len() <= 128);
    }
}
