//! Mark-based policy routing in the pod netns: replies of connections ztunnel
//! opened to the app with a spoofed (IP_TRANSPARENT) client source carry
//! fwmark [`CONNMARK`] and are routed back locally to ztunnel's socket
//! instead of out to the real client.
//!
//! `ip rule add` does not deduplicate, so every change first reads the rules
//! (`ip -j`) and converges on exactly one copy.

use serde::Deserialize;

use super::cmd::{run, run_json};
use super::{CONNMARK, CaptureError, MARK_MASK, PodNetns, ROUTE_TABLE, RULE_PRIORITY};
use crate::netns::Netns;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    fn flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }

    fn any(self) -> &'static str {
        match self {
            Family::V4 => "0.0.0.0/0",
            Family::V6 => "::/0",
        }
    }
}

#[derive(Debug, Deserialize)]
struct RuleEntry {
    priority: Option<u32>,
    fwmark: Option<String>,
    fwmask: Option<String>,
    table: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RouteEntry {
    #[serde(rename = "type")]
    kind: Option<String>,
    dst: Option<String>,
    dev: Option<String>,
    table: Option<String>,
}

fn parse_hex(text: Option<&str>) -> Option<u32> {
    let text = text?;
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u32::from_str_radix(digits, 16).ok()
}

impl RuleEntry {
    fn is_ours(&self) -> bool {
        self.priority == Some(RULE_PRIORITY)
            && parse_hex(self.fwmark.as_deref()) == Some(CONNMARK)
            && parse_hex(self.fwmask.as_deref()) == Some(MARK_MASK)
            && self.table.as_deref() == Some(ROUTE_TABLE.to_string().as_str())
    }
}

impl RouteEntry {
    fn is_ours(&self) -> bool {
        self.kind.as_deref() == Some("local")
            && self.dst.as_deref() == Some("default")
            && self.dev.as_deref() == Some("lo")
            && self.table.as_deref() == Some(ROUTE_TABLE.to_string().as_str())
    }
}

fn rule_args(family: Family, verb: &'static str) -> Vec<String> {
    vec![
        family.flag().into(),
        "rule".into(),
        verb.into(),
        "fwmark".into(),
        format!("{CONNMARK:#x}/{MARK_MASK:#x}"),
        "pref".into(),
        RULE_PRIORITY.to_string(),
        "lookup".into(),
        ROUTE_TABLE.to_string(),
    ]
}

fn ip(netns: &Netns, args: &[String]) -> Result<String, CaptureError> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(Some(netns), "ip", &args, None)
}

/// Number of copies of our fwmark rule.
pub(crate) fn rule_count(netns: &Netns, family: Family) -> Result<usize, CaptureError> {
    let rules: Vec<RuleEntry> =
        run_json(Some(netns), "ip", &["-j", family.flag(), "rule", "show"])?;
    Ok(rules.iter().filter(|rule| rule.is_ours()).count())
}

fn route_present(netns: &Netns, family: Family) -> Result<bool, CaptureError> {
    // `table all`: listing a table that does not exist yet is an error.
    let routes: Vec<RouteEntry> = run_json(
        Some(netns),
        "ip",
        &["-j", family.flag(), "route", "show", "table", "all"],
    )?;
    Ok(routes.iter().any(RouteEntry::is_ours))
}

/// Route first, then the rule: the rule never points at an empty table.
pub(crate) fn ensure(netns: &Netns, family: Family) -> Result<(), CaptureError> {
    let table = ROUTE_TABLE.to_string();
    run(
        Some(netns),
        "ip",
        &[
            family.flag(),
            "route",
            "replace",
            "local",
            family.any(),
            "dev",
            "lo",
            "table",
            &table,
        ],
        None,
    )?;
    let count = rule_count(netns, family)?;
    if count == 0 {
        ip(netns, &rule_args(family, "add"))?;
    }
    // Copies left by something else (or an older, buggy agent).
    for _ in 1..count {
        ip(netns, &rule_args(family, "del"))?;
    }
    Ok(())
}

/// Rule first, then the route (the reverse of [`ensure`]).
pub(crate) fn remove(netns: &Netns, family: Family) -> Result<(), CaptureError> {
    for _ in 0..rule_count(netns, family)? {
        ip(netns, &rule_args(family, "del"))?;
    }
    if route_present(netns, family)? {
        let table = ROUTE_TABLE.to_string();
        run(
            Some(netns),
            "ip",
            &[
                family.flag(),
                "route",
                "del",
                "local",
                family.any(),
                "dev",
                "lo",
                "table",
                &table,
            ],
            None,
        )?;
    }
    Ok(())
}

/// The return path for `pod`: IPv4, and IPv6 (see [`ipv6_step`]).
pub(crate) fn ensure_for(netns: &Netns, pod: &PodNetns) -> Result<(), CaptureError> {
    ensure(netns, Family::V4)?;
    ipv6_step(pod, ensure(netns, Family::V6))
}

pub(crate) fn remove_for(netns: &Netns, pod: &PodNetns) -> Result<(), CaptureError> {
    remove(netns, Family::V4)?;
    ipv6_step(pod, remove(netns, Family::V6))
}

/// Exactly one rule per family the pod has.
pub(crate) fn installed_for(netns: &Netns, pod: &PodNetns) -> Result<bool, CaptureError> {
    if rule_count(netns, Family::V4)? != 1 {
        return Ok(false);
    }
    Ok(!pod.has_ipv6() || rule_count(netns, Family::V6)? == 1)
}

/// IPv6 policy routing is required for pods with IPv6 addresses; elsewhere
/// it is best effort (a netns may have IPv6 disabled, or `lo` down).
fn ipv6_step(pod: &PodNetns, result: Result<(), CaptureError>) -> Result<(), CaptureError> {
    match result {
        Err(err) if !pod.has_ipv6() => {
            tracing::debug!(netns = %pod.name, error = %err, "IPv6 policy routing skipped (pod has no IPv6 address)");
            Ok(())
        }
        other => other,
    }
}
