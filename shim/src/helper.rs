//! The create helper. The shim is a multi-threaded tokio process, where forking and changing
//! the process's cwd or environment (which libcontainer does) is unsound. So the shim starts
//! its own binary again for each create and exec: the new process is single-threaded, does
//! the work, prints one JSON line and exits. The container's init is created as a sibling
//! (CLONE_PARENT), so it is the shim's child and reaped by the shim's one reaper.

use crate::exits::SharedExits;
use eci_core::{CreateRequest, ErrorKind, ExecRequest};
use eci_sys::pidfd::PidFd;
use serde::{Deserialize, Serialize};
use std::process::{Command, Stdio};

/// The helper's sub-command of the shim binary.
pub(crate) const HELPER_ARG: &str = "helper";

/// What the shim asks of a helper (its one argument, as JSON).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Request {
    Create(CreateRequest),
    Exec(ExecRequest),
}

/// The helper's one line of answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reply {
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

/// A line the exec helper's first child writes before the reply: the pid of the process it
/// just forked, which the shim kills if the helper dies before it answers (a terminal's
/// process is in a session of its own by then, out of reach of the helper's process group).
#[derive(Serialize, Deserialize)]
struct Forked {
    forked: i32,
}

/// Write the announcement with one write(2) on fd 1 (the reply pipe), past Rust's buffered
/// stdout: it is called in a forked child of the helper.
fn announce(pid: i32) {
    let line = format!(
        "{}\n",
        serde_json::to_string(&Forked { forked: pid }).expect("announcement serializes")
    );
    let _ = nix::unistd::write(std::io::stdout(), line.as_bytes());
}

/// Helper side: the request is the argument, the process's stdin (fd 0) is the container
/// process's stdin, and the answer goes to stdout.
pub(crate) fn main(args: &[String]) -> i32 {
    // Whatever the shim held that was not close-on-exec stops here, and the container's
    // processes start with default signal dispositions, not the shim's.
    if let Err(e) = eci_core::hygiene::close_on_exec_from(3) {
        println!(
            "{}",
            serde_json::to_string(&Reply::internal(format!(
                "helper: close inherited fds: {e}"
            )))
            .expect("reply serializes")
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
    let input = args.first().map(String::as_str).unwrap_or("");
    let reply = match serde_json::from_str::<Request>(input) {
        Err(e) => Reply::internal(format!("helper: bad request: {e}")),
        Ok(Request::Create(req)) => match eci_core::create(&req) {
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
        Ok(Request::Exec(req)) => match eci_core::exec(&req, &announce) {
            Ok(pid) => Reply::Execed { pid },
            Err(e) => Reply::Failed {
                kind: e.kind(),
                message: e.to_string(),
            },
        },
    };
    let failed = matches!(reply, Reply::Failed { .. });
    println!(
        "{}",
        serde_json::to_string(&reply).expect("reply serializes")
    );
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
/// exec's first child inherit it (and the helper's stdout), so a reply pipe alone never ends
/// when the helper is killed while they live. The helper's exit is watched through the reaper
/// instead, and when it dies without an answer, every process left in its group is killed.
pub(crate) async fn call(
    request: Request,
    stdin: Option<std::os::fd::OwnedFd>,
    exits: &SharedExits,
) -> Result<Reply, Died> {
    let since = exits.lock().await.mark();
    let spawn = move || -> std::io::Result<(i32, std::process::ChildStdout)> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(HELPER_ARG)
            .arg(serde_json::to_string(&request).expect("request serializes"))
            .stdin(stdin.map(Stdio::from).unwrap_or_else(Stdio::null))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        Ok((child.id().cast_signed(), stdout))
    };
    let (pid, stdout) = match tokio::task::spawn_blocking(spawn).await {
        Ok(Ok(started)) => started,
        Ok(Err(e)) => return Ok(Reply::internal(format!("eci: cannot run the helper: {e}"))),
        Err(e) => return Ok(Reply::internal(format!("eci: helper task: {e}"))),
    };
    let exited = exits.lock().await.watch(pid, since);
    let mut forked = Vec::new();
    match read_reply(stdout, exited, &mut forked).await {
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

/// The helper's one line, or its exit code if it exited without writing one.
async fn read_reply(
    stdout: std::process::ChildStdout,
    mut exited: tokio::sync::oneshot::Receiver<i32>,
    forked: &mut Vec<i32>,
) -> Result<Reply, i32> {
    use tokio::io::AsyncReadExt;
    // The first whole line that is not an announcement of a forked pid (those are taken out
    // of `out` and kept in `forked`).
    let parse = |out: &mut Vec<u8>, forked: &mut Vec<i32>| -> Option<Reply> {
        loop {
            let end = out.iter().position(|b| *b == b'\n')?;
            let line = String::from_utf8_lossy(&out[..end]).trim().to_string();
            if let Ok(Forked { forked: pid }) = serde_json::from_str::<Forked>(&line) {
                forked.push(pid);
                out.drain(..=end);
                continue;
            }
            return Some(serde_json::from_str(&line).unwrap_or_else(|_| {
                Reply::internal(format!("eci: the helper answered {line:?}"))
            }));
        }
    };
    let mut pipe =
        match tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(stdout)) {
            Ok(p) => p,
            Err(e) => return Ok(Reply::internal(format!("eci: helper reply pipe: {e}"))),
        };
    let mut out = Vec::new();
    let mut eof = false;
    loop {
        if let Some(reply) = parse(&mut out, forked) {
            return Ok(reply);
        }
        if eof {
            // Every writer is gone without a whole line: the helper's exit says why.
            return Err(exited.await.unwrap_or(-1));
        }
        tokio::select! {
            read = pipe.read_buf(&mut out) => match read {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) => return Ok(Reply::internal(format!("eci: helper reply pipe: {e}"))),
            },
            code = &mut exited => {
                // What it wrote before exiting is in the pipe already. Read it with read(2)
                // itself: tokio's `try_read` answers WouldBlock without reading when its
                // reactor has not yet seen the pipe readable, and then a helper's refusal
                // was reported as a helper that died without answering.
                let code = code.unwrap_or(-1);
                let mut buf = [0u8; 4096];
                loop {
                    match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&pipe), &mut buf) {
                        Ok(0) => break,
                        Ok(n) => out.extend_from_slice(&buf[..n]),
                        Err(nix::errno::Errno::EINTR) => {}
                        // EAGAIN: the pipe is empty (a forked child may still hold it open).
                        Err(_) => break,
                    }
                }
                return parse(&mut out, forked).ok_or(code);
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

    /// A helper that refused and exited before the shim's reactor saw its reply pipe readable:
    /// the refusal is its answer. Before, the exit won the race about half the time and
    /// `dockerd --pid=host` got "the create helper exited with status 1 before it answered".
    #[test]
    fn a_reply_written_before_the_exit_is_read_when_the_exit_comes_first() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let line = serde_json::to_string(&Reply::Failed {
            kind: ErrorKind::Refused,
            message: "eci containers can't share namespaces [pid] with the host".into(),
        })
        .unwrap();
        for _ in 0..50 {
            let mut child = Command::new("printf")
                .arg(format!("{line}\\n"))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            assert!(child.wait().unwrap().code() == Some(0));
            let (tx, rx) = tokio::sync::oneshot::channel();
            tx.send(1).unwrap();
            let mut forked = Vec::new();
            let reply = rt.block_on(read_reply(stdout, rx, &mut forked));
            match reply {
                Ok(Reply::Failed { kind, .. }) => assert_eq!(kind, ErrorKind::Refused),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_failure_keeps_its_kind_across_the_pipe() {
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
