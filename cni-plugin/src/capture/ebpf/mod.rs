//! The eBPF backend: pod traffic captured by programs attached at connect
//! time (cgroup) and listener lookup (sk_lookup), with no netfilter rule and
//! no conntrack entry. See `ebpf/src/main.rs` for the programs and
//! ARCHITECTURE.md "Data path" for the behaviour both backends share.
//!
//! Node-wide programs attach once to the cgroup v2 root; a pod is enrolled
//! by one map entry (keyed by its netns cookie) plus an sk_lookup link on
//! its netns. Everything is pinned under the pin dir, so restarting the
//! agent or ztunnel leaves capture in place.

mod cgroup;
mod features;
mod pins;
mod raw_link;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use amesh_ebpf_common::{self as common, PodEntry, Settings, programs};
use aya::maps::{Array, HashMap, MapData, SockHash};
use aya::programs::{
    CgroupAttachMode, CgroupSockAddr, CgroupSockopt, SkLookup, SkMsg, SockOps, links::FdLink,
};
use aya::{Ebpf, EbpfLoader};
use tracing::{debug, info, warn};

pub use pins::PinDir;

use super::policy_route;
use super::{Capture, CaptureConfig, CaptureError, PodNetns};
use crate::netns::Netns;
use crate::node_netns::NetnsScanner;

/// The compiled programs (built by build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/amesh-ebpf"));

/// Where pins go unless configured otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/amesh";

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("the kernel lacks {feature}: {detail}")]
    Missing {
        feature: &'static str,
        detail: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("eBPF link of {name}: {source}")]
    Link {
        name: &'static str,
        source: aya::programs::links::LinkError,
    },
    #[error("pinning {}: {source}", path.display())]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("eBPF object has no {0}")]
    NotInObject(&'static str),
}

/// Settings of the eBPF backend beyond the shared [`CaptureConfig`].
#[derive(Debug, Clone)]
pub struct EbpfSettings {
    pub pin_dir: PathBuf,
    /// Splice in-pod app↔ztunnel sockets with the sockmap.
    pub short_circuit: bool,
    /// The node's namespaces: entries of pods whose netns is gone are
    /// dropped at start.
    pub scanner: NetnsScanner,
}

#[derive(Debug)]
pub struct EbpfCapture {
    pins: PinDir,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    ebpf: Ebpf,
    pods: HashMap<MapData, u64, PodEntry>,
    /// netns name → cookie, for removing pods whose netns is already gone.
    cookies: BTreeMap<String, u64>,
}

/// Removes every pin of the backend: detaches all programs, frees all maps.
pub fn uninstall(pin_dir: &Path) -> std::io::Result<()> {
    PinDir::new(pin_dir).remove_all()
}

/// Loads program `$name` (of aya type `$kind`), links it to the cgroup and
/// pins the link over any previous one. A macro because aya's program types
/// share these methods but no trait.
macro_rules! attach_to_cgroup {
    ($kind:ty, $name:expr, $ebpf:expr, $cgroup:expr, $pins:expr) => {{
        let name: &'static str = $name;
        let program: &mut $kind = program($ebpf, name)?;
        program
            .load()
            .map_err(|source| EbpfError::Program { name, source })?;
        let id = program
            .attach($cgroup, CgroupAttachMode::Single)
            .map_err(|source| EbpfError::Program { name, source })?;
        let link = program
            .take_link(id)
            .map_err(|source| EbpfError::Program { name, source })?;
        $pins.replace(fd_link(name, link)?, &$pins.link(name))?;
    }};
}

impl EbpfCapture {
    /// Loads the programs (reusing pinned maps), attaches the node-wide ones
    /// at the cgroup v2 root (replacing a previous agent's attachments
    /// without a gap) and forgets pods whose netns is gone.
    pub fn load(config: &CaptureConfig, settings: &EbpfSettings) -> Result<Self, EbpfError> {
        features::check()?;
        let pins = PinDir::new(&settings.pin_dir);
        pins.prepare()?;
        let cgroup_path = cgroup::root()?;
        let cgroup = File::open(&cgroup_path).map_err(|source| EbpfError::Io {
            what: format!("opening cgroup {}", cgroup_path.display()),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pins.maps())
            .load(OBJECT)?;
        write_settings(&mut ebpf, config, settings.short_circuit)?;
        // Attached as bpf links, which always coexist with other programs on
        // the cgroup (the kernel refuses ALLOW_MULTI flags on links): other
        // agents' or the primary CNI's programs keep running alongside.
        for name in [
            programs::CONNECT4,
            programs::CONNECT6,
            programs::GETPEERNAME4,
            programs::GETPEERNAME6,
        ] {
            attach_to_cgroup!(CgroupSockAddr, name, &mut ebpf, &cgroup, &pins);
        }
        attach_to_cgroup!(SockOps, programs::TCP_EVENTS, &mut ebpf, &cgroup, &pins);
        {
            let name = programs::GETSOCKOPT;
            let program: &mut CgroupSockopt = program(&mut ebpf, name)?;
            program
                .load()
                .map_err(|source| EbpfError::Program { name, source })?;
            let program_fd = program
                .fd()
                .map_err(|source| EbpfError::Program { name, source })?;
            let link = raw_link::create(
                program_fd.as_fd(),
                cgroup.as_fd(),
                raw_link::BPF_CGROUP_GETSOCKOPT,
            )
            .map_err(|source| EbpfError::Io {
                what: format!("attaching {name} to the cgroup"),
                source,
            })?;
            pins.replace_with(&pins.link(name), |staging| {
                raw_link::pin(&link, staging).map_err(|source| EbpfError::Io {
                    what: format!("pinning {}", staging.display()),
                    source,
                })
            })?;
        }
        attach_short_circuit(&mut ebpf)?;
        {
            let name = programs::INBOUND;
            let program: &mut SkLookup = program(&mut ebpf, name)?;
            program
                .load()
                .map_err(|source| EbpfError::Program { name, source })?;
        }
        let pods = ebpf
            .take_map(common::PODS_MAP)
            .ok_or(EbpfError::NotInObject(common::PODS_MAP))?;
        let pods = HashMap::try_from(pods).map_err(|source| EbpfError::Map {
            name: common::PODS_MAP,
            source,
        })?;
        let capture = Self {
            pins,
            state: Mutex::new(Loaded {
                ebpf,
                pods,
                cookies: BTreeMap::new(),
            }),
        };
        capture.forget_gone_pods(&settings.scanner);
        info!(pins = %capture.pins.root().display(), cgroup = %cgroup_path.display(), short_circuit = settings.short_circuit, "eBPF capture loaded");
        Ok(capture)
    }

    /// Drops map entries and links of pods whose netns no longer exists
    /// (removed while no agent ran).
    fn forget_gone_pods(&self, scanner: &NetnsScanner) {
        let live_cookies: BTreeSet<u64> = scanner
            .list()
            .iter()
            .filter_map(|ns| Netns::open(&ns.path).and_then(|ns| ns.cookie()).ok())
            .collect();
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let stale: Vec<u64> = state
            .pods
            .keys()
            .flatten()
            .filter(|cookie| !live_cookies.contains(cookie))
            .collect();
        for cookie in stale {
            let _ = state.pods.remove(&cookie);
            debug!(cookie, "forgot the map entry of a pod whose netns is gone");
        }
        if let Ok(entries) = std::fs::read_dir(self.pins.root().join("pods")) {
            for entry in entries.flatten() {
                let live = entry
                    .file_name()
                    .to_str()
                    .and_then(|name| name.strip_prefix('c'))
                    .and_then(|cookie| cookie.parse::<u64>().ok())
                    .is_some_and(|cookie| live_cookies.contains(&cookie));
                if !live {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Loaded>, CaptureError> {
        self.state
            .lock()
            .map_err(|_| CaptureError::Task("eBPF state lock poisoned".into()))
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, EbpfError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(EbpfError::NotInObject(name))?;
    program
        .try_into()
        .map_err(|source| EbpfError::Program { name, source })
}

fn fd_link<L>(name: &'static str, link: L) -> Result<FdLink, EbpfError>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    FdLink::try_from(link).map_err(|source| EbpfError::Link { name, source })
}

fn write_settings(
    ebpf: &mut Ebpf,
    config: &CaptureConfig,
    short_circuit: bool,
) -> Result<(), EbpfError> {
    let name = common::SETTINGS_MAP;
    let map = ebpf.map_mut(name).ok_or(EbpfError::NotInObject(name))?;
    let mut array: Array<&mut MapData, Settings> =
        Array::try_from(map).map_err(|source| EbpfError::Map { name, source })?;
    let value = Settings {
        outbound_port: config.outbound_port,
        inbound_plaintext_port: config.inbound_plaintext_port,
        inbound_port: config.inbound_port,
        short_circuit: u16::from(short_circuit),
        probe_ip4: u32::from_ne_bytes(config.probe_snat_v4.octets()),
        probe_ip6: words6(config.probe_snat_v6.octets()),
    };
    array
        .set(0, value, 0)
        .map_err(|source| EbpfError::Map { name, source })
}

/// The sk_msg program on the in-pod socket map. Its attachment belongs to
/// the (pinned) map, so it outlives the agent; the link handle is
/// deliberately leaked because dropping it would detach the program.
fn attach_short_circuit(ebpf: &mut Ebpf) -> Result<(), EbpfError> {
    let map_name = common::LOCAL_SOCKS_MAP;
    let map = ebpf.map(map_name).ok_or(EbpfError::NotInObject(map_name))?;
    let socks: SockHash<&MapData, common::ConnectionKey> =
        SockHash::try_from(map).map_err(|source| EbpfError::Map {
            name: map_name,
            source,
        })?;
    let map_fd = socks.fd().try_clone().map_err(|source| EbpfError::Io {
        what: format!("duplicating the {map_name} fd"),
        source,
    })?;
    let name = programs::SHORT_CIRCUIT;
    let program: &mut SkMsg = program(ebpf, name)?;
    program
        .load()
        .map_err(|source| EbpfError::Program { name, source })?;
    let id = program
        .attach(&map_fd)
        .map_err(|source| EbpfError::Program { name, source })?;
    let link = program
        .take_link(id)
        .map_err(|source| EbpfError::Program { name, source })?;
    std::mem::forget(link);
    Ok(())
}

fn words6(octets: [u8; 16]) -> [u32; 4] {
    let mut words = [0u32; 4];
    for (word, chunk) in words.iter_mut().zip(octets.chunks_exact(4)) {
        *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    words
}

fn pod_entry(pod: &PodNetns) -> PodEntry {
    let mut entry = PodEntry::default();
    for ip in &pod.ips {
        match ip {
            IpAddr::V4(v4) if entry.ip4 == 0 => entry.ip4 = u32::from_ne_bytes(v4.octets()),
            IpAddr::V6(v6) if entry.ip6 == [0; 4] => entry.ip6 = words6(v6.octets()),
            _ => {}
        }
    }
    entry
}

fn open(pod: &PodNetns) -> Result<Netns, CaptureError> {
    Netns::open(&pod.path).map_err(|source| CaptureError::Netns {
        path: pod.path.clone(),
        source,
    })
}

fn netns_io(pod: &PodNetns) -> impl FnOnce(std::io::Error) -> CaptureError + '_ {
    move |source| CaptureError::Netns {
        path: pod.path.clone(),
        source,
    }
}

/// Replies of connections ztunnel opens to the app carry the connection
/// mark only if accepted sockets take their SYN's mark.
fn set_fwmark_accept(netns: &Netns, on: bool) -> std::io::Result<()> {
    let value = if on { "1" } else { "0" };
    netns.run(|| std::fs::write("/proc/sys/net/ipv4/tcp_fwmark_accept", value))?
}

impl EbpfCapture {
    /// The programs' part of capture: accepted sockets take their SYN's
    /// mark, sk_lookup in the netns, the pod's map entry.
    fn attach(&self, netns: &Netns, pod: &PodNetns) -> Result<(), CaptureError> {
        set_fwmark_accept(netns, true).map_err(netns_io(pod))?;
        let cookie = netns.cookie().map_err(netns_io(pod))?;
        let mut state = self.lock()?;
        // Inbound before outbound: once outbound is captured, replies from
        // other pods' ztunnels may arrive.
        let name = programs::INBOUND;
        let program: &mut SkLookup = program(&mut state.ebpf, name)?;
        let id = program
            .attach(netns)
            .map_err(|source| EbpfError::Program { name, source })?;
        let link = program
            .take_link(id)
            .map_err(|source| EbpfError::Program { name, source })?;
        self.pins
            .replace(FdLink::from(link), &self.pins.pod(cookie))?;
        state
            .pods
            .insert(cookie, pod_entry(pod), 0)
            .map_err(|source| EbpfError::Map {
                name: common::PODS_MAP,
                source,
            })?;
        state.cookies.insert(pod.name.clone(), cookie);
        debug!(netns = %pod.name, cookie, "eBPF capture installed");
        Ok(())
    }
}

impl Capture for EbpfCapture {
    fn install(&self, pod: &PodNetns) -> Result<(), CaptureError> {
        let netns = open(pod)?;
        // The return path first, as with nftables.
        policy_route::ensure_for(&netns, pod)?;
        self.attach(&netns, pod)
    }

    fn remove(&self, pod: &PodNetns) -> Result<(), CaptureError> {
        let netns = Netns::open(&pod.path).ok();
        let mut state = self.lock()?;
        let cookie = match netns.as_ref().map(Netns::cookie) {
            Some(Ok(cookie)) => Some(cookie),
            _ => state.cookies.get(&pod.name).copied(),
        };
        if let Some(cookie) = cookie {
            match state.pods.remove(&cookie) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => {
                    return Err(EbpfError::Map {
                        name: common::PODS_MAP,
                        source,
                    }
                    .into());
                }
            }
        }
        state.cookies.remove(&pod.name);
        drop(state);
        if let Some(cookie) = cookie {
            match std::fs::remove_file(self.pins.pod(cookie)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    warn!(netns = %pod.name, error = %err, "removing the pod's sk_lookup pin");
                }
                _ => {}
            }
        }
        if let Some(netns) = netns {
            set_fwmark_accept(&netns, false).map_err(netns_io(pod))?;
            policy_route::remove_for(&netns, pod)?;
        }
        debug!(netns = %pod.name, "eBPF capture removed");
        Ok(())
    }

    fn is_installed(&self, pod: &PodNetns) -> Result<bool, CaptureError> {
        let netns = open(pod)?;
        let cookie = netns.cookie().map_err(netns_io(pod))?;
        let entry = {
            let state = self.lock()?;
            state.pods.get(&cookie, 0).ok()
        };
        if entry != Some(pod_entry(pod)) || !self.pins.pod(cookie).exists() {
            return Ok(false);
        }
        policy_route::installed_for(&netns, pod)
    }
}

impl From<EbpfError> for CaptureError {
    fn from(err: EbpfError) -> Self {
        CaptureError::Ebpf(Box::new(err))
    }
}
