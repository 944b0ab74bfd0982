//! The container's limits, read from its cgroup (v1 or v2) each time a view is rendered.

use eci_sys::cgroup::{field as stat_field, Cgroup};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct CgroupView {
    /// The container's cgroup (its cgroupsPath, e.g. `/default/c1`, in every hierarchy).
    cgroup: Cgroup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Memory limit in bytes, if any.
    pub memory_limit: Option<u64>,
    pub memory_usage: u64,
    /// Page cache charged to the container.
    pub memory_cache: u64,
    /// The rest of the container's memory.stat that /proc/meminfo shows, in bytes.
    pub memory_detail: MemoryDetail,
    /// CPUs the container may use (cpuset and quota), at least 1.
    pub cpus: Option<u32>,
}

/// Counters of memory.stat (v1 `total_*`, v2 plain names) with /proc/meminfo equivalents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryDetail {
    pub shmem: u64,
    pub active_anon: u64,
    pub inactive_anon: u64,
    pub active_file: u64,
    pub inactive_file: u64,
}

impl MemoryDetail {
    fn parse(stat: Option<&str>, prefix: &str) -> MemoryDetail {
        let get = |key: &str| stat_field(stat, &format!("{prefix}{key}"));
        MemoryDetail {
            shmem: get("shmem"),
            active_anon: get("active_anon"),
            inactive_anon: get("inactive_anon"),
            active_file: get("active_file"),
            inactive_file: get("inactive_file"),
        }
    }
}

/// Count the CPUs in a cpuset list like `0-3,8`.
pub fn count_cpuset(list: &str) -> u32 {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|r| match r.split_once('-') {
            Some((a, b)) => {
                b.trim()
                    .parse::<u32>()
                    .unwrap_or(0)
                    .saturating_sub(a.trim().parse().unwrap_or(0))
                    + 1
            }
            None => 1,
        })
        .sum()
}

impl CgroupView {
    pub fn new(cgroups_path: &Path) -> Self {
        CgroupView {
            cgroup: Cgroup::new(cgroups_path),
        }
    }

    fn v1(&self, controller: &str, file: &str) -> Option<String> {
        self.cgroup.v1(controller, file)
    }

    fn v2(&self, file: &str) -> Option<String> {
        self.cgroup.v2(file)
    }

    /// Account work done for the container — the supervisor thread, the mount agent — to the
    /// container's CPU limit, so that a container looping on trapped syscalls is throttled by
    /// its own quota instead of spending the shim's. `whole_process`: move process `tid` (the
    /// agent); otherwise only thread `tid` (cgroup v1 places single threads through `tasks`).
    /// On v2 a domain cgroup takes whole processes only, so a lone thread stays where it is:
    /// returns whether `tid` moved.
    pub fn charge(&self, tid: i32, whole_process: bool) -> std::io::Result<bool> {
        // The limit is the cpu controller's; the usage containerd reports is cpuacct's (the
        // same hierarchy where both are mounted together).
        let v1: Vec<PathBuf> = ["cpu", "cpuacct"]
            .iter()
            .map(|c| self.cgroup.v1_dir(c))
            .filter(|d| d.is_dir())
            .collect();
        if !v1.is_empty() {
            let file = if whole_process {
                "cgroup.procs"
            } else {
                "tasks"
            };
            for dir in v1 {
                std::fs::write(dir.join(file), tid.to_string())?;
            }
            return Ok(true);
        }
        if !whole_process {
            return Ok(false);
        }
        for dir in self.cgroup.v2_dirs() {
            if dir.join("cgroup.procs").is_file() {
                std::fs::write(dir.join("cgroup.procs"), tid.to_string())?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The container's cgroupsPath, relative to each hierarchy's root.
    pub fn path(&self) -> &Path {
        self.cgroup.path()
    }

    /// Give thread `tid`, charged with [`CgroupView::charge`], back to this process's own CPU
    /// cgroups (where the shim's main thread is), so that the container's can be removed while
    /// the thread lives on. cgroup v1 only, as `charge` of a single thread is.
    pub fn uncharge(&self, tid: i32) -> std::io::Result<()> {
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        for controller in ["cpu", "cpuacct"] {
            let Some(path) = eci_sys::cgroup::memberships(&own)
                .find(|m| m.has_controller(controller))
                .map(|m| m.path)
            else {
                continue;
            };
            let dir = self
                .cgroup
                .root()
                .join(controller)
                .join(path.trim_start_matches('/'));
            std::fs::write(dir.join("tasks"), tid.to_string())?;
        }
        Ok(())
    }

    pub fn limits(&self) -> Limits {
        let mut l = Limits::default();
        if let Some(limit) = self.v1("memory", "memory.limit_in_bytes") {
            // v1 reports "no limit" as a huge page-aligned number.
            l.memory_limit = limit.parse::<u64>().ok().filter(|v| *v < (1 << 62));
            l.memory_usage = self
                .v1("memory", "memory.usage_in_bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let stat = self.v1("memory", "memory.stat");
            l.memory_cache = stat_field(stat.as_deref(), "total_cache");
            l.memory_detail = MemoryDetail::parse(stat.as_deref(), "total_");
        } else {
            l.memory_limit = self.v2("memory.max").and_then(|v| v.parse().ok());
            l.memory_usage = self
                .v2("memory.current")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let stat = self.v2("memory.stat");
            l.memory_cache = stat_field(stat.as_deref(), "file");
            l.memory_detail = MemoryDetail::parse(stat.as_deref(), "");
        }
        let cpuset = self
            .v1("cpuset", "cpuset.cpus")
            .or_else(|| self.v2("cpuset.cpus.effective"))
            .map(|s| count_cpuset(&s))
            .filter(|n| *n > 0);
        let quota = match (
            self.v1("cpu", "cpu.cfs_quota_us"),
            self.v1("cpu", "cpu.cfs_period_us"),
        ) {
            (Some(q), Some(p)) => quota_cpus(&q, &p),
            _ => self.v2("cpu.max").and_then(|m| {
                let (q, p) = m.split_once(' ')?;
                quota_cpus(q, p)
            }),
        };
        l.cpus = match (cpuset, quota) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        l
    }
}

fn quota_cpus(quota: &str, period: &str) -> Option<u32> {
    let q: i64 = quota.parse().ok()?;
    let p: i64 = period.parse().ok()?;
    if q <= 0 || p <= 0 {
        return None;
    }
    Some(u32::try_from(((q + p - 1) / p).max(1)).unwrap_or(u32::MAX))
}

impl CgroupView {
    /// How many times the kernel's OOM killer has killed in the container's cgroup.
    pub fn oom_kills(&self) -> u64 {
        self.cgroup.oom_kills()
    }

    /// Number of processes in the container's cgroup.
    pub fn tasks(&self) -> usize {
        self.cgroup.procs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpusets_and_quotas() {
        assert_eq!(count_cpuset("0-3,8"), 5);
        assert_eq!(count_cpuset("1"), 1);
        assert_eq!(count_cpuset(""), 0);
        assert_eq!(quota_cpus("100000", "100000"), Some(1));
        assert_eq!(quota_cpus("150000", "100000"), Some(2));
        assert_eq!(quota_cpus("-1", "100000"), None);
        assert_eq!(quota_cpus("max", "100000"), None);
        assert_eq!(
            stat_field(Some("cache 5\ntotal_cache 7\n"), "total_cache"),
            7
        );
        let v1 = "shmem 1\ntotal_shmem 4096\ntotal_active_anon 8192\ntotal_inactive_file 1024\n";
        let d = MemoryDetail::parse(Some(v1), "total_");
        assert_eq!(
            (d.shmem, d.active_anon, d.inactive_file),
            (4096, 8192, 1024)
        );
        let d = MemoryDetail::parse(Some("shmem 2048\nactive_file 512\n"), "");
        assert_eq!((d.shmem, d.active_file, d.inactive_anon), (2048, 512, 0));
    }
}

/// The container's limits, read at most every [`LIMITS_MAX_AGE`]: cgroup reads (memory.stat
/// above all) cost more than serving an emulated file. Shared by the emulated files and the
/// supervisor's CPU view.
#[derive(Debug)]
pub struct LimitsCache {
    cgroup: CgroupView,
    cached: std::sync::Mutex<Option<(std::time::Instant, Limits)>>,
}

pub const LIMITS_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(100);

impl LimitsCache {
    pub fn new(cgroup: CgroupView) -> LimitsCache {
        LimitsCache {
            cgroup,
            cached: std::sync::Mutex::new(None),
        }
    }

    pub fn get(&self) -> Limits {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        match *cached {
            Some((at, limits)) if at.elapsed() < LIMITS_MAX_AGE => limits,
            _ => {
                let limits = self.cgroup.limits();
                *cached = Some((std::time::Instant::now(), limits));
                limits
            }
        }
    }

    pub fn cgroup(&self) -> &CgroupView {
        &self.cgroup
    }
}
