//! Typed errors: every error etcd's servers answer, by name, so callers match on a case rather
//! than on a string.

use std::fmt;

/// A `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// What a call to etcd (or ferrocd) can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered one of etcd's errors (see [`EtcdError`]).
    #[error("{status_message}")]
    Etcd {
        /// Which of etcd's errors.
        kind: EtcdError,
        /// The gRPC status it came with.
        code: tonic::Code,
        /// etcd's message, as the server sent it.
        status_message: String,
    },
    /// Any other gRPC status: the transport's own errors, a message that is not etcd's.
    #[error("{}", .0.message())]
    Grpc(tonic::Status),
    /// An endpoint that cannot be used (a malformed URL, TLS settings that do not load).
    #[error("invalid endpoint {endpoint}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    /// Arguments this client refuses before sending anything.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// No endpoint was given.
    #[error("no endpoints given")]
    NoEndpoints,
    /// The call's deadline passed before an answer (retries included).
    #[error("deadline exceeded after {attempts} attempt(s): {last}")]
    DeadlineExceeded { attempts: u32, last: Box<Error> },
    /// A watch the server canceled (compaction, permission, no leader).
    #[error("watch canceled: {reason} (compact revision {compact_revision})")]
    WatchCanceled { reason: String, compact_revision: i64 },
    /// A lease a keep-alive found gone (expired or revoked).
    #[error("etcdserver: requested lease not found")]
    LeaseExpired { id: i64 },
    /// A lock or election recipe's own refusal.
    #[error("{0}")]
    Recipe(#[from] crate::concurrency::RecipeError),
    /// A snapshot stream that is not whole.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// A local file (a snapshot being saved, a certificate).
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl Error {
    /// etcd's error this is, if it is one.
    pub fn etcd(&self) -> Option<EtcdError> {
        match self {
            Error::Etcd { kind, .. } => Some(*kind),
            Error::LeaseExpired { .. } => Some(EtcdError::LeaseNotFound),
            Error::DeadlineExceeded { last, .. } => last.etcd(),
            _ => None,
        }
    }

    /// The gRPC code the server (or the transport) answered with, if any.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Etcd { code, .. } => Some(*code),
            Error::Grpc(status) => Some(status.code()),
            Error::DeadlineExceeded { .. } => Some(tonic::Code::DeadlineExceeded),
            _ => None,
        }
    }

    /// Whether the request surely never reached a server's state machine: it may be sent again
    /// even when it is not idempotent.
    pub(crate) fn not_sent(&self) -> bool {
        match self {
            Error::Grpc(status) => status.code() == tonic::Code::Unavailable && is_connect_error(status),
            Error::Etcd { kind, .. } => {
                matches!(kind, EtcdError::NoLeader | EtcdError::NotCapable | EtcdError::Stopped)
            }
            _ => false,
        }
    }

    /// Whether a read (or any idempotent request) may be sent again: the server or the
    /// connection was unavailable.
    pub(crate) fn retryable(&self) -> bool {
        self.not_sent() || self.code() == Some(tonic::Code::Unavailable)
    }

    /// Whether another endpoint should be tried: this one is unreachable, stopping, or cut off
    /// from its leader.
    pub(crate) fn endpoint_failed(&self) -> bool {
        match self {
            Error::Grpc(status) => status.code() == tonic::Code::Unavailable,
            Error::Etcd { kind, .. } => {
                matches!(kind, EtcdError::NoLeader | EtcdError::Stopped | EtcdError::NotCapable)
            }
            _ => false,
        }
    }

    /// Whether a fresh token may cure it.
    pub(crate) fn auth_stale(&self) -> bool {
        matches!(self.etcd(), Some(EtcdError::InvalidAuthToken | EtcdError::AuthOldRevision | EtcdError::UserEmpty))
    }
}

/// A transport failure to connect, before anything was written.
fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::AddrNotAvailable
            )
        {
            return true;
        }
        if e.to_string().contains("connect error") {
            return true;
        }
        source = e.source();
    }
    false
}

/// The gRPC status a server answers for this error, as etcd's Lock and Election services
/// answer their recipes' errors.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Etcd { code, status_message, .. } => tonic::Status::new(code, status_message),
            Error::Grpc(status) => status,
            Error::DeadlineExceeded { last, .. } => tonic::Status::from(*last),
            Error::WatchCanceled { reason, .. } if reason.is_empty() => {
                tonic::Status::unavailable(EtcdError::WatchCanceled.message())
            }
            Error::WatchCanceled { reason, .. } => {
                tonic::Status::unavailable(format!("{}: {reason}", EtcdError::WatchCanceled.message()))
            }
            Error::LeaseExpired { .. } => tonic::Status::not_found(EtcdError::LeaseNotFound.message()),
            Error::InvalidArgs(_) | Error::InvalidEndpoint { .. } | Error::NoEndpoints => {
                tonic::Status::invalid_argument(e.to_string())
            }
            Error::Recipe(_) | Error::Snapshot(_) | Error::Io { .. } => tonic::Status::unknown(e.to_string()),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        match EtcdError::from_message(status.message()) {
            Some(kind) => Error::Etcd { kind, code: status.code(), status_message: status.message().to_string() },
            None => Error::Grpc(status),
        }
    }
}

macro_rules! etcd_errors {
    ($($(#[$doc:meta])* $name:ident => $message:literal,)*) => {
        /// etcd's errors (its `rpctypes`), each with the message its servers send.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum EtcdError {
            $($(#[$doc])* $name,)*
        }

        impl EtcdError {
            /// Every case, in declaration order.
            pub const ALL: &'static [EtcdError] = &[$(EtcdError::$name,)*];

            /// etcd's message for this error.
            pub fn message(self) -> &'static str {
                match self {
                    $(EtcdError::$name => $message,)*
                }
            }
        }
    };
}

etcd_errors! {
    EmptyKey => "etcdserver: key is not provided",
    KeyNotFound => "etcdserver: key not found",
    ValueProvided => "etcdserver: value is provided",
    LeaseProvided => "etcdserver: lease is provided",
    TooManyOps => "etcdserver: too many operations in txn request",
    DuplicateKey => "etcdserver: duplicate key given in txn request",
    InvalidClientApiVersion => "etcdserver: invalid client api version",
    InvalidSortOption => "etcdserver: invalid sort option",
    Compacted => "etcdserver: mvcc: required revision has been compacted",
    FutureRev => "etcdserver: mvcc: required revision is a future revision",
    NoSpace => "etcdserver: mvcc: database space exceeded",
    LeaseNotFound => "etcdserver: requested lease not found",
    LeaseExists => "etcdserver: lease already exists",
    LeaseTtlTooLarge => "etcdserver: too large lease TTL",
    WatchCanceled => "etcdserver: watch canceled",
    MemberExists => "etcdserver: member ID already exist",
    PeerUrlExists => "etcdserver: Peer URLs already exists",
    MemberNotEnoughStarted => "etcdserver: re-configuration failed due to not enough started members",
    MemberBadUrls => "etcdserver: given member URLs are invalid",
    MemberNotFound => "etcdserver: member not found",
    MemberNotLearner => "etcdserver: can only promote a learner member",
    LearnerNotReady => "etcdserver: can only promote a learner member which is in sync with leader",
    TooManyLearners => "etcdserver: too many learner members in cluster",
    ClusterIdMismatch => "etcdserver: cluster ID mismatch",
    RequestTooLarge => "etcdserver: request is too large",
    TooManyRequests => "etcdserver: too many requests",
    RootUserNotExist => "etcdserver: root user does not exist",
    RootRoleNotExist => "etcdserver: root user does not have root role",
    UserAlreadyExist => "etcdserver: user name already exists",
    UserEmpty => "etcdserver: user name is empty",
    UserNotFound => "etcdserver: user name not found",
    RoleAlreadyExist => "etcdserver: role name already exists",
    RoleNotFound => "etcdserver: role name not found",
    RoleEmpty => "etcdserver: role name is empty",
    AuthFailed => "etcdserver: authentication failed, invalid user ID or password",
    PermissionNotGiven => "etcdserver: permission not given",
    PermissionDenied => "etcdserver: permission denied",
    RoleNotGranted => "etcdserver: role is not granted to the user",
    PermissionNotGranted => "etcdserver: permission is not granted to the role",
    AuthNotEnabled => "etcdserver: authentication is not enabled",
    InvalidAuthToken => "etcdserver: invalid auth token",
    InvalidAuthMgmt => "etcdserver: invalid auth management",
    AuthOldRevision => "etcdserver: revision of auth store is old",
    NoLeader => "etcdserver: no leader",
    NotLeader => "etcdserver: not leader",
    LeaderChanged => "etcdserver: leader changed",
    NotCapable => "etcdserver: not capable",
    Stopped => "etcdserver: server stopped",
    Timeout => "etcdserver: request timed out",
    TimeoutDueToLeaderFail => "etcdserver: request timed out, possibly due to previous leader failure",
    TimeoutDueToConnectionLost => "etcdserver: request timed out, possibly due to connection lost",
    TimeoutWaitAppliedIndex => "etcdserver: request timed out, waiting for the applied index took too long",
    Unhealthy => "etcdserver: unhealthy cluster",
    Corrupt => "etcdserver: corrupt cluster",
    NotSupportedForLearner => "etcdserver: rpc not supported for learner",
    BadLeaderTransferee => "etcdserver: bad leader transferee",
    ClusterVersionUnavailable => "etcdserver: cluster version not found during downgrade",
    WrongDowngradeVersionFormat => "etcdserver: wrong downgrade target version format",
    InvalidDowngradeTargetVersion => "etcdserver: invalid downgrade target version",
    DowngradeInProcess => "etcdserver: cluster has a downgrade job in progress",
    NoInflightDowngrade => "etcdserver: no inflight downgrade job",
    Canceled => "etcdserver: request canceled",
    ContextDeadlineExceeded => "etcdserver: context deadline exceeded",
}

impl EtcdError {
    /// The error whose message `message` is, if it is one of etcd's.
    pub fn from_message(message: &str) -> Option<EtcdError> {
        EtcdError::ALL.iter().copied().find(|e| e.message() == message)
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_maps_back_to_its_case() {
        for e in EtcdError::ALL {
            assert_eq!(EtcdError::from_message(e.message()), Some(*e));
            assert!(e.message().starts_with("etcdserver: "), "{e:?}");
        }
        let status = tonic::Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        let err = Error::from(status);
        assert_eq!(err.etcd(), Some(EtcdError::Compacted));
        assert_eq!(err.code(), Some(tonic::Code::OutOfRange));
        assert_eq!(err.to_string(), "etcdserver: mvcc: required revision has been compacted");
        assert!(matches!(Error::from(tonic::Status::unknown("something else")), Error::Grpc(_)));
    }

    #[test]
    fn only_what_was_never_applied_is_sent_again_for_writes() {
        let no_leader = Error::from(tonic::Status::unavailable("etcdserver: no leader"));
        assert!(no_leader.not_sent() && no_leader.retryable() && no_leader.endpoint_failed());
        let timed_out = Error::from(tonic::Status::unavailable("etcdserver: request timed out"));
        assert!(!timed_out.not_sent() && timed_out.retryable());
        let denied = Error::from(tonic::Status::permission_denied("etcdserver: permission denied"));
        assert!(!denied.retryable() && !denied.auth_stale());
        let stale = Error::from(tonic::Status::unauthenticated("etcdserver: invalid auth token"));
        assert!(stale.auth_stale());
    }
}
