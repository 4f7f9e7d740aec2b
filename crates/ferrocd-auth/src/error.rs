//! The errors of auth, with etcd's exact messages and gRPC codes.

use ferrocd_types::ErrorCode;

/// Why an auth operation or a permission check failed. `Display` gives etcd's exact message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request without a user while auth is on (no token), or a management call naming no
    /// user.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// A wrong user name or password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// A permission grant without a permission.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// A change auth refuses: deleting root (user or role) or revoking root's root role while
    /// auth is on, a permission over no key.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// The auth store changed after the request was checked (or its token issued).
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// A token that is unknown, expired, or does not verify.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// Authenticate with a password for a user created without one (etcd passes its auth
    /// package's text through, as gRPC `Unknown`).
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    /// A member whose JWT key can only verify was asked to sign a token.
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,
    /// The engine failed.
    #[error("etcdserver: storage failure: {0}")]
    Engine(String),
    /// A stored record could not be decoded.
    #[error("etcdserver: corrupt auth data: {0}")]
    Corrupt(String),
}

impl Error {
    /// The gRPC code etcd answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UserEmpty
            | Self::RoleEmpty
            | Self::AuthFailed
            | Self::PermissionNotGiven
            | Self::InvalidAuthMgmt
            | Self::AuthOldRevision => ErrorCode::InvalidArgument,
            Self::RootUserNotExist
            | Self::RootRoleNotExist
            | Self::UserAlreadyExist
            | Self::UserNotFound
            | Self::RoleAlreadyExist
            | Self::RoleNotFound
            | Self::RoleNotGranted
            | Self::PermissionNotGranted
            | Self::AuthNotEnabled => ErrorCode::FailedPrecondition,
            Self::PermissionDenied => ErrorCode::PermissionDenied,
            Self::InvalidAuthToken => ErrorCode::Unauthenticated,
            Self::NoPasswordUser | Self::VerifyOnly => ErrorCode::Unknown,
            Self::Engine(_) => ErrorCode::Internal,
            Self::Corrupt(_) => ErrorCode::DataLoss,
        }
    }
}

impl From<ferrocd_engine::Error> for Error {
    fn from(e: ferrocd_engine::Error) -> Self {
        Self::Engine(e.to_string())
    }
}

/// Auth's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
