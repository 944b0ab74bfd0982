//! Operations on a created container that fork nothing and touch no process-wide state, so
//! the shim runs them in-process (on a blocking thread). Creation and exec fork and run in
//! the helper (see `create` and `exec`).

use crate::create::error_chain;
use crate::layout::Layout;
use crate::lease::{in_user_ns, LeaseDir};
use crate::rootfs::unmount_all;
use libcgroups::common::{
    create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager, ControllerOpt,
    FreezerState,
};
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::oci_spec::runtime::LinuxResources;
use nix::mount::{umount2, MntFlags};
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

pub use libcgroups::stats::{MemoryData, Stats};
/// An OCI LinuxResources, as Update sends it.
pub type Resources = LinuxResources;

#[derive(Debug, thiserror::Error)]
/// Why an operation on a created container failed.
pub enum OpError {
    #[error("container {0} does not exist")]
    /// The container has no libcontainer state (never created, or deleted).
    NotFound(String),
    #[error("{0}")]
    /// libcontainer or libcgroups failed.
    Libcontainer(String),
    #[error("{0}")]
    /// A file or socket operation failed.
    Io(#[from] std::io::Error),
}

fn lc(e: impl std::error::Error) -> OpError {
    OpError::Libcontainer(error_chain(&e))
}

/// How long delete waits for the container's killed processes to leave its user namespace.
const KILLED_EXIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A created container, as the shim names it.
pub struct Handle<'a> {
    /// The shim's state directories.
    pub layout: &'a Layout,
    /// containerd namespace.
    pub namespace: &'a str,
    /// Container id.
    pub id: &'a str,
}

impl Handle<'_> {
    fn load(&self) -> Result<Container, OpError> {
        let path = self.layout.container_state(self.namespace, self.id);
        if !path.exists() {
            return Err(OpError::NotFound(self.id.to_string()));
        }
        Container::load(path).map_err(lc)
    }

    fn cgroup(&self) -> Result<AnyCgroupManager, OpError> {
        let c = self.load()?;
        let config = c.spec().map_err(lc)?;
        create_cgroup_manager(CgroupConfig {
            cgroup_path: config.cgroup_path,
            systemd_cgroup: false,
            container_name: self.id.to_string(),
        })
        .map_err(lc)
    }

    /// Release the init, which waits in libcontainer for this word. libcontainer's own start
    /// changes the process's cwd to reach the socket; the shim is multi-threaded and must not,
    /// so it goes through an O_PATH handle on the state directory instead.
    pub fn start(&self) -> Result<(), OpError> {
        let mut c = self.load()?;
        let dir = std::fs::File::open(self.layout.container_state(self.namespace, self.id))?;
        let socket = format!(
            "/proc/self/fd/{}/{}",
            dir.as_raw_fd(),
            libcontainer::notify_socket::NOTIFY_FILE
        );
        UnixStream::connect(socket)?.write_all(b"start container")?;
        if let Some(pid) = c.pid() {
            wait_for_exec(pid.as_raw(), EXEC_WAIT);
        }
        c.set_status(ContainerStatus::Running).save().map_err(lc)
    }

    /// Signal every process in the container's cgroup; returns the pids signalled.
    pub fn kill_all(&self, signal: i32) -> Result<Vec<i32>, OpError> {
        let pids = self.pids()?;
        for pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::try_from(signal).ok(),
            );
        }
        Ok(pids)
    }

    /// The pids in the container's cgroup.
    pub fn pids(&self) -> Result<Vec<i32>, OpError> {
        Ok(self
            .cgroup()?
            .get_all_pids()
            .map_err(lc)?
            .into_iter()
            .map(|p| p.as_raw())
            .collect())
    }

    /// Freeze the container's cgroup.
    pub fn pause(&self) -> Result<(), OpError> {
        self.cgroup()?.freeze(FreezerState::Frozen).map_err(lc)?;
        let mut c = self.load()?;
        c.set_status(ContainerStatus::Paused).save().map_err(lc)
    }

    /// Thaw the container's cgroup.
    pub fn resume(&self) -> Result<(), OpError> {
        self.cgroup()?.freeze(FreezerState::Thawed).map_err(lc)?;
        let mut c = self.load()?;
        c.set_status(ContainerStatus::Running).save().map_err(lc)
    }

    /// The container's cgroup statistics.
    pub fn stats(&self) -> Result<libcgroups::stats::Stats, OpError> {
        self.cgroup()?.stats().map_err(lc)
    }

    /// The memory cgroup's OOM counters, which libcgroups' stats leave out and CRI reports as
    /// `container_oom_events_total`: memory.oom_control on cgroup v1 (`oom_kill_disable`,
    /// `under_oom`, `oom_kill`), memory.events on v2 (`low` … `oom_kill`, `oom_group_kill`).
    pub fn memory_events(&self) -> Result<HashMap<String, u64>, OpError> {
        let cgroup_path = self.load()?.spec().map_err(lc)?.cgroup_path;
        if cgroup_path.as_os_str().is_empty() {
            return Ok(HashMap::new());
        }
        eci_sys::cgroup::Cgroup::new(&cgroup_path)
            .memory_events()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no memory.oom_control or memory.events for cgroup {}",
                        cgroup_path.display()
                    ),
                )
                .into()
            })
    }

    /// Apply new resources to the container's cgroup.
    pub fn update(&self, resources: &LinuxResources) -> Result<(), OpError> {
        self.cgroup()?
            .apply(&ControllerOpt {
                resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(lc)
    }

    /// Tear down everything create put on the host. Idempotent, and what `shim delete` runs
    /// when containerd finds a dead shim: processes, cgroup, mounts, state, lease.
    pub fn destroy(&self, bundle: &Path) {
        let mut killed = Vec::new();
        if let Ok(mut c) = self.load() {
            killed = self.kill_all(libc::SIGKILL).unwrap_or_default();
            // Cgroups the container made in its delegated directories go first: libcontainer
            // removes only the container's own.
            let mut dirs = Vec::new();
            if let Ok(config) = c.spec() {
                dirs = crate::delegate::container_dirs(&config.cgroup_path);
                let deadline = std::time::Instant::now() + KILLED_EXIT_LIMIT;
                while !crate::delegate::remove_descendants(&dirs).is_empty()
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            // libcontainer's delete removes the cgroup and the state directory.
            if let Err(e) = c.delete(true) {
                log::warn!("delete {}: {e}", self.id);
            }
            // What is left is the container's cgroup in the hierarchies libcontainer does not
            // manage (the v2 and name=systemd hierarchies of a hybrid host).
            let deadline = std::time::Instant::now() + KILLED_EXIT_LIMIT;
            while !crate::delegate::remove_dirs(&dirs).is_empty()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        } else if let Ok(spec) =
            libcontainer::oci_spec::runtime::Spec::load(bundle.join("config.json"))
        {
            // Killed before libcontainer saved its state (a helper killed mid-create): the
            // cgroups the helper made or entered are known only from the spec.
            let path = libcontainer::utils::get_cgroup_path(
                &spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()),
                self.id,
            );
            let dirs = crate::delegate::container_dirs(&path);
            let deadline = std::time::Instant::now() + KILLED_EXIT_LIMIT;
            while !crate::delegate::remove_dirs(&dirs).is_empty()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir_all(self.layout.container_state(self.namespace, self.id));
        let staging = self.layout.staging(self.namespace, self.id);
        if let Ok(entries) = std::fs::read_dir(staging.join("binds")) {
            for e in entries.flatten() {
                let _ = umount2(&e.path(), MntFlags::MNT_DETACH);
            }
        }
        let _ = std::fs::remove_dir_all(staging);
        let _ = std::fs::remove_dir_all(self.layout.private_bundle(self.namespace, self.id));
        // The emulation is the shim's; after a crash its FUSE mount is left without a server.
        let emulation = self.layout.emulation(self.namespace, self.id);
        let _ = umount2(&emulation, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&emulation);
        let rootfs = self.layout.rootfs(self.namespace, self.id);
        unmount_all(&rootfs);
        let _ = std::fs::remove_dir(&rootfs);
        unmount_all(&bundle.join("rootfs"));
        let leases = LeaseDir::new(self.layout.leases());
        if let Some(block) = leases.find(self.namespace, self.id) {
            // Containers that joined this one's user namespace still use the block; the lease
            // is then reclaimed once they are gone too.
            let record = leases.read(block);
            if let Some(user_ns) = record.as_ref().and_then(|r| r.user_ns) {
                // A killed process keeps its user namespace until it has exited and been
                // reaped; judged too early, the block would look shared and stay leased.
                wait_until_left(&killed, user_ns, KILLED_EXIT_LIMIT);
            }
            match record {
                // The task is gone, the container may start another: its block waits for it
                // (released by an allocation once the container is deleted). The emulation's
                // agent leaves the namespace just after the supervisor stops; a joined
                // container may stay in it, and the lease is then parked once it has left.
                Some(record) if record.anchor.is_some() => {
                    let deadline = std::time::Instant::now() + AGENT_EXIT_LIMIT;
                    while !record.releasable() && std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    let joined = !record.releasable();
                    let _ = leases.park(block, record, joined);
                }
                Some(record) if !record.releasable() => {
                    // Deleted: only the joined containers still hold the block now.
                    let record = crate::lease::LeaseRecord {
                        holder: None,
                        ..record
                    };
                    let _ = leases.update(block, &record);
                }
                _ => {
                    let _ = leases.release(block);
                }
            }
        }
        // This may have been the last container in another one's user namespace.
        leases.sweep();
    }
}

/// How long delete waits for the last worker of the shim's (the mount agent) to leave a
/// container's user namespace before it parks the block.
const AGENT_EXIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// `containerd-shim-eci-v2 leases sweep`: release the ID blocks parked for containers that
/// containerd no longer has (what the next create does anyway).
pub fn sweep_parked_leases() -> Result<(), String> {
    LeaseDir::new(crate::lease::DEFAULT_LEASE_DIR)
        .sweep_parked(&crate::containerd::Containerd)
        .map_err(|e| e.to_string())
}

/// Wait, at most `limit`, until none of `pids` is in the user namespace `inode`.
fn wait_until_left(pids: &[i32], inode: u64, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    while pids.iter().any(|pid| in_user_ns(*pid, inode)) {
        if std::time::Instant::now() >= deadline {
            log::warn!("killed processes {pids:?} still in user namespace {inode} after {limit:?}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// How long Start waits for the init's execve at most: far above the few milliseconds it
/// takes, and a bound for an init that never gets there (it is then reported by its exit).
const EXEC_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Wait until the init has replaced this binary with the container's program (or is gone).
/// Until its execve the init runs with container credentials in memory that belongs to the
/// host's user namespace, and is not dumpable (its credentials changed): a container that
/// joins its namespaces at once — a pod's containers join the sandbox's — gets EACCES
/// opening `/proc/PID/ns/*` from libcontainer's intermediate process, which runs as root of
/// that user namespace only. Start returns once they can join.
fn wait_for_exec(pid: i32, at_most: std::time::Duration) {
    use std::os::unix::fs::MetadataExt;
    let Ok(own) = std::fs::metadata("/proc/self/exe") else {
        return;
    };
    let until = std::time::Instant::now() + at_most;
    while std::time::Instant::now() < until {
        match std::fs::metadata(format!("/proc/{pid}/exe")) {
            Ok(exe) if exe.dev() == own.dev() && exe.ino() == own.ino() => {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            // Another program, or no process (exited: its exit is reported as usual).
            _ => return,
        }
    }
    log::warn!("the init (pid {pid}) has not reached its execve {at_most:?} after Start");
}
