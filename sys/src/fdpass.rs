//! Bytes and file descriptors over a Unix socket (`SCM_RIGHTS`).
//!
//! What arrives is close-on-exec (`MSG_CMSG_CLOEXEC`: a later `execve` of ours never hands it
//! on) and owned ([`OwnedFd`]: dropped is closed). A message whose control data was cut short
//! (`MSG_CTRUNC`: the sender passed more than [`MAX_FDS`] fds) or whose bytes did not fit
//! (`MSG_TRUNC` on a datagram or seqpacket socket) is an error, and the fds that did arrive
//! with it are closed before the error is returned: never half a message, never a leaked fd.

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The most fds one message may carry; a sender passing more has the message refused by
/// [`send`], and a receiver given more gets an error (see the module's documentation).
pub const MAX_FDS: usize = 16;

/// What one [`recv`] took from the socket.
#[derive(Debug)]
pub struct Received {
    /// How many bytes were written into the caller's buffer; 0 (with no fds) means the peer
    /// has closed its end (or sent an empty message, which nothing here does).
    pub len: usize,
    /// The fds that came with those bytes, close-on-exec, in the order they were sent.
    pub fds: Vec<OwnedFd>,
}

/// Send `bytes` with `fds` (which go with the first byte) in one `sendmsg`, then the rest of
/// the bytes if a stream socket took only part. Never raises SIGPIPE (`MSG_NOSIGNAL`): a peer
/// gone is the error `BrokenPipe`.
pub fn send(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} fds in one message (at most {MAX_FDS})", fds.len()),
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let mut sent = loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => continue,
            other => break other?,
        }
    };
    // Only a stream socket splits a message; the fds went with its first part.
    while sent < bytes.len() {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(&bytes[sent..])],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => continue,
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Wait for one message (a seqpacket's whole message, or what a stream socket has) into
/// `buf`, with its fds.
pub fn recv(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    receive(socket, buf, 0)
}

/// As [`recv`], but without waiting: `WouldBlock` when nothing is there yet. For callers on
/// an event loop, and for draining what a peer wrote before it exited.
pub fn try_recv(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    receive(socket, buf, libc::MSG_DONTWAIT)
}

fn receive(socket: BorrowedFd<'_>, buf: &mut [u8], flags: libc::c_int) -> io::Result<Received> {
    const FD_SIZE: usize = std::mem::size_of::<libc::c_int>();
    // Room for MAX_FDS fds and their header, aligned as a cmsghdr must be.
    let mut control = [0u64; 16];
    // The fds' bytes as CMSG_SPACE takes them: a constant of a few dozen.
    #[allow(clippy::cast_possible_truncation)]
    const FD_BYTES: libc::c_uint = (MAX_FDS * FD_SIZE) as libc::c_uint;
    // SAFETY: CMSG_SPACE only computes a length.
    let space = unsafe { libc::CMSG_SPACE(FD_BYTES) } as usize;
    assert!(
        space <= std::mem::size_of_val(&control),
        "control buffer too small"
    );
    let capacity = buf.len();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: capacity,
    };
    // SAFETY: a msghdr is plain data; zeroed is its empty value, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let len = loop {
        // SAFETY: msg points at our iovec (over `buf`) and our control buffer, both alive and
        // at least as long as the lengths it gives.
        let n =
            unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
        match usize::try_from(n) {
            Ok(n) => break n,
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    };
    // Owned first, whatever is wrong with the message (nix's iterator refuses a truncated
    // control buffer, which would leave the fds that did arrive open): an error below closes
    // them. The kernel sets each header's length to the fds it installed.
    let mut fds = Vec::new();
    // SAFETY: msg is the header recvmsg filled; CMSG_FIRSTHDR and CMSG_NXTHDR stay within
    // msg_control..msg_controllen, which the kernel set to what it wrote.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/NXTHDR lies within our buffer.
        let header = unsafe { std::ptr::read_unaligned(cmsg) };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_DATA points just past the header, within the same message.
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            // What the header says it holds, never past what the kernel wrote.
            let declared = (header.cmsg_len as usize).saturating_sub(data as usize - cmsg as usize);
            let data_start = data as usize - control.as_ptr() as usize;
            let written = (msg.msg_controllen as usize).min(space);
            let bytes = declared.min(written.saturating_sub(data_start));
            for i in 0..bytes / FD_SIZE {
                // SAFETY: within the header's data, which the kernel filled with fds; read
                // unaligned as CMSG_DATA promises no alignment for int.
                let fd = unsafe { std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i)) };
                // SAFETY: the kernel installed this fd in our table for this message
                // (SCM_RIGHTS); nothing else refers to it, so it is ours to own.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR; null after the last header.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message came with more fds than {MAX_FDS} (control data truncated)"),
        ));
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message longer than {capacity} bytes"),
        ));
    }
    Ok(Received { len, fds })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    fn cloexec(fd: &OwnedFd) -> bool {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn bytes_and_fds_arrive_together_and_close_on_exec() {
        let (a, b) = pair();
        let (r, w) = nix::unistd::pipe().unwrap();
        send(a.as_fd(), b"hello", &[r.as_fd(), w.as_fd()]).unwrap();
        let mut buf = [0u8; 64];
        let got = recv(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..got.len], b"hello");
        assert_eq!(got.fds.len(), 2);
        assert!(got.fds.iter().all(cloexec));
        // The received write end reaches the original read end.
        nix::unistd::write(&got.fds[1], b"x").unwrap();
        let mut byte = [0u8; 1];
        nix::unistd::read(r.as_raw_fd(), &mut byte).unwrap();
        assert_eq!(&byte, b"x");
    }

    #[test]
    fn a_message_too_long_for_the_buffer_is_an_error() {
        let (a, b) = pair();
        send(a.as_fd(), &[7u8; 100], &[]).unwrap();
        let mut buf = [0u8; 10];
        let e = recv(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn more_fds_than_allowed_is_an_error_and_closes_what_came() {
        let (a, b) = pair();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let many: Vec<BorrowedFd<'_>> = (0..MAX_FDS + 1).map(|_| w.as_fd()).collect();
        assert_eq!(
            send(a.as_fd(), b"x", &many).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        // A peer that does not go through `send` (raw sendmsg) gets its surplus refused too.
        let raw: Vec<RawFd> = many.iter().map(AsRawFd::as_raw_fd).collect();
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(b"x")],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        drop(many);
        drop(w);
        let mut buf = [0u8; 8];
        let e = recv(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // Every copy of the write end that arrived was closed: the pipe reads as ended.
        assert_ended(&r);
    }

    /// No write end of the pipe `r` reads from is open anywhere: every received copy was
    /// closed.
    pub(crate) fn assert_ended(r: &OwnedFd) {
        nix::fcntl::fcntl(
            r.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(nix::unistd::read(r.as_raw_fd(), &mut byte), Ok(0));
    }

    #[test]
    fn a_closed_peer_reads_as_zero_and_try_recv_does_not_wait() {
        let (a, b) = pair();
        let mut buf = [0u8; 8];
        assert_eq!(
            try_recv(b.as_fd(), &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(a);
        let got = recv(b.as_fd(), &mut buf).unwrap();
        assert_eq!((got.len, got.fds.len()), (0, 0));
    }
}
