//! Terminals: libcontainer hands the pty master over a console socket; the shim copies between
//! it and containerd's fifos, and resizes it. Plain stdio needs no copying: the helper opens
//! containerd's fifos and gives them to the process directly.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A unix socket that receives one fd: a terminal's pty master from libcontainer, or a seccomp
/// notify fd from libcontainer or the exec helper.
pub struct FdSocket {
    pub path: PathBuf,
    listener: UnixListener,
}

impl FdSocket {
    /// A new socket in `dir`, named by this shim's pid and a counter: unique across shims and
    /// namespaces, and short whatever the container and exec IDs (dockerd's are 64 hex digits
    /// each, past the 107 bytes a socket path may have).
    pub fn new(dir: &Path, what: &str) -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(dir)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}-{what}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        Ok(FdSocket { path, listener })
    }

    /// A handle that can wake a `receive` that will get nothing (its sender failed).
    pub fn waker(&self) -> PathBuf {
        self.path.clone()
    }

    /// Wait (blocking) for the fd.
    pub fn receive(self) -> std::io::Result<OwnedFd> {
        let (stream, _) = self.listener.accept()?;
        let _ = std::fs::remove_file(&self.path);
        // What comes with the fd (libcontainer's state, a word of ours) is not read further.
        let mut buf = [0u8; 4096];
        let received = eci_sys::fdpass::recv(std::os::fd::AsFd::as_fd(&stream), &mut buf)?;
        received
            .fds
            .into_iter()
            .next()
            .ok_or_else(|| std::io::Error::other("fd socket: no fd received"))
    }
}

impl Drop for FdSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copy stdin fifo → master and master → stdout fifo on two threads; `done` fires when the
/// output side has drained (the process and everything holding the pty have exited).
pub fn copy_console(
    master: Arc<OwnedFd>,
    stdin: &str,
    stdout: &str,
    done: tokio::sync::oneshot::Sender<()>,
) {
    if !stdin.is_empty() {
        let path = stdin.to_string();
        let m = master.clone();
        std::thread::spawn(move || {
            if let Ok(mut input) = OpenOptions::new().read(true).open(&path) {
                let mut out = std::fs::File::from(m.try_clone().expect("dup pty master"));
                let _ = std::io::copy(&mut input, &mut out);
            }
        });
    }
    let path = stdout.to_string();
    std::thread::spawn(move || {
        if let Ok(mut output) = OpenOptions::new().write(true).open(&path) {
            let mut input = std::fs::File::from(master.try_clone().expect("dup pty master"));
            let mut buf = [0u8; 8192];
            // EIO on the master means every slave fd is closed.
            while let Ok(n) = input.read(&mut buf) {
                if n == 0 || output.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
        let _ = done.send(());
    });
}

pub fn resize(master: &OwnedFd, width: u32, height: u32) -> std::io::Result<()> {
    Ok(eci_sys::terminal::set_size(
        master.as_fd(),
        u64::from(width),
        u64::from(height),
    )?)
}

/// containerd's stdin fifo, opened for reading at once (without waiting for its writer, so a
/// writer that comes and goes before the process starts is still seen), copied by a thread into
/// a pipe whose read end the process gets. The process sees EOF when containerd's writer goes
/// away or CloseIO arrives, whichever is first. Both pipe ends are close-on-exec: a write end
/// inherited by any other process (another exec's helper, the process itself) would keep EOF
/// from ever arriving.
pub fn stdin_pipe(path: &str) -> std::io::Result<Option<(OwnedFd, StdinCloser)>> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.is_empty() {
        return Ok(None);
    }
    let fifo = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (close_r, close_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    std::thread::spawn(move || copy_until_closed(fifo, std::fs::File::from(write), close_r));
    Ok(Some((read, StdinCloser(close_w))))
}

/// Ends a process's stdin on CloseIO: the copier passes on what the fifo holds and closes the
/// pipe's write end.
pub struct StdinCloser(OwnedFd);

impl StdinCloser {
    pub fn close(&self) {
        let _ = nix::unistd::write(&self.0, b"c");
    }
}

fn copy_until_closed(mut fifo: std::fs::File, mut out: std::fs::File, close: OwnedFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::io::ErrorKind;
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = [
            PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
            PollFd::new(close.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        let closing = fds[1].any().unwrap_or(true);
        // A fifo that never had a writer reads as EOF too; only POLLIN (data) or POLLHUP (a
        // writer came and went) make a read meaningful.
        let readable = fds[0].any().unwrap_or(false);
        if !readable && !closing {
            continue;
        }
        match fifo.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if out.write_all(&buf[..n]).is_err() {
                    return;
                }
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock && !closing => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(_) => return,
        }
    }
}

/// Release a stdin thread still waiting for containerd's writer.
pub fn release_stdin(path: &str) {
    if !path.is_empty() {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path);
    }
}
