//! The server's errors and their one mapping to gRPC statuses, with etcd's codes and messages:
//! the one place etcd's error texts are written (the tidy check keeps them out of the services).

use ferrocd_types::ErrorCode;
use tonic::{Code, Status};

/// Why the server refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Mvcc(#[from] ferrocd_mvcc::Error),
    #[error(transparent)]
    Lease(#[from] ferrocd_lease::Error),
    #[error(transparent)]
    Auth(ferrocd_auth::Error),
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    #[error("etcdserver: wrong downgrade target version format")]
    WrongDowngradeVersionFormat,
    #[error("etcdserver: invalid downgrade target version")]
    InvalidDowngradeTarget,
    #[error("etcdserver: no inflight downgrade job")]
    NoInflightDowngrade,
    #[error("etcdserver: unknown method")]
    UnknownMethod,
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
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: unhealthy cluster")]
    UnhealthyCluster,
    #[error("etcdserver: given member URLs are invalid")]
    InvalidPeerUrls,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: member ID already exist")]
    MemberIdExists,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// MoveLeader asked of a member that does not lead.
    #[error("etcdserver: not leader")]
    NotLeaderToMove,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// The server's own client (Lock and Election run as clients of it) before it listens.
    #[error("etcdserver: server is not serving yet")]
    NotServing,
    /// Election: a request without its `leader` field.
    #[error("\"leader\" field must be provided")]
    MissingLeaderField,
    /// An RPC this build does not have yet (gRPC Unimplemented, never a fake success).
    #[error("{0} is not built yet")]
    Unimplemented(&'static str),
    /// What ferrocd does not do by design, and why (gRPC Unimplemented).
    #[error("{0}")]
    Unsupported(&'static str),
    /// A membership change Raft refused (e.g. removing the last voter).
    #[error("etcdserver: {0}")]
    Precondition(String),
    /// The leader's peer URL cannot be used to forward a request to it.
    #[error("etcdserver: cannot reach the leader: {0}")]
    LeaderUnreachable(String),
    /// The storage failed; the server stops serving writes.
    #[error("etcdserver: storage failure: {0}")]
    Storage(String),
    /// A gateway request whose JSON body cannot be read (Go's decoder words a truncated one
    /// `unexpected EOF`).
    #[error("{0}")]
    BadJson(String),
    /// A response the gateway cannot write as JSON.
    #[error("{0}")]
    Encoding(String),
}

/// Whether `message` is one of the server's own answers (every etcd server error starts so),
/// rather than a transport's.
pub fn is_server_answer(message: &str) -> bool {
    message.starts_with("etcdserver: ")
}

fn code(c: ErrorCode) -> Code {
    Code::from_i32(c as i32)
}

/// What a call to a service this server does not have answers, as grpc-go words it
/// (`path` is the request's `/package.Service/Method`).
pub fn unknown_service(path: &str) -> Status {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    Status::unimplemented(format!("unknown service {service}"))
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Self {
        let c = match &e {
            ServerError::Mvcc(m) => code(m.code()),
            ServerError::Auth(a) => code(a.code()),
            ServerError::Lease(l) => match l {
                ferrocd_lease::Error::LeaseNotFound => Code::NotFound,
                ferrocd_lease::Error::LeaseExists => Code::FailedPrecondition,
                ferrocd_lease::Error::TtlTooLarge => Code::OutOfRange,
                ferrocd_lease::Error::NotPrimary => Code::Unavailable,
                _ => Code::Internal,
            },
            ServerError::RequestTooLarge => Code::InvalidArgument,
            ServerError::NoSpace => Code::ResourceExhausted,
            ServerError::Corrupt => Code::DataLoss,
            ServerError::WrongDowngradeVersionFormat | ServerError::InvalidDowngradeTarget => Code::InvalidArgument,
            ServerError::UnknownMethod => Code::Unknown,
            ServerError::Stopped
            | ServerError::NotLeader { .. }
            | ServerError::NoLeader
            | ServerError::LeaderChanged
            | ServerError::Timeout
            | ServerError::TimeoutLeaderFailure
            | ServerError::TimeoutConnectionLost
            | ServerError::LeaderTransferTimeout => Code::Unavailable,
            ServerError::Learner
            | ServerError::Precondition(_)
            | ServerError::NotEnoughStartedMembers
            | ServerError::PeerUrlExists
            | ServerError::TooManyLearners
            | ServerError::MemberIdExists
            | ServerError::MemberNotLearner
            | ServerError::LearnerNotReady
            | ServerError::NotLeaderToMove
            | ServerError::BadLeaderTransferee
            | ServerError::NoInflightDowngrade => Code::FailedPrecondition,
            ServerError::UnhealthyCluster | ServerError::NotServing | ServerError::LeaderUnreachable(_) => {
                Code::Unavailable
            }
            ServerError::InvalidPeerUrls | ServerError::BadJson(_) => Code::InvalidArgument,
            ServerError::MemberNotFound => Code::NotFound,
            ServerError::Unimplemented(_) | ServerError::Unsupported(_) => Code::Unimplemented,
            ServerError::MissingLeaderField => Code::Unknown,
            ServerError::Storage(_) | ServerError::Encoding(_) => Code::Internal,
        };
        Status::new(c, e.to_string())
    }
}

/// What etcd's Lock and Election answer for `status`, an error of the services they call:
/// etcd runs them on an in-process client, which keeps an error's text but not its gRPC code,
/// so auth's refusals reach the caller as `Unknown` with etcd's text.
pub fn through_in_process_client(status: Status) -> Status {
    use ferrocd_auth::Error as A;
    let refusal = [A::UserEmpty, A::InvalidAuthToken, A::PermissionDenied, A::AuthOldRevision]
        .iter()
        .any(|e| code(e.code()) == status.code() && e.to_string() == status.message());
    if refusal { Status::new(Code::Unknown, status.message().to_owned()) } else { status }
}
