//! The text of each emulated file, from host text and the container's limits. Pure, so the
//! views are unit-tested without a kernel.

use crate::cgroup::Limits;

/// `/proc/uptime`: both columns the container's uptime (the seed shows "5.86 5.86").
pub fn uptime(seconds: f64) -> String {
    format!("{seconds:.2} {seconds:.2}\n")
}

/// `/proc/swaps`: no host swap devices.
pub fn swaps() -> String {
    "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n".to_string()
}

/// `/sys/devices/system/cpu/online` for `n` CPUs.
pub fn cpu_online(n: u32) -> String {
    if n <= 1 {
        "0\n".to_string()
    } else {
        format!("0-{}\n", n - 1)
    }
}

/// `/proc/loadavg`: the container has no load history of its own to show, so the averages
/// are zero; runnable/total count the container's tasks, never the host's.
pub fn loadavg(running: usize, total: usize) -> String {
    format!("0.00 0.00 0.00 {}/{} 0\n", running.max(1), total.max(1))
}

/// sysinfo(2) for a container, from the kernel's answer `host`: its uptime (rounded up, as
/// the kernel does), its memory limit as total RAM when it has one, no swap (as /proc/swaps),
/// no load averages (as /proc/loadavg) and its own process count.
pub fn sysinfo(
    host: &libc::sysinfo,
    uptime: std::time::Duration,
    limits: &Limits,
    tasks: usize,
) -> libc::sysinfo {
    let mut s = *host;
    s.uptime = libc::c_long::try_from(uptime.as_secs() + u64::from(uptime.subsec_nanos() > 0))
        .unwrap_or(libc::c_long::MAX);
    s.loads = [0; 3];
    s.totalswap = 0;
    s.freeswap = 0;
    s.procs = u16::try_from(tasks.max(1)).unwrap_or(u16::MAX);
    let unit = u64::from(host.mem_unit.max(1));
    let host_total = host.totalram.saturating_mul(unit);
    if let Some(limit) = limits.memory_limit.filter(|l| *l < host_total) {
        let used = limits.memory_usage.min(limit);
        s.totalram = (limit / unit) as libc::c_ulong;
        s.freeram = ((limit - used) / unit) as libc::c_ulong;
        s.sharedram = 0;
        s.bufferram = 0;
        s.totalhigh = 0;
        s.freehigh = 0;
    }
    s
}

fn kb(bytes: u64) -> u64 {
    bytes / 1024
}

/// `/proc/meminfo` with the container's limit as MemTotal and no swap.
pub fn meminfo(host: &str, limits: &Limits) -> String {
    let host_total = field(host, "MemTotal").unwrap_or(0);
    let Some(limit) = limits.memory_limit.map(kb).filter(|l| *l < host_total) else {
        return without_swap(host);
    };
    let used = kb(limits.memory_usage).min(limit);
    let cache = kb(limits.memory_cache).min(used);
    let free = limit - used;
    let d = &limits.memory_detail;
    let (active_anon, inactive_anon) = (kb(d.active_anon), kb(d.inactive_anon));
    let (active_file, inactive_file) = (kb(d.active_file), kb(d.inactive_file));
    host.lines()
        .map(|line| {
            let key = line.split(':').next().unwrap_or("");
            let value = match key {
                "MemTotal" => Some(limit),
                "MemFree" => Some(free),
                "MemAvailable" => Some(free + cache),
                "Cached" => Some(cache),
                // The host's slab is not the container's: tools count SReclaimable as cache,
                // which would exceed what the container uses.
                "Buffers" | "SwapCached" | "SwapTotal" | "SwapFree" | "Zswap" | "Zswapped"
                | "Slab" | "SReclaimable" | "SUnreclaim" => Some(0),
                // What the container's own pages are doing, from its memory.stat.
                "Shmem" => Some(kb(d.shmem)),
                "Active" => Some(active_anon + active_file),
                "Inactive" => Some(inactive_anon + inactive_file),
                "Active(anon)" => Some(active_anon),
                "Inactive(anon)" => Some(inactive_anon),
                "Active(file)" => Some(active_file),
                "Inactive(file)" => Some(inactive_file),
                _ => None,
            };
            match value {
                Some(v) => meminfo_line(key, v),
                None => format!("{line}\n"),
            }
        })
        .collect()
}

/// One line as the kernel prints it: the key and colon in 16 columns, the value in 8.
fn meminfo_line(key: &str, kb: u64) -> String {
    format!("{:<16}{kb:>8} kB\n", format!("{key}:"))
}

fn without_swap(host: &str) -> String {
    host.lines()
        .map(|line| match line.split(':').next().unwrap_or("") {
            key @ ("SwapTotal" | "SwapFree" | "SwapCached") => meminfo_line(key, 0),
            _ => format!("{line}\n"),
        })
        .collect()
}

/// A `Key:   value kB` field of meminfo.
pub fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// `/proc/cpuinfo` with only the container's first `n` processors.
pub fn cpuinfo(host: &str, n: u32) -> String {
    host.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .take(n as usize)
        .map(|b| format!("{}\n\n", b.trim_end()))
        .collect()
}

/// `/proc/stat` with per-CPU lines only for the container's `n` CPUs.
pub fn stat(host: &str, n: u32) -> String {
    host.lines()
        .filter(|l| {
            // "cpuN …" lines; the total line is "cpu  …" and stays.
            l.strip_prefix("cpu")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|idx| idx.parse::<u32>().ok())
                .is_none_or(|idx| idx < n)
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24683656 kB\nMemFree:        23000000 kB\nMemAvailable:   23500000 kB\nBuffers:           10000 kB\nCached:           400000 kB\nSwapCached:            0 kB\nSwapTotal:       1048572 kB\nSwapFree:        1048572 kB\nShmem:              1000 kB\nSReclaimable:     112352 kB\nActive:          5000000 kB";

    fn host_sysinfo() -> libc::sysinfo {
        // SAFETY: sysinfo is plain data.
        let mut s: libc::sysinfo = unsafe { std::mem::zeroed() };
        s.uptime = 86_400;
        s.loads = [65536, 32768, 16384];
        s.totalram = 24 << 30;
        s.freeram = 20 << 30;
        s.sharedram = 1 << 20;
        s.bufferram = 1 << 20;
        s.totalswap = 8 << 30;
        s.freeswap = 8 << 30;
        s.procs = 300;
        s.mem_unit = 1;
        s
    }

    #[test]
    fn lines_keep_the_kernels_columns() {
        assert_eq!(
            meminfo_line("MemTotal", 262144),
            "MemTotal:         262144 kB\n"
        );
        assert_eq!(
            meminfo_line("Active(anon)", 5),
            "Active(anon):          5 kB\n"
        );
    }

    #[test]
    fn sysinfo_is_the_containers() {
        let limits = Limits {
            memory_limit: Some(256 << 20),
            memory_usage: 56 << 20,
            ..Limits::default()
        };
        let up = std::time::Duration::from_millis(5_860);
        let s = sysinfo(&host_sysinfo(), up, &limits, 3);
        assert_eq!(s.uptime, 6);
        assert_eq!(s.loads, [0; 3]);
        assert_eq!((s.totalram, s.freeram), (256 << 20, 200 << 20));
        assert_eq!((s.totalswap, s.freeswap, s.bufferram), (0, 0, 0));
        assert_eq!((s.procs, s.mem_unit), (3, 1));

        // No limit (or one above the host's memory): the host's memory, still no swap or load.
        let s = sysinfo(&host_sysinfo(), up, &Limits::default(), 0);
        assert_eq!((s.totalram, s.freeram), (24 << 30, 20 << 30));
        assert_eq!((s.totalswap, s.loads, s.procs), (0, [0; 3], 1));
    }

    #[test]
    fn uptime_has_both_columns() {
        assert_eq!(uptime(5.861), "5.86 5.86\n");
    }

    #[test]
    fn memory_limit_is_memtotal() {
        let limits = Limits {
            memory_limit: Some(256 << 20),
            memory_usage: 16 << 20,
            memory_cache: 4 << 20,
            memory_detail: crate::cgroup::MemoryDetail {
                active_anon: 1 << 20,
                active_file: 2 << 20,
                ..Default::default()
            },
            cpus: None,
        };
        let m = meminfo(MEMINFO, &limits);
        assert_eq!(field(&m, "MemTotal"), Some(262144));
        assert_eq!(field(&m, "MemFree"), Some(262144 - 16384));
        assert_eq!(field(&m, "MemAvailable"), Some(262144 - 16384 + 4096));
        assert_eq!(field(&m, "SwapTotal"), Some(0));
        assert_eq!(
            field(&m, "Shmem"),
            Some(0),
            "the container's shmem, not the host's"
        );
        assert_eq!(field(&m, "Active"), Some(3072));
        assert_eq!(
            field(&m, "SReclaimable"),
            Some(0),
            "host slab is no cache of ours"
        );
    }

    #[test]
    fn no_limit_keeps_host_memory_but_hides_swap() {
        let m = meminfo(MEMINFO, &Limits::default());
        assert_eq!(field(&m, "MemTotal"), Some(24683656));
        assert_eq!(field(&m, "SwapTotal"), Some(0));
    }

    #[test]
    fn cpus() {
        let host = "processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: X\n\n";
        assert_eq!(cpuinfo(host, 1), "processor\t: 0\nmodel name\t: X\n\n");
        let stat = "cpu  1 2 3\ncpu0 1 1 1\ncpu1 0 1 2\nintr 5\n";
        assert_eq!(super::stat(stat, 1), "cpu  1 2 3\ncpu0 1 1 1\nintr 5\n");
        assert_eq!(cpu_online(1), "0\n");
        assert_eq!(cpu_online(4), "0-3\n");
        assert!(swaps().starts_with("Filename"));
        assert_eq!(swaps().lines().count(), 1);
    }
}
