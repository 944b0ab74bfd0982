//! The create helper. The shim is a multi-threaded tokio process, where forking and changing
//! the process's cwd or environment (which libcontainer does) is unsound. So the shim starts
//! its own binary again for each create and exec: the new process is single-threaded, takes
//! its request from the channel it was given as stdout (`eci_sys::channel`), does the work,
//! answers on the channel and exits. The container's init is created as a sibling
//! (CLONE_PARENT), so it is the shim's child and reaped by the shim's one reaper.

use crate::exits::SharedExits;
use eci_core::{CreateRequest, ErrorKind, ExecRequest};
use eci_sys::channel::Channel;
use eci_sys::pidfd::PidFd;
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

/// The helper's sub-command of the shim binary.
pub(crate) const HELPER_ARG: &str = "helper";

/// What the shim asks of a helper: the first message on its channel.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Request {
    Create(CreateRequest),
    Exec(ExecRequest),
}

/// What a helper sends the shim: any number of `Forked` announcements, then one answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reply {
    /// Not an answer: the exec helper's first child has just forked the process with this
    /// pid, which the shim kills if the helper dies before it answers (a terminal's process is
    /// in a session of its own by then, out of reach of the helper's process group).
    Forked {
        pid: i32,
    },
    Created {
        pid: i32,
        block: u32,
        supervised: bool,
    },
    Execed {
        pid: i32,
    },
    /// What failed, with its kind, so the shim answers containerd with the right code.
    Failed {
        kind: ErrorKind,
        message: String,
    },
}

impl Reply {
    /// A failure of the helper's own (not a refusal of the request).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Reply::Failed {
            kind: ErrorKind::Internal,
            message: message.into(),
        }
    }
}

/// The longest failure message a reply carries (an error chain can be long; the channel's
/// bound is far above this).
const MAX_MESSAGE: usize = 32 * 1024;

/// Send the answer; a failure's message cut to [`MAX_MESSAGE`] so that it always fits.
fn answer(channel: &Channel, mut reply: Reply) {
    if let Reply::Failed { message, .. } = &mut reply {
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str(" …");
        }
    }
    // Nobody to tell if the shim is gone.
    let _ = channel.send(&reply, &[]);
}

/// The helper's end of its channel, which the shim gave it as fd 1: moved to a close-on-exec
/// fd of its own, with /dev/null as fd 1, so that nothing the helper starts holds the
/// channel past its `execve` and no stray print reaches the shim.
fn take_channel() -> std::io::Result<Channel> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let fd = nix::fcntl::fcntl(1, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: a fresh fd from F_DUPFD_CLOEXEC, owned by nothing else.
    let channel = Channel::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })?;
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    nix::unistd::dup2(null.as_raw_fd(), 1)?;
    Ok(channel)
}

/// Helper side: the request is the first message on the channel (fd 1), the process's stdin
/// (fd 0) is the container process's stdin, and the answer goes back on the channel. The
/// arguments only name the container (and exec) for `ps`; nothing is read from them.
pub(crate) fn main(_label: &[String]) -> i32 {
    let channel = match take_channel() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("helper: fd 1 is not the shim's channel: {e}");
            return 2;
        }
    };
    // Whatever the shim held that was not close-on-exec stops here, and the container's
    // processes start with default signal dispositions, not the shim's.
    if let Err(e) = eci_core::hygiene::close_on_exec_from(3) {
        answer(
            &channel,
            Reply::internal(format!("helper: close inherited fds: {e}")),
        );
        return 1;
    }
    eci_core::hygiene::reset_signals();
    // libcontainer reports through `tracing`; when asked, send it to a file for debugging.
    if let Some(path) = std::env::var_os("ECI_HELPER_LOG") {
        if let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = tracing_subscriber::fmt()
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .try_init();
        }
    }
    // A forked child of the helper announces on the same channel: one message each, never
    // interleaved with the answer.
    let announce = |pid: i32| {
        let _ = channel.send(&Reply::Forked { pid }, &[]);
    };
    let reply = match channel.recv::<Request>() {
        Err(e) => Reply::internal(format!("helper: bad request: {e}")),
        Ok((Request::Create(req), _)) => match eci_core::create(&req) {
            Ok(c) => Reply::Created {
                pid: c.pid,
                block: c.block,
                supervised: c.supervised,
            },
            Err(e) => Reply::Failed {
                kind: e.kind(),
                message: e.to_string(),
            },
        },
        Ok((Request::Exec(req), _)) => match eci_core::exec(&req, &announce) {
            Ok(pid) => Reply::Execed { pid },
            Err(e) => Reply::Failed {
                kind: e.kind(),
                message: e.to_string(),
            },
        },
    };
    let failed = matches!(reply, Reply::Failed { .. });
    answer(&channel, reply);
    i32::from(failed)
}

/// What became of a helper that answered nothing.
pub(crate) struct Died {
    pub(crate) pid: i32,
    /// Its exit code as the reaper reported it (128 + signal for a killed one).
    pub(crate) code: i32,
}

impl Died {
    /// What the client is told.
    pub(crate) fn describe(&self, what: &str) -> String {
        let how = if self.code > 128 {
            let signal = nix::sys::signal::Signal::try_from(self.code - 128)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {}", self.code - 128));
            format!("was killed by {how}", how = signal)
        } else {
            format!("exited with status {}", self.code)
        };
        format!(
            "eci: the {what} helper (pid {pid}) {how} before it answered; the processes it had \
             started were killed (look for an OOM kill or an administrator's kill of that pid, \
             and retry)",
            pid = self.pid
        )
    }
}

/// Shim side: run the helper and return its reply, or how it died without one. The helper
/// runs in a process group of its own; libcontainer's intermediate and init processes and an
/// exec's first child inherit it (and, until they exec, the helper's channel), so the channel
/// alone never ends when the helper is killed while they live. The helper's exit is watched
/// through the reaper instead, and when it dies without an answer, every process left in its
/// group is killed.
pub(crate) async fn call(
    request: Request,
    stdin: Option<OwnedFd>,
    exits: &SharedExits,
) -> Result<Reply, Died> {
    let since = exits.lock().await.mark();
    let spawn = move || -> std::io::Result<(i32, Channel, std::io::Result<()>)> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()?;
        let (ours, theirs) = Channel::pair()?;
        let child = Command::new(exe)
            .arg(HELPER_ARG)
            .args(label(&request))
            .stdin(stdin.map(Stdio::from).unwrap_or_else(Stdio::null))
            .stdout(Stdio::from(OwnedFd::from(theirs)))
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        // A request too big for the channel is refused here; the helper then reads the end
        // of its channel and exits.
        let sent = ours.send(&request, &[]);
        Ok((child.id().cast_signed(), ours, sent))
    };
    let (pid, channel, sent) = match tokio::task::spawn_blocking(spawn).await {
        Ok(Ok(started)) => started,
        Ok(Err(e)) => return Ok(Reply::internal(format!("eci: cannot run the helper: {e}"))),
        Err(e) => return Ok(Reply::internal(format!("eci: helper task: {e}"))),
    };
    let exited = exits.lock().await.watch(pid, since);
    if let Err(e) = sent {
        drop(channel);
        let _ = exited.await;
        return Ok(Reply::internal(format!(
            "eci: cannot send the helper its request: {e}"
        )));
    }
    let mut forked = Vec::new();
    match read_reply(channel, exited, &mut forked).await {
        Ok(reply) => Ok(reply),
        Err(code) => {
            let pgid = pid;
            let _ = tokio::task::spawn_blocking(move || {
                kill_group(pgid);
                // After the group: its killed members' children are the shim's by then.
                kill_forked(&forked);
            })
            .await;
            Err(Died { pid, code })
        }
    }
}

/// What the helper's command line shows (for `ps`, and for tests and scripts that look for a
/// helper): the container, and the exec's process file. Never the request itself.
fn label(request: &Request) -> Vec<String> {
    match request {
        Request::Create(r) => vec!["create".into(), r.id.clone()],
        Request::Exec(r) => vec![
            "exec".into(),
            r.id.clone(),
            r.process
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ],
    }
}

/// The helper's answer, or its exit code if it exited without one. Announcements of forked
/// pids met on the way are kept in `forked`.
async fn read_reply(
    channel: Channel,
    mut exited: tokio::sync::oneshot::Receiver<i32>,
    forked: &mut Vec<i32>,
) -> Result<Reply, i32> {
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;
    /// What one message means: an answer (`Some`), or an announcement taken (`None`).
    fn take(message: std::io::Result<(Reply, Vec<OwnedFd>)>, forked: &mut Vec<i32>) -> Taken {
        match message {
            Ok((Reply::Forked { pid }, _)) => {
                forked.push(pid);
                Taken::Announcement
            }
            Ok((reply, _)) => Taken::Answer(reply),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                Taken::Answer(Reply::internal(format!("eci: the helper answered {e}")))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Taken::Nothing,
            Err(_) => Taken::End,
        }
    }
    enum Taken {
        Answer(Reply),
        Announcement,
        Nothing,
        End,
    }
    // SAFETY: the Channel owns its socket fd, never replaces it, and is moved into the
    // AsyncFd, so the fd stays open and the same for the AsyncFd's whole life.
    let channel = match unsafe { AsyncFd::register_with_interest(channel, Interest::READABLE) } {
        Ok(c) => c,
        Err(e) => return Ok(Reply::internal(format!("eci: helper channel: {e}"))),
    };
    loop {
        tokio::select! {
            ready = channel.readable() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => return Ok(Reply::internal(format!("eci: helper channel: {e}"))),
                };
                let Ok(message) = guard.try_io(|c| match c.get_ref().try_recv::<Reply>() {
                    // Tell the reactor the channel is drained; it waits for the next message.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(e),
                    other => Ok(other),
                }) else {
                    continue;
                };
                match take(message.and_then(|m| m), forked) {
                    Taken::Answer(reply) => return Ok(reply),
                    Taken::Announcement | Taken::Nothing => {}
                    // Every holder of the helper's end is gone without an answer: the
                    // helper's exit says why.
                    Taken::End => return Err(exited.await.unwrap_or(-1)),
                }
            }
            code = &mut exited => {
                // What it sent before exiting is in the channel already. Read it with
                // recvmsg(2) itself: tokio's readiness may not have seen it yet, and then a
                // helper's refusal was reported as a helper that died without answering.
                let code = code.unwrap_or(-1);
                loop {
                    match take(channel.get_ref().try_recv::<Reply>(), forked) {
                        Taken::Answer(reply) => return Ok(reply),
                        Taken::Announcement => {}
                        // Empty (a forked child may still hold the helper's end), or ended.
                        Taken::Nothing | Taken::End => return Err(code),
                    }
                }
            }
        }
    }
}

/// Kill every process left in the process group of a dead helper: they are all this shim's
/// children by then (libcontainer clones them as the shim's, and orphans come to the shim,
/// a subreaper). Each is pinned with a pidfd and checked to be ours and in the group before
/// it is signalled, so a recycled pid is never hit. Children of the killed are orphaned to
/// the shim in turn, so this repeats until the group is empty (for at most two seconds).
pub(crate) fn kill_group(pgid: i32) {
    let me = std::process::id().cast_signed();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let mut found = false;
        for pid in children_in_group(me, pgid) {
            let Ok(pidfd) = PidFd::open(pid) else {
                continue;
            };
            // Checked after pinning: if the pid was recycled before the pidfd, this reads the
            // new process, which is not ours in this group.
            if children_in_group(me, pgid).contains(&pid) {
                found = true;
                pidfd.kill();
            }
        }
        if !found || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Kill the processes a dead exec helper announced (see `Forked`) that are still the shim's
/// live children: pinned with a pidfd and checked after pinning, as in `kill_group`. Pids are
/// allocated cyclically, so an announced pid is not another child of the shim's already.
fn kill_forked(pids: &[i32]) {
    let me = std::process::id().cast_signed();
    for &pid in pids {
        let Ok(pidfd) = PidFd::open(pid) else {
            continue;
        };
        if live_child_of(pid, me) {
            log::warn!("killing process {pid}, started by an exec helper that died");
            pidfd.kill();
        }
    }
}

fn live_child_of(pid: i32, parent: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return false;
    };
    let mut f = rest.split(' ');
    let (state, ppid) = (f.next(), f.next());
    state != Some("Z") && ppid.and_then(|p| p.parse().ok()) == Some(parent)
}

/// Live (not zombie) children of `parent` in process group `pgid`.
fn children_in_group(parent: i32, pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the command: state, ppid, pgrp.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                return false;
            };
            let mut f = rest.split(' ');
            let (state, ppid, pgrp) = (f.next(), f.next(), f.next());
            state != Some("Z")
                && ppid.and_then(|p| p.parse().ok()) == Some(parent)
                && pgrp.and_then(|p| p.parse().ok()) == Some(pgid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A helper that refused and exited before the shim's reactor saw its channel readable:
    /// the refusal is its answer. Before, the exit won the race about half the time and
    /// `dockerd --pid=host` got "the create helper exited with status 1 before it answered".
    #[test]
    fn a_reply_written_before_the_exit_is_read_when_the_exit_comes_first() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for _ in 0..50 {
            let (ours, theirs) = Channel::pair().unwrap();
            // The helper: it announces a fork, refuses, and exits.
            theirs.send(&Reply::Forked { pid: 4242 }, &[]).unwrap();
            theirs
                .send(
                    &Reply::Failed {
                        kind: ErrorKind::Refused,
                        message: "eci containers can't share namespaces [pid] with the host".into(),
                    },
                    &[],
                )
                .unwrap();
            drop(theirs);
            let (tx, rx) = tokio::sync::oneshot::channel();
            tx.send(1).unwrap();
            let mut forked = Vec::new();
            let reply = rt.block_on(read_reply(ours, rx, &mut forked));
            match reply {
                Ok(Reply::Failed { kind, .. }) => assert_eq!(kind, ErrorKind::Refused),
                other => panic!("{other:?}"),
            }
            assert_eq!(forked, vec![4242]);
        }
    }

    /// A helper that died without an answer: its exit code, and the announced pid to kill.
    #[test]
    fn a_helper_that_died_without_an_answer_is_its_exit_code() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (ours, theirs) = Channel::pair().unwrap();
        theirs.send(&Reply::Forked { pid: 77 }, &[]).unwrap();
        drop(theirs);
        let (tx, rx) = tokio::sync::oneshot::channel();
        tx.send(137).unwrap();
        let mut forked = Vec::new();
        assert_eq!(
            rt.block_on(read_reply(ours, rx, &mut forked)).unwrap_err(),
            137
        );
        assert_eq!(forked, vec![77]);
    }

    #[test]
    fn a_failure_keeps_its_kind_across_the_channel() {
        let line = serde_json::to_string(&Reply::Failed {
            kind: ErrorKind::Refused,
            message: "eci: can't mount /etc/docker".into(),
        })
        .unwrap();
        match serde_json::from_str::<Reply>(&line).unwrap() {
            Reply::Failed { kind, message } => {
                assert_eq!(kind, ErrorKind::Refused);
                assert_eq!(message, "eci: can't mount /etc/docker");
            }
            other => panic!("{other:?}"),
        }
    }
}
