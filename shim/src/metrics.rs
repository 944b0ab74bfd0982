//! cgroup statistics in the shape containerd's `ctr task metrics` and CRI expect:
//! io.containerd.cgroups.v1.Metrics where the memory controller is on cgroup v1 (this includes
//! hybrid hosts, which containerd 1.6 drives as v1), io.containerd.cgroups.v2.Metrics on
//! unified hosts.

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryOomControl, MemoryStat, Metrics, PidsStat, Throttle,
};
use containerd_shim::protos::protobuf::{well_known_types::any::Any, Message};
use libcgroups_stats::Stats;
use std::collections::HashMap;

mod libcgroups_stats {
    pub use eci_core::ops::Stats;
}

/// `oom` is the memory cgroup's OOM counters (`eci_core::ops::Container::memory_events`): CRI
/// reports `container_oom_events_total` only when the metrics carry them, and the CFS
/// throttling counters only when v1 metrics carry `throttling`.
pub fn to_any(stats: &Stats, oom: &HashMap<String, u64>) -> Any {
    if !eci_sys::cgroup::memory_on_v1() {
        return to_any_v2(stats, oom);
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
            throttling: Some(Throttle {
                periods: stats.cpu.throttling.periods,
                throttled_periods: stats.cpu.throttling.throttled_periods,
                throttled_time: stats.cpu.throttling.throttled_time,
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
        memory_oom_control: oom
            .get("oom_kill")
            .map(|&oom_kill| MemoryOomControl {
                oom_kill_disable: oom.get("oom_kill_disable").copied().unwrap_or(0),
                under_oom: oom.get("under_oom").copied().unwrap_or(0),
                oom_kill,
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
fn to_any_v2(stats: &Stats, oom: &HashMap<String, u64>) -> Any {
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
            // libcgroups keeps cpu.stat's throttled_usec as it is on v2.
            nr_periods: stats.cpu.throttling.periods,
            nr_throttled: stats.cpu.throttling.throttled_periods,
            throttled_usec: stats.cpu.throttling.throttled_time,
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
        memory_events: oom
            .contains_key("oom_kill")
            .then(|| {
                let get = |k: &str| oom.get(k).copied().unwrap_or(0);
                v2::MemoryEvents {
                    low: get("low"),
                    high: get("high"),
                    max: get("max"),
                    oom: get("oom"),
                    oom_kill: get("oom_kill"),
                    oom_group_kill: get("oom_group_kill"),
                    ..Default::default()
                }
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
