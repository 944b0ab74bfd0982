//! Process fds (`pidfd_open`): a handle on one process that a recycled pid cannot redirect.
//! Signals sent through it reach that process or fail; it becomes readable when the process
//! exits.

use crate::cvt::{cvt, new_fd};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// `PIDFD_THREAD` (`O_EXCL`, Linux 6.9): a pidfd of one thread, not of its thread group.
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL.cast_unsigned();

/// A pidfd (always close-on-exec).
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
}

impl PidFd {
    /// A pidfd of process `pid` (a thread-group leader).
    pub fn open(pid: libc::pid_t) -> Result<Self, Errno> {
        Self::open_with(pid, 0)
    }

    /// A pidfd of thread `tid` (any thread; Linux 6.9 or later).
    pub fn open_thread(tid: libc::pid_t) -> Result<Self, Errno> {
        Self::open_with(tid, PIDFD_THREAD)
    }

    fn open_with(pid: libc::pid_t, flags: libc::c_uint) -> Result<Self, Errno> {
        // SAFETY: pidfd_open takes no pointers; the fd it returns is new and ours.
        let fd = unsafe { new_fd(libc::syscall(libc::SYS_pidfd_open, pid, flags)) }?;
        Ok(PidFd { fd })
    }

    /// Send `signal` to the process (0 only checks that it is there to be signalled).
    pub fn send_signal(&self, signal: libc::c_int) -> Result<(), Errno> {
        // SAFETY: pidfd_send_signal on our pidfd with no siginfo (null) and no flags.
        cvt(unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        })
        .map(drop)
    }

    /// SIGKILL the process; an error (it is gone) is ignored.
    pub fn kill(&self) {
        let _ = self.send_signal(libc::SIGKILL);
    }

    /// Whether the process is not reaped yet (a zombie still holds its pid).
    pub fn is_alive(&self) -> bool {
        self.send_signal(0).is_ok()
    }

    /// Whether the process has exited, waiting up to `timeout` for it.
    pub fn exited_within(&self, timeout: PollTimeout) -> bool {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, timeout), Ok(n) if n > 0)
    }

    /// A close-on-exec copy of the process's fd number `fd` (`pidfd_getfd`; needs ptrace
    /// rights over it).
    pub fn get_fd(&self, fd: libc::c_int) -> Result<OwnedFd, Errno> {
        // SAFETY: pidfd_getfd takes no pointers; the fd it returns is new and ours.
        unsafe {
            new_fd(libc::syscall(
                libc::SYS_pidfd_getfd,
                self.fd.as_raw_fd(),
                fd,
                0,
            ))
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<PidFd> for OwnedFd {
    fn from(p: PidFd) -> OwnedFd {
        p.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_not_exited() {
        let me = PidFd::open(std::process::id().cast_signed()).expect("pidfd of self");
        assert!(me.is_alive());
        assert!(!me.exited_within(PollTimeout::ZERO));
    }
}
