//! The shim server process (containerd's Task API over ttrpc, v2 and v3 on one socket) and
//! `delete`, the cleanup after a dead shim. `start` is in bootstrap.rs, `-info` in info.rs.

use crate::publisher::RemotePublisher;
use crate::service::TaskService;
use containerd_shim::asynchronous::monitor::monitor_notify_by_pid;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::api::DeleteResponse;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim_async::{create_task, Task};
use containerd_shim::protos::ttrpc::r#async::transport::Listener;
use containerd_shim::protos::ttrpc::r#async::Server;
use containerd_shim::Flags;
use eci_core::ops::Handle;
use eci_core::Layout;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

const TASK_V2: &str = "containerd.task.v2.Task";
/// Task API v3 (containerd 2.x) differs from v2 only in its package name: the messages and
/// methods are field for field the same (api/runtime/task/v{2,3}/shim.proto), so the v2
/// handlers serve it unchanged.
const TASK_V3: &str = "containerd.task.v3.Task";

/// How long shutdown waits for containerd to take the queued events.
const EVENTS_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Run the server: `-socket` names the address; the listening socket itself comes from
/// `start` (see bootstrap.rs).
pub async fn serve(flags: Flags, listener: Option<UnixListener>) -> Result<(), String> {
    let ttrpc_address =
        std::env::var("TTRPC_ADDRESS").map_err(|_| "TTRPC_ADDRESS is not set".to_string())?;
    // Before anything can exit: containers the shim starts are its children to reap.
    let mut sigchld = signal(SignalKind::child()).map_err(|e| e.to_string())?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut sigpipe = signal(SignalKind::pipe()).map_err(|e| e.to_string())?;
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("subreaper: {e}"))?;
    // Our own logger: containerd-shim's writes a blank line after each record and cannot
    // leave out the libraries' noise.
    crate::logging::init(flags.debug);
    // A kubelet whose user-namespace blocks fall in ECI's pool has some hostUsers: false pods
    // refused: say so where the administrator looks, before the first one is.
    eci_core::create::warn_if_pools_meet(
        &eci_core::layout::Layout::default(),
        &crate::options::default_policy(),
    );

    let listener = match listener {
        Some(l) => l,
        None => UnixListener::bind(flags.socket.trim_start_matches("unix://"))
            .map_err(|e| format!("listen on {}: {e}", flags.socket))?,
    };
    let publisher = RemotePublisher::new(&ttrpc_address).await?;
    let exit = Arc::new(ExitSignal::default());
    let task: Arc<dyn Task + Send + Sync> = Arc::new(
        TaskService::new(
            &flags.namespace,
            &flags.address,
            exit.clone(),
            publisher.clone(),
        )
        .await,
    );
    let mut services = create_task(task.clone());
    let v3 = create_task(task)
        .remove(TASK_V2)
        .ok_or("the task service has no v2 methods")?;
    services.insert(TASK_V3.to_string(), v3);
    let listener = Listener::try_from(listener).map_err(|e| format!("listener: {e}"))?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(services);
    server.start().await.map_err(|e| e.to_string())?;

    // Serving: close the pipe `start` waits on (stdout becomes the log stderr).
    // SAFETY: dup2 on the process's own standard fds.
    unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
    log::info!("shim serving task v2 and v3 on {}", flags.socket);

    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sigchld.recv() => reap().await,
                _ = sigterm.recv() => log::debug!("SIGTERM"),
                _ = sigint.recv() => log::debug!("SIGINT"),
                _ = sigpipe.recv() => {}
            }
        }
    });
    exit.wait().await;
    // The last events (a TaskExit, the TaskDelete) are queued when containerd asks the shim
    // to shut down: they reach containerd before the shim goes, within a bound.
    if !publisher.drain(EVENTS_DRAIN).await {
        log::warn!("shutting down with events containerd has not taken");
    }
    log::info!("shutting down shim");
    let _ = server.shutdown().await;
    if let Ok(address) = std::fs::read_to_string("address") {
        let _ = std::fs::remove_file(address.trim().trim_start_matches("unix://"));
    }
    Ok(())
}

/// Every exited child, to the exit monitor the task service subscribes to (the only waiter).
async fn reap() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => notify(pid.as_raw(), code).await,
            Ok(WaitStatus::Signaled(pid, sig, _)) => notify(pid.as_raw(), 128 + sig as i32).await,
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
            Ok(_) => {}
            Err(e) => {
                log::warn!("waitpid: {e}");
                return;
            }
        }
    }
}

async fn notify(pid: i32, code: i32) {
    if let Err(e) = monitor_notify_by_pid(pid, code).await {
        log::error!("exit of {pid}: {e}");
    }
}

/// `delete`: containerd found the shim dead; remove what it left and report a killed init.
pub fn delete(flags: &Flags) -> Result<(), String> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(|e| e.to_string())?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let layout = Layout::default();
    let handle = Handle {
        layout: &layout,
        namespace: &flags.namespace,
        id: &flags.id,
    };
    handle.destroy(&bundle);
    // A killed shim leaves its socket behind; remove it (only if it is a socket).
    if let Ok(address) = std::fs::read_to_string(bundle.join("address")) {
        let path = address.trim().trim_start_matches("unix://");
        if std::fs::symlink_metadata(path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        {
            let _ = std::fs::remove_file(path);
        }
    }
    let mut resp = DeleteResponse::new();
    // containerd publishes TaskExit and TaskDelete with this pid for a dead shim's task.
    if let Some(pid) = eci_core::bundle::init_pid(&bundle) {
        resp.set_pid(pid);
    }
    resp.set_exit_status(137);
    resp.exited_at = Some(crate::container::now()).into();
    let bytes = resp.write_to_bytes().map_err(|e| e.to_string())?;
    let mut out = std::io::stdout();
    out.write_all(&bytes)
        .and_then(|_| out.flush())
        .map_err(|e| e.to_string())
}
