//! The container layer: every container the shim serves, each with its init, its execs and
//! its workers, and their lifecycle (create, start, exec, kill, wait, delete) as explicit state
//! transitions. The Task service translates containerd's requests into calls here; the work
//! below is a [`Backend`]'s; events go out through the one [`Events`] sender, which keeps
//! each process's exit after its start.

mod backend;
mod process;
#[cfg(test)]
mod tests;

pub(crate) use backend::{Backend, CreateTask, Made, Started};
pub(crate) use process::{now, Exit, ProcessIo, State, StdioPaths};

use crate::error::ShimError;
use crate::events::Events;
use crate::exits::SharedExits;
use crate::stdio::release_stdin;
use containerd_shim::protos::events::task::*;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::topics::*;
use process::{Name, Process, Transition};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// One container: its init, its execs, and what runs beside it.
struct Container<W> {
    bundle: String,
    block: u32,
    init: Process,
    execs: HashMap<String, Process>,
    /// Emulation, supervisor and OOM counter; taken by delete.
    workers: Option<Arc<W>>,
}

impl<W> Container<W> {
    fn process(&self, exec_id: &str) -> Option<&Process> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }
}

type Table<W> = Arc<Mutex<HashMap<String, Container<W>>>>;

/// What State reports of a process.
pub(crate) struct Snapshot {
    pub(crate) bundle: String,
    pub(crate) pid: i32,
    pub(crate) state: State,
    pub(crate) stdio: StdioPaths,
    pub(crate) exit: Option<Exit>,
}

/// Every container this shim serves.
pub(crate) struct Containers<B: Backend> {
    backend: Arc<B>,
    table: Table<B::Workers>,
    events: Arc<Events>,
    /// Exits of pids not (yet) in the table; shared with the backend's helper calls.
    exits: SharedExits,
}

fn name<'a>(id: &'a str, exec_id: &'a str) -> Name<'a> {
    if exec_id.is_empty() {
        Name::Init(id)
    } else {
        Name::Exec(id, exec_id)
    }
}

fn not_found(id: &str, exec_id: &str) -> ShimError {
    ShimError::not_found(if exec_id.is_empty() { id } else { exec_id })
}

/// The pid as containerd's messages carry it.
fn wire_pid(pid: i32) -> u32 {
    u32::try_from(pid).unwrap_or(0)
}

impl<B: Backend> Containers<B> {
    /// No containers yet.
    pub(crate) fn new(backend: Arc<B>, events: Arc<Events>, exits: SharedExits) -> Self {
        Containers {
            backend,
            table: Arc::default(),
            events,
            exits,
        }
    }

    /// Create a container; its init waits for Start. Returns the init's pid.
    pub(crate) async fn create(&self, req: CreateTask) -> Result<i32, ShimError> {
        if self.table.lock().await.contains_key(&req.id) {
            return Err(ShimError::AlreadyExists(format!(
                "container {} already exists",
                req.id
            )));
        }
        let since = self.exits.lock().await.mark();
        let made = self.backend.create(&req).await?;
        let pid = made.pid;
        let mut init = Process::new(req.stdio.clone());
        init.pid = pid;
        init.set_io(made.io);
        let workers = Arc::new(made.workers);
        // TaskCreate goes out before the init's TaskExit, even one that came first.
        let starting = self.events.starting().await;
        self.table.lock().await.insert(
            req.id.clone(),
            Container {
                bundle: req.bundle.clone(),
                block: made.block,
                init,
                execs: HashMap::new(),
                workers: Some(workers.clone()),
            },
        );
        let early = self.exits.lock().await.claim(pid, since);
        log::info!("created {} pid {pid} with ID block {}", req.id, made.block);
        let event = TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO {
                stdin: req.stdio.stdin.clone(),
                stdout: req.stdio.stdout.clone(),
                stderr: req.stdio.stderr.clone(),
                terminal: req.stdio.terminal,
                ..Default::default()
            })
            .into(),
            pid: wire_pid(pid),
            ..Default::default()
        };
        starting
            .started(TASK_CREATE_EVENT_TOPIC, Box::new(event))
            .await;
        if let Some(code) = early {
            self.settle_exit(pid, code).await;
        }
        self.watch_oom(&req.id, workers);
        Ok(pid)
    }

    /// Start the init or an exec. Returns its pid.
    pub(crate) async fn start(&self, id: &str, exec_id: &str) -> Result<i32, ShimError> {
        if exec_id.is_empty() {
            self.start_init(id).await
        } else {
            self.start_exec(id, exec_id).await
        }
    }

    async fn start_init(&self, id: &str) -> Result<i32, ShimError> {
        let name = Name::Init(id);
        // Held from releasing the init until TaskStart is out: its exit waits.
        let starting = self.events.starting().await;
        let pid = {
            let table = self.table.lock().await;
            let c = table.get(id).ok_or_else(|| ShimError::not_found(id))?;
            c.init.check(&name, Transition::Start)?;
            c.init.pid
        };
        self.backend.start(id).await.map_err(|e| match e {
            ShimError::Refused(m) => ShimError::Refused(format!("start {id}: {m}")),
            ShimError::Internal(m) => ShimError::Internal(format!("start {id}: {m}")),
            other => other,
        })?;
        if let Some(c) = self.table.lock().await.get_mut(id) {
            // Unless it already exited: the reaper's Stopped stands.
            if c.init.state() == State::Created {
                c.init.apply(&name, Transition::Start)?;
            }
        }
        let event = TaskStart {
            container_id: id.to_string(),
            pid: wire_pid(pid),
            ..Default::default()
        };
        starting
            .started(TASK_START_EVENT_TOPIC, Box::new(event))
            .await;
        Ok(pid)
    }

    async fn start_exec(&self, id: &str, exec_id: &str) -> Result<i32, ShimError> {
        let name = Name::Exec(id, exec_id);
        let (spec, stdio, workers) = {
            let mut table = self.table.lock().await;
            let c = table.get_mut(id).ok_or_else(|| ShimError::not_found(id))?;
            let workers = c.workers.clone();
            let p = c
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| ShimError::not_found(exec_id))?;
            p.check(&name, Transition::Start)?;
            // Taken by the first Start: a second one, while the first runs, is refused too.
            let spec = p
                .spec
                .take()
                .ok_or_else(|| ShimError::Refused(format!("exec {exec_id} already started")))?;
            (spec, p.stdio.clone(), workers)
        };
        let since = self.exits.lock().await.mark();
        let started = self.backend.exec(id, exec_id, spec, &stdio, workers).await;
        let Started { pid, io } = match started {
            Ok(started) => started,
            Err(e) => {
                release_stdin(&stdio.stdin);
                self.with_process(id, exec_id, |p| p.failed_to_start(&name))
                    .await;
                return Err(e);
            }
        };
        self.with_process(id, exec_id, |p| {
            // Still Created: its Start was taken above, and only the reaper moves it on.
            let _ = p.apply(&name, Transition::Start);
            p.set_io(io);
        })
        .await;
        // TaskExecStarted goes out before the exec's TaskExit, even one that came first.
        let starting = self.events.starting().await;
        self.with_process(id, exec_id, |p| p.pid = pid).await;
        let early = self.exits.lock().await.claim(pid, since);
        let event = TaskExecStarted {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            pid: wire_pid(pid),
            ..Default::default()
        };
        starting
            .started(TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(event))
            .await;
        if let Some(code) = early {
            self.settle_exit(pid, code).await;
        }
        Ok(pid)
    }

    /// Run `f` on a process still in the table.
    async fn with_process<R>(
        &self,
        id: &str,
        exec_id: &str,
        f: impl FnOnce(&mut Process) -> R,
    ) -> Option<R> {
        let mut table = self.table.lock().await;
        table
            .get_mut(id)
            .and_then(|c| c.process_mut(exec_id))
            .map(f)
    }

    /// The reaper reported `pid`'s exit: settle the process it belongs to, or keep the exit
    /// for a process whose pid is not known yet (or for whoever watches a helper or agent).
    pub(crate) async fn settle_exit(&self, pid: i32, code: i32) {
        let found = {
            let mut table = self.table.lock().await;
            table.iter_mut().find_map(|(cid, c)| {
                let workers = c.workers.clone();
                let init = c
                    .init
                    .awaits_exit_of(pid)
                    .then_some((String::new(), &mut c.init));
                init.or_else(|| {
                    c.execs
                        .iter_mut()
                        .find(|(_, p)| p.awaits_exit_of(pid))
                        .map(|(exec_id, p)| (exec_id.clone(), p))
                })
                .map(|(exec_id, p)| {
                    let (io_done, exit) = p.reaped(&name(cid, &exec_id));
                    let workers = workers.filter(|_| exec_id.is_empty());
                    (cid.clone(), exec_id, io_done, exit, workers)
                })
            })
        };
        let Some((cid, exec_id, io_done, exit, workers)) = found else {
            self.exits.lock().await.unclaimed(pid, code);
            return;
        };
        if let Some(done) = io_done {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), done).await;
        }
        let at = now();
        let code = u32::try_from(code).unwrap_or(u32::MAX);
        let event = TaskExit {
            id: if exec_id.is_empty() {
                cid.clone()
            } else {
                exec_id
            },
            container_id: cid,
            pid: wire_pid(pid),
            exit_status: code,
            exited_at: Some(at.clone()).into(),
            ..Default::default()
        };
        self.events
            .exit(
                event,
                || workers.is_some_and(|w| B::oom_fired(&w)),
                || {
                    exit.send_replace(Some(Exit { code, at }));
                },
            )
            .await;
    }

    /// Register exec `exec_id` in container `id`, to be started later.
    pub(crate) async fn add_exec(
        &self,
        id: &str,
        exec_id: &str,
        spec: Vec<u8>,
        stdio: StdioPaths,
    ) -> Result<(), ShimError> {
        {
            let mut table = self.table.lock().await;
            let c = table.get_mut(id).ok_or_else(|| ShimError::not_found(id))?;
            match c.init.state() {
                State::Stopped => {
                    return Err(ShimError::Refused(format!("container {id} is stopped")))
                }
                State::Deleted => {
                    return Err(ShimError::Refused(format!(
                        "container {id} is being deleted"
                    )))
                }
                _ => {}
            }
            if c.execs.contains_key(exec_id) {
                return Err(ShimError::AlreadyExists(format!(
                    "exec {exec_id} already exists"
                )));
            }
            let mut p = Process::new(stdio);
            p.spec = Some(spec);
            c.execs.insert(exec_id.to_string(), p);
        }
        let event = TaskExecAdded {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        self.events
            .publish(TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(event))
            .await;
        Ok(())
    }

    /// Signal the init or an exec; with `all`, every process in the container's cgroup.
    pub(crate) async fn kill(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), ShimError> {
        let (pid, finished) = {
            let table = self.table.lock().await;
            let c = table.get(id).ok_or_else(|| ShimError::not_found(id))?;
            let p = c.process(exec_id).ok_or_else(|| not_found(id, exec_id))?;
            (p.pid, p.finished())
        };
        if all && exec_id.is_empty() {
            return self.backend.kill_all(id, signal).await;
        }
        if finished || pid <= 0 {
            return Err(ShimError::NotFound("process already finished".into()));
        }
        self.backend.signal(pid, signal)
    }

    /// Delete an exec, or the container with everything it put on the host. Returns the
    /// process's pid and exit.
    pub(crate) async fn delete(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<(i32, Option<Exit>), ShimError> {
        let name = name(id, exec_id);
        if !exec_id.is_empty() {
            let mut table = self.table.lock().await;
            let c = table.get_mut(id).ok_or_else(|| ShimError::not_found(id))?;
            let p = c
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| ShimError::not_found(exec_id))?;
            p.apply(&name, Transition::Delete)?;
            let p = c
                .execs
                .remove(exec_id)
                .ok_or_else(|| ShimError::not_found(exec_id))?;
            release_stdin(&p.stdio.stdin);
            return Ok((p.pid, p.exited()));
        }
        let (bundle, workers) = {
            let mut table = self.table.lock().await;
            let c = table.get_mut(id).ok_or_else(|| ShimError::not_found(id))?;
            c.init.apply(&name, Transition::Delete)?;
            (c.bundle.clone(), c.workers.take())
        };
        self.backend.teardown(id, &bundle, workers).await;
        let c = self
            .table
            .lock()
            .await
            .remove(id)
            .ok_or_else(|| ShimError::not_found(id))?;
        release_stdin(&c.init.stdio.stdin);
        let exit = c.init.exited().unwrap_or(Exit {
            code: 137,
            at: now(),
        });
        log::info!("deleted {id} and released ID block {}", c.block);
        let event = TaskDelete {
            container_id: id.to_string(),
            pid: wire_pid(c.init.pid),
            exit_status: exit.code,
            exited_at: Some(exit.at.clone()).into(),
            id: id.to_string(),
            ..Default::default()
        };
        self.events
            .publish(TASK_DELETE_EVENT_TOPIC, Box::new(event))
            .await;
        Ok((c.init.pid, Some(exit)))
    }

    /// The process's exit, once it has one.
    pub(crate) async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit, ShimError> {
        let mut rx = {
            let table = self.table.lock().await;
            let c = table.get(id).ok_or_else(|| ShimError::not_found(id))?;
            c.process(exec_id)
                .ok_or_else(|| not_found(id, exec_id))?
                .exit_receiver()
        };
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ShimError::internal("process table dropped"))?
            .clone();
        exit.ok_or_else(|| ShimError::internal("process table dropped"))
    }

    /// Where the process is.
    pub(crate) async fn state(&self, id: &str, exec_id: &str) -> Result<Snapshot, ShimError> {
        let table = self.table.lock().await;
        let c = table.get(id).ok_or_else(|| ShimError::not_found(id))?;
        let p = c.process(exec_id).ok_or_else(|| not_found(id, exec_id))?;
        Ok(Snapshot {
            bundle: c.bundle.clone(),
            pid: p.pid,
            state: p.state(),
            stdio: p.stdio.clone(),
            exit: p.exited(),
        })
    }

    /// CloseIO: end the process's stdin.
    pub(crate) async fn close_io(&self, id: &str, exec_id: &str) -> Result<(), ShimError> {
        let mut table = self.table.lock().await;
        let c = table.get_mut(id).ok_or_else(|| ShimError::not_found(id))?;
        c.process_mut(exec_id)
            .ok_or_else(|| not_found(id, exec_id))?
            .close_stdin();
        Ok(())
    }

    /// Resize the process's terminal, if it has one.
    pub(crate) async fn resize(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), ShimError> {
        let table = self.table.lock().await;
        let c = table.get(id).ok_or_else(|| ShimError::not_found(id))?;
        let p = c.process(exec_id).ok_or_else(|| not_found(id, exec_id))?;
        if let Some(master) = &p.io.console {
            crate::stdio::resize(master, width, height)
                .map_err(|e| ShimError::internal(format!("resize: {e}")))?;
        }
        Ok(())
    }

    /// Freeze (`frozen`) or thaw the container, and tell containerd.
    pub(crate) async fn freeze(&self, id: &str, frozen: bool) -> Result<(), ShimError> {
        let name = Name::Init(id);
        let t = if frozen {
            Transition::Pause
        } else {
            Transition::Resume
        };
        {
            let table = self.table.lock().await;
            let c = table.get(id).ok_or_else(|| ShimError::not_found(id))?;
            c.init.check(&name, t)?;
        }
        self.backend.freeze(id, frozen).await?;
        if let Some(c) = self.table.lock().await.get_mut(id) {
            // Unless it exited meanwhile.
            let _ = c.init.apply(&name, t);
        }
        let container_id = id.to_string();
        if frozen {
            let event = TaskPaused {
                container_id,
                ..Default::default()
            };
            self.events
                .publish(TASK_PAUSED_EVENT_TOPIC, Box::new(event))
                .await;
        } else {
            let event = TaskResumed {
                container_id,
                ..Default::default()
            };
            self.events
                .publish(TASK_RESUMED_EVENT_TOPIC, Box::new(event))
                .await;
        }
        Ok(())
    }

    /// The pids in the container's cgroup.
    pub(crate) async fn pids(&self, id: &str) -> Result<Vec<i32>, ShimError> {
        self.backend.pids(id).await
    }

    /// The container's cgroup statistics.
    pub(crate) async fn stats(&self, id: &str) -> Result<Any, ShimError> {
        self.backend.stats(id).await
    }

    /// New resources for the container's cgroup.
    pub(crate) async fn update(&self, id: &str, resources: &[u8]) -> Result<(), ShimError> {
        self.backend.update(id, resources).await
    }

    /// The init's pid, 0 for an unknown container.
    pub(crate) async fn init_pid(&self, id: &str) -> i32 {
        self.table.lock().await.get(id).map_or(0, |c| c.init.pid)
    }

    /// Whether no container is left.
    pub(crate) async fn is_empty(&self) -> bool {
        self.table.lock().await.is_empty()
    }

    /// Publish TaskOOM whenever the container's cgroup counts another OOM kill: checked twice
    /// a second while the container is in the table (its exit checks once more).
    fn watch_oom(&self, id: &str, workers: Arc<B::Workers>) {
        let (table, events, id) = (self.table.clone(), self.events.clone(), id.to_string());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tick.tick().await;
                if !table.lock().await.contains_key(&id) {
                    return;
                }
                if B::oom_fired(&workers) {
                    events.oom(&id).await;
                }
            }
        });
    }
}
