//! The kernel side of ECI: ID block leases, ID-mapped mounts, the root file system, and
//! libcontainer. Creation and exec run in the single-threaded create helper; everything in
//! [`ops`] is safe to call from the shim's async runtime.

pub(crate) mod audit;
pub mod bundle;
pub(crate) mod containerd;
pub mod create;
pub(crate) mod delegate;
pub mod error;
pub mod exec;
pub mod hygiene;
pub(crate) mod idmap;
pub mod layout;
pub(crate) mod lease;
pub mod ops;
pub(crate) mod resolve;
pub(crate) mod rootfs;
pub(crate) mod unseen;

pub use create::{create, CreateError, CreateRequest, Created, Stdio};
pub use error::{ErrorKind, ExecError};
pub use exec::{exec, ExecRequest};
pub use layout::Layout;
pub use rootfs::RootfsMount;
