//! The errors of the MVCC store, with etcd's exact messages.

use ferrocd_types::ErrorCode;

/// Why a request to the store failed. `Display` gives etcd's exact message, and [`Error::code`]
/// the gRPC code etcd sends it with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// The engine failed; the store must not be used any more.
    #[error("etcdserver: storage failure: {0}")]
    Engine(#[from] ferrocd_engine::Error),
    /// Stored data could not be decoded.
    #[error("etcdserver: corrupt data: {0}")]
    Corrupt(String),
}

impl Error {
    /// The gRPC code etcd answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Compacted | Self::FutureRevision => ErrorCode::OutOfRange,
            Self::EmptyKey
            | Self::KeyNotFound
            | Self::ValueProvided
            | Self::LeaseProvided
            | Self::TooManyOps
            | Self::DuplicateKey
            | Self::InvalidSortOption => ErrorCode::InvalidArgument,
            Self::LeaseNotFound => ErrorCode::NotFound,
            Self::Engine(_) => ErrorCode::Internal,
            Self::Corrupt(_) => ErrorCode::DataLoss,
        }
    }
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
