//! The containerd Task API: each method translates its request into a call on the container
//! layer ([`Containers`]) and the answer back. Lifecycle, state and event order live there;
//! the work below it is the [`Host`]'s.

use crate::container::{Containers, CreateTask, StdioPaths};
use crate::error::ShimError;
use crate::events::{Containerd, Events};
use crate::exits::SharedExits;
use crate::host::Host;
use crate::options::policy_from_options;
use crate::publisher::RemotePublisher;
use async_trait::async_trait;
use containerd_shim::asynchronous::monitor::monitor_subscribe;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::monitor::{Subject, Topic};
use containerd_shim::protos::api::*;
use containerd_shim::protos::protobuf::EnumOrUnknown;
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc::{self, r#async::TtrpcContext};
use containerd_shim::protos::types::task::ProcessInfo;
use std::sync::Arc;

type TResult<T> = ttrpc::Result<T>;

/// The Task service of one shim.
pub(crate) struct TaskService {
    exit: Arc<ExitSignal>,
    containers: Arc<Containers<Host>>,
}

/// The pid as containerd's messages carry it.
fn wire_pid(pid: i32) -> u32 {
    u32::try_from(pid).unwrap_or(0)
}

impl TaskService {
    /// The service for containerd namespace `namespace`; events go to `publisher`.
    pub(crate) async fn new(
        namespace: &str,
        containerd_address: &str,
        exit: Arc<ExitSignal>,
        publisher: RemotePublisher,
    ) -> Self {
        let exits = SharedExits::default();
        let events = Events::new(Arc::new(Containerd {
            publisher,
            namespace: namespace.to_string(),
        }));
        let host = Host::new(namespace, containerd_address, exits.clone());
        let service = TaskService {
            exit,
            containers: Arc::new(Containers::new(Arc::new(host), Arc::new(events), exits)),
        };
        service.watch_exits().await;
        service
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
        tokio::spawn(async move {
            while let Some(ev) = sub.rx.recv().await {
                if let Subject::Pid(pid) = ev.subject {
                    containers.settle_exit(pid, ev.exit_code).await;
                }
            }
        });
    }
}

fn stdio_paths(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> StdioPaths {
    StdioPaths {
        stdin: stdin.to_string(),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
        terminal,
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
            return Err(ShimError::Unimplemented(
                "eci: restoring from a checkpoint is not supported".into(),
            )
            .into());
        }
        let task = CreateTask {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            stdio: stdio_paths(&req.stdin, &req.stdout, &req.stderr, req.terminal),
            policy_path,
        };
        let pid = self.containers.create(task).await?;
        Ok(CreateTaskResponse {
            pid: wire_pid(pid),
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TResult<StartResponse> {
        let pid = self.containers.start(&req.id, &req.exec_id).await?;
        Ok(StartResponse {
            pid: wire_pid(pid),
            ..Default::default()
        })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TResult<StateResponse> {
        let s = self.containers.state(&req.id, &req.exec_id).await?;
        Ok(StateResponse {
            id: if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle: s.bundle,
            pid: wire_pid(s.pid),
            status: EnumOrUnknown::new(s.state.task_status()),
            stdin: s.stdio.stdin,
            stdout: s.stdio.stdout,
            stderr: s.stdio.stderr,
            terminal: s.stdio.terminal,
            exit_status: s.exit.as_ref().map_or(0, |e| e.code),
            exited_at: s.exit.map(|e| e.at).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TResult<Empty> {
        self.containers
            .kill(&req.id, &req.exec_id, req.signal, req.all)
            .await?;
        Ok(Empty::new())
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TResult<DeleteResponse> {
        let (pid, exit) = self.containers.delete(&req.id, &req.exec_id).await?;
        Ok(DeleteResponse {
            pid: wire_pid(pid),
            exit_status: exit.as_ref().map_or(0, |e| e.code),
            exited_at: exit.map(|e| e.at).into(),
            ..Default::default()
        })
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TResult<WaitResponse> {
        let exit = self.containers.wait(&req.id, &req.exec_id).await?;
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TResult<Empty> {
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| ShimError::InvalidArgument("exec without a process spec".into()))?;
        let stdio = stdio_paths(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        self.containers
            .add_exec(&req.id, &req.exec_id, spec, stdio)
            .await?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TResult<Empty> {
        self.containers
            .resize(&req.id, &req.exec_id, req.width, req.height)
            .await?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TResult<Empty> {
        self.containers.close_io(&req.id, &req.exec_id).await?;
        Ok(Empty::new())
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TResult<PidsResponse> {
        let pids = self.containers.pids(&req.id).await?;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid: wire_pid(pid),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TResult<Empty> {
        self.containers.freeze(&req.id, true).await?;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TResult<Empty> {
        self.containers.freeze(&req.id, false).await?;
        Ok(Empty::new())
    }

    async fn checkpoint(&self, _ctx: &TtrpcContext, _req: CheckpointTaskRequest) -> TResult<Empty> {
        Err(
            ShimError::Unimplemented("eci: checkpoint is not supported by the ECI runtime".into())
                .into(),
        )
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TResult<Empty> {
        self.containers
            .update(&req.id, &req.resources.value)
            .await?;
        Ok(Empty::new())
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TResult<StatsResponse> {
        let stats = self.containers.stats(&req.id).await?;
        Ok(StatsResponse {
            stats: Some(stats).into(),
            ..Default::default()
        })
    }

    async fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> TResult<ConnectResponse> {
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: wire_pid(self.containers.init_pid(&req.id).await),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TResult<Empty> {
        if self.containers.is_empty().await {
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}
