//! The one syscall layer that `eci-core` (create, exec, leases, rootfs) and `eci-emulation`
//! (supervisor, agent, /proc–/sys views) share. Raw syscalls, their constants and their
//! `unsafe` live here; callers above get safe functions over owned fds.

pub mod cgroup;
pub mod channel;
pub mod cvt;
pub mod fdpass;
pub mod mount;
pub mod mountinfo;
pub mod pidfd;
pub mod statx;
pub mod terminal;
