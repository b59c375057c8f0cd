//! Mark-based policy routing in the pod netns: replies of connections ztunnel
//! opened to the app with a spoofed (IP_TRANSPARENT) client source carry
//! fwmark [`CONNMARK`] and are routed back locally to ztunnel's socket
//! instead of out to the real client.
//!
//! Changes go through one `ip -batch` per family; the kernel refuses a
//! duplicate of the rule, so adding it again is harmless.

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

/// Number of copies of our fwmark rule.
pub(crate) fn rule_count(netns: &Netns, family: Family) -> Result<usize, CaptureError> {
    let rules: Vec<RuleEntry> =
        run_json(Some(netns), "ip", &["-j", family.flag(), "rule", "show"])?;
    Ok(rules.iter().filter(|rule| rule.is_ours()).count())
}

/// Route first, then the rule: the rule never points at an empty table.
/// One `ip -batch` per family (a pod add pays for every process spawned):
/// `route replace` is idempotent, and the kernel refuses a second copy of
/// the rule (`File exists`), which is success here.
pub(crate) fn ensure(netns: &Netns, family: Family) -> Result<(), CaptureError> {
    let script = format!(
        "route replace local {any} dev lo table {ROUTE_TABLE}\n{rule}\n",
        any = family.any(),
        rule = rule_line(family, "add"),
    );
    batch(netns, family, &script, &["File exists"])
}

/// Rule first, then the route (the reverse of [`ensure`]); what is not
/// there is not an error.
pub(crate) fn remove(netns: &Netns, family: Family) -> Result<(), CaptureError> {
    // Older agents could leave a second copy of the rule.
    let rule = rule_line(family, "del");
    let script = format!(
        "{rule}\n{rule}\nroute del local {any} dev lo table {ROUTE_TABLE}\n",
        any = family.any(),
    );
    batch(
        netns,
        family,
        &script,
        &["No such file or directory", "No such process"],
    )
}

fn rule_line(family: Family, verb: &str) -> String {
    rule_args(family, "")
        .into_iter()
        .skip(1)
        .map(|arg| if arg.is_empty() { verb.to_owned() } else { arg })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `script` with `ip -<family> -force -batch -`: every line runs; a
/// line that fails with one of the `tolerated` kernel answers is fine,
/// any other failure is an error naming it.
fn batch(
    netns: &Netns,
    family: Family,
    script: &str,
    tolerated: &[&str],
) -> Result<(), CaptureError> {
    match run(
        Some(netns),
        "ip",
        &[family.flag(), "-force", "-batch", "-"],
        Some(script),
    ) {
        Ok(_) => Ok(()),
        Err(CaptureError::Command {
            command,
            status,
            stderr,
        }) => {
            // iproute2 prints the kernel's answer, then "Command failed -:N".
            let unexpected = stderr.lines().any(|line| {
                let line = line.trim();
                !line.is_empty()
                    && !line.starts_with("Command failed")
                    && !tolerated.iter().any(|t| line.contains(t))
            });
            if unexpected {
                Err(CaptureError::Command {
                    command: format!("{command} <<< {}", script.trim().replace('\n', "; ")),
                    status,
                    stderr,
                })
            } else {
                Ok(())
            }
        }
        Err(other) => Err(other),
    }
}

/// The return path for `pod`: IPv4, and IPv6 (see [`ipv6_step`]).
/// The families run side by side: each is one process, and a pod add
/// waits for them.
pub(crate) fn ensure_for(netns: &Netns, pod: &PodNetns) -> Result<(), CaptureError> {
    let (v4, v6) = both(|family| ensure(netns, family));
    v4?;
    ipv6_step(pod, v6)
}

fn both<F>(f: F) -> (Result<(), CaptureError>, Result<(), CaptureError>)
where
    F: Fn(Family) -> Result<(), CaptureError> + Sync,
{
    std::thread::scope(|scope| {
        let v6 = scope.spawn(|| f(Family::V6));
        let v4 = f(Family::V4);
        let v6 = v6
            .join()
            .unwrap_or_else(|_| Err(CaptureError::Task("IPv6 policy routing panicked".into())));
        (v4, v6)
    })
}

pub(crate) fn remove_for(netns: &Netns, pod: &PodNetns) -> Result<(), CaptureError> {
    let (v4, v6) = both(|family| remove(netns, family));
    v4?;
    ipv6_step(pod, v6)
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
