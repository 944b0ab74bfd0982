//! The kernel side of ECI: ID block leases, ID-mapped mounts, the root file system, and
//! libcontainer. Creation and exec run in the single-threaded create helper; everything in
//! [`ops`] is safe to call from the shim's async runtime.

pub mod audit;
pub mod bundle;
pub mod containerd;
pub mod create;
pub mod delegate;
pub mod error;
pub mod exec;
pub mod hygiene;
pub mod idmap;
pub mod layout;
pub mod lease;
pub mod mountinfo;
pub mod ops;
pub mod resolve;
pub mod rootfs;
pub mod unseen;

pub use create::{create, CreateError, CreateRequest, Created, Stdio};
pub use error::{ErrorKind, ExecError};
pub use exec::{exec, ExecRequest};
pub use layout::Layout;
pub use rootfs::RootfsMount;
