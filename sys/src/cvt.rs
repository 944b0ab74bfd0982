//! The one conversion of a raw syscall's return value: `-1` (any negative value) means the
//! error is in `errno`. Callers in `io::Result` code use `?` on it too (nix converts an
//! [`Errno`] into an [`std::io::Error`]).

use nix::errno::Errno;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A raw syscall's return type: `c_int` (i32) for libc's wrappers, `c_long` (i64 on 64-bit
/// targets, i32 on 32-bit ones) for `libc::syscall`.
pub trait SyscallReturn: Copy {
    /// Whether the call failed (the kernel's -1).
    fn failed(self) -> bool;
}

impl SyscallReturn for i32 {
    fn failed(self) -> bool {
        self < 0
    }
}

impl SyscallReturn for i64 {
    fn failed(self) -> bool {
        self < 0
    }
}

/// `ret`, or the thread's `errno` if the call failed.
pub fn cvt<T: SyscallReturn>(ret: T) -> Result<T, Errno> {
    if ret.failed() {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// The fd a syscall that creates one (`open_tree`, `fsopen`, `fsmount`, `pidfd_open`,
/// `openat2` …) returned, owned from here; `errno` if it failed.
///
/// # Safety
///
/// `ret` must come straight from such a syscall: a new fd that nothing else owns.
pub(crate) unsafe fn new_fd(ret: libc::c_long) -> Result<OwnedFd, Errno> {
    let fd = cvt(ret)?;
    // A kernel fd number always fits an int; anything else is no fd of ours.
    let fd = RawFd::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the caller promises a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_returns_are_errno() {
        assert_eq!(cvt(5 as libc::c_long), Ok(5));
        assert_eq!(cvt(0 as libc::c_int), Ok(0));
        Errno::set_raw(libc::ENOENT);
        assert_eq!(cvt(-1 as libc::c_int), Err(Errno::ENOENT));
        Errno::set_raw(libc::EPERM);
        assert_eq!(cvt(-1 as libc::c_long), Err(Errno::EPERM));
    }
}
