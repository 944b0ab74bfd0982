//! What the shim starts for a container besides its processes, in the shape the shim needs:
//! the mount supervisor with its agent and the protection facts it is given, and the OOM
//! counter behind TaskOOM. The shim only decides when; what is protected is decided here.

use crate::cgroup::CgroupView;
use crate::procfs::{ContainerView, Emulation};
use crate::supervisor::Supervisor;
use eci_sys::channel::Channel;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mount agent's sub-command of the shim binary (see [`crate::agent`]).
pub const AGENT_ARG: &str = "agent";

/// Mounts that may never be unmounted or moved away (besides the emulated files): the root,
/// /proc and /sys, and what the runtime masks.
pub const PINNED: &[&str] = &[
    "/",
    "/proc",
    "/sys",
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Runs the agent's command and returns its pid. The caller owns reaping: the shim's one
/// reaper is the only waiter, so the caller registers the child with it.
pub type SpawnAgent = Box<dyn Fn(&mut Command) -> std::io::Result<u32> + Send>;

/// What the supervisor needs of the container's emulation: the files it binds (which are
/// pinned) and the container's view (for the syscalls it answers).
pub struct SupervisorInputs {
    binds: Vec<(std::path::PathBuf, std::path::PathBuf, bool)>,
    view: ContainerView,
}

impl SupervisorInputs {
    /// Taken from the container's emulation.
    pub fn of(emulation: &Emulation) -> Self {
        SupervisorInputs {
            binds: emulation.binds(),
            view: emulation.view(),
        }
    }

    /// Start the container's mount supervisor for the init's seccomp `notify` fd: measure what
    /// is protected from the init (before it runs anything), and serve the fd on a thread
    /// with an agent in the container's user namespace, started by `spawn` when first needed.
    /// Blocks briefly (reads the init's mountinfo); call it off the async runtime.
    pub fn supervise(
        self,
        notify: OwnedFd,
        init: i32,
        spawn: SpawnAgent,
    ) -> std::io::Result<Supervisor> {
        supervise(notify, init, self, spawn)
    }
}

fn supervise(
    notify: OwnedFd,
    init: i32,
    inputs: SupervisorInputs,
    spawn: SpawnAgent,
) -> std::io::Result<Supervisor> {
    let emulated: Vec<(String, std::path::PathBuf)> = inputs
        .binds
        .into_iter()
        .map(|(source, target, _)| (target.display().to_string(), source))
        .collect();
    let protected =
        crate::mountops::ToAgent::Protect(crate::supervisor::measure(init, PINNED, &emulated));
    let exe = std::env::current_exe()?;
    let agent = move || -> std::io::Result<(Channel, i32)> {
        let (ours, theirs) = Channel::pair()?;
        // It exits when `ours` closes; the supervisor watches it with a pidfd (and starts
        // another when it dies). This runs on the supervisor's thread.
        let mut command = Command::new(&exe);
        command
            .arg(AGENT_ARG)
            .arg(init.to_string())
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let pid = spawn(&mut command)?;
        let pid = i32::try_from(pid).map_err(std::io::Error::other)?;
        // What it protects is its first message, not its command line (which the container
        // can read while the agent's procfs child is in its pid namespace).
        ours.send(&protected, &[])?;
        Ok((ours, pid))
    };
    let user_ns = std::fs::metadata(format!("/proc/{init}/ns/user"))?;
    Supervisor::start(
        notify,
        Box::new(agent),
        std::os::unix::fs::MetadataExt::ino(&user_ns),
        inputs.view,
    )
}

/// The container cgroup's OOM-kill counter, and how much of it has been reported.
pub struct OomWatch {
    view: CgroupView,
    seen: AtomicU64,
}

impl OomWatch {
    /// Count OOM kills in the cgroup at `cgroups_path` (the spec's linux.cgroupsPath) from
    /// now on.
    pub fn new(cgroups_path: &std::path::Path) -> Self {
        let view = CgroupView::new(cgroups_path);
        let seen = view.oom_kills().into();
        OomWatch { view, seen }
    }

    /// True once for every new OOM kill since the last call.
    pub fn fired(&self) -> bool {
        let now = self.view.oom_kills();
        self.seen.fetch_max(now, Ordering::SeqCst) < now
    }
}
