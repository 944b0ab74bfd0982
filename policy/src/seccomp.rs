//! Syscall supervision: the mount family is trapped by syscall number (SCMP_ACT_NOTIFY) and
//! judged by the shim's supervisor; every other syscall keeps the profile's action, so the data
//! path runs at native speed.

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction as Action, LinuxSeccompBuilder, LinuxSyscallBuilder, Spec,
};
use std::path::Path;

/// Syscalls that change a mount's flags or place, or reveal what lies under one.
pub const SUPERVISED: &[&str] = &[
    "mount",
    "umount2",
    "mount_setattr",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
];

/// Emulated when the container has a CPU quota: the affinity mask a process sees then holds
/// as many CPUs as the quota allows (rounded up), so `nproc` and runtimes sizing thread pools
/// (Go, Java, Rust's available_parallelism) see the container's CPUs, not the host's. A cpuset
/// needs no emulation: the kernel already narrows the mask.
pub const CPU_VIEW: &str = "sched_getaffinity";

/// Always emulated: sysinfo(2) answers with the container's memory (its limit as total RAM),
/// no swap, no host load averages and its own process count, as /proc/meminfo, /proc/swaps
/// and /proc/loadavg do; it is what `free` and `uptime` print. Called at start-up by runtimes
/// sizing heaps, never on a data path.
pub const SYSINFO_VIEW: &str = "sysinfo";

fn has_cpu_quota(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().as_ref())
        .and_then(|c| c.quota())
        .is_some_and(|q| q > 0)
}

/// Add supervision of [`SUPERVISED`] and [`SYSINFO_VIEW`] (and [`CPU_VIEW`] under a CPU quota)
/// to the spec's seccomp profile (or a permissive profile when the spec has none). A syscall
/// the profile denies stays denied: only what it allows unconditionally is handed to the
/// supervisor, which can only narrow it further.
pub fn supervise(spec: &mut Spec, listener: &Path) {
    let cpu_view = has_cpu_quota(spec).then_some(CPU_VIEW);
    let Some(mut linux) = spec.linux().clone() else {
        return;
    };
    let mut seccomp = linux.seccomp().clone().unwrap_or_else(|| {
        LinuxSeccompBuilder::default()
            .default_action(Action::ScmpActAllow)
            .build()
            .expect("seccomp profile")
    });
    let trapped: Vec<String> = SUPERVISED
        .iter()
        .chain([SYSINFO_VIEW].iter())
        .chain(cpu_view.iter())
        .filter(|name| allowed_unconditionally(&seccomp, name))
        .map(|s| s.to_string())
        .collect();
    if trapped.is_empty() {
        return;
    }
    let mut syscalls = seccomp.syscalls().clone().unwrap_or_default();
    for rule in syscalls.iter_mut() {
        let names: Vec<String> = rule
            .names()
            .iter()
            .filter(|n| !trapped.contains(n))
            .cloned()
            .collect();
        rule.set_names(names);
    }
    syscalls.retain(|r| !r.names().is_empty());
    syscalls.push(
        LinuxSyscallBuilder::default()
            .names(trapped)
            .action(Action::ScmpActNotify)
            .build()
            .expect("notify rule"),
    );
    seccomp.set_syscalls(Some(syscalls));
    seccomp.set_listener_path(Some(listener.to_path_buf()));
    linux.set_seccomp(Some(seccomp));
    spec.set_linux(Some(linux));
}

fn allowed_unconditionally(seccomp: &LinuxSeccomp, name: &str) -> bool {
    let rules: Vec<_> = seccomp
        .syscalls()
        .iter()
        .flatten()
        .filter(|r| r.names().iter().any(|n| n == name))
        .collect();
    if rules.is_empty() {
        return matches!(
            seccomp.default_action(),
            Action::ScmpActAllow | Action::ScmpActLog
        );
    }
    rules.iter().all(|r| {
        matches!(r.action(), Action::ScmpActAllow | Action::ScmpActLog)
            && r.args().as_ref().is_none_or(|a| a.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ctr_spec;

    fn rules(spec: &Spec) -> Vec<(Vec<String>, Action)> {
        let s = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
        s.syscalls()
            .iter()
            .flatten()
            .map(|r| (r.names().clone(), r.action()))
            .collect()
    }

    #[test]
    fn no_profile_gets_a_permissive_one_with_the_mount_family_trapped() {
        let mut spec = ctr_spec();
        supervise(&mut spec, Path::new("/run/x.sock"));
        let s = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
        assert_eq!(s.default_action(), Action::ScmpActAllow);
        assert_eq!(s.listener_path().as_deref(), Some(Path::new("/run/x.sock")));
        assert_eq!(
            rules(&spec),
            vec![(
                SUPERVISED
                    .iter()
                    .chain([SYSINFO_VIEW].iter())
                    .map(|s| s.to_string())
                    .collect(),
                Action::ScmpActNotify
            )]
        );
    }

    #[test]
    fn a_cpu_quota_adds_the_affinity_view() {
        let mut spec = ctr_spec();
        supervise(&mut spec, Path::new("/run/x.sock"));
        assert!(!rules(&spec)[0].0.contains(&CPU_VIEW.to_string()));

        let mut spec = ctr_spec();
        let mut linux = spec.linux().clone().unwrap();
        let cpu = oci_spec::runtime::LinuxCpuBuilder::default()
            .quota(50_000i64)
            .period(100_000u64)
            .build()
            .unwrap();
        let resources = oci_spec::runtime::LinuxResourcesBuilder::default()
            .cpu(cpu)
            .build()
            .unwrap();
        linux.set_resources(Some(resources));
        spec.set_linux(Some(linux));
        supervise(&mut spec, Path::new("/run/x.sock"));
        assert!(rules(&spec)[0].0.contains(&CPU_VIEW.to_string()));
    }

    #[test]
    fn denied_syscalls_stay_denied_and_allowed_ones_move_to_notify() {
        let mut spec = ctr_spec();
        let mut linux = spec.linux().clone().unwrap();
        let allow = LinuxSyscallBuilder::default()
            .names(vec!["read".to_string(), "mount".to_string()])
            .action(Action::ScmpActAllow)
            .build()
            .unwrap();
        linux.set_seccomp(Some(
            LinuxSeccompBuilder::default()
                .default_action(Action::ScmpActErrno)
                .syscalls(vec![allow])
                .build()
                .unwrap(),
        ));
        spec.set_linux(Some(linux));
        supervise(&mut spec, Path::new("/run/x.sock"));
        assert_eq!(
            rules(&spec),
            vec![
                (vec!["read".to_string()], Action::ScmpActAllow),
                (vec!["mount".to_string()], Action::ScmpActNotify)
            ]
        );
    }

    #[test]
    fn a_profile_denying_everything_supervised_is_left_alone() {
        let mut spec = ctr_spec();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_seccomp(Some(
            LinuxSeccompBuilder::default()
                .default_action(Action::ScmpActErrno)
                .build()
                .unwrap(),
        ));
        spec.set_linux(Some(linux));
        let before = spec.clone();
        supervise(&mut spec, Path::new("/run/x.sock"));
        assert_eq!(spec, before);
    }
}
