//! What kind of failure an operation had. The kind travels with the message across the
//! helper's reply, so the shim answers containerd with the code the failure deserves (a
//! refusal is the caller's to fix, an internal failure is ours) instead of guessing from text.

use crate::create::CreateError;
use crate::lease::LeaseError;
use crate::ops::OpError;
use serde::{Deserialize, Serialize};

/// The kind of a failure, as the shim maps it to a ttrpc code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A rule or the state of the container forbids the request; the message says what to
    /// change (FAILED_PRECONDITION).
    Refused,
    /// The container or process does not exist (NOT_FOUND).
    NotFound,
    /// The container or process exists already (ALREADY_EXISTS).
    AlreadyExists,
    /// Anything else: the host or a library failed (INTERNAL).
    Internal,
}

/// Why an exec'd process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The container cannot run it as asked: it is gone, or the process spec, program,
    /// working directory, user or stdio does not work there.
    #[error("{0}")]
    Refused(String),
    /// The host failed (a pipe, a fork, the container's cgroup).
    #[error("{0}")]
    Internal(String),
}

impl ExecError {
    /// How the shim reports it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExecError::Refused(_) => ErrorKind::Refused,
            ExecError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl CreateError {
    /// How the shim reports it: what the spec, the policy or the host's configuration
    /// decides is a refusal; a failing host or library is internal.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CreateError::Refused(_)
            | CreateError::BadSpec { .. }
            | CreateError::Rootfs(_)
            | CreateError::BindNotIdmappable { .. }
            | CreateError::OomScoreAdj { .. } => ErrorKind::Refused,
            CreateError::Lease(LeaseError::Io(..)) => ErrorKind::Internal,
            CreateError::Lease(_) => ErrorKind::Refused,
            CreateError::Io { .. } | CreateError::Libcontainer(_) => ErrorKind::Internal,
        }
    }
}

impl OpError {
    /// How the shim reports it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            OpError::NotFound(_) => ErrorKind::NotFound,
            OpError::Libcontainer(_) | OpError::Io(_) => ErrorKind::Internal,
        }
    }
}
