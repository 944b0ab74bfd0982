//! Starting an additional process in a running container (containerd's Exec), run in the
//! helper for the same reason as create: libcontainer forks.

use crate::create::{error_chain, with_stdio, CreateError, Stdio};
use crate::layout::Layout;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    pub namespace: String,
    pub id: String,
    /// The OCI process (process.json) to run.
    pub process: PathBuf,
    pub stdio: Stdio,
    pub base: PathBuf,
}

pub fn exec(req: &ExecRequest) -> Result<i32, CreateError> {
    let layout = Layout::new(&req.base);
    let builder = with_stdio(ContainerBuilder::new(req.id.clone(), SyscallType::default()), &req.stdio)?
        .with_root_path(layout.state_root(&req.namespace))
        .map_err(|e| CreateError::Libcontainer(e.to_string()))?
        .with_console_socket(req.stdio.console_socket.as_ref());
    let pid = builder
        .as_tenant()
        .with_process(Some(&req.process))
        .as_sibling(true)
        .with_detach(true)
        .build()
        .map_err(|e| CreateError::Libcontainer(error_chain(&e)))?;
    Ok(pid.as_raw())
}
