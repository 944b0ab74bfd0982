//! The one typed channel between the shim's processes (the shim, its create/exec helper, the
//! exec's forked children, the mount agent and the supervisor): serde messages with fds.
//!
//! One message is one `SOCK_SEQPACKET` packet holding one JSON value, its fds passed with it
//! (`SCM_RIGHTS`, see [`crate::fdpass`]): the kernel keeps the boundaries, so there is no
//! length prefix to get wrong and no partial read to resume, and messages that several
//! processes write on one channel (a helper and its forked child) never interleave. The peer
//! may be hostile (the agent runs in the container's namespaces): a message over the channel's
//! size bound, one that is not the expected type, or one with too many fds is an error, never a
//! panic, and the fds that came with it are closed.

use crate::fdpass;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

/// The default bound on one message, either way: far above what any conversation sends (a
/// create request with its mounts, a mount request with two paths and a data page), and below
/// the kernel's default socket buffer (`net.core.wmem_default`, 208 KiB), which bounds one
/// seqpacket message.
pub const MAX_MESSAGE: usize = 128 * 1024;

/// One end of a typed channel. Blocking by default ([`Channel::recv`]); [`Channel::try_recv`]
/// does not wait, for an event loop (the shim registers the fd with tokio's `AsyncFd`).
pub struct Channel {
    socket: OwnedFd,
    limit: usize,
    /// The receive buffer, made at the first message and kept: a fresh one of `limit` bytes
    /// per message cost an mmap and munmap each (about 2 µs), twice per trapped mount.
    buffer: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("socket", &self.socket)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Two connected ends, both close-on-exec: whoever is to have one across `execve` is
    /// given it on purpose (as its stdin or stdout, where `Command` dups it).
    pub fn pair() -> io::Result<(Channel, Channel)> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel::wrap(a), Channel::wrap(b)))
    }

    /// The channel end a process was given as `fd` (by a parent that made the pair). Anything
    /// but a Unix seqpacket socket is refused, so a mistaken fd is an error here rather than
    /// a confusing one at the first message.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Channel> {
        use nix::sys::socket::{getsockopt, sockopt, SockType};
        let kind = getsockopt(&fd, sockopt::SockType)?;
        if kind != SockType::SeqPacket {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {} is a {kind:?} socket, not a channel", fd.as_raw_fd()),
            ));
        }
        Ok(Channel::wrap(fd))
    }

    fn wrap(socket: OwnedFd) -> Channel {
        Channel {
            socket,
            limit: MAX_MESSAGE,
            buffer: Mutex::new(Vec::new()),
        }
    }

    /// The same channel with another bound on the messages it sends and receives.
    #[cfg(test)]
    fn with_limit(mut self, limit: usize) -> Channel {
        self.limit = limit;
        self
    }

    /// Send `message` with `fds` (at most [`fdpass::MAX_FDS`]) as one message. A message
    /// over the bound is `InvalidInput` (nothing is sent); a peer gone is `BrokenPipe`.
    pub fn send<T: Serialize + ?Sized>(
        &self,
        message: &T,
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<()> {
        let body = serde_json::to_vec(message).map_err(io::Error::other)?;
        if body.len() > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a message of {} bytes (at most {})", body.len(), self.limit),
            ));
        }
        fdpass::send(self.socket.as_fd(), &body, fds)
    }

    /// Wait for the next message and its fds. The peer closed is `UnexpectedEof`; a message
    /// over the bound, not a `T`, or with too many fds is `InvalidData` (its fds closed).
    pub fn recv<T: DeserializeOwned>(&self) -> io::Result<(T, Vec<OwnedFd>)> {
        self.receive(fdpass::recv)
    }

    /// As [`Channel::recv`], but `WouldBlock` at once when no message is waiting.
    pub fn try_recv<T: DeserializeOwned>(&self) -> io::Result<(T, Vec<OwnedFd>)> {
        self.receive(fdpass::try_recv)
    }

    fn receive<T: DeserializeOwned>(
        &self,
        how: fn(BorrowedFd<'_>, &mut [u8]) -> io::Result<fdpass::Received>,
    ) -> io::Result<(T, Vec<OwnedFd>)> {
        let mut buf = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        if buf.len() != self.limit {
            // Zeroed pages from the allocator: only those a message touches become resident.
            *buf = vec![0u8; self.limit];
        }
        let got = how(self.socket.as_fd(), &mut buf)?;
        if got.len == 0 && got.fds.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the channel's peer has closed it",
            ));
        }
        let message = serde_json::from_slice(&buf[..got.len]).map_err(|e| {
            let shown = String::from_utf8_lossy(&buf[..got.len.min(200)]).into_owned();
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a malformed message ({e}): {shown:?}"),
            )
        })?;
        Ok((message, got.fds))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl From<Channel> for OwnedFd {
    fn from(channel: Channel) -> OwnedFd {
        channel.socket
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdpass::tests::assert_ended;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Message {
        Hello { name: String },
        Number(i32),
    }

    fn cloexec(fd: &OwnedFd) -> bool {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn a_message_and_its_fds_make_the_round_trip() {
        let (a, b) = Channel::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let sent = Message::Hello { name: "eci".into() };
        a.send(&sent, &[w.as_fd()]).unwrap();
        a.send(&Message::Number(7), &[]).unwrap();
        let (got, fds) = b.recv::<Message>().unwrap();
        assert_eq!(got, sent);
        assert_eq!(fds.len(), 1);
        assert!(cloexec(&fds[0]), "a received fd is close-on-exec");
        nix::unistd::write(&fds[0], b"y").unwrap();
        let mut byte = [0u8; 1];
        nix::unistd::read(r.as_raw_fd(), &mut byte).unwrap();
        assert_eq!(&byte, b"y");
        // Messages keep their boundaries.
        assert_eq!(b.recv::<Message>().unwrap().0, Message::Number(7));
    }

    /// The receive buffer is kept between messages: a short one after a long one is itself,
    /// nothing of the long one's tail.
    #[test]
    fn messages_of_any_length_follow_one_another() {
        let (a, b) = Channel::pair().unwrap();
        let long = Message::Hello {
            name: "x".repeat(50_000),
        };
        for sent in [
            long,
            Message::Number(7),
            Message::Hello { name: "y".into() },
        ] {
            a.send(&sent, &[]).unwrap();
            let (got, _) = b.recv::<Message>().unwrap();
            assert_eq!(got, sent);
        }
    }

    #[test]
    fn both_ends_are_close_on_exec() {
        let (a, b) = Channel::pair().unwrap();
        assert!(cloexec(&OwnedFd::from(a)));
        assert!(cloexec(&OwnedFd::from(b)));
    }

    #[test]
    fn a_sender_refuses_a_message_over_its_bound() {
        let (a, _b) = Channel::pair().unwrap();
        let big = Message::Hello {
            name: "x".repeat(100),
        };
        let e = a.with_limit(16).send(&big, &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn an_oversized_message_from_a_peer_is_refused_with_its_fds_closed() {
        let (a, b) = Channel::pair().unwrap();
        let b = b.with_limit(16);
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        a.send(
            &Message::Hello {
                name: "x".repeat(100),
            },
            &[w.as_fd()],
        )
        .unwrap();
        drop(w);
        let e = b.recv::<Message>().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_ended(&r);
        // The channel goes on: the next message is read whole.
        a.send(&Message::Number(1), &[]).unwrap();
        assert_eq!(b.recv::<Message>().unwrap().0, Message::Number(1));
    }

    #[test]
    fn a_malformed_message_is_an_error_not_a_panic() {
        let (a, b) = Channel::pair().unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        for junk in [
            &b"{\"hello\":"[..],
            b"\xff\xfe",
            b"{\"number\":\"seven\"}",
            b"[1,2]",
        ] {
            fdpass::send(a.as_fd(), junk, &[w.as_fd()]).unwrap();
            let e = b.recv::<Message>().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{junk:?}");
        }
        drop(w);
        assert_ended(&r);
    }

    #[test]
    fn a_closed_peer_is_a_clean_end() {
        let (a, b) = Channel::pair().unwrap();
        assert_eq!(
            b.try_recv::<Message>().unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        a.send(&Message::Number(2), &[]).unwrap();
        drop(a);
        // What was sent before the close is still read, then the end.
        assert_eq!(b.recv::<Message>().unwrap().0, Message::Number(2));
        assert_eq!(
            b.recv::<Message>().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            b.try_recv::<Message>().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn only_a_seqpacket_socket_is_a_channel() {
        let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        assert!(Channel::from_fd(r).is_err());
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(Channel::from_fd(OwnedFd::from(a)).is_err());
    }
}
