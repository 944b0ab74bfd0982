//! cgroup statistics in the shape containerd's `ctr task metrics` and CRI expect:
//! io.containerd.cgroups.v1.Metrics where the memory controller is on cgroup v1 (this includes
//! hybrid hosts, which containerd 1.6 drives as v1), io.containerd.cgroups.v2.Metrics on
//! unified hosts.

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::{well_known_types::any::Any, Message};
use libcgroups_stats::Stats;

mod libcgroups_stats {
    pub use eci_core::ops::Stats;
}

pub fn to_any(stats: &Stats) -> Any {
    if !std::path::Path::new("/sys/fs/cgroup/memory").exists() {
        return to_any_v2(stats);
    }
    let entry = |d: &eci_core::ops::MemoryData| MemoryEntry {
        limit: d.limit,
        usage: d.usage,
        max: d.max_usage,
        failcnt: d.fail_count,
        ..Default::default()
    };
    let metrics = Metrics {
        pids: Some(PidsStat {
            current: stats.pids.current,
            limit: stats.pids.limit,
            ..Default::default()
        })
        .into(),
        cpu: Some(CPUStat {
            usage: Some(CPUUsage {
                total: stats.cpu.usage.usage_total,
                kernel: stats.cpu.usage.usage_kernel,
                user: stats.cpu.usage.usage_user,
                per_cpu: stats.cpu.usage.per_core_usage_total.clone(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        memory: Some(MemoryStat {
            cache: stats.memory.cache,
            rss: stats.memory.stats.get("rss").copied().unwrap_or(0),
            total_rss: stats.memory.stats.get("total_rss").copied().unwrap_or(0),
            usage: Some(entry(&stats.memory.memory)).into(),
            swap: Some(entry(&stats.memory.memswap)).into(),
            kernel: Some(entry(&stats.memory.kernel)).into(),
            kernel_tcp: Some(entry(&stats.memory.kernel_tcp)).into(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    Any {
        type_url: "io.containerd.cgroups.v1.Metrics".to_string(),
        value: metrics.write_to_bytes().unwrap_or_default(),
        ..Default::default()
    }
}

/// libcgroups reports CPU time in nanoseconds on both hierarchies; v2 metrics carry µs.
fn to_any_v2(stats: &Stats) -> Any {
    use containerd_shim::protos::cgroups_v2::metrics as v2;
    let metrics = v2::Metrics {
        pids: Some(v2::PidsStat {
            current: stats.pids.current,
            limit: stats.pids.limit,
            ..Default::default()
        })
        .into(),
        cpu: Some(v2::CPUStat {
            usage_usec: stats.cpu.usage.usage_total / 1000,
            user_usec: stats.cpu.usage.usage_user / 1000,
            system_usec: stats.cpu.usage.usage_kernel / 1000,
            ..Default::default()
        })
        .into(),
        memory: Some(v2::MemoryStat {
            usage: stats.memory.memory.usage,
            usage_limit: stats.memory.memory.limit,
            max_usage: stats.memory.memory.max_usage,
            anon: stats.memory.stats.get("anon").copied().unwrap_or(0),
            file: stats.memory.stats.get("file").copied().unwrap_or(0),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    Any {
        type_url: "io.containerd.cgroups.v2.Metrics".to_string(),
        value: metrics.write_to_bytes().unwrap_or_default(),
        ..Default::default()
    }
}
