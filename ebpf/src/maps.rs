//! Every map, pinned by name so that an agent restart reuses them and the
//! programs attached by the previous agent keep working.

use amesh_ebpf_common::{ConnectionKey, Endpoint, ListenerKey, PodEntry, Settings};
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, LruHashMap, SockHash};

/// Pods per node: far above kubelet's default of 110.
const MAX_PODS: u32 = 4096;
/// Captured connections being set up or open at once.
const MAX_CONNECTIONS: u32 = 65536;

#[map(name = "AMESH_PODS")]
pub static PODS: HashMap<u64, PodEntry> = HashMap::pinned(MAX_PODS, 0);

#[map(name = "AMESH_SETTINGS")]
pub static SETTINGS: Array<Settings> = Array::pinned(1, 0);

/// LRU: entries of sockets that close without a state callback age out.
#[map(name = "AMESH_DST_COOKIE")]
pub static DST_BY_COOKIE: LruHashMap<u64, Endpoint> = LruHashMap::pinned(MAX_CONNECTIONS, 0);

/// Connections ztunnel is opening to the app in its pod (keyed as the app
/// will see them), which `inbound` must let through to the app.
#[map(name = "AMESH_DELIVERIES")]
pub static DELIVERIES: LruHashMap<ConnectionKey, u8> = LruHashMap::pinned(MAX_CONNECTIONS, 0);

#[map(name = "AMESH_DST_PEER")]
pub static DST_BY_PEER: LruHashMap<Endpoint, Endpoint> = LruHashMap::pinned(MAX_CONNECTIONS, 0);

/// Closed sockets leave a sockhash by themselves.
#[map(name = "AMESH_LISTENERS")]
pub static LISTENERS: SockHash<ListenerKey> = SockHash::pinned(MAX_PODS * 2 * 16, 0);

#[map(name = "AMESH_LOCAL_SOCKS")]
pub static LOCAL_SOCKS: SockHash<ConnectionKey> = SockHash::pinned(MAX_CONNECTIONS * 2, 0);

pub fn settings() -> Option<&'static Settings> {
    SETTINGS.get(0)
}

pub fn pod(netns_cookie: u64) -> Option<&'static PodEntry> {
    // SAFETY: entries are plain values; a concurrent update at worst
    // yields the old or new entry.
    unsafe { PODS.get(&netns_cookie) }
}
