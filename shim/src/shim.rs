//! containerd's view of the binary: the `start` handshake, `delete` cleanup after a dead shim,
//! and the Task service.

use crate::service::TaskService;
use async_trait::async_trait;
use containerd_shim::asynchronous::{publisher::RemotePublisher, spawn, ExitSignal, Shim};
use containerd_shim::protos::api::DeleteResponse;
use containerd_shim::util::write_str_to_file;
use containerd_shim::{Config, Error, Flags, StartOpts};
use eci_core::ops::Handle;
use eci_core::Layout;
use std::sync::Arc;

/// Annotations under which containerd's CRI groups a pod's containers into one shim.
const GROUP_LABELS: &[&str] = &[
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

pub struct EciShim {
    namespace: String,
    id: String,
    address: String,
    exit: Arc<ExitSignal>,
    debug: bool,
}

#[async_trait]
impl Shim for EciShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, config: &mut Config) -> Self {
        // Our own logger (crate::logging), set up when serving: containerd-shim's writes a
        // blank line after each record and cannot leave out the libraries' noise.
        config.no_setup_logger = true;
        EciShim {
            debug: args.debug,
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            address: args.address.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let grouping = read_group(&opts.id);
        let address = spawn(opts, &grouping, Vec::new()).await?;
        write_str_to_file("address", &address).await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir().map_err(|e| Error::Other(e.to_string()))?;
        let layout = Layout::default();
        let handle = Handle {
            layout: &layout,
            namespace: &self.namespace,
            id: &self.id,
        };
        handle.destroy(&bundle);
        // A killed shim leaves its socket; runc's shim removes it here too.
        if let Ok(address) = std::fs::read_to_string("address") {
            let path = address.trim().trim_start_matches("unix://");
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(path);
            }
        }
        let mut resp = DeleteResponse::new();
        // containerd publishes TaskExit and TaskDelete with this pid for a dead shim's task.
        if let Some(pid) = std::fs::read_to_string(crate::service::INIT_PID_FILE)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            resp.set_pid(pid);
        }
        resp.set_exit_status(137);
        resp.exited_at = Some(crate::process::now()).into();
        Ok(resp)
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        crate::logging::init(self.debug);
        TaskService::new(&self.namespace, &self.address, self.exit.clone(), publisher).await
    }
}

fn read_group(id: &str) -> String {
    let spec: Option<serde_json::Value> = std::fs::read("config.json")
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    spec.as_ref()
        .and_then(|s| s.get("annotations"))
        .and_then(|a| GROUP_LABELS.iter().find_map(|l| a.get(*l)?.as_str()))
        .unwrap_or(id)
        .to_string()
}
