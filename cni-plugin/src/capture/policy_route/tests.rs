//! Policy routing in real network namespaces (needs root), read back with
//! `ip -j`, and the messages on their own.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use netlink_packet_core::{NLM_F_CREATE, NetlinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use serde_json::Value;

use super::*;

/// `amt<pid>x<n>-pr`, deleted on drop (a leaked one is recognisable).
struct TestNetns {
    name: String,
    netns: Netns,
}

impl TestNetns {
    fn new(n: u32, lo_up: bool) -> Self {
        let name = format!("amt{}x{n}-pr", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        let path = PathBuf::from("/var/run/netns").join(&name);
        let netns = match Netns::open(&path) {
            Ok(netns) => netns,
            Err(err) => {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
                panic!("open netns {name}: {err}");
            }
        };
        let guard = Self { name, netns };
        if lo_up {
            guard.ip(&["link", "set", "lo", "up"]);
        }
        guard
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    fn ip_json(&self, args: &[&str]) -> Vec<Value> {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.ip(&full);
        if out.trim().is_empty() {
            return Vec::new();
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip {full:?}: {e}: {out}"))
    }

    /// Our rules as `ip rule show` reads them.
    fn ip_rules(&self, family: &str) -> usize {
        self.ip_json(&[family, "rule", "show"])
            .iter()
            .filter(|rule| {
                let text = |key: &str| rule[key].as_str().map(str::to_owned);
                rule["priority"] == RULE_PRIORITY
                    && text("fwmark") == Some(format!("{CONNMARK:#x}"))
                    && text("fwmask") == Some(format!("{MARK_MASK:#x}"))
                    && text("table") == Some(ROUTE_TABLE.to_string())
            })
            .count()
    }

    /// Routes in table 100, as `type dst dev`.
    fn ip_routes(&self, family: &str) -> Vec<String> {
        self.ip_json(&[family, "route", "show", "table", &ROUTE_TABLE.to_string()])
            .iter()
            .map(|route| {
                format!(
                    "{} {} {}",
                    route["type"].as_str().unwrap_or("unicast"),
                    route["dst"].as_str().unwrap_or("?"),
                    route["dev"].as_str().unwrap_or("?"),
                )
            })
            .collect()
    }

    fn pod(&self, ips: &[&str]) -> PodNetns {
        PodNetns {
            name: self.name.clone(),
            path: self.netns.path().to_owned(),
            ips: ips.iter().map(|ip| ip.parse::<IpAddr>().unwrap()).collect(),
        }
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `local default dev lo`, as [`TestNetns::ip_routes`] shows it.
fn local_default() -> Vec<String> {
    vec!["local default lo".to_owned()]
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Copies of our rule in `family`.
fn rule_count(netns: &Netns, family: Family) -> Result<usize, CaptureError> {
    with_rtnl(netns, |rtnl| count_rules(rtnl, netns, family))
}

/// `steps` for one family only.
fn one_family(netns: &Netns, steps: &[Step], family: Family) -> Result<(), CaptureError> {
    let outcomes = with_rtnl(netns, |rtnl| apply(rtnl, netns, steps, &[family]))?;
    outcomes.into_iter().next().unwrap_or(Ok(()))
}

#[test]
fn ensure_and_remove_are_idempotent() {
    let ns = TestNetns::new(0, true);
    let pod = ns.pod(&["10.0.0.2", "fd00::2"]);
    let netns = &ns.netns;
    assert!(!installed_for(netns, &pod).unwrap());
    assert_eq!(rule_count(netns, Family::V4).unwrap(), 0);

    // The first call into a fresh netns is what a pod add pays.
    let start = Instant::now();
    ensure_for(netns, &pod).unwrap();
    let first = start.elapsed();
    ensure_for(netns, &pod).unwrap();
    for family in ["-4", "-6"] {
        assert_eq!(ns.ip_rules(family), 1, "{family} rules");
        assert_eq!(ns.ip_routes(family), local_default(), "{family} routes");
    }
    assert_eq!(rule_count(netns, Family::V4).unwrap(), 1);
    assert_eq!(rule_count(netns, Family::V6).unwrap(), 1);
    assert!(installed_for(netns, &pod).unwrap());

    // A second copy (an older agent added the rule without NLM_F_EXCL):
    // not "installed", and remove deletes both.
    with_rtnl(netns, |rtnl| {
        let answers = rtnl
            .batch([(RouteNetlinkMessage::NewRule(rule(Family::V6)), NLM_F_CREATE)])
            .unwrap();
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        Ok(())
    })
    .unwrap();
    assert_eq!(ns.ip_rules("-6"), 2);
    assert!(!installed_for(netns, &pod).unwrap());

    remove_for(netns, &pod).unwrap();
    remove_for(netns, &pod).unwrap();
    for family in ["-4", "-6"] {
        assert_eq!(ns.ip_rules(family), 0, "{family} rules");
        assert!(ns.ip_routes(family).is_empty(), "{family} routes");
    }
    assert!(!installed_for(netns, &pod).unwrap());

    // Per family.
    one_family(netns, ENSURE, Family::V6).unwrap();
    assert_eq!((ns.ip_rules("-4"), ns.ip_rules("-6")), (0, 1));
    assert_eq!(ns.ip_routes("-6"), local_default());
    one_family(netns, REMOVE, Family::V6).unwrap();
    one_family(netns, REMOVE, Family::V6).unwrap();
    assert_eq!(ns.ip_rules("-6"), 0);
    assert!(ns.ip_routes("-6").is_empty());

    // Timing (run with --nocapture to see it).
    let samples = (0..50)
        .map(|_| {
            remove_for(netns, &pod).unwrap();
            let start = Instant::now();
            ensure_for(netns, &pod).unwrap();
            start.elapsed()
        })
        .collect();
    let installed = (0..50)
        .map(|_| {
            let start = Instant::now();
            assert!(installed_for(netns, &pod).unwrap());
            start.elapsed()
        })
        .collect();
    eprintln!(
        "policy routing: ensure_for on a fresh netns {first:?}; ensure_for median {:?}, \
         installed_for median {:?}",
        median(samples),
        median(installed),
    );
}

#[test]
fn ipv6_is_best_effort_and_errors_name_the_request() {
    // `lo` down: the kernel refuses IPv6 routes through it (IPv4 ones not).
    let ns = TestNetns::new(1, false);
    let netns = &ns.netns;
    let v4_pod = ns.pod(&["10.0.0.2"]);
    let dual_pod = ns.pod(&["10.0.0.2", "fd00::2"]);

    ensure_for(netns, &v4_pod).unwrap();
    assert_eq!(ns.ip_rules("-4"), 1);
    assert_eq!(ns.ip_routes("-4"), local_default());
    assert!(ns.ip_routes("-6").is_empty());
    assert!(installed_for(netns, &v4_pod).unwrap());

    let message = ensure_for(netns, &dual_pod).unwrap_err().to_string();
    assert!(
        message.contains(&format!(
            "netlink RTM_NEWROUTE (IPv6 route replace local ::/0 dev lo table 100) in {}",
            netns.path().display()
        )) && message.contains("Network is down"),
        "{message}"
    );
    let message = one_family(netns, ENSURE, Family::V6)
        .unwrap_err()
        .to_string();
    assert!(message.contains("RTM_NEWROUTE (IPv6"), "{message}");

    remove_for(netns, &dual_pod).unwrap();
    for family in ["-4", "-6"] {
        assert_eq!(ns.ip_rules(family), 0, "{family} rules");
        assert!(ns.ip_routes(family).is_empty(), "{family} routes");
    }
    assert!(!installed_for(netns, &v4_pod).unwrap());
}

#[test]
fn messages_round_trip_and_match() {
    for family in [Family::V4, Family::V6] {
        let message = rule(family);
        assert!(is_ours(&message));
        let mut packet = NetlinkMessage::from(RouteNetlinkMessage::NewRule(message.clone()));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(
            parsed.payload,
            RouteNetlinkMessage::NewRule(message.clone()).into()
        );

        let mut other = message.clone();
        other.attributes = vec![
            RuleAttribute::Priority(RULE_PRIORITY),
            RuleAttribute::FwMark(CONNMARK),
            RuleAttribute::Table(ROUTE_TABLE),
        ];
        assert!(!is_ours(&other), "no mask");
        other.attributes.push(RuleAttribute::FwMask(0xffff));
        assert!(!is_ours(&other), "another mask");
    }
    assert_eq!(
        Step::AddRule.describe(Family::V6),
        "RTM_NEWRULE (IPv6 rule add fwmark 0x111/0xfff pref 32764 lookup 100)"
    );
}
