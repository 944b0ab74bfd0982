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
