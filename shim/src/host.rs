//! The shim's [`Backend`]: the create and exec helper processes, the kernel operations on a
//! created container (run in-process on a blocking thread: they fork nothing), and the
//! container's workers (the /proc and /sys emulation, the mount supervisor, the OOM counter).

use crate::container::{Backend, CreateTask, Made, ProcessIo, Started, StdioPaths};
use crate::error::ShimError;
use crate::exits::SharedExits;
use crate::helper::{self, Reply, Request};
use crate::stdio::{copy_console, release_stdin, stdin_pipe, FdSocket, StdinCloser};
use async_trait::async_trait;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use eci_core::ops::Handle;
use eci_core::{Layout, RootfsMount};
use eci_emulation::workers::OomWatch;
use eci_emulation::{Emulation, Supervisor};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The host: helpers, kernel, workers.
pub(crate) struct Host {
    namespace: String,
    containerd_address: String,
    layout: Layout,
    /// Where the reaper's reports of helpers and agents are awaited.
    exits: SharedExits,
}

/// What runs beside a container while it exists.
pub(crate) struct Workers {
    /// Its /proc and /sys emulation; taken (and unmounted) by teardown.
    emulation: std::sync::Mutex<Option<Emulation>>,
    /// Its mount supervisor (absent when its profile traps nothing).
    supervisor: Option<Arc<Supervisor>>,
    /// Its cgroup's OOM-kill counter.
    oom: OomWatch,
}

impl Host {
    /// The host for containerd namespace `namespace`, whose containerd listens at
    /// `containerd_address`.
    pub(crate) fn new(namespace: &str, containerd_address: &str, exits: SharedExits) -> Self {
        Host {
            namespace: namespace.to_string(),
            containerd_address: containerd_address.to_string(),
            layout: Layout::default(),
            exits,
        }
    }

    /// Run an operation on the container's kernel state (cgroup, libcontainer state, mounts)
    /// on a blocking thread.
    async fn on_container<T: Send + 'static>(
        &self,
        id: &str,
        op: impl FnOnce(&Handle) -> T + Send + 'static,
    ) -> Result<T, ShimError> {
        let (layout, namespace, id) = (self.layout.clone(), self.namespace.clone(), id.to_string());
        Ok(tokio::task::spawn_blocking(move || {
            op(&Handle {
                layout: &layout,
                namespace: &namespace,
                id: &id,
            })
        })
        .await?)
    }

    fn fd_socket(&self, what: &str) -> Result<FdSocket, ShimError> {
        FdSocket::new(&self.layout.base().join("sockets"), what)
            .map_err(|e| ShimError::internal(format!("{what} socket: {e}")))
    }

    fn console_for(&self, terminal: bool) -> Result<Option<FdSocket>, ShimError> {
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
        stdin: Option<OwnedFd>,
    ) -> Result<(Result<Reply, helper::Died>, Option<Arc<OwnedFd>>), ShimError> {
        let waker = console.as_ref().map(FdSocket::waker);
        let receiver = console.map(|c| tokio::task::spawn_blocking(move || c.receive()));
        let reply = helper::call(request, stdin, &self.exits).await;
        let master = match receiver {
            Some(r) if matches!(reply, Ok(Reply::Created { .. } | Reply::Execed { .. })) => {
                Some(Arc::new(
                    r.await?
                        .map_err(|e| ShimError::internal(format!("console: {e}")))?,
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

    /// Mount the container's /proc and /sys emulation before the container exists, so that
    /// libcontainer can bind its files.
    async fn start_emulation(&self, id: &str, bundle: &str) -> Result<Emulation, ShimError> {
        let dir = self.layout.emulation(&self.namespace, id);
        let cgroups_path = eci_core::bundle::cgroups_path(Path::new(bundle), &self.namespace, id);
        let id = id.to_string();
        tokio::task::spawn_blocking(move || Emulation::start(&dir, &cgroups_path, &id))
            .await?
            .map_err(|e| {
                ShimError::internal(format!(
                    "eci: cannot start the /proc and /sys emulation: {e}"
                ))
            })
    }

    /// Start the container's mount supervisor; its agent is this binary, a child the shim's
    /// reaper reaps like every other (its exit is nobody's in the table).
    async fn start_supervisor(
        &self,
        notify: OwnedFd,
        init: i32,
        emulation: &Emulation,
    ) -> Result<Supervisor, ShimError> {
        let exits = self.exits.clone();
        let spawn = move |command: &mut std::process::Command| -> std::io::Result<u32> {
            // On the supervisor's thread, outside the async runtime.
            let since = exits.blocking_lock().mark();
            let child = command.spawn()?;
            let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
            drop(exits.blocking_lock().watch(pid, since));
            Ok(child.id())
        };
        // Measuring reads the init's mountinfo: off the runtime. The emulation's binds and
        // view are taken here, where it is borrowed.
        let inputs = eci_emulation::workers::SupervisorInputs::of(emulation);
        tokio::task::spawn_blocking(move || inputs.supervise(notify, init, Box::new(spawn)))
            .await?
            .map_err(|e| {
                ShimError::internal(format!("eci: cannot start the mount supervisor: {e}"))
            })
    }

    /// Undo a create whose helper made (part of) the container: the same teardown as
    /// `shim delete`.
    async fn undo_create(&self, id: &str, bundle: &str, stdin: &str, emulation: Emulation) {
        release_stdin(stdin);
        drop(emulation);
        let bundle = PathBuf::from(bundle);
        let _ = self.on_container(id, move |h| h.destroy(&bundle)).await;
    }

    /// The shim's side of a started process's stdio.
    fn process_io(
        stdio: &StdioPaths,
        stdin: Option<StdinCloser>,
        master: Option<Arc<OwnedFd>>,
    ) -> ProcessIo {
        let mut io = ProcessIo {
            stdin,
            ..Default::default()
        };
        if let Some(master) = master {
            let (tx, rx) = tokio::sync::oneshot::channel();
            copy_console(master.clone(), &stdio.stdin, &stdio.stdout, tx);
            io.console = Some(master);
            io.io_done = Some(rx);
        }
        io
    }
}

fn helper_stdio(
    stdio: &StdioPaths,
    stdin: &Option<OwnedFd>,
    console: &Option<FdSocket>,
) -> eci_core::Stdio {
    eci_core::Stdio {
        stdin: stdin
            .as_ref()
            .map(|_| PathBuf::from(eci_core::create::STDIN_FROM_HELPER)),
        stdout: Some(PathBuf::from(&stdio.stdout)),
        stderr: Some(PathBuf::from(&stdio.stderr)),
        console_socket: console.as_ref().map(|c| c.path.clone()),
    }
}

#[async_trait]
impl Backend for Host {
    type Workers = Workers;

    async fn create(&self, req: &CreateTask) -> Result<Made<Workers>, ShimError> {
        let emulation = self.start_emulation(&req.id, &req.bundle).await?;
        let console = self.console_for(req.stdio.terminal)?;
        let notify = self.fd_socket("seccomp")?;
        let (stdin, stdin_closer) = if req.stdio.terminal {
            (None, None)
        } else {
            split_stdin(stdin_pipe(&req.stdio.stdin))?
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
            stdio: helper_stdio(&req.stdio, &stdin, &console),
            policy_path: req.policy_path.clone(),
            containerd_address: Some(PathBuf::from(&self.containerd_address)),
            shim_pid: i32::try_from(std::process::id()).unwrap_or(0),
            base: self.layout.base().to_path_buf(),
            emulated: emulation.binds(),
            seccomp_listener: Some(notify.path.clone()),
        });
        let waker = notify.waker();
        let notify = tokio::task::spawn_blocking(move || notify.receive());
        let (reply, master) = self.run_helper(request, console, stdin).await?;
        let (pid, block, supervised) = match reply {
            Ok(Reply::Created {
                pid,
                block,
                supervised,
            }) => (pid, block, supervised),
            Ok(Reply::Failed { kind, message }) => {
                release_stdin(&req.stdio.stdin);
                unblock(&waker);
                return Err(ShimError::of_kind(kind, message));
            }
            Ok(reply @ (Reply::Execed { .. } | Reply::Forked { .. })) => {
                return Err(ShimError::internal(format!(
                    "helper answered {reply:?} to create"
                )))
            }
            Err(died) => {
                // Nothing undid what the helper had made.
                unblock(&waker);
                self.undo_create(&req.id, &req.bundle, &req.stdio.stdin, emulation)
                    .await;
                let message = died.describe("create");
                log::error!("create {}: {message}", req.id);
                return Err(ShimError::Internal(message));
            }
        };
        let supervisor = if supervised {
            let fd = match notify.await {
                Ok(Ok(fd)) => Ok(fd),
                Ok(Err(e)) => Err(ShimError::internal(format!("seccomp notify fd: {e}"))),
                Err(e) => Err(ShimError::from(e)),
            };
            let started = match fd {
                Ok(fd) => self.start_supervisor(fd, pid, &emulation).await,
                Err(e) => Err(e),
            };
            match started {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    // A container without its supervisor must not run.
                    self.undo_create(&req.id, &req.bundle, &req.stdio.stdin, emulation)
                        .await;
                    return Err(e);
                }
            }
        } else {
            unblock(&waker);
            None
        };
        emulation.set_owner(block);
        if let Err(e) = eci_core::bundle::record_init_pid(Path::new(&req.bundle), pid) {
            log::warn!("{}: cannot record the init pid in the bundle: {e}", req.id);
        }
        let cgroups_path =
            eci_core::bundle::cgroups_path(Path::new(&req.bundle), &self.namespace, &req.id);
        Ok(Made {
            pid,
            block,
            workers: Workers {
                emulation: std::sync::Mutex::new(Some(emulation)),
                supervisor,
                oom: OomWatch::new(&cgroups_path),
            },
            io: Host::process_io(&req.stdio, stdin_closer, master),
        })
    }

    async fn start(&self, id: &str) -> Result<(), ShimError> {
        Ok(self.on_container(id, |h| h.start()).await??)
    }

    async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        spec: Vec<u8>,
        stdio: &StdioPaths,
        workers: Option<Arc<Workers>>,
    ) -> Result<Started, ShimError> {
        let dir = self.layout.private_bundle(&self.namespace, id);
        let process_path = dir.join(format!("exec-{exec_id}.json"));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(ShimError::internal)?;
        tokio::fs::write(&process_path, &spec)
            .await
            .map_err(ShimError::internal)?;
        let console = self.console_for(stdio.terminal)?;
        let supervisor = workers.and_then(|w| w.supervisor.clone());
        let notify = match &supervisor {
            Some(_) => Some(self.fd_socket("seccomp")?),
            None => None,
        };
        let seccomp_listener = notify.as_ref().map(|n| n.path.clone());
        let waker = notify.as_ref().map(FdSocket::waker);
        let notify = notify.map(|n| tokio::task::spawn_blocking(move || n.receive()));
        let (stdin, stdin_closer) = if stdio.terminal {
            (None, None)
        } else {
            split_stdin(stdin_pipe(&stdio.stdin))?
        };
        let request = Request::Exec(eci_core::ExecRequest {
            namespace: self.namespace.clone(),
            id: id.to_string(),
            process: process_path.clone(),
            stdio: helper_stdio(stdio, &stdin, &console),
            base: self.layout.base().to_path_buf(),
            seccomp_listener,
        });
        let (reply, master) = self.run_helper(request, console, stdin).await?;
        let reply = reply.unwrap_or_else(|died| Reply::internal(died.describe("exec")));
        match (&reply, notify, &supervisor) {
            (Reply::Execed { .. }, Some(notify), Some(supervisor)) => match notify.await {
                Ok(Ok(fd)) => supervisor.add(fd),
                _ => log::warn!("exec {exec_id}: no seccomp notify fd arrived"),
            },
            _ => {
                if let Some(w) = &waker {
                    unblock(w);
                }
            }
        }
        let _ = tokio::fs::remove_file(&process_path).await;
        match reply {
            Reply::Execed { pid } => Ok(Started {
                pid,
                io: Host::process_io(stdio, stdin_closer, master),
            }),
            Reply::Failed { kind, message } => Err(ShimError::of_kind(kind, message)),
            reply @ (Reply::Created { .. } | Reply::Forked { .. }) => Err(ShimError::internal(
                format!("helper answered {reply:?} to exec"),
            )),
        }
    }

    fn signal(&self, pid: i32, signal: u32) -> Result<(), ShimError> {
        let signal = i32::try_from(signal)
            .ok()
            .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
            .ok_or_else(|| ShimError::InvalidArgument(format!("invalid signal {signal}")))?;
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::ESRCH) => {
                Err(ShimError::NotFound("process already finished".into()))
            }
            Err(e) => Err(ShimError::internal(format!("kill {pid}: {e}"))),
        }
    }

    async fn kill_all(&self, id: &str, signal: u32) -> Result<(), ShimError> {
        // A number no signal has probes (signal 0), as kill(2) would.
        let signal = i32::try_from(signal).unwrap_or(0);
        self.on_container(id, move |h| h.kill_all(signal)).await??;
        Ok(())
    }

    async fn freeze(&self, id: &str, frozen: bool) -> Result<(), ShimError> {
        Ok(self
            .on_container(id, move |h| if frozen { h.pause() } else { h.resume() })
            .await??)
    }

    async fn pids(&self, id: &str) -> Result<Vec<i32>, ShimError> {
        Ok(self.on_container(id, |h| h.pids()).await??)
    }

    async fn stats(&self, id: &str) -> Result<Any, ShimError> {
        let (stats, oom) = self
            .on_container(id, |h| {
                // A kernel without oom_kill in the file (before 4.13) still has the rest.
                h.stats()
                    .map(|s| (s, h.memory_events().unwrap_or_default()))
            })
            .await??;
        Ok(crate::metrics::to_any(&stats, &oom))
    }

    async fn update(&self, id: &str, resources: &[u8]) -> Result<(), ShimError> {
        let resources: eci_core::ops::Resources =
            serde_json::from_slice(resources).map_err(|e| {
                ShimError::InvalidArgument(format!(
                    "update: resources are not an OCI LinuxResources: {e}"
                ))
            })?;
        Ok(self
            .on_container(id, move |h| h.update(&resources))
            .await??)
    }

    async fn teardown(&self, id: &str, bundle: &str, workers: Option<Arc<Workers>>) {
        if let Some(workers) = workers {
            // Its thread and agent are charged to the container's cgroup, which destroy
            // removes.
            if let Some(supervisor) = workers.supervisor.clone() {
                let _ = tokio::task::spawn_blocking(move || supervisor.stop()).await;
            }
            // The emulation is unmounted first (its init, and with it the pid namespace, is
            // gone), by its own session: destroy's unmount, meant for a crashed shim's, would
            // leave the session's unmount failing with ENOENT.
            let emulation = workers
                .emulation
                .lock()
                .map(|mut e| e.take())
                .unwrap_or_default();
            if let Some(emulation) = emulation {
                let _ = tokio::task::spawn_blocking(move || drop(emulation)).await;
            }
        }
        let bundle = PathBuf::from(bundle);
        let _ = self.on_container(id, move |h| h.destroy(&bundle)).await;
    }

    fn oom_fired(workers: &Workers) -> bool {
        workers.oom.fired()
    }
}

/// Wake a socket waiting for an fd that will not come.
fn unblock(path: &Path) {
    let _ = std::os::unix::net::UnixStream::connect(path);
}

/// The process's end of a stdin pipe, and the handle CloseIO uses to end it.
fn split_stdin(
    pipe: std::io::Result<Option<(OwnedFd, StdinCloser)>>,
) -> Result<(Option<OwnedFd>, Option<StdinCloser>), ShimError> {
    match pipe.map_err(|e| ShimError::internal(format!("stdin: {e}")))? {
        Some((fd, closer)) => Ok((Some(fd), Some(closer))),
        None => Ok((None, None)),
    }
}
