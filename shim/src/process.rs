//! The shim's process table: each container's init and execs, their state and exit.

use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

#[derive(Debug, Clone)]
pub struct Exit {
    pub code: u32,
    pub at: Timestamp,
}

#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

pub struct Process {
    pub pid: i32,
    pub status: Status,
    pub stdio: StdioPaths,
    pub exit: watch::Sender<Option<Exit>>,
    /// For a terminal process: the pty master, for resize.
    pub console: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
    /// For exec: the OCI process spec, kept until Start.
    pub spec: Option<Vec<u8>>,
    /// Completes when output copying (terminals) has drained; exit is reported after it.
    pub io_done: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Ends the process's stdin on CloseIO (plain stdio only).
    pub stdin: Option<crate::stdio::StdinCloser>,
    /// CloseIO came before the process had its stdin (ctr sends it as soon as its own stdin
    /// ends, which can be before Start).
    pub stdin_closed: bool,
}

impl Process {
    pub fn new(stdio: StdioPaths) -> Self {
        Process {
            pid: 0,
            status: Status::Created,
            stdio,
            exit: watch::channel(None).0,
            console: None,
            spec: None,
            io_done: None,
            stdin: None,
            stdin_closed: false,
        }
    }

    /// Give the process's stdin its closer; closes it at once if CloseIO came first.
    pub fn set_stdin(&mut self, closer: Option<crate::stdio::StdinCloser>) {
        if let (Some(closer), true) = (&closer, self.stdin_closed) {
            closer.close();
        }
        self.stdin = closer;
    }

    /// CloseIO: end the process's stdin now or as soon as it has one.
    pub fn close_stdin(&mut self) {
        self.stdin_closed = true;
        if let Some(closer) = &self.stdin {
            closer.close();
        }
    }

    pub fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }
}

pub struct Container {
    pub id: String,
    pub bundle: String,
    pub block: u32,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    /// The container's /proc and /sys emulation, served for the task's lifetime.
    pub emulation: Option<eci_emulation::Emulation>,
    /// The container's mount supervisor (absent when its profile traps nothing).
    pub supervisor: Option<std::sync::Arc<eci_emulation::Supervisor>>,
    pub oom: Option<std::sync::Arc<OomWatch>>,
}

/// The container cgroup's OOM-kill counter, and how much of it has been reported.
pub struct OomWatch {
    view: eci_emulation::cgroup::CgroupView,
    seen: std::sync::atomic::AtomicU64,
}

impl OomWatch {
    pub fn new(view: eci_emulation::cgroup::CgroupView) -> Self {
        let seen = view.oom_kills().into();
        OomWatch { view, seen }
    }

    /// True once for every new OOM kill since the last call.
    pub fn fired(&self) -> bool {
        let now = self.view.oom_kills();
        self.seen
            .fetch_max(now, std::sync::atomic::Ordering::SeqCst)
            < now
    }
}

impl Container {
    pub fn process(&self, exec_id: &str) -> Option<&Process> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }
}

/// Exits the shim's one reaper reported for pids the process table did not hold, and the
/// helpers and agents whose exit someone awaits. containerd-shim's reaper is the only waiter
/// (`waitpid(-1)`), so this is where a helper's death is learnt.
#[derive(Default)]
pub struct Exits {
    /// Exit codes of pids nobody has claimed yet, with the sequence number of their arrival
    /// and its time: a container's process can die before its creator reports its pid.
    early: HashMap<i32, (i32, u64, std::time::Instant)>,
    /// Pids whose exit goes to a waiter, never to the table: helpers and mount agents.
    watched: HashMap<i32, tokio::sync::oneshot::Sender<i32>>,
    seq: u64,
}

/// How long an unclaimed exit is kept: a pid is claimed within seconds of its creator's
/// answer. Older ones (libcontainer's intermediate process, an exec helper's first child)
/// are dropped, so that a recycled pid never inherits a stranger's exit.
const UNCLAIMED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

impl Exits {
    /// A mark taken before starting a process: only exits that arrive after it can be its own
    /// or its children's.
    pub fn mark(&self) -> u64 {
        self.seq
    }

    /// An exit the process table did not claim: a watcher's, or kept for a later claim.
    pub fn unclaimed(&mut self, pid: i32, code: i32) {
        if let Some(tx) = self.watched.remove(&pid) {
            let _ = tx.send(code);
            return;
        }
        self.seq += 1;
        let now = std::time::Instant::now();
        self.early
            .retain(|_, (_, _, at)| now.duration_since(*at) < UNCLAIMED_FOR);
        self.early.insert(pid, (code, self.seq, now));
    }

    /// Await `pid`'s exit (started after `since`), whenever the reaper reports it.
    pub fn watch(&mut self, pid: i32, since: u64) -> tokio::sync::oneshot::Receiver<i32> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.claim(pid, since) {
            Some(code) => {
                let _ = tx.send(code);
            }
            None => {
                self.watched.insert(pid, tx);
            }
        }
        rx
    }

    /// The exit `pid` already had, if it arrived after `since` (before, it was another
    /// process's that had the same pid).
    pub fn claim(&mut self, pid: i32, since: u64) -> Option<i32> {
        match self.early.remove(&pid) {
            Some((code, seq, _)) if seq > since => Some(code),
            _ => None,
        }
    }
}
