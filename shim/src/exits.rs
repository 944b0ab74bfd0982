//! The exits of children the process table does not (yet) hold. containerd-shim's reaper is
//! the only waiter (`waitpid(-1)`), so this is where a helper's or an agent's death is learnt,
//! and where a container process that died before its creator reported its pid waits to be
//! claimed.

use std::collections::HashMap;

/// Exits the shim's one reaper reported for pids the process table did not hold, and the
/// helpers and agents whose exit someone awaits. containerd-shim's reaper is the only waiter
/// (`waitpid(-1)`), so this is where a helper's death is learnt.
#[derive(Default)]
pub(crate) struct Exits {
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
    pub(crate) fn mark(&self) -> u64 {
        self.seq
    }

    /// An exit the process table did not claim: a watcher's, or kept for a later claim.
    pub(crate) fn unclaimed(&mut self, pid: i32, code: i32) {
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
    pub(crate) fn watch(&mut self, pid: i32, since: u64) -> tokio::sync::oneshot::Receiver<i32> {
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
    pub(crate) fn claim(&mut self, pid: i32, since: u64) -> Option<i32> {
        match self.early.remove(&pid) {
            Some((code, seq, _)) if seq > since => Some(code),
            _ => None,
        }
    }
}

/// The exit table as the shim shares it: the task service settles into it, helper calls and
/// agent starts watch it.
pub(crate) type SharedExits = std::sync::Arc<tokio::sync::Mutex<Exits>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_only_exits_after_the_mark() {
        let mut exits = Exits::default();
        exits.unclaimed(7, 1);
        let since = exits.mark();
        assert_eq!(
            exits.claim(7, since),
            None,
            "an exit before the mark is a stranger's"
        );
        exits.unclaimed(7, 2);
        assert_eq!(exits.claim(7, since), Some(2));
        assert_eq!(exits.claim(7, since), None, "claimed once");
        let mut rx = exits.watch(8, exits.mark());
        exits.unclaimed(8, 9);
        assert_eq!(rx.try_recv(), Ok(9));
        assert_eq!(exits.claim(8, 0), None, "a watched exit is not kept");
    }
}
