//! Standard `process_*` metrics, read from /proc on every scrape.
//!
//! Read at scrape time rather than sampled in the background: nothing runs
//! between scrapes, and the values are as fresh as the scrape. A file that
//! cannot be read (not Linux, /proc not mounted) leaves its metrics out
//! instead of failing the whole scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Collector of this process's CPU, memory, file descriptors, threads and
/// start time (Prometheus' standard names).
#[derive(Debug, Default)]
pub struct ProcessCollector {
    _private: (),
}

impl ProcessCollector {
    /// A collector for the calling process (`/proc/self`).
    pub fn new() -> Self {
        Self::default()
    }
}

/// What one scrape read; `None` where the source could not be read.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ProcessSample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<i64>,
    pub virtual_bytes: Option<i64>,
    pub threads: Option<i64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
}

/// Fields of /proc/<pid>/stat that we use.
#[derive(Debug, PartialEq)]
pub(crate) struct Stat {
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    pub threads: i64,
    pub starttime_ticks: u64,
    pub vsize_bytes: u64,
    pub rss_pages: i64,
}

/// Parses /proc/<pid>/stat. The command name (field 2) may contain spaces
/// and parentheses, so fields are counted after its last `)`.
pub(crate) fn parse_stat(stat: &str) -> Option<Stat> {
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state): field N is at index N - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).copied();
    Some(Stat {
        utime_ticks: field(14)?.parse().ok()?,
        stime_ticks: field(15)?.parse().ok()?,
        threads: field(20)?.parse().ok()?,
        starttime_ticks: field(22)?.parse().ok()?,
        vsize_bytes: field(23)?.parse().ok()?,
        rss_pages: field(24)?.parse().ok()?,
    })
}

/// Boot time (seconds since the epoch) from /proc/stat's `btime` line.
pub(crate) fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Soft limit of "Max open files" from /proc/<pid>/limits.
pub(crate) fn parse_max_fds(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .strip_prefix("Max open files")?
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(i64::MAX);
    }
    soft.parse().ok()
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|v| *v > 0)
}

pub(crate) fn sample() -> ProcessSample {
    let mut s = ProcessSample::default();
    let ticks = sysconf(libc::_SC_CLK_TCK).map(|t| t as f64);
    if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(parse_stat)
    {
        if let Some(hz) = ticks {
            s.cpu_seconds = Some((stat.utime_ticks + stat.stime_ticks) as f64 / hz);
            let btime = std::fs::read_to_string("/proc/stat")
                .ok()
                .as_deref()
                .and_then(parse_btime);
            s.start_time_seconds = btime.map(|b| b as f64 + stat.starttime_ticks as f64 / hz);
        }
        s.threads = Some(stat.threads);
        s.virtual_bytes = i64::try_from(stat.vsize_bytes).ok();
        s.resident_bytes = sysconf(libc::_SC_PAGESIZE)
            .and_then(|p| i64::try_from(p).ok())
            .map(|p| stat.rss_pages.saturating_mul(p));
    }
    s.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| i64::try_from(d.count()).unwrap_or(i64::MAX));
    s.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .as_deref()
        .and_then(parse_max_fds);
    s
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: Option<impl prometheus_client::encoding::EncodeGaugeValue>,
) -> Result<(), std::fmt::Error> {
    let Some(v) = v else { return Ok(()) };
    let g = ConstGauge::new(v);
    let m = encoder.encode_descriptor(name, help, unit, g.metric_type())?;
    g.encode(m)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = sample();
        if let Some(cpu) = s.cpu_seconds {
            let c = ConstCounter::new(cpu);
            let m = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds.",
                Some(&Unit::Seconds),
                c.metric_type(),
            )?;
            c.encode(m)?;
        }
        gauge(
            &mut encoder,
            "process_resident_memory",
            "Resident memory size in bytes.",
            Some(&Unit::Bytes),
            s.resident_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory",
            "Virtual memory size in bytes.",
            Some(&Unit::Bytes),
            s.virtual_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors.",
            None,
            s.open_fds,
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            None,
            s.max_fds,
        )?;
        gauge(
            &mut encoder,
            "process_start_time",
            "Start time of the process since unix epoch in seconds.",
            Some(&Unit::Seconds),
            s.start_time_seconds,
        )?;
        gauge(
            &mut encoder,
            "process_threads",
            "Number of OS threads in the process.",
            None,
            s.threads,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_name() {
        // Fields 1..=24 with a command name holding spaces and a ')'.
        let line = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 7 0 12345 1048576 300 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            Stat {
                utime_ticks: 250,
                stime_ticks: 50,
                threads: 7,
                starttime_ticks: 12345,
                vsize_bytes: 1_048_576,
                rss_pages: 300,
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn parses_btime_and_limits() {
        assert_eq!(
            parse_btime("cpu 1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_btime("cpu 1 2 3\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63432                63432                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files"
            ),
            Some(i64::MAX)
        );
    }

    #[test]
    fn samples_this_process() {
        let s = sample();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = s.start_time_seconds.unwrap();
        // Started in the past, and not before the machine booted a year ago.
        assert!(
            start <= now + 1.0 && start > now - 365.0 * 86400.0,
            "start {start} now {now}"
        );
        assert!(s.resident_bytes.unwrap() > 0);
        assert!(s.virtual_bytes.unwrap() >= s.resident_bytes.unwrap());
        assert!(s.threads.unwrap() >= 1);
        assert!(s.open_fds.unwrap() >= 1);
        assert!(s.max_fds.unwrap() >= s.open_fds.unwrap());
        assert!(s.cpu_seconds.unwrap() >= 0.0);
    }
}
