//! What every process we start inherits, made explicit: no fds beyond the ones it is given,
//! and the default signal dispositions and an empty signal mask, as runc starts processes.
//!
//! The shim is a Rust program (std ignores SIGPIPE) that containerd may have started under
//! `nohup` (SIGHUP ignored); ignored signals survive `execve`, so without this a container's
//! `yes | head -1` prints "Broken pipe" instead of dying of SIGPIPE.

/// Mark every fd from `first` up close-on-exec, whatever created it: nothing we hold reaches
/// a program we exec unless it was placed at a lower number on purpose.
pub fn close_on_exec_from(first: u32) -> std::io::Result<()> {
    // SAFETY: close_range takes no pointers; CLOSE_RANGE_CLOEXEC only sets a flag on fds.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The kernel's `struct sigaction` (not glibc's, whose mask is 128 bytes and whose wrapper
/// refuses the real-time signals glibc keeps for itself).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Every catchable signal back to its default action, and nothing blocked. The raw syscall
/// reaches signals 32 and 33 too, which glibc's `signal` refuses but which a parent may have
/// left ignored.
pub fn reset_signals() {
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads one kernel sigaction we own (sigsetsize 8, the kernel's);
        // the old action is not asked for.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    // SAFETY: an empty set we own, installed as the mask; the old mask is not asked for.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}
