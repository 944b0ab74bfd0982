//! New file systems, mounted by the agent for a trapped process: in its namespaces, under its
//! root and working directory, with the supervisor's copies of its arguments. A procfs or sysfs
//! is built detached, gets the container's emulated files bound inside, and only then appears
//! at its target: no process ever sees it without them.

use crate::mountops::{MountKey, Protected};
use eci_sys::mount::{
    attributes, clone_tree, move_mount, FsContext, MOVE_MOUNT_T_EMPTY_PATH, MOVE_MOUNT_T_SYMLINKS,
};
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The namespaces of the agent's last request besides the mount namespace, so that a burst of
/// mounts from one process enters each once.
#[derive(Default)]
pub struct Joined {
    net: Option<u64>,
    ipc: Option<u64>,
    cgroup: Option<u64>,
}

/// What the new mount is made from. `namespaces` are the process's pid, net, ipc and cgroup
/// namespaces (in [`crate::supervisor::MOUNT_NAMESPACES`] order), empty for a file system that
/// [`crate::mountops::joins_namespaces`] says takes none; `fuse` its /dev/fuse fd, for a FUSE
/// mount.
pub struct NewMount<'a> {
    pub source: Option<&'a str>,
    pub target: &'a str,
    /// The target already resolved, when the process named it by one of its fds.
    pub target_fd: Option<&'a OwnedFd>,
    pub fstype: Option<&'a str>,
    pub flags: u64,
    pub data: Option<&'a [u8]>,
    pub namespaces: &'a [OwnedFd],
    pub fuse: Option<&'a OwnedFd>,
}

fn ns_inode(fd: &OwnedFd) -> Result<u64, Errno> {
    Ok(nix::sys::stat::fstat(fd.as_raw_fd())?.st_ino)
}

/// Enter `fd`'s namespace unless the agent is in it already. `own` is the agent's namespace of
/// that kind, for the first request: a process still sharing the host's (cgroup namespace) is
/// left there, where the agent has no capability to enter anyway.
fn join(
    fd: &OwnedFd,
    kind: CloneFlags,
    current: &mut Option<u64>,
    own: impl FnOnce() -> Option<u64>,
) -> Result<(), Errno> {
    let wanted = ns_inode(fd)?;
    if current.is_none() {
        *current = own();
    }
    if *current != Some(wanted) {
        setns(fd.as_fd(), kind)?;
        *current = Some(wanted);
    }
    Ok(())
}

fn cstring(s: &str) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| Errno::EINVAL)
}

/// Mount `m` for the process whose root and cwd the agent has taken. `host_proc` is the
/// host's /proc (for the agent's own namespaces); emulated files found are pinned in
/// `protected`.
pub fn mount(
    m: &NewMount,
    host_proc: &OwnedFd,
    joined: &mut Joined,
    protected: &mut Protected,
) -> Result<(), Errno> {
    if m.fstype == Some("overlay") {
        return overlay(m, host_proc);
    }
    if m.namespaces.is_empty() && !crate::mountops::joins_namespaces(m.fstype) {
        return legacy(m);
    }
    let [pid_ns, net, ipc, cgroup] = m.namespaces else {
        return Err(Errno::EBADF);
    };
    let own = |name: &str| {
        nix::sys::stat::fstatat(
            Some(host_proc.as_raw_fd()),
            format!("self/ns/{name}").as_str(),
            nix::fcntl::AtFlags::empty(),
        )
        .ok()
        .map(|st| st.st_ino)
    };
    join(net, CloneFlags::CLONE_NEWNET, &mut joined.net, || {
        own("net")
    })?;
    join(ipc, CloneFlags::CLONE_NEWIPC, &mut joined.ipc, || {
        own("ipc")
    })?;
    join(
        cgroup,
        CloneFlags::CLONE_NEWCGROUP,
        &mut joined.cgroup,
        || own("cgroup"),
    )?;
    match m.fstype {
        Some("proc") => emulated(m, "/proc/", pid_ns, protected),
        Some("sysfs") => emulated(m, "/sys/", pid_ns, protected),
        _ => legacy(m),
    }
}

/// mount(2) as the process asked, paths resolved from its root and cwd.
fn legacy(m: &NewMount) -> Result<(), Errno> {
    let source = m.source.map(cstring).transpose()?;
    let target = match m.target_fd {
        // mount(2) takes no fd: "." from inside the target is the same place. (A relative
        // source, which file systems a container may mount never resolve, would then be
        // taken from there too.)
        Some(fd) => {
            nix::unistd::fchdir(fd.as_raw_fd())?;
            cstring(".")?
        }
        None => cstring(m.target)?,
    };
    let fstype = m.fstype.map(cstring).transpose()?;
    let mut data = m.data.map(<[u8]>::to_vec);
    if let (Some(fd), Some(fuse)) = (
        crate::supervisor::fuse_fd(m.fstype, m.data),
        m.fuse.map(AsRawFd::as_raw_fd),
    ) {
        data = data.map(|d| renumber_fuse_fd(&d, fd, fuse));
    }
    eci_sys::mount::mount(
        source.as_deref(),
        &target,
        fstype.as_deref(),
        m.flags,
        data.as_deref(),
    )
}

/// Options of an overlay naming its layers (`lowerdir+`, `datadir+`: one layer each).
const LAYER_OPTIONS: &[&str] = &["lowerdir", "lowerdir+", "datadir+", "upperdir", "workdir"];

/// An overlay whose layer is a directory of a procfs or sysfs would show that file system's
/// own files, not the emulated ones bound over them in the container (overlay reads its layers
/// below any mount): `lowerdir=/sys/devices/system/cpu` showed the host's `online`. Refused
/// with EINVAL, as overlay itself refuses a procfs layer. Each layer is resolved once, from the
/// process's root and cwd as the kernel would, judged on that fd, and handed to the kernel as
/// that fd (`self/fd/N` from the host's /proc), target too: a path swapped after the check
/// changes nothing. Options with backslash escapes are refused (EINVAL) rather than parsed.
fn overlay(m: &NewMount, host_proc: &OwnedFd) -> Result<(), Errno> {
    let data = m.data.unwrap_or_default();
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let text = std::str::from_utf8(&data[..end]).map_err(|_| Errno::EINVAL)?;
    if text.contains('\\') {
        return Err(Errno::EINVAL);
    }
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut resolve = |path: &str| -> Result<String, Errno> {
        let fd = nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        // SAFETY: fresh fd from open.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let magic = nix::sys::statfs::fstatfs(&fd)?.filesystem_type().0 as i64;
        if magic == PROC_SUPER_MAGIC || magic == SYSFS_MAGIC {
            return Err(Errno::EINVAL);
        }
        let named = format!("self/fd/{}", fd.as_raw_fd());
        held.push(fd);
        Ok(named)
    };
    let mut options = Vec::new();
    for option in text.split(',') {
        match option.split_once('=') {
            Some((key, value)) if LAYER_OPTIONS.contains(&key) => {
                // `a:b::c`: layers, and data-only layers after a double colon.
                let layers = value
                    .split(':')
                    .map(|l| {
                        if l.is_empty() {
                            Ok(String::new())
                        } else {
                            resolve(l)
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                options.push(format!("{key}={}", layers.join(":")));
            }
            _ => options.push(option.to_string()),
        }
    }
    let target_fd;
    let target = match m.target_fd {
        Some(fd) => fd,
        None => {
            let fd = nix::fcntl::open(
                m.target,
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )?;
            // SAFETY: fresh fd from open.
            target_fd = unsafe { OwnedFd::from_raw_fd(fd) };
            &target_fd
        }
    };
    let target = format!("self/fd/{}", target.as_raw_fd());
    // Every path is now an fd of ours, named from the host's /proc whatever our root is.
    nix::unistd::fchdir(host_proc.as_raw_fd())?;
    let data = options.join(",");
    let resolved = NewMount {
        target: &target,
        target_fd: None,
        data: Some(data.as_bytes()),
        ..*m
    };
    legacy(&resolved)
}

/// `fd=N` in a FUSE mount's options, with N the process's fd number, made ours.
fn renumber_fuse_fd(data: &[u8], theirs: i32, ours: RawFd) -> Vec<u8> {
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let text = String::from_utf8_lossy(&data[..end]);
    text.split(',')
        .map(|o| {
            if o == format!("fd={theirs}") {
                format!("fd={ours}")
            } else {
                o.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

/// The emulated files under `prefix` as the process sees them now, cloned in its mount
/// namespace (the kernel attaches a clone only in the namespace it came from), and those it
/// cannot reach at all. What the process finds at an emulated file's place is one of three:
/// the emulated file (cloned); a plain file of a procfs or sysfs with nothing mounted on it,
/// which is the process's own (a per-pid-namespace knob such as pid_max seen from a nested
/// pid namespace) and needs no covering; or anything else — a file mounted over the emulated
/// one, a plain file of a chroot — which would leave the new instance showing the host's:
/// EBUSY, until what covers the emulated file is unmounted.
type Clone = (String, MountKey, OwnedFd);
fn clone_emulated(protected: &Protected, prefix: &str) -> Result<(Vec<Clone>, Vec<String>), Errno> {
    let mut found = Vec::new();
    let mut unreachable = Vec::new();
    let magic = if prefix == "/proc/" {
        PROC_SUPER_MAGIC
    } else {
        SYSFS_MAGIC
    };
    for (target, key) in &protected.emulated {
        let Some(rel) = target.strip_prefix(prefix) else {
            continue;
        };
        let seen = match nix::fcntl::open(
            target.as_str(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) {
            // SAFETY: fresh fd from open.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(_) => {
                unreachable.push(rel.to_string());
                continue;
            }
        };
        if crate::agent::key(&seen).ok() != Some(*key) {
            let plain = !eci_sys::statx::is_mount_root(&seen)?
                && nix::sys::statfs::fstatfs(&seen)?.filesystem_type().0 as i64 == magic;
            if plain {
                continue;
            }
            return Err(Errno::EBUSY);
        }
        let fd = clone_tree(seen.as_fd(), false)?;
        found.push((rel.to_string(), *key, fd));
    }
    Ok((found, unreachable))
}

/// A procfs or sysfs with the emulated files bound in, built detached by a child of the agent
/// in the process's pid namespace (a procfs shows the pid namespace of its maker, and some
/// /proc/sys files are per pid namespace, so even finding the emulated ones needs it) and
/// attached at the target last. The mounts it binds need no record: every mount of an emulated
/// file is pinned by its root.
fn emulated(
    m: &NewMount,
    prefix: &str,
    pid_ns: &OwnedFd,
    protected: &Protected,
) -> Result<(), Errno> {
    // Children of the agent are born in it (the agent itself stays where it is); entered for
    // a sysfs too, since the one of an earlier request may be gone, and fork fails there.
    setns(pid_ns.as_fd(), CloneFlags::CLONE_NEWPID)?;
    // SAFETY: the agent is single-threaded; the child only makes syscalls and _exits.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            let code = match clone_emulated(protected, prefix)
                .and_then(|(clones, missing)| build_and_attach(m, &clones, &missing))
            {
                Ok(()) => 0,
                Err(e) => e as i32,
            };
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None)? {
            nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
            nix::sys::wait::WaitStatus::Exited(_, code) => Err(Errno::from_raw(code)),
            _ => Err(Errno::EPERM),
        },
    }
}

fn build_and_attach(m: &NewMount, clones: &[Clone], missing: &[String]) -> Result<(), Errno> {
    let fs = FsContext::open(&cstring(m.fstype.unwrap_or_default())?)?;
    if let Some(source) = m.source {
        fs.set_string(c"source", &cstring(source)?)?;
    }
    let data = m.data.unwrap_or_default();
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let options = String::from_utf8_lossy(&data[..end]).into_owned();
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some((k, v)) => fs.set_string(&cstring(k)?, &cstring(v)?)?,
            None => fs.set_flag(&cstring(option)?)?,
        }
    }
    fs.create()?;
    let mnt = fs.mount(attributes(m.flags))?;
    attach_emulated(&mnt, clones, missing)?;
    let target = cstring(m.target)?;
    // The process's own fd, or a path from its cwd.
    match m.target_fd {
        Some(fd) => move_mount(mnt.as_fd(), Some(fd.as_fd()), c"", MOVE_MOUNT_T_EMPTY_PATH),
        None => move_mount(mnt.as_fd(), None, &target, MOVE_MOUNT_T_SYMLINKS),
    }
}

/// Bind the clones inside `tree` (a detached procfs or sysfs); refuse if it has an emulated
/// file the process could not reach.
fn attach_emulated(tree: &OwnedFd, clones: &[Clone], unreachable: &[String]) -> Result<(), Errno> {
    for (rel, _, clone) in clones {
        let rel = cstring(rel)?;
        match move_mount(clone.as_fd(), Some(tree.as_fd()), &rel, 0) {
            // A file this instance does not have (subset=pid) needs no covering.
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    // An emulated file this instance has but the process could not reach at all (a root
    // without /proc): refuse rather than show the host's.
    for rel in unreachable {
        let path = cstring(rel)?;
        // SAFETY: faccessat on a NUL-terminated path inside our tree.
        if unsafe { libc::faccessat(tree.as_raw_fd(), path.as_ptr(), libc::F_OK, 0) } == 0 {
            return Err(Errno::EPERM);
        }
    }
    Ok(())
}

/// `statfs` magic of procfs.
pub(crate) const PROC_SUPER_MAGIC: i64 = 0x9fa0;
/// `statfs` magic of sysfs.
pub(crate) const SYSFS_MAGIC: i64 = 0x6265_6572;

/// A procfs or sysfs the process made with fsopen/fsmount, about to be attached by
/// move_mount: give it the emulated files first (a no-op for one that has them).
pub fn cover(tree: &OwnedFd, protected: &mut Protected) -> Result<(), Errno> {
    let fs = nix::sys::statfs::fstatfs(tree)?;
    let prefix = match fs.filesystem_type().0 as i64 {
        PROC_SUPER_MAGIC => "/proc/",
        SYSFS_MAGIC => "/sys/",
        _ => return Ok(()),
    };
    if !eci_sys::statx::is_mount_root(tree).unwrap_or(false) {
        return Ok(());
    }
    let (clones, unreachable) = clone_emulated(protected, prefix)?;
    let covered = clones.iter().any(|(rel, key, _)| {
        nix::fcntl::openat(
            Some(tree.as_raw_fd()),
            rel.as_str(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        // SAFETY: fresh fd from openat.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .is_ok_and(|fd| crate::agent::key(&fd).ok() == Some(*key))
    });
    if covered {
        return Ok(());
    }
    // Every mount of an emulated file is pinned by its root (Protected::is_pinned): nothing
    // to record, so covering many file systems grows nothing.
    attach_emulated(tree, &clones, &unreachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuse_fd_is_renumbered_and_nothing_else() {
        assert_eq!(
            renumber_fuse_fd(b"fd=3,rootmode=40000,user_id=0\0junk", 3, 17),
            b"fd=17,rootmode=40000,user_id=0"
        );
        assert_eq!(renumber_fuse_fd(b"fd=33,x", 3, 17), b"fd=33,x");
    }
}
