//! The kernel's mount API (linux/mount.h, which the libc crate does not cover): detached
//! clones (`open_tree`), mount attributes (`mount_setattr`), attaching (`move_mount`), new
//! file systems built through a context (`fsopen`, `fsconfig`, `fsmount`), `openat2`, and
//! plain `mount(2)` with binary data. Every function takes and returns owned or borrowed fds;
//! paths are `CStr` so nothing is allocated between a caller's check and the call.

use crate::cvt::{cvt, new_fd};
use nix::errno::Errno;
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// `MOUNT_ATTR_RDONLY`: the mount is read-only.
pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
/// `MOUNT_ATTR_NOSUID`: set-user-ID and set-group-ID bits are ignored.
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
/// `MOUNT_ATTR_NODEV`: device files cannot be opened.
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
/// `MOUNT_ATTR_NOEXEC`: nothing on the mount may be executed.
pub const MOUNT_ATTR_NOEXEC: u64 = 0x0000_0008;
/// `MOUNT_ATTR_NOATIME`: access times are never updated.
pub const MOUNT_ATTR_NOATIME: u64 = 0x0000_0010;
/// `MOUNT_ATTR_STRICTATIME`: access times are always updated.
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x0000_0020;
/// `MOUNT_ATTR_NODIRATIME`: directories' access times are never updated.
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x0000_0080;
/// `MOUNT_ATTR_IDMAP`: files show their owners through the user namespace `userns_fd`.
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `OPEN_TREE_CLONE`: `open_tree` makes a detached copy instead of an O_PATH fd.
pub const OPEN_TREE_CLONE: u32 = 1;
/// `AT_RECURSIVE`: `open_tree` and `mount_setattr` take the submounts too.
pub const AT_RECURSIVE: u32 = 0x8000;

/// `MOVE_MOUNT_F_SYMLINKS`: follow a symlink at the source path.
pub const MOVE_MOUNT_F_SYMLINKS: u32 = 0x1;
/// `MOVE_MOUNT_F_EMPTY_PATH`: the source is the dirfd itself.
pub const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
/// `MOVE_MOUNT_T_SYMLINKS`: follow a symlink at the target path.
pub const MOVE_MOUNT_T_SYMLINKS: u32 = 0x10;
/// `MOVE_MOUNT_T_EMPTY_PATH`: the target is the dirfd itself.
pub const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_SET_FD: libc::c_uint = 5;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

/// The kernel's `struct mount_attr` (linux/mount.h), the argument of `mount_setattr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountAttr {
    /// `MOUNT_ATTR_*` bits to set.
    pub attr_set: u64,
    /// `MOUNT_ATTR_*` bits to clear.
    pub attr_clr: u64,
    /// A propagation type (`MS_SHARED`, `MS_SLAVE` …) or 0 to leave it.
    pub propagation: u64,
    /// The user namespace of `MOUNT_ATTR_IDMAP`, an fd number; 0 otherwise.
    pub userns_fd: u64,
}

/// A detached, close-on-exec copy of the mount `source` is on (an O_PATH fd: the thing a
/// caller checked is the thing copied), with its submounts if `recursive`.
pub fn clone_tree(source: BorrowedFd<'_>, recursive: bool) -> Result<OwnedFd, Errno> {
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC.cast_unsigned()
        | libc::AT_EMPTY_PATH.cast_unsigned()
        | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: open_tree with a valid dirfd, a NUL-terminated empty path and plain flags; the
    // fd it returns is new and ours alone.
    unsafe {
        new_fd(libc::syscall(
            libc::SYS_open_tree,
            source.as_raw_fd(),
            c"".as_ptr(),
            flags,
        ))
    }
}

/// Change the attributes of the mount `fd` is on (and of its submounts if `recursive`).
pub fn set_attr(fd: BorrowedFd<'_>, recursive: bool, attr: &MountAttr) -> Result<(), Errno> {
    let flags = libc::AT_EMPTY_PATH.cast_unsigned() | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr on a valid fd with an empty path and a `struct mount_attr` of the
    // size passed, which the kernel only reads.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            std::ptr::from_ref(attr),
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// Attach (or move) the mount `from` is the root of at `to_path`, resolved from `to_dir`
/// (the working directory if `None`). `flags` are the target's `MOVE_MOUNT_T_*` bits (with
/// `MOVE_MOUNT_T_EMPTY_PATH` and an empty path, `to_dir` itself is the target); the source is
/// always `from` itself.
pub fn move_mount(
    from: BorrowedFd<'_>,
    to_dir: Option<BorrowedFd<'_>>,
    to_path: &CStr,
    flags: u32,
) -> Result<(), Errno> {
    let to_dir = to_dir.map_or(libc::AT_FDCWD, |fd| fd.as_raw_fd());
    // SAFETY: move_mount between valid fds (or AT_FDCWD) with NUL-terminated paths.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            to_dir,
            to_path.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | flags,
        )
    })
    .map(drop)
}

/// A new file system being configured (`fsopen`): options and fds are set one by one, then
/// it is created and mounted detached, so nothing is staged on a path.
#[derive(Debug)]
pub struct FsContext {
    fd: OwnedFd,
}

impl FsContext {
    /// Open a context for a file system of type `fstype` (`overlay`, `proc` …).
    pub fn open(fstype: &CStr) -> Result<Self, Errno> {
        // SAFETY: fsopen with a NUL-terminated name and plain flags; the fd is new and ours.
        let fd = unsafe {
            new_fd(libc::syscall(
                libc::SYS_fsopen,
                fstype.as_ptr(),
                FSOPEN_CLOEXEC,
            ))
        }?;
        Ok(FsContext { fd })
    }

    fn config(
        &self,
        cmd: libc::c_uint,
        key: Option<&CStr>,
        value: Option<&CStr>,
        aux: libc::c_int,
    ) -> Result<(), Errno> {
        // SAFETY: fsconfig on our context fd; key and value are NUL-terminated or null, as
        // each command allows.
        cvt(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                cmd,
                key.map_or(std::ptr::null(), CStr::as_ptr),
                value.map_or(std::ptr::null(), CStr::as_ptr),
                aux,
            )
        })
        .map(drop)
    }

    /// Set option `key` to the string `value` (`source`, `lowerdir+` …).
    pub fn set_string(&self, key: &CStr, value: &CStr) -> Result<(), Errno> {
        self.config(FSCONFIG_SET_STRING, Some(key), Some(value), 0)
    }

    /// Set the flag option `key` (`ro`, `userxattr` …).
    pub fn set_flag(&self, key: &CStr) -> Result<(), Errno> {
        self.config(FSCONFIG_SET_FLAG, Some(key), None, 0)
    }

    /// Set option `key` to the file `fd` is open on (an overlay layer as a detached mount).
    pub fn set_fd(&self, key: &CStr, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        self.config(FSCONFIG_SET_FD, Some(key), None, fd.as_raw_fd())
    }

    /// Create the super block from the options set.
    pub fn create(&self) -> Result<(), Errno> {
        self.config(FSCONFIG_CMD_CREATE, None, None, 0)
    }

    /// A detached, close-on-exec mount of the created file system, with `MOUNT_ATTR_*`
    /// `attributes` (see [`attributes`]).
    pub fn mount(&self, attributes: u32) -> Result<OwnedFd, Errno> {
        // SAFETY: fsmount on our context fd with plain flags; the fd is new and ours.
        unsafe {
            new_fd(libc::syscall(
                libc::SYS_fsmount,
                self.fd.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                attributes,
            ))
        }
    }

    /// What the kernel logged on the context (overlay says there why it refused), one
    /// message each, oldest first; empty when it logged nothing.
    pub fn messages(&self) -> Vec<String> {
        let mut log = Vec::new();
        let mut buf = [0u8; 512];
        // Each read returns one message, ENODATA when none are left.
        while let Ok(n) = nix::unistd::read(self.fd.as_raw_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            log.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        }
        log
    }
}

impl AsFd for FsContext {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A `MOUNT_ATTR_*` attribute (a `u64` as `mount_attr` holds it) as `fsmount`'s `unsigned int`
/// takes it: every attribute `fsmount` accepts is below bit 32.
#[allow(clippy::cast_possible_truncation)]
fn low_attribute(attr: u64) -> u32 {
    attr as u32
}

/// `mount(2)` flags (`MS_RDONLY` …) as the `MOUNT_ATTR_*` attributes `fsmount` takes; flags
/// without one are left out.
pub fn attributes(ms_flags: u64) -> u32 {
    [
        (libc::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (libc::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (libc::MS_NODEV, MOUNT_ATTR_NODEV),
        (libc::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        (libc::MS_NOATIME, MOUNT_ATTR_NOATIME),
        (libc::MS_STRICTATIME, MOUNT_ATTR_STRICTATIME),
        (libc::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
    ]
    .iter()
    .filter(|(ms, _)| ms_flags & *ms != 0)
    .fold(0, |attrs, (_, attr)| attrs | low_attribute(*attr))
}

/// `openat2`: `path` opened from `dir` with `flags` (`O_*`, close-on-exec added) and the
/// `RESOLVE_*` rules `resolve` (`RESOLVE_BENEATH`, `RESOLVE_IN_ROOT` …).
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    resolve: u64,
) -> Result<OwnedFd, Errno> {
    // SAFETY: open_how is plain data, all zeros a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = u64::from((flags | libc::O_CLOEXEC).cast_unsigned());
    how.resolve = resolve;
    // SAFETY: openat2 with a valid dirfd, a NUL-terminated path and an open_how of the size
    // passed, which the kernel only reads; the fd it returns is new and ours.
    unsafe {
        new_fd(libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            std::ptr::from_ref(&how),
            std::mem::size_of::<libc::open_how>(),
        ))
    }
}

/// `mount(2)` with `data` as bytes (a file system's options, or binary data some take), a
/// NUL added; `None` for what may be null.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: u64,
    data: Option<&[u8]>,
) -> Result<(), Errno> {
    let data = data.map(|d| {
        let mut d = d.to_vec();
        d.push(0);
        d
    });
    // Every MS_* flag fits an unsigned long; more bits are no flags mount(2) knows.
    let flags = libc::c_ulong::try_from(flags).map_err(|_| Errno::EINVAL)?;
    let ptr = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is NUL-terminated and outlives the call, or null where mount(2)
    // allows it; the kernel only reads them.
    cvt(unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>()),
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_attributes() {
        assert_eq!(attributes(libc::MS_RDONLY | libc::MS_NOEXEC), 0x9);
        assert_eq!(attributes(libc::MS_NOATIME | libc::MS_NODIRATIME), 0x90);
        assert_eq!(attributes(libc::MS_SILENT), 0);
    }

    #[test]
    fn mount_attr_is_the_kernels_size() {
        // MOUNT_ATTR_SIZE_VER0 in linux/mount.h.
        assert_eq!(std::mem::size_of::<MountAttr>(), 32);
    }
}
