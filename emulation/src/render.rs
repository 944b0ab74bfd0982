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
    host.lines()
        .map(|line| {
            let key = line.split(':').next().unwrap_or("");
            let value = match key {
                "MemTotal" => Some(limit),
                "MemFree" => Some(free),
                "MemAvailable" => Some(free + cache),
                "Cached" => Some(cache),
                "Buffers" | "SwapCached" | "SwapTotal" | "SwapFree" | "Zswap" | "Zswapped" => {
                    Some(0)
                }
                _ => None,
            };
            match value {
                Some(v) => format!("{key}:{v:>width$} kB\n", width = 16 - key.len().min(15) + 1),
                None => format!("{line}\n"),
            }
        })
        .collect()
}

fn without_swap(host: &str) -> String {
    host.lines()
        .map(|line| match line.split(':').next().unwrap_or("") {
            key @ ("SwapTotal" | "SwapFree" | "SwapCached") => {
                format!("{key}:{:>width$} kB\n", 0, width = 16 - key.len() + 1)
            }
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

    const MEMINFO: &str = "MemTotal:       24683656 kB\nMemFree:        23000000 kB\nMemAvailable:   23500000 kB\nBuffers:           10000 kB\nCached:           400000 kB\nSwapCached:            0 kB\nSwapTotal:       1048572 kB\nSwapFree:        1048572 kB\nShmem:              1000 kB";

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
            cpus: None,
        };
        let m = meminfo(MEMINFO, &limits);
        assert_eq!(field(&m, "MemTotal"), Some(262144));
        assert_eq!(field(&m, "MemFree"), Some(262144 - 16384));
        assert_eq!(field(&m, "MemAvailable"), Some(262144 - 16384 + 4096));
        assert_eq!(field(&m, "SwapTotal"), Some(0));
        assert_eq!(field(&m, "Shmem"), Some(1000));
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
