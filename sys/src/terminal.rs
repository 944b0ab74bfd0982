//! A terminal's window size (`TIOCSWINSZ`), set on a pty master by the exec helper (a
//! process's initial size) and by the shim (containerd's ResizePty).

use crate::cvt::cvt;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Set the size of the terminal `pty` is a master (or slave) of, in characters. A size
/// beyond what the kernel's `u16` holds is set at its largest.
pub fn set_size(pty: BorrowedFd<'_>, width: u64, height: u64) -> Result<(), Errno> {
    let ws = libc::winsize {
        ws_row: u16::try_from(height).unwrap_or(u16::MAX),
        ws_col: u16::try_from(width).unwrap_or(u16::MAX),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct we own from a valid fd.
    cvt(unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(drop)
}
