//! Mark-based policy routing in the pod netns: replies of connections ztunnel
//! opened to the app with a spoofed (IP_TRANSPARENT) client source carry
//! fwmark [`CONNMARK`] and are routed back locally to ztunnel's socket
//! instead of out to the real client.
//!
//! Changes are rtnetlink requests on a NETLINK_ROUTE socket made inside the
//! pod's netns (no `ip` process: a pod add pays for every process spawned),
//! both families in one datagram; the kernel refuses a duplicate of the
//! rule, so adding it again is harmless.

mod rtnl;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{CONNMARK, CaptureError, MARK_MASK, PodNetns, ROUTE_TABLE, RULE_PRIORITY};
use crate::netns::Netns;
use rtnl::Rtnl;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn address_family(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }

    fn any(self) -> &'static str {
        match self {
            Family::V4 => "0.0.0.0/0",
            Family::V6 => "::/0",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// What [`ensure`] and [`remove`] ask the kernel, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `ip route replace local <any> dev lo table 100`
    ReplaceRoute,
    /// `ip rule add fwmark 0x111/0xfff pref 32764 lookup 100`
    AddRule,
    /// `ip rule del fwmark 0x111/0xfff pref 32764 lookup 100`
    DelRule,
    /// `ip route del local <any> dev lo table 100`
    DelRoute,
}

/// Route first, then the rule: the rule never points at an empty table.
const ENSURE: &[Step] = &[Step::ReplaceRoute, Step::AddRule];
/// The rule first, then the route (the reverse of [`ENSURE`]). The rule
/// twice: older agents could leave a second copy.
const REMOVE: &[Step] = &[Step::DelRule, Step::DelRule, Step::DelRoute];

impl Step {
    /// Flags besides `NLM_F_REQUEST | NLM_F_ACK`.
    fn flags(self) -> u16 {
        match self {
            Step::ReplaceRoute => NLM_F_CREATE | NLM_F_REPLACE,
            // With NLM_F_EXCL the kernel refuses an exact duplicate (EEXIST).
            Step::AddRule => NLM_F_CREATE | NLM_F_EXCL,
            Step::DelRule | Step::DelRoute => 0,
        }
    }

    /// Kernel answers that mean the step's work is done already.
    fn tolerated(self) -> &'static [i32] {
        match self {
            Step::ReplaceRoute => &[],
            // Our rule is there already.
            Step::AddRule => &[libc::EEXIST],
            // Nothing to delete (ESRCH: no such route or table).
            Step::DelRule | Step::DelRoute => &[libc::ENOENT, libc::ESRCH],
        }
    }

    fn message(self, family: Family, lo: u32) -> RouteNetlinkMessage {
        match self {
            Step::ReplaceRoute => RouteNetlinkMessage::NewRoute(route(family, lo, true)),
            Step::DelRoute => RouteNetlinkMessage::DelRoute(route(family, lo, false)),
            Step::AddRule => RouteNetlinkMessage::NewRule(rule(family)),
            Step::DelRule => RouteNetlinkMessage::DelRule(rule(family)),
        }
    }

    /// The request, for errors: "RTM_NEWRULE (IPv6 fwmark 0x111/0xfff …)".
    fn describe(self, family: Family) -> String {
        let (name, what) = match self {
            Step::ReplaceRoute => ("RTM_NEWROUTE", "replace"),
            Step::DelRoute => ("RTM_DELROUTE", "del"),
            Step::AddRule => ("RTM_NEWRULE", "add"),
            Step::DelRule => ("RTM_DELRULE", "del"),
        };
        match self {
            Step::ReplaceRoute | Step::DelRoute => format!(
                "{name} ({family} route {what} local {any} dev lo table {ROUTE_TABLE})",
                any = family.any()
            ),
            Step::AddRule | Step::DelRule => format!(
                "{name} ({family} rule {what} fwmark {CONNMARK:#x}/{MARK_MASK:#x} \
                 pref {RULE_PRIORITY} lookup {ROUTE_TABLE})"
            ),
        }
    }
}

/// The table in a message header: the id if it fits, else "see the
/// attribute" (which we always send).
fn header_table() -> u8 {
    u8::try_from(ROUTE_TABLE).unwrap_or(RouteHeader::RT_TABLE_UNSPEC)
}

/// `local <any> dev lo table 100`, as `ip route` sends it: `add`/`replace`
/// as a host-scope route of protocol `boot`; `del` with scope "nowhere",
/// which matches whatever scope the route has.
fn route(family: Family, lo: u32, add: bool) -> RouteMessage {
    let mut message = RouteMessage::default();
    let header = &mut message.header;
    header.address_family = family.address_family();
    header.destination_prefix_length = 0;
    header.table = header_table();
    header.kind = RouteType::Local;
    if add {
        header.protocol = RouteProtocol::Boot;
        header.scope = RouteScope::Host;
    } else {
        header.protocol = RouteProtocol::Unspec;
        header.scope = RouteScope::NoWhere;
    }
    message.attributes = vec![RouteAttribute::Table(ROUTE_TABLE), RouteAttribute::Oif(lo)];
    message
}

/// `fwmark 0x111/0xfff pref 32764 lookup 100`.
fn rule(family: Family) -> RuleMessage {
    let mut message = RuleMessage::default();
    message.header.family = family.address_family();
    message.header.table = header_table();
    message.header.action = RuleAction::ToTable;
    message.attributes = vec![
        RuleAttribute::Priority(RULE_PRIORITY),
        RuleAttribute::FwMark(CONNMARK),
        RuleAttribute::FwMask(MARK_MASK),
        RuleAttribute::Table(ROUTE_TABLE),
    ];
    message
}

fn is_ours(rule: &RuleMessage) -> bool {
    let mut priority = None;
    let mut fwmark = None;
    let mut fwmask = None;
    let mut table = u32::from(rule.header.table);
    for attribute in &rule.attributes {
        match attribute {
            RuleAttribute::Priority(value) => priority = Some(*value),
            RuleAttribute::FwMark(value) => fwmark = Some(*value),
            RuleAttribute::FwMask(value) => fwmask = Some(*value),
            RuleAttribute::Table(value) => table = *value,
            _ => {}
        }
    }
    priority == Some(RULE_PRIORITY)
        && fwmark == Some(CONNMARK)
        && fwmask == Some(MARK_MASK)
        && table == ROUTE_TABLE
}

/// A request that could not be made or that the kernel refused: the
/// closest of [`CaptureError`]'s kinds to a failed `ip` command.
fn request_error(netns: &Netns, request: &str, source: io::Error) -> CaptureError {
    CaptureError::Spawn {
        command: format!("netlink {request} in {}", netns.path().display()),
        source,
    }
}

/// Runs `f` with a NETLINK_ROUTE socket inside `netns` (on one short-lived
/// thread that entered it).
fn with_rtnl<T: Send>(
    netns: &Netns,
    f: impl FnOnce(&mut Rtnl) -> Result<T, CaptureError> + Send,
) -> Result<T, CaptureError> {
    netns
        .run(|| {
            let mut rtnl = Rtnl::open()
                .map_err(|source| request_error(netns, "NETLINK_ROUTE socket", source))?;
            f(&mut rtnl)
        })
        .map_err(|source| CaptureError::Netns {
            path: netns.path().to_owned(),
            source,
        })?
}

/// Sends `steps` for each of `families` in one datagram and returns each
/// family's outcome: every step runs; a step the kernel answers with one
/// of its tolerated errors is fine, any other failure is an error naming
/// the request. Must run inside `netns` (see [`with_rtnl`]).
fn apply(
    rtnl: &mut Rtnl,
    netns: &Netns,
    steps: &[Step],
    families: &[Family],
) -> Result<Vec<Result<(), CaptureError>>, CaptureError> {
    let lo = nix::net::if_::if_nametoindex("lo")
        .map_err(|errno| request_error(netns, "if_nametoindex(lo)", errno.into()))?;
    let requests: Vec<(Family, Step)> = families
        .iter()
        .flat_map(|&family| steps.iter().map(move |&step| (family, step)))
        .collect();
    let answers = rtnl
        .batch(
            requests
                .iter()
                .map(|&(family, step)| (step.message(family, lo), step.flags())),
        )
        .map_err(|source| {
            let what = requests
                .iter()
                .map(|&(family, step)| step.describe(family))
                .collect::<Vec<_>>()
                .join("; ");
            request_error(netns, &what, source)
        })?;
    let mut outcomes: Vec<Result<(), CaptureError>> = families.iter().map(|_| Ok(())).collect();
    for (&(family, step), answer) in requests.iter().zip(answers) {
        let Err(err) = answer else { continue };
        if err
            .raw_os_error()
            .is_some_and(|code| step.tolerated().contains(&code))
        {
            continue;
        }
        let index = families.iter().position(|&f| f == family).unwrap_or(0);
        if let Some(outcome @ Ok(())) = outcomes.get_mut(index) {
            *outcome = Err(request_error(netns, &step.describe(family), err));
        }
    }
    Ok(outcomes)
}

/// Copies of our fwmark rule in `family`. Must run inside `netns`.
fn count_rules(rtnl: &mut Rtnl, netns: &Netns, family: Family) -> Result<usize, CaptureError> {
    let rules = rtnl
        .dump_rules(family.address_family())
        .map_err(|source| request_error(netns, &format!("RTM_GETRULE ({family} dump)"), source))?;
    Ok(rules.iter().filter(|rule| is_ours(rule)).count())
}

/// Both families' requests in one datagram, their outcomes apart.
fn both(netns: &Netns, steps: &[Step]) -> Result<[Result<(), CaptureError>; 2], CaptureError> {
    let outcomes = with_rtnl(netns, |rtnl| {
        apply(rtnl, netns, steps, &[Family::V4, Family::V6])
    })?;
    <[_; 2]>::try_from(outcomes)
        .map_err(|_| CaptureError::Task("policy routing: an outcome per family expected".into()))
}

/// The return path for `pod`: IPv4, and IPv6 (see [`ipv6_step`]).
pub(crate) fn ensure_for(netns: &Netns, pod: &PodNetns) -> Result<(), CaptureError> {
    let [v4, v6] = both(netns, ENSURE)?;
    v4?;
    ipv6_step(pod, v6)
}

pub(crate) fn remove_for(netns: &Netns, pod: &PodNetns) -> Result<(), CaptureError> {
    let [v4, v6] = both(netns, REMOVE)?;
    v4?;
    ipv6_step(pod, v6)
}

/// Exactly one rule per family the pod has.
pub(crate) fn installed_for(netns: &Netns, pod: &PodNetns) -> Result<bool, CaptureError> {
    with_rtnl(netns, |rtnl| {
        if count_rules(rtnl, netns, Family::V4)? != 1 {
            return Ok(false);
        }
        Ok(!pod.has_ipv6() || count_rules(rtnl, netns, Family::V6)? == 1)
    })
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
