//! ID-mapped mounts: the kernel shows a mount's files with owners shifted through a user
//! namespace, so image layers and host directories keep their on-disk owners (0..65535) while
//! the container, whose IDs are a block of host IDs, sees and writes them as its own.

use eci_policy::IdBlock;
use eci_sys::mount::{
    clone_tree, move_mount, set_attr, MountAttr, MOUNT_ATTR_IDMAP, MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};
use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;

/// A user namespace that maps 0..65535 to a container's block, held open for idmapping.
pub struct IdmapUserNs {
    fd: OwnedFd,
}

impl IdmapUserNs {
    /// Create the namespace with a short-lived child. Only call this from a single-threaded
    /// process (the create helper): it forks.
    pub fn new(block: IdBlock) -> io::Result<Self> {
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (done_r, done_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: the helper process that calls this is single-threaded; the child only makes
        // async-signal-safe calls (unshare, write, read, _exit).
        match unsafe { fork() }? {
            ForkResult::Child => {
                // The write end must be closed here too, or the read below never sees EOF.
                // SAFETY: closing fds this child owns; async-signal-safe.
                unsafe {
                    libc::close(done_w.as_raw_fd());
                    libc::close(ready_r.as_raw_fd());
                }
                let ok = nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_ok();
                let mut byte = [u8::from(ok)];
                // SAFETY: raw syscalls on fds this child owns; no allocation after fork.
                unsafe {
                    libc::write(ready_w.as_raw_fd(), byte.as_ptr().cast(), 1);
                    libc::read(done_r.as_raw_fd(), byte.as_mut_ptr().cast(), 1);
                    libc::_exit(0);
                }
            }
            ForkResult::Parent { child } => {
                drop(ready_w);
                drop(done_r);
                let result = (|| {
                    let mut byte = [0u8];
                    nix::unistd::read(ready_r.as_raw_fd(), &mut byte)?;
                    if byte[0] != 1 {
                        return Err(io::Error::other("unshare(CLONE_NEWUSER) failed"));
                    }
                    let map = format!("0 {} {}\n", block.first, block.size());
                    std::fs::write(format!("/proc/{child}/uid_map"), &map)?;
                    std::fs::write(format!("/proc/{child}/gid_map"), &map)?;
                    let ns = File::open(format!("/proc/{child}/ns/user"))?;
                    Ok(IdmapUserNs { fd: ns.into() })
                })();
                drop(done_w);
                let _ = waitpid(child, None);
                result
            }
        }
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Flags set on a mount before the container's mount namespace is copied from the host's. The
/// kernel locks flags of mounts copied into a less privileged user namespace's mount namespace
/// (MNT_LOCK_READONLY and friends), so container root, even with CAP_SYS_ADMIN, cannot clear
/// them by remount, `mount_setattr` or an `open_tree` clone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockedFlags {
    /// Read-only on the mount itself; its submounts too only with `recursive_read_only`
    /// (OCI `rro`), as runc does: `ro` on an `rbind` leaves a writable tmpfs below it writable.
    pub read_only: bool,
    pub recursive_read_only: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
}

impl LockedFlags {
    /// From OCI mount options (`ro`, `nosuid`, `nodev`, `noexec`).
    pub fn from_options<'a>(options: impl IntoIterator<Item = &'a String>) -> Self {
        let mut f = LockedFlags::default();
        for o in options {
            match o.as_str() {
                "ro" => f.read_only = true,
                "rro" => {
                    f.read_only = true;
                    f.recursive_read_only = true;
                }
                "nosuid" => f.nosuid = true,
                "nodev" => f.nodev = true,
                "noexec" => f.noexec = true,
                _ => {}
            }
        }
        f
    }

    /// What every mount of the tree gets.
    fn attr(self) -> u64 {
        [
            (self.recursive_read_only, MOUNT_ATTR_RDONLY),
            (self.nosuid, MOUNT_ATTR_NOSUID),
            (self.nodev, MOUNT_ATTR_NODEV),
            (self.noexec, MOUNT_ATTR_NOEXEC),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |acc, (_, bit)| acc | bit)
    }
}

/// Clone the mount tree at `source` (an O_PATH fd already checked by the caller, so the thing
/// judged is the thing mounted) into a detached, ID-mapped mount.
pub fn idmapped_clone(
    source: &OwnedFd,
    userns: &IdmapUserNs,
    flags: LockedFlags,
) -> io::Result<OwnedFd> {
    clone_mapped(source, userns, flags, true)
}

/// Like [`idmapped_clone`], but only the mount `source` is on, without the mounts beneath it:
/// an overlay's upper and work dirs sit beside the engine's own mount point (dockerd's
/// `merged`), and an overlay mount cannot be ID-mapped.
pub fn idmapped_clone_single(
    source: &OwnedFd,
    userns: &IdmapUserNs,
    flags: LockedFlags,
) -> io::Result<OwnedFd> {
    clone_mapped(source, userns, flags, false)
}

fn clone_mapped(
    source: &OwnedFd,
    userns: &IdmapUserNs,
    flags: LockedFlags,
    recursive: bool,
) -> io::Result<OwnedFd> {
    let tree = clone_tree(source.as_fd(), recursive)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | flags.attr(),
        userns_fd: u64::try_from(userns.as_raw_fd())
            .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        ..MountAttr::default()
    };
    set_attr(tree.as_fd(), recursive, &attr)?;
    if flags.read_only && !flags.recursive_read_only {
        // The tree's top mount only.
        let top = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            ..MountAttr::default()
        };
        set_attr(tree.as_fd(), false, &top)?;
    }
    Ok(tree)
}

/// Attach a detached mount at `target`.
pub fn attach(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    let target = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())?;
    Ok(move_mount(tree.as_fd(), None, &target, 0)?)
}
