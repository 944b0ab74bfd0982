//! The containerd Task API over a small process table. Glue only: decisions live in the
//! policy crate, syscalls in core (run in-process) or in the create helper (anything that forks).

use crate::helper::{self, Reply, Request};
use crate::options::policy_from_options;
use crate::process::{now, Container, Exit, Exits, OomWatch, Process, Status, StdioPaths};
use crate::publisher::RemotePublisher;
use crate::stdio::{copy_console, release_stdin, resize, stdin_pipe, FdSocket, StdinCloser};
use async_trait::async_trait;
use containerd_shim::asynchronous::monitor::monitor_subscribe;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::monitor::{Subject, Topic};
use containerd_shim::protos::api::*;
use containerd_shim::protos::events::task::*;
use containerd_shim::protos::protobuf::{EnumOrUnknown, MessageDyn};
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::topics::*;
use containerd_shim::protos::ttrpc::{self, r#async::TtrpcContext, Code};
use containerd_shim::protos::types::task::{ProcessInfo, Status as TaskStatus};
use eci_core::ops::Handle;
use eci_core::{Layout, RootfsMount};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Mutex;

type TResult<T> = ttrpc::Result<T>;

/// The init's pid, in the bundle, for `shim delete` after a crash.
pub const INIT_PID_FILE: &str = "init.pid";

fn err(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

fn not_found(what: &str) -> ttrpc::Error {
    err(Code::NOT_FOUND, format!("{what}: not found"))
}

pub struct TaskService {
    namespace: String,
    containerd_address: String,
    layout: Layout,
    exit: Arc<ExitSignal>,
    publisher: Arc<RemotePublisher>,
    containers: Arc<Mutex<HashMap<String, Container>>>,
    /// Exits of pids not yet in the table (a process can die before create returns), and of
    /// the helpers and agents the shim awaits.
    early_exits: helper::Exits,
    /// Held from releasing an init until its TaskStart is published, and taken to publish an
    /// exit: a TaskExit that reached containerd before its TaskStart would leave dockerd
    /// waiting for an exit it had already been told of.
    events: Arc<Mutex<()>>,
}

impl TaskService {
    pub async fn new(
        namespace: &str,
        containerd_address: &str,
        exit: Arc<ExitSignal>,
        publisher: RemotePublisher,
    ) -> Self {
        let service = TaskService {
            namespace: namespace.to_string(),
            containerd_address: containerd_address.to_string(),
            layout: Layout::default(),
            exit,
            publisher: Arc::new(publisher),
            containers: Arc::default(),
            early_exits: Arc::default(),
            events: Arc::default(),
        };
        service.watch_exits().await;
        service
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        publish(&self.publisher, &self.namespace, topic, event).await;
    }

    /// One task receives every reaped child from containerd-shim's reaper and settles the
    /// process it belongs to. No other code waits for children.
    async fn watch_exits(&self) {
        let mut sub = match monitor_subscribe(Topic::Pid).await {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot subscribe to process exits: {e}");
                return;
            }
        };
        let containers = self.containers.clone();
        let early = self.early_exits.clone();
        let events = self.events.clone();
        let publisher = self.publisher.clone();
        let namespace = self.namespace.clone();
        tokio::spawn(async move {
            while let Some(ev) = sub.rx.recv().await {
                let Subject::Pid(pid) = ev.subject else {
                    continue;
                };
                settle_exit(
                    &containers,
                    &early,
                    &events,
                    &publisher,
                    &namespace,
                    pid,
                    ev.exit_code,
                )
                .await;
            }
        });
    }

    /// Register a freshly started pid, settling it at once if it already died (after `since`,
    /// the exit table's mark taken before its helper started).
    async fn register_pid(&self, id: &str, exec_id: &str, pid: i32, since: u64) {
        let early = self.record_pid(id, exec_id, pid, since).await;
        self.settle_early(pid, early).await;
    }

    /// Put a freshly started pid in the table; the exit code it already had, if it died first.
    async fn record_pid(&self, id: &str, exec_id: &str, pid: i32, since: u64) -> Option<i32> {
        {
            let mut containers = self.containers.lock().await;
            if let Some(p) = containers.get_mut(id).and_then(|c| c.process_mut(exec_id)) {
                p.pid = pid;
            }
        }
        self.early_exits.lock().await.claim(pid, since)
    }

    async fn settle_early(&self, pid: i32, early: Option<i32>) {
        if let Some(code) = early {
            settle_exit(
                &self.containers,
                &self.early_exits,
                &self.events,
                &self.publisher,
                &self.namespace,
                pid,
                code,
            )
            .await;
        }
    }

    async fn console_for(&self, terminal: bool) -> TResult<Option<FdSocket>> {
        if !terminal {
            return Ok(None);
        }
        self.fd_socket("console").map(Some)
    }

    /// Run the helper, receiving the pty master concurrently when there is a terminal. Its
    /// reply, or how it died without one (its processes are killed by then).
    async fn run_helper(
        &self,
        request: Request,
        console: Option<FdSocket>,
        stdin: Option<std::os::fd::OwnedFd>,
    ) -> TResult<(
        Result<Reply, helper::Died>,
        Option<Arc<std::os::fd::OwnedFd>>,
    )> {
        let waker = console.as_ref().map(|c| c.waker());
        let receiver = console.map(|c| tokio::task::spawn_blocking(move || c.receive()));
        let reply = helper::call(request, stdin, &self.early_exits).await;
        let master = match receiver {
            Some(r) if matches!(reply, Ok(Reply::Created { .. } | Reply::Execed { .. })) => {
                Some(Arc::new(
                    r.await
                        .map_err(|e| err(Code::INTERNAL, e.to_string()))?
                        .map_err(|e| err(Code::INTERNAL, format!("console: {e}")))?,
                ))
            }
            Some(r) => {
                // A blocking accept cannot be aborted: wake it, or its thread waits forever.
                if let Some(w) = &waker {
                    unblock(w);
                }
                let _ = r.await;
                None
            }
            None => None,
        };
        Ok((reply, master))
    }
}

async fn publish(
    publisher: &RemotePublisher,
    namespace: &str,
    topic: &str,
    event: Box<dyn MessageDyn>,
) {
    if let Err(e) = publisher
        .publish(ttrpc::context::Context::default(), topic, namespace, event)
        .await
    {
        log::warn!("publish {topic}: {e}");
    }
}

async fn publish_oom(publisher: &RemotePublisher, namespace: &str, id: &str) {
    let event = TaskOOM {
        container_id: id.to_string(),
        ..Default::default()
    };
    publish(publisher, namespace, TASK_OOM_EVENT_TOPIC, Box::new(event)).await;
}

async fn settle_exit(
    containers: &Mutex<HashMap<String, Container>>,
    early: &Mutex<Exits>,
    events: &Mutex<()>,
    publisher: &RemotePublisher,
    namespace: &str,
    pid: i32,
    code: i32,
) {
    let found = {
        let mut containers = containers.lock().await;
        containers.values_mut().find_map(|c| {
            let cid = c.id.clone();
            std::iter::once((String::new(), &mut c.init))
                .chain(c.execs.iter_mut().map(|(k, v)| (k.clone(), v)))
                .find(|(_, p)| p.pid == pid && p.status != Status::Stopped)
                .map(|(exec_id, p)| {
                    p.status = Status::Stopped;
                    (cid, exec_id, p.io_done.take(), p.exit.clone())
                })
                .map(|(cid, exec_id, io, exit)| {
                    let oom = if exec_id.is_empty() {
                        c.oom.clone()
                    } else {
                        None
                    };
                    (cid, exec_id, io, exit, oom)
                })
        })
    };
    let Some((cid, exec_id, io_done, exit, oom)) = found else {
        early.lock().await.unclaimed(pid, code);
        return;
    };
    if let Some(done) = io_done {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), done).await;
    }
    // An OOM kill of the init is reported before its exit, as containerd's clients expect.
    let _ordered = events.lock().await;
    if oom.is_some_and(|o| o.fired()) {
        publish_oom(publisher, namespace, &cid).await;
    }
    let at = now();
    exit.send_replace(Some(Exit {
        code: code as u32,
        at: at.clone(),
    }));
    let id = if exec_id.is_empty() {
        cid.clone()
    } else {
        exec_id
    };
    let event = TaskExit {
        container_id: cid,
        id,
        pid: pid as u32,
        exit_status: code as u32,
        exited_at: Some(at).into(),
        ..Default::default()
    };
    publish(publisher, namespace, TASK_EXIT_EVENT_TOPIC, Box::new(event)).await;
}

fn status_of(p: &Process) -> TaskStatus {
    match p.status {
        Status::Created => TaskStatus::CREATED,
        Status::Running => TaskStatus::RUNNING,
        Status::Paused => TaskStatus::PAUSED,
        Status::Stopped => TaskStatus::STOPPED,
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TResult<CreateTaskResponse> {
        let policy_path = policy_from_options(&req.options)?;
        if !req.checkpoint.is_empty() {
            return Err(err(
                Code::UNIMPLEMENTED,
                "eci: restoring from a checkpoint is not supported",
            ));
        }
        if self.containers.lock().await.contains_key(&req.id) {
            return Err(err(
                Code::ALREADY_EXISTS,
                format!("container {} already exists", req.id),
            ));
        }
        let emulation = self.start_emulation(&req.id, &req.bundle).await?;
        let console = self.console_for(req.terminal).await?;
        let notify = self.fd_socket("seccomp")?;
        let (stdin, stdin_closer) = if req.terminal {
            (None, None)
        } else {
            split_stdin(stdin_pipe(&req.stdin))?
        };
        let request = Request::Create(eci_core::CreateRequest {
            namespace: self.namespace.clone(),
            id: req.id.clone(),
            bundle: PathBuf::from(&req.bundle),
            rootfs: req
                .rootfs
                .iter()
                .map(|m| RootfsMount {
                    typ: m.type_.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                })
                .collect(),
            stdio: eci_core::Stdio {
                stdin: stdin
                    .as_ref()
                    .map(|_| PathBuf::from(eci_core::create::STDIN_FROM_HELPER)),
                stdout: Some(PathBuf::from(&req.stdout)),
                stderr: Some(PathBuf::from(&req.stderr)),
                console_socket: console.as_ref().map(|c| c.path.clone()),
            },
            policy_path,
            containerd_address: Some(PathBuf::from(&self.containerd_address)),
            shim_pid: std::process::id() as i32,
            base: self.layout.base().to_path_buf(),
            emulated: emulation.binds(),
            seccomp_listener: Some(notify.path.clone()),
        });
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let mut init = Process::new(stdio.clone());
        init.set_stdin(stdin_closer);
        let waker = notify.waker();
        let notify = tokio::task::spawn_blocking(move || notify.receive());
        let since = self.early_exits.lock().await.mark();
        let (reply, master) = self.run_helper(request, console, stdin).await?;
        let reply = match reply {
            Ok(reply) => reply,
            Err(died) => {
                release_stdin(&req.stdin);
                unblock(&waker);
                // Nothing undid what the helper had made: the same teardown as `shim delete`.
                drop(emulation);
                let bundle = req.bundle.clone();
                self.on_container(&req.id, move |h| h.destroy(std::path::Path::new(&bundle)))
                    .await?;
                let message = died.describe("create");
                log::error!("create {}: {message}", req.id);
                return Err(err(Code::INTERNAL, message));
            }
        };
        let (pid, block, supervisor) = match reply {
            Reply::Created {
                pid,
                block,
                supervised,
            } => {
                let supervisor = if supervised {
                    let fd = notify
                        .await
                        .map_err(|e| err(Code::INTERNAL, e.to_string()))?;
                    let fd =
                        fd.map_err(|e| err(Code::INTERNAL, format!("seccomp notify fd: {e}")))?;
                    Some(self.start_supervisor(fd, pid, &emulation).await?)
                } else {
                    unblock(&waker);
                    None
                };
                (pid, block, supervisor)
            }
            Reply::Error(e) => {
                release_stdin(&req.stdin);
                unblock(&waker);
                return Err(err(Code::FAILED_PRECONDITION, e));
            }
            Reply::Execed { .. } => {
                return Err(err(Code::INTERNAL, "helper answered exec to create"))
            }
        };
        if let Some(master) = master {
            let (tx, rx) = tokio::sync::oneshot::channel();
            copy_console(master.clone(), &stdio.stdin, &stdio.stdout, tx);
            init.console = Some(master);
            init.io_done = Some(rx);
        }
        emulation.set_owner(block);
        // Where `shim delete` finds the init after a crash of this shim, for the pid of its
        // TaskExit and TaskDelete (as runc's shim does).
        if let Err(e) = std::fs::write(Path::new(&req.bundle).join(INIT_PID_FILE), pid.to_string())
        {
            log::warn!("{}: cannot record the init pid in the bundle: {e}", req.id);
        }
        let cgroups_path = read_cgroups_path(std::path::Path::new(&req.bundle))
            .unwrap_or_else(|| PathBuf::from(format!("/{}/{}", self.namespace, req.id)));
        let oom = Some(Arc::new(OomWatch::new(
            eci_emulation::cgroup::CgroupView::new(&cgroups_path),
        )));
        self.containers.lock().await.insert(
            req.id.clone(),
            Container {
                id: req.id.clone(),
                bundle: req.bundle.clone(),
                block,
                init,
                execs: HashMap::new(),
                emulation: Some(emulation),
                supervisor: supervisor.map(Arc::new),
                oom: oom.clone(),
            },
        );
        self.register_pid(&req.id, "", pid, since).await;
        if let Some(oom) = oom {
            self.watch_oom(&req.id, oom);
        }
        log::info!("created {} pid {pid} with ID block {block}", req.id);
        let event = TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            })
            .into(),
            pid: pid as u32,
            ..Default::default()
        };
        self.publish(TASK_CREATE_EVENT_TOPIC, Box::new(event)).await;
        Ok(CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TResult<StartResponse> {
        if req.exec_id.is_empty() {
            let pid = {
                let containers = self.containers.lock().await;
                let c = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
                if c.init.status != Status::Created {
                    return Err(err(
                        Code::FAILED_PRECONDITION,
                        format!("container {} is not in created state", req.id),
                    ));
                }
                c.init.pid
            };
            let _ordered = self.events.lock().await;
            self.on_container(&req.id, move |h| h.start())
                .await?
                .map_err(|e| err(Code::FAILED_PRECONDITION, format!("start {}: {e}", req.id)))?;
            if let Some(p) = self.containers.lock().await.get_mut(&req.id) {
                if p.init.status == Status::Created {
                    p.init.status = Status::Running;
                }
            }
            let event = TaskStart {
                container_id: req.id.clone(),
                pid: pid as u32,
                ..Default::default()
            };
            self.publish(TASK_START_EVENT_TOPIC, Box::new(event)).await;
            return Ok(StartResponse {
                pid: pid as u32,
                ..Default::default()
            });
        }

        let (spec, stdio) = {
            let mut containers = self.containers.lock().await;
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(&req.id))?;
            let p = c
                .execs
                .get_mut(&req.exec_id)
                .ok_or_else(|| not_found(&req.exec_id))?;
            let spec = p.spec.take().ok_or_else(|| {
                err(
                    Code::FAILED_PRECONDITION,
                    format!("exec {} already started", req.exec_id),
                )
            })?;
            (spec, p.stdio.clone())
        };
        let dir = self.layout.private_bundle(&self.namespace, &req.id);
        let process_path = dir.join(format!("exec-{}.json", req.exec_id));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| err(Code::INTERNAL, e.to_string()))?;
        tokio::fs::write(&process_path, &spec)
            .await
            .map_err(|e| err(Code::INTERNAL, e.to_string()))?;
        let console = self.console_for(stdio.terminal).await?;
        let supervisor = self
            .containers
            .lock()
            .await
            .get(&req.id)
            .and_then(|c| c.supervisor.clone());
        let notify = match &supervisor {
            Some(_) => Some(self.fd_socket("seccomp")?),
            None => None,
        };
        let seccomp_listener = notify.as_ref().map(|n| n.path.clone());
        let waker = notify.as_ref().map(|n| n.waker());
        let notify = notify.map(|n| tokio::task::spawn_blocking(move || n.receive()));
        let (stdin, stdin_closer) = if stdio.terminal {
            (None, None)
        } else {
            split_stdin(stdin_pipe(&stdio.stdin))?
        };
        let request = Request::Exec(eci_core::ExecRequest {
            namespace: self.namespace.clone(),
            id: req.id.clone(),
            process: process_path.clone(),
            stdio: eci_core::Stdio {
                stdin: stdin
                    .as_ref()
                    .map(|_| PathBuf::from(eci_core::create::STDIN_FROM_HELPER)),
                stdout: Some(PathBuf::from(&stdio.stdout)),
                stderr: Some(PathBuf::from(&stdio.stderr)),
                console_socket: console.as_ref().map(|c| c.path.clone()),
            },
            base: self.layout.base().to_path_buf(),
            seccomp_listener,
        });
        let since = self.early_exits.lock().await.mark();
        let (reply, master) = self.run_helper(request, console, stdin).await?;
        let reply = reply.unwrap_or_else(|died| Reply::Error(died.describe("exec")));
        match (&reply, notify, &supervisor) {
            (Reply::Execed { .. }, Some(notify), Some(supervisor)) => match notify.await {
                Ok(Ok(fd)) => supervisor.add(fd),
                _ => log::warn!("exec {}: no seccomp notify fd arrived", req.exec_id),
            },
            _ => {
                if let Some(w) = &waker {
                    unblock(w);
                }
            }
        }
        let _ = tokio::fs::remove_file(&process_path).await;
        let pid = match reply {
            Reply::Execed { pid } => pid,
            Reply::Error(e) => {
                release_stdin(&stdio.stdin);
                if let Some(c) = self.containers.lock().await.get_mut(&req.id) {
                    if let Some(p) = c.execs.get_mut(&req.exec_id) {
                        p.status = Status::Stopped;
                        p.exit.send_replace(Some(Exit {
                            code: 255,
                            at: now(),
                        }));
                    }
                }
                return Err(err(Code::FAILED_PRECONDITION, e));
            }
            Reply::Created { .. } => {
                return Err(err(Code::INTERNAL, "helper answered create to exec"))
            }
        };
        {
            let mut containers = self.containers.lock().await;
            if let Some(p) = containers
                .get_mut(&req.id)
                .and_then(|c| c.execs.get_mut(&req.exec_id))
            {
                p.status = Status::Running;
                p.set_stdin(stdin_closer);
                if let Some(master) = master {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    copy_console(master.clone(), &stdio.stdin, &stdio.stdout, tx);
                    p.console = Some(master);
                    p.io_done = Some(rx);
                }
            }
        }
        // TaskExecStarted goes out before the exec's TaskExit, even one that came first.
        let ordered = self.events.lock().await;
        let early = self.record_pid(&req.id, &req.exec_id, pid, since).await;
        let event = TaskExecStarted {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            pid: pid as u32,
            ..Default::default()
        };
        self.publish(TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(event))
            .await;
        drop(ordered);
        self.settle_early(pid, early).await;
        Ok(StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TResult<StateResponse> {
        let containers = self.containers.lock().await;
        let c = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let p = c
            .process(&req.exec_id)
            .ok_or_else(|| not_found(&req.exec_id))?;
        let exit = p.exited();
        Ok(StateResponse {
            id: if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle: c.bundle.clone(),
            pid: p.pid as u32,
            status: EnumOrUnknown::new(status_of(p)),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: exit.as_ref().map(|e| e.code).unwrap_or(0),
            exited_at: exit.map(|e| e.at).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TResult<Empty> {
        let (pid, stopped) = {
            let containers = self.containers.lock().await;
            let c = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
            let p = c
                .process(&req.exec_id)
                .ok_or_else(|| not_found(&req.exec_id))?;
            (p.pid, p.status == Status::Stopped)
        };
        if req.all && req.exec_id.is_empty() {
            let sig = req.signal as i32;
            self.on_container(&req.id, move |h| h.kill_all(sig))
                .await?
                .map_err(|e| err(Code::INTERNAL, e.to_string()))?;
            return Ok(Empty::new());
        }
        if stopped || pid <= 0 {
            return Err(err(Code::NOT_FOUND, "process already finished"));
        }
        let signal = nix::sys::signal::Signal::try_from(req.signal as i32).map_err(|_| {
            err(
                Code::INVALID_ARGUMENT,
                format!("invalid signal {}", req.signal),
            )
        })?;
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            Ok(()) => Ok(Empty::new()),
            Err(nix::errno::Errno::ESRCH) => Err(err(Code::NOT_FOUND, "process already finished")),
            Err(e) => Err(err(Code::INTERNAL, format!("kill {pid}: {e}"))),
        }
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TResult<DeleteResponse> {
        if !req.exec_id.is_empty() {
            let mut containers = self.containers.lock().await;
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(&req.id))?;
            let p = c
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| not_found(&req.exec_id))?;
            if p.status == Status::Running {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    format!("exec {} is still running", req.exec_id),
                ));
            }
            let p = c.execs.remove(&req.exec_id).expect("present");
            release_stdin(&p.stdio.stdin);
            let exit = p.exited();
            return Ok(DeleteResponse {
                pid: p.pid as u32,
                exit_status: exit.as_ref().map(|e| e.code).unwrap_or(0),
                exited_at: exit.map(|e| e.at).into(),
                ..Default::default()
            });
        }
        let (pid, status) = {
            let containers = self.containers.lock().await;
            let c = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
            (c.init.pid, c.init.status)
        };
        if matches!(status, Status::Running | Status::Paused) {
            return Err(err(
                Code::FAILED_PRECONDITION,
                format!("container {} is still running; kill it first", req.id),
            ));
        }
        let (bundle, supervisor) = {
            let containers = self.containers.lock().await;
            containers
                .get(&req.id)
                .map(|c| (c.bundle.clone(), c.supervisor.clone()))
                .unwrap_or_default()
        };
        // Its thread and agent are charged to the container's cgroup, which destroy removes.
        if let Some(supervisor) = supervisor {
            let _ = tokio::task::spawn_blocking(move || supervisor.stop()).await;
        }
        // The emulation is unmounted first (its init, and with it the pid namespace, is gone),
        // by its own session: destroy's unmount, meant for a crashed shim's, would leave the
        // session's unmount failing with ENOENT.
        let emulation = self
            .containers
            .lock()
            .await
            .get_mut(&req.id)
            .and_then(|c| c.emulation.take());
        if let Some(emulation) = emulation {
            let _ = tokio::task::spawn_blocking(move || drop(emulation)).await;
        }
        self.on_container(&req.id, move |h| h.destroy(std::path::Path::new(&bundle)))
            .await?;
        let c = self
            .containers
            .lock()
            .await
            .remove(&req.id)
            .ok_or_else(|| not_found(&req.id))?;
        release_stdin(&c.init.stdio.stdin);
        let exit = c.init.exited().unwrap_or(Exit {
            code: 137,
            at: now(),
        });
        log::info!("deleted {} and released ID block {}", c.id, c.block);
        let event = TaskDelete {
            container_id: req.id.clone(),
            pid: pid as u32,
            exit_status: exit.code,
            exited_at: Some(exit.at.clone()).into(),
            id: req.id.clone(),
            ..Default::default()
        };
        self.publish(TASK_DELETE_EVENT_TOPIC, Box::new(event)).await;
        Ok(DeleteResponse {
            pid: pid as u32,
            exit_status: exit.code,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TResult<WaitResponse> {
        let mut rx = {
            let containers = self.containers.lock().await;
            let c = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
            c.process(&req.exec_id)
                .ok_or_else(|| not_found(&req.exec_id))?
                .exit
                .subscribe()
        };
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| err(Code::INTERNAL, "process table dropped"))?
            .clone()
            .expect("waited for Some");
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TResult<Empty> {
        let mut containers = self.containers.lock().await;
        let c = containers
            .get_mut(&req.id)
            .ok_or_else(|| not_found(&req.id))?;
        if c.init.status == Status::Stopped {
            return Err(err(
                Code::FAILED_PRECONDITION,
                format!("container {} is stopped", req.id),
            ));
        }
        if c.execs.contains_key(&req.exec_id) {
            return Err(err(
                Code::ALREADY_EXISTS,
                format!("exec {} already exists", req.exec_id),
            ));
        }
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        let mut p = Process::new(StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        });
        p.spec = Some(spec);
        c.execs.insert(req.exec_id.clone(), p);
        drop(containers);
        let event = TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        self.publish(TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(event))
            .await;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TResult<Empty> {
        let containers = self.containers.lock().await;
        let c = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let p = c
            .process(&req.exec_id)
            .ok_or_else(|| not_found(&req.exec_id))?;
        if let Some(master) = &p.console {
            resize(master, req.width, req.height)
                .map_err(|e| err(Code::INTERNAL, format!("resize: {e}")))?;
        }
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TResult<Empty> {
        let mut containers = self.containers.lock().await;
        let c = containers
            .get_mut(&req.id)
            .ok_or_else(|| not_found(&req.id))?;
        let p = if req.exec_id.is_empty() {
            Some(&mut c.init)
        } else {
            c.execs.get_mut(&req.exec_id)
        };
        p.ok_or_else(|| not_found(&req.exec_id))?.close_stdin();
        Ok(Empty::new())
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TResult<PidsResponse> {
        let pids = self
            .on_container(&req.id, move |h| h.pids())
            .await?
            .map_err(|e| err(Code::INTERNAL, e.to_string()))?;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid: pid as u32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TResult<Empty> {
        self.freeze(&req.id, true).await?;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TResult<Empty> {
        self.freeze(&req.id, false).await?;
        Ok(Empty::new())
    }

    async fn checkpoint(&self, _ctx: &TtrpcContext, _req: CheckpointTaskRequest) -> TResult<Empty> {
        Err(err(
            Code::UNIMPLEMENTED,
            "eci: checkpoint is not supported by the ECI runtime",
        ))
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TResult<Empty> {
        let resources: eci_core::ops::Resources = serde_json::from_slice(&req.resources.value)
            .map_err(|e| {
                err(
                    Code::INVALID_ARGUMENT,
                    format!("update: resources are not an OCI LinuxResources: {e}"),
                )
            })?;
        self.on_container(&req.id, move |h| h.update(&resources))
            .await?
            .map_err(|e| err(Code::INTERNAL, e.to_string()))?;
        Ok(Empty::new())
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TResult<StatsResponse> {
        let (stats, oom) = self
            .on_container(&req.id, move |h| {
                // A kernel without oom_kill in the file (before 4.13) still has the rest.
                h.stats()
                    .map(|s| (s, h.memory_events().unwrap_or_default()))
            })
            .await?
            .map_err(|e| err(Code::INTERNAL, e.to_string()))?;
        Ok(StatsResponse {
            stats: Some(crate::metrics::to_any(&stats, &oom)).into(),
            ..Default::default()
        })
    }

    async fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> TResult<ConnectResponse> {
        let containers = self.containers.lock().await;
        let task_pid = containers.get(&req.id).map(|c| c.init.pid).unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task_pid as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TResult<Empty> {
        if self.containers.lock().await.is_empty() {
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}

impl TaskService {
    /// Run an operation on the container's kernel state (cgroup, libcontainer state, mounts)
    /// on a blocking thread.
    async fn on_container<T: Send + 'static>(
        &self,
        id: &str,
        op: impl FnOnce(&Handle) -> T + Send + 'static,
    ) -> TResult<T> {
        let (layout, namespace, id) = (self.layout.clone(), self.namespace.clone(), id.to_string());
        tokio::task::spawn_blocking(move || {
            op(&Handle {
                layout: &layout,
                namespace: &namespace,
                id: &id,
            })
        })
        .await
        .map_err(|e| err(Code::INTERNAL, e.to_string()))
    }

    /// Publish TaskOOM whenever the container's cgroup counts another OOM kill: checked twice a
    /// second while the container is in the table, and when its init exits.
    fn watch_oom(&self, id: &str, oom: Arc<OomWatch>) {
        let (containers, publisher, namespace, id) = (
            self.containers.clone(),
            self.publisher.clone(),
            self.namespace.clone(),
            id.to_string(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tick.tick().await;
                if !containers.lock().await.contains_key(&id) {
                    return;
                }
                if oom.fired() {
                    publish_oom(&publisher, &namespace, &id).await;
                }
            }
        });
    }

    fn fd_socket(&self, what: &str) -> TResult<FdSocket> {
        FdSocket::new(&self.layout.base().join("sockets"), what)
            .map_err(|e| err(Code::INTERNAL, format!("{what} socket: {e}")))
    }

    /// Start the container's mount supervisor: the agent inside its user namespace, and the
    /// thread serving its notify fd.
    async fn start_supervisor(
        &self,
        notify: std::os::fd::OwnedFd,
        init: i32,
        emulation: &eci_emulation::Emulation,
    ) -> TResult<eci_emulation::Supervisor> {
        let emulated: Vec<(String, std::path::PathBuf)> = emulation
            .binds()
            .into_iter()
            .map(|(source, target, _)| (target.display().to_string(), source))
            .collect();
        let pinned: Vec<String> = PINNED.iter().map(|s| s.to_string()).collect();
        let view = emulation.view();
        let exits = self.early_exits.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<eci_emulation::Supervisor> {
            let pinned: Vec<&str> = pinned.iter().map(String::as_str).collect();
            let protected = eci_emulation::supervisor::measure(init, &pinned, &emulated);
            let protected = serde_json::to_string(&protected).map_err(std::io::Error::other)?;
            let exe = std::env::current_exe()?;
            let agent = move || -> std::io::Result<(std::os::unix::net::UnixStream, i32)> {
                let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
                // Reaped by the shim's reaper like every child; it exits when `ours` closes.
                // The supervisor watches it with a pidfd (and starts another when it dies);
                // its exit is nobody's in the exit table. This runs on the supervisor's
                // thread, outside the async runtime.
                let since = exits.blocking_lock().mark();
                let child = std::process::Command::new(&exe)
                    .arg(crate::helper::AGENT_ARG)
                    .arg(init.to_string())
                    .arg(&protected)
                    .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
                        theirs,
                    )))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()?;
                drop(exits.blocking_lock().watch(child.id() as i32, since));
                Ok((ours, child.id() as i32))
            };
            let user_ns = std::fs::metadata(format!("/proc/{init}/ns/user"))?;
            eci_emulation::Supervisor::start(
                notify,
                Box::new(agent),
                std::os::unix::fs::MetadataExt::ino(&user_ns),
                view,
            )
        })
        .await
        .map_err(|e| err(Code::INTERNAL, e.to_string()))?
        .map_err(|e| {
            err(
                Code::INTERNAL,
                format!("eci: cannot start the mount supervisor: {e}"),
            )
        })
    }

    /// Mount the container's /proc and /sys emulation before the container exists, so that
    /// libcontainer can bind its files.
    async fn start_emulation(&self, id: &str, bundle: &str) -> TResult<eci_emulation::Emulation> {
        let dir = self.layout.emulation(&self.namespace, id);
        let cgroups_path = read_cgroups_path(std::path::Path::new(bundle))
            .unwrap_or_else(|| PathBuf::from(format!("/{}/{id}", self.namespace)));
        let id = id.to_string();
        tokio::task::spawn_blocking(move || {
            eci_emulation::Emulation::start(&dir, &cgroups_path, &id)
        })
        .await
        .map_err(|e| err(Code::INTERNAL, e.to_string()))?
        .map_err(|e| {
            err(
                Code::INTERNAL,
                format!("eci: cannot start the /proc and /sys emulation: {e}"),
            )
        })
    }

    /// Freeze or thaw the container's cgroup, record it, and tell containerd.
    async fn freeze(&self, id: &str, frozen: bool) -> TResult<()> {
        self.on_container(id, move |h| if frozen { h.pause() } else { h.resume() })
            .await?
            .map_err(|e| err(Code::FAILED_PRECONDITION, e.to_string()))?;
        if let Some(c) = self.containers.lock().await.get_mut(id) {
            c.init.status = if frozen {
                Status::Paused
            } else {
                Status::Running
            };
        }
        let container_id = id.to_string();
        if frozen {
            let event = TaskPaused {
                container_id,
                ..Default::default()
            };
            self.publish(TASK_PAUSED_EVENT_TOPIC, Box::new(event)).await;
        } else {
            let event = TaskResumed {
                container_id,
                ..Default::default()
            };
            self.publish(TASK_RESUMED_EVENT_TOPIC, Box::new(event))
                .await;
        }
        Ok(())
    }
}

/// Mounts that may never be unmounted or moved away (besides the emulated files): the root,
/// /proc and /sys, and what the runtime masks.
const PINNED: &[&str] = &[
    "/",
    "/proc",
    "/sys",
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Wake a socket waiting for an fd that will not come.
fn unblock(path: &std::path::Path) {
    let _ = std::os::unix::net::UnixStream::connect(path);
}

/// linux.cgroupsPath of the bundle's spec, read loosely: a malformed spec is reported by create.
fn read_cgroups_path(bundle: &std::path::Path) -> Option<PathBuf> {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).ok()?).ok()?;
    spec.get("linux")?
        .get("cgroupsPath")?
        .as_str()
        .map(PathBuf::from)
}

/// The process's end of a stdin pipe, and the handle CloseIO uses to end it.
fn split_stdin(
    pipe: std::io::Result<Option<(std::os::fd::OwnedFd, StdinCloser)>>,
) -> TResult<(Option<std::os::fd::OwnedFd>, Option<StdinCloser>)> {
    match pipe.map_err(|e| err(Code::INTERNAL, format!("stdin: {e}")))? {
        Some((fd, closer)) => Ok((Some(fd), Some(closer))),
        None => Ok((None, None)),
    }
}
