//! `statx` of an fd for what `fstat` does not tell: the mount it is on (its mount ID, the ID
//! mountinfo lists) and whether it is that mount's root.

use crate::cvt::cvt;
use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd};

/// What `statx` says about the mount an fd is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountStat {
    /// The mount's ID (mountinfo's first field).
    pub mount_id: u64,
    /// Whether the fd is the root of its mount; false where the kernel cannot say (before
    /// 5.8).
    pub is_mount_root: bool,
}

impl MountStat {
    fn from_raw(stx: &libc::statx) -> Self {
        let root = u64::from(libc::STATX_ATTR_MOUNT_ROOT.cast_unsigned());
        MountStat {
            mount_id: stx.stx_mnt_id,
            is_mount_root: stx.stx_attributes_mask & root != 0 && stx.stx_attributes & root != 0,
        }
    }
}

/// The mount `fd` is on, as `statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID)` tells it.
pub fn mount_of(fd: impl AsFd) -> Result<MountStat, Errno> {
    // SAFETY: statx is plain data, all zeros a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx on a valid fd with a NUL-terminated empty path, writing only into the
    // struct we own.
    cvt(unsafe {
        libc::statx(
            fd.as_fd().as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    })?;
    Ok(MountStat::from_raw(&stx))
}

/// The ID of the mount `fd` is on.
pub fn mount_id(fd: impl AsFd) -> Result<u64, Errno> {
    Ok(mount_of(fd)?.mount_id)
}

/// Whether `fd` is the root of its mount.
pub fn is_mount_root(fd: impl AsFd) -> Result<bool, Errno> {
    Ok(mount_of(fd)?.is_mount_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_root_needs_the_kernel_to_know() {
        // SAFETY: statx is plain data, all zeros a valid value.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        stx.stx_mnt_id = 42;
        stx.stx_attributes = u64::from(libc::STATX_ATTR_MOUNT_ROOT.cast_unsigned());
        assert_eq!(
            MountStat::from_raw(&stx),
            MountStat {
                mount_id: 42,
                is_mount_root: false
            }
        );
        stx.stx_attributes_mask = u64::from(libc::STATX_ATTR_MOUNT_ROOT.cast_unsigned());
        assert!(MountStat::from_raw(&stx).is_mount_root);
    }

    #[test]
    fn the_root_directory_is_a_mount_root() {
        let root = std::fs::File::open("/").expect("open /");
        let stat = mount_of(&root).expect("statx /");
        assert!(stat.mount_id > 0);
    }
}
