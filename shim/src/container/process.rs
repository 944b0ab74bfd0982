//! One process of a container (its init or an exec): its state machine, its exit and its
//! stdio handles.

use crate::error::ShimError;
use crate::stdio::StdinCloser;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::types::task::Status as TaskStatus;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};

/// The current time as a protobuf timestamp.
pub(crate) fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    ts.nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    ts
}

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Made, waiting for Start (an init in libcontainer's wait; an exec not yet spawned).
    Created,
    /// Started and not yet reaped.
    Running,
    /// Its cgroup is frozen (inits only).
    Paused,
    /// Exited, or failed to start; its exit is kept for Wait, State and Delete.
    Stopped,
    /// Being or been deleted: nothing more may happen to it.
    Deleted,
}

/// What a Task request or the reaper asks of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// Start: release the init, or spawn the exec.
    Start,
    /// Freeze the container's cgroup.
    Pause,
    /// Thaw it.
    Resume,
    /// The reaper reported its exit, or it failed to start.
    Exit,
    /// Delete: tear it down and forget it.
    Delete,
}

impl State {
    /// The state `t` leads to, or None when `t` is not allowed now.
    pub(crate) fn next(self, t: Transition) -> Option<State> {
        use State::*;
        match (self, t) {
            (Created, Transition::Start) => Some(Running),
            (Running, Transition::Pause) => Some(Paused),
            (Paused, Transition::Resume) => Some(Running),
            (Created | Running | Paused, Transition::Exit) => Some(Stopped),
            // A deleted process can still be reaped: delete kills what it tears down.
            (Deleted, Transition::Exit) => Some(Deleted),
            (Created | Stopped, Transition::Delete) => Some(Deleted),
            _ => None,
        }
    }

    /// As containerd's State reports it.
    pub(crate) fn task_status(self) -> TaskStatus {
        match self {
            State::Created => TaskStatus::CREATED,
            State::Running => TaskStatus::RUNNING,
            State::Paused => TaskStatus::PAUSED,
            State::Stopped | State::Deleted => TaskStatus::STOPPED,
        }
    }
}

/// A process named as containerd names it: a container's init, or one of its execs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Name<'a> {
    /// The container's init.
    Init(&'a str),
    /// An exec of the container.
    Exec(&'a str, &'a str),
}

impl std::fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Name::Init(id) => write!(f, "container {id}"),
            Name::Exec(_, exec) => write!(f, "exec {exec}"),
        }
    }
}

/// A transition the process's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {why}")]
pub(crate) struct InvalidTransition {
    /// The process, as containerd names it in its messages.
    pub(crate) what: String,
    /// What was asked.
    pub(crate) asked: Transition,
    /// Where the process was.
    pub(crate) from: State,
    why: &'static str,
}

impl InvalidTransition {
    fn new(what: &Name<'_>, asked: Transition, from: State) -> Self {
        let why = match (asked, from, what) {
            (Transition::Start, _, Name::Init(_)) => "is not in created state",
            (Transition::Start, _, Name::Exec(..)) => "already started",
            (Transition::Delete, State::Running | State::Paused, Name::Init(_)) => {
                "is still running; kill it first"
            }
            (Transition::Delete, State::Running, Name::Exec(..)) => "is still running",
            (_, State::Deleted, _) => "is being deleted",
            (Transition::Pause | Transition::Resume, State::Stopped, _) => "is stopped",
            (Transition::Pause, State::Paused, _) => "is paused already",
            (Transition::Resume, _, _) => "is not paused",
            _ => "is not running",
        };
        InvalidTransition {
            what: what.to_string(),
            asked,
            from,
            why,
        }
    }
}

impl From<InvalidTransition> for ShimError {
    fn from(e: InvalidTransition) -> Self {
        ShimError::Refused(e.to_string())
    }
}

/// How a process ended.
#[derive(Debug, Clone)]
pub(crate) struct Exit {
    /// Its exit status (128 + signal for a killed one).
    pub(crate) code: u32,
    /// When the reaper reported it.
    pub(crate) at: Timestamp,
}

/// containerd's paths for a process's stdio.
#[derive(Debug, Clone, Default)]
pub(crate) struct StdioPaths {
    pub(crate) stdin: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) terminal: bool,
}

/// The shim's side of a started process's stdio.
#[derive(Default)]
pub(crate) struct ProcessIo {
    /// For a terminal process: the pty master, for resize.
    pub(crate) console: Option<Arc<OwnedFd>>,
    /// Completes when output copying (terminals) has drained; exit is reported after it.
    pub(crate) io_done: Option<oneshot::Receiver<()>>,
    /// Ends the process's stdin on CloseIO (plain stdio only).
    pub(crate) stdin: Option<StdinCloser>,
}

/// A container's init or exec.
pub(crate) struct Process {
    pub(crate) pid: i32,
    state: State,
    /// Set once the reaper's report (or a failed start) has been taken for it.
    reaped: bool,
    pub(crate) stdio: StdioPaths,
    exit: watch::Sender<Option<Exit>>,
    pub(crate) io: ProcessIo,
    /// For exec: the OCI process spec, kept until Start.
    pub(crate) spec: Option<Vec<u8>>,
    /// CloseIO came before the process had its stdin (ctr sends it as soon as its own stdin
    /// ends, which can be before Start).
    stdin_closed: bool,
}

impl Process {
    /// A process in the Created state.
    pub(crate) fn new(stdio: StdioPaths) -> Self {
        Process {
            pid: 0,
            state: State::Created,
            reaped: false,
            stdio,
            exit: watch::channel(None).0,
            io: ProcessIo::default(),
            spec: None,
            stdin_closed: false,
        }
    }

    /// Where it is.
    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// Refuse `t` unless the state allows it, without making it.
    pub(crate) fn check(&self, name: &Name<'_>, t: Transition) -> Result<State, InvalidTransition> {
        self.state
            .next(t)
            .ok_or_else(|| InvalidTransition::new(name, t, self.state))
    }

    /// Make transition `t`, or refuse it.
    pub(crate) fn apply(
        &mut self,
        name: &Name<'_>,
        t: Transition,
    ) -> Result<(), InvalidTransition> {
        self.state = self.check(name, t)?;
        Ok(())
    }

    /// Take the io of a started process; closes its stdin at once if CloseIO came first.
    pub(crate) fn set_io(&mut self, io: ProcessIo) {
        if let (Some(closer), true) = (&io.stdin, self.stdin_closed) {
            closer.close();
        }
        self.io = io;
    }

    /// CloseIO: end the process's stdin now or as soon as it has one.
    pub(crate) fn close_stdin(&mut self) {
        self.stdin_closed = true;
        if let Some(closer) = &self.io.stdin {
            closer.close();
        }
    }

    /// Whether it has ended (reaped, or failed to start).
    pub(crate) fn finished(&self) -> bool {
        self.reaped
    }

    /// Whether the reaper's report for `pid` belongs to this process.
    pub(crate) fn awaits_exit_of(&self, pid: i32) -> bool {
        self.pid == pid && pid > 0 && !self.reaped
    }

    /// Take the reaper's report: Stopped (or still Deleted). What to wait for before the
    /// exit is published, and where the exit goes.
    pub(crate) fn reaped(
        &mut self,
        name: &Name<'_>,
    ) -> (Option<oneshot::Receiver<()>>, watch::Sender<Option<Exit>>) {
        self.reaped = true;
        let _ = self.apply(name, Transition::Exit);
        (self.io.io_done.take(), self.exit.clone())
    }

    /// A start that failed: Stopped, with the exit status runc's shim reports for it.
    pub(crate) fn failed_to_start(&mut self, name: &Name<'_>) {
        self.reaped = true;
        let _ = self.apply(name, Transition::Exit);
        self.exit.send_replace(Some(Exit {
            code: 255,
            at: now(),
        }));
    }

    /// Its exit, if it has one.
    pub(crate) fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// Its exit, when it comes.
    pub(crate) fn exit_receiver(&self) -> watch::Receiver<Option<Exit>> {
        self.exit.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use State::*;
        use Transition::*;
        let all = [Created, Running, Paused, Stopped, Deleted];
        let allowed = [
            (Created, Start, Running),
            (Running, Pause, Paused),
            (Paused, Resume, Running),
            (Created, Exit, Stopped),
            (Running, Exit, Stopped),
            (Paused, Exit, Stopped),
            (Deleted, Exit, Deleted),
            (Created, Delete, Deleted),
            (Stopped, Delete, Deleted),
        ];
        for from in all {
            for t in [Start, Pause, Resume, Exit, Delete] {
                let expected = allowed
                    .iter()
                    .find(|(f, tt, _)| *f == from && *tt == t)
                    .map(|(_, _, to)| *to);
                assert_eq!(from.next(t), expected, "{from:?} --{t:?}-->");
            }
        }
    }

    #[test]
    fn refusals_name_the_process_and_why() {
        let mut p = Process::new(StdioPaths::default());
        let init = Name::Init("c1");
        p.apply(&init, Transition::Start).unwrap();
        let e = p.apply(&init, Transition::Start).unwrap_err();
        assert_eq!(e.to_string(), "container c1 is not in created state");
        assert_eq!((e.asked, e.from), (Transition::Start, State::Running));
        let e = p.check(&init, Transition::Delete).unwrap_err();
        assert_eq!(
            e.to_string(),
            "container c1 is still running; kill it first"
        );
        let exec = Name::Exec("c1", "e1");
        let e = p.check(&exec, Transition::Start).unwrap_err();
        assert_eq!(e.to_string(), "exec e1 already started");
        assert_eq!(
            ShimError::from(p.check(&exec, Transition::Delete).unwrap_err()),
            ShimError::Refused("exec e1 is still running".into())
        );
    }
}
