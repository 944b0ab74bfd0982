//! cgroup statistics in the shape containerd's `ctr task metrics` and CRI expect
//! (io.containerd.cgroups.v1.Metrics; containerd reads the same fields on v2 hosts from it).

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::{well_known_types::any::Any, Message};
use libcgroups_stats::Stats;

mod libcgroups_stats {
    pub use eci_core::ops::Stats;
}

pub fn to_any(stats: &Stats) -> Any {
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
