//! Which TCP ports listen inside a netns, read from the kernel's socket table.

use std::collections::BTreeSet;

use anyhow::{Context, Result};

use super::netns;

/// TCP_LISTEN in /proc/net/tcp's `st` column.
const LISTEN_STATE: &str = "0A";

/// Ports in LISTEN state (IPv4 and IPv6) inside netns `name`.
pub fn listening_ports(name: &str) -> Result<BTreeSet<u16>> {
    // /proc/net is /proc/self/net, the netns of the main thread; the calling
    // thread's own table is under /proc/thread-self.
    let tables = netns::in_netns(name, || {
        let v4 = std::fs::read_to_string("/proc/thread-self/net/tcp");
        // tcp6 is absent when IPv6 is disabled.
        let v6 = std::fs::read_to_string("/proc/thread-self/net/tcp6").unwrap_or_default();
        v4.map(|v4| v4 + &v6)
    })?
    .with_context(|| format!("read TCP table of netns {name}"))?;
    Ok(parse_listening(&tables))
}

pub fn is_listening(name: &str, port: u16) -> Result<bool> {
    Ok(listening_ports(name)?.contains(&port))
}

/// Lines look like `0: 0100007F:1F90 00000000:0000 0A ...`.
fn parse_listening(table: &str) -> BTreeSet<u16> {
    table
        .lines()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1)?;
            let state = cols.nth(1)?;
            if state != LISTEN_STATE {
                return None;
            }
            let (_, port) = local.rsplit_once(':')?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_entries_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
            0: 00000000:3AB0 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1\n\
            1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000 0 0 2\n\
            0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 0\n";
        let ports = parse_listening(table);
        assert_eq!(ports.into_iter().collect::<Vec<_>>(), vec![8081, 15024]);
    }
}
