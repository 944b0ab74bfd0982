//! The per-container workers that live in the shim for a task's lifetime.
//!
//! [`procfs`]: a FUSE file system, one per container, served by a thread of the shim and bound
//! over single files of the container's /proc and /sys: uptime counted from the container's
//! start, no host swap, the container's own values of host-wide /proc/sys knobs, and — past
//! Sysbox — memory and CPU views derived from the container's cgroup.
//!
//! [`supervisor`]: the seccomp-notify supervisor for the mount family, with the [`agent`]
//! process that performs allowed operations inside the container's namespaces ([`newmount`]:
//! new file systems, a procfs or sysfs with the emulated files already bound in).

pub mod agent;
pub(crate) mod cgroup;
pub(crate) mod mountops;
pub(crate) mod newmount;
pub(crate) mod procfs;
pub(crate) mod render;
pub(crate) mod supervisor;
pub mod workers;

pub use procfs::{Emulation, EMULATED};
pub use supervisor::Supervisor;
