//! The seam between a container's lifecycle and what carries it out: the create/exec helper
//! process, the kernel operations on a created container, and the per-container workers. The
//! shim's backend is [`crate::host::Host`]; the lifecycle's unit tests drive a stub.

use super::process::{ProcessIo, StdioPaths};
use crate::error::ShimError;
use async_trait::async_trait;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::types::mount::Mount;
use std::path::PathBuf;
use std::sync::Arc;

/// What Create asks for, as the container layer passes it down.
#[derive(Debug, Clone)]
pub(crate) struct CreateTask {
    /// The container's id.
    pub(crate) id: String,
    /// containerd's bundle directory.
    pub(crate) bundle: String,
    /// The rootfs mounts containerd prepared (none when the client mounted it).
    pub(crate) rootfs: Vec<Mount>,
    /// The init's stdio.
    pub(crate) stdio: StdioPaths,
    /// The policy file the runtime options chose.
    pub(crate) policy_path: PathBuf,
}

/// A container the backend made.
pub(crate) struct Made<W> {
    /// Its init's pid (waiting for Start).
    pub(crate) pid: i32,
    /// The first host ID of its ID block.
    pub(crate) block: u32,
    /// What runs beside it until delete.
    pub(crate) workers: W,
    /// The shim's side of the init's stdio.
    pub(crate) io: ProcessIo,
}

/// An exec the backend started.
pub(crate) struct Started {
    /// Its pid.
    pub(crate) pid: i32,
    /// The shim's side of its stdio.
    pub(crate) io: ProcessIo,
}

/// What a container's lifecycle needs done below it. Every method leaves nothing behind when
/// it fails.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// What runs beside a container for its lifetime (emulation, supervisor, OOM counter).
    type Workers: Send + Sync + 'static;

    /// Make the container: its workers, then its init through the create helper.
    async fn create(&self, req: &CreateTask) -> Result<Made<Self::Workers>, ShimError>;

    /// Release the init, which waits for Start.
    async fn start(&self, id: &str) -> Result<(), ShimError>;

    /// Start the exec `exec_id` (its OCI process `spec`) in container `id`.
    async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        spec: Vec<u8>,
        stdio: &StdioPaths,
        workers: Option<Arc<Self::Workers>>,
    ) -> Result<Started, ShimError>;

    /// Send `signal` to one process.
    fn signal(&self, pid: i32, signal: u32) -> Result<(), ShimError>;

    /// Send `signal` to every process in the container's cgroup.
    async fn kill_all(&self, id: &str, signal: u32) -> Result<(), ShimError>;

    /// Freeze or thaw the container's cgroup.
    async fn freeze(&self, id: &str, frozen: bool) -> Result<(), ShimError>;

    /// The pids in the container's cgroup.
    async fn pids(&self, id: &str) -> Result<Vec<i32>, ShimError>;

    /// The container's cgroup statistics, as containerd's metrics type.
    async fn stats(&self, id: &str) -> Result<Any, ShimError>;

    /// Apply new resources (an OCI LinuxResources as JSON) to the container's cgroup.
    async fn update(&self, id: &str, resources: &[u8]) -> Result<(), ShimError>;

    /// Stop the workers, then remove everything the container put on the host.
    async fn teardown(&self, id: &str, bundle: &str, workers: Option<Arc<Self::Workers>>);

    /// Whether the container's cgroup counted an OOM kill not yet reported.
    fn oom_fired(workers: &Self::Workers) -> bool;
}
