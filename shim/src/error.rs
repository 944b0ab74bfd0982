//! The shim's one error type and its one mapping to ttrpc codes. Every Task method fails with
//! a [`ShimError`]; its variant, not the wording of its message, decides the code containerd
//! sees.

use containerd_shim::protos::ttrpc::{self, Code};
use eci_core::ErrorKind;

/// Why a Task request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ShimError {
    /// A rule or the process's state forbids it; the message says what to change
    /// (FAILED_PRECONDITION).
    #[error("{0}")]
    Refused(String),
    /// No such container, exec or process (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The container or exec exists already (ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// The request itself is malformed (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// The runtime does not do this (UNIMPLEMENTED).
    #[error("{0}")]
    Unimplemented(String),
    /// The host, a library or the shim failed (INTERNAL).
    #[error("{0}")]
    Internal(String),
}

impl ShimError {
    /// `what` is not in the process table.
    pub(crate) fn not_found(what: &str) -> Self {
        ShimError::NotFound(format!("{what}: not found"))
    }

    /// An internal failure, described.
    pub(crate) fn internal(what: impl std::fmt::Display) -> Self {
        ShimError::Internal(what.to_string())
    }

    /// A failure of the kind core or the helper reported.
    pub(crate) fn of_kind(kind: ErrorKind, message: String) -> Self {
        match kind {
            ErrorKind::Refused => ShimError::Refused(message),
            ErrorKind::NotFound => ShimError::NotFound(message),
            ErrorKind::AlreadyExists => ShimError::AlreadyExists(message),
            ErrorKind::Internal => ShimError::Internal(message),
        }
    }

    /// The ttrpc code containerd receives.
    pub(crate) fn code(&self) -> Code {
        match self {
            ShimError::Refused(_) => Code::FAILED_PRECONDITION,
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ShimError::Internal(_) => Code::INTERNAL,
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        let code = e.code();
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
    }
}

impl From<eci_core::ops::OpError> for ShimError {
    fn from(e: eci_core::ops::OpError) -> Self {
        ShimError::of_kind(e.kind(), e.to_string())
    }
}

impl From<eci_core::ExecError> for ShimError {
    fn from(e: eci_core::ExecError) -> Self {
        ShimError::of_kind(e.kind(), e.to_string())
    }
}

impl From<tokio::task::JoinError> for ShimError {
    fn from(e: tokio::task::JoinError) -> Self {
        ShimError::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_code_per_kind() {
        let cases = [
            (ShimError::Refused("r".into()), Code::FAILED_PRECONDITION),
            (ShimError::not_found("c"), Code::NOT_FOUND),
            (ShimError::AlreadyExists("a".into()), Code::ALREADY_EXISTS),
            (ShimError::Internal("i".into()), Code::INTERNAL),
            (
                ShimError::of_kind(ErrorKind::Refused, "policy".into()),
                Code::FAILED_PRECONDITION,
            ),
            (
                eci_core::ops::OpError::NotFound("c".into()).into(),
                Code::NOT_FOUND,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
            let message = e.to_string();
            match ttrpc::Error::from(e) {
                ttrpc::Error::RpcStatus(s) => {
                    assert_eq!(s.code(), code);
                    assert_eq!(s.message, message);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(ShimError::not_found("c1").to_string(), "c1: not found");
    }
}
