//! The server's errors and their one mapping to gRPC statuses, with etcd's codes and messages.

use ferrocd_types::ErrorCode;
use tonic::{Code, Status};

/// Why the server refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Mvcc(#[from] ferrocd_mvcc::Error),
    #[error(transparent)]
    Lease(#[from] ferrocd_lease::Error),
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: server stopped")]
    Stopped,
    /// This member is not the leader; `urls` reach the leader's peer listener.
    #[error("etcdserver: leader changed")]
    NotLeader { id: u64, urls: Vec<String> },
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    TimeoutLeaderFailure,
    #[error("etcdserver: request timed out, possibly due to connection lost")]
    TimeoutConnectionLost,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    #[error("etcdserver: rpc not supported for learner")]
    Learner,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// A membership change Raft refused (e.g. removing the last voter).
    #[error("etcdserver: {0}")]
    Precondition(String),
    /// The storage failed; the server stops serving writes.
    #[error("etcdserver: storage failure: {0}")]
    Storage(String),
}

fn code(c: ErrorCode) -> Code {
    Code::from_i32(c as i32)
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Self {
        let c = match &e {
            ServerError::Mvcc(m) => code(m.code()),
            ServerError::Lease(l) => match l {
                ferrocd_lease::Error::LeaseNotFound => Code::NotFound,
                ferrocd_lease::Error::LeaseExists => Code::FailedPrecondition,
                ferrocd_lease::Error::TtlTooLarge => Code::OutOfRange,
                ferrocd_lease::Error::NotPrimary => Code::Unavailable,
                _ => Code::Internal,
            },
            ServerError::RequestTooLarge => Code::InvalidArgument,
            ServerError::NoSpace => Code::ResourceExhausted,
            ServerError::Stopped
            | ServerError::NotLeader { .. }
            | ServerError::NoLeader
            | ServerError::LeaderChanged
            | ServerError::Timeout
            | ServerError::TimeoutLeaderFailure
            | ServerError::TimeoutConnectionLost
            | ServerError::LeaderTransferTimeout => Code::Unavailable,
            ServerError::Learner | ServerError::Precondition(_) => Code::FailedPrecondition,
            ServerError::MemberNotFound => Code::NotFound,
            ServerError::Storage(_) => Code::Internal,
        };
        Status::new(c, e.to_string())
    }
}
