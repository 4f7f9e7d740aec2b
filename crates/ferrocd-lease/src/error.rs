//! The errors of the lessor, with etcd's exact messages.

/// Why a lease operation failed. `Display` gives etcd's exact message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such lease (or, for renew, it has already expired and awaits its revoke; the server
    /// answers a keep-alive with TTL 0). Also etcd's answer to a grant of lease id 0. gRPC
    /// `NotFound`.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant of an id that is in use. gRPC `FailedPrecondition`.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant with a TTL above [`crate::MAX_LEASE_TTL`]. gRPC `OutOfRange`.
    #[error("etcdserver: too large lease TTL")]
    TtlTooLarge,
    /// A renew on a lessor that is not primary: the server forwards the keep-alive to the
    /// leader (etcd's `lease.ErrNotPrimary`).
    #[error("not a primary lessor")]
    NotPrimary,
    /// The engine failed while loading.
    #[error("etcdserver: storage failure: {0}")]
    Engine(#[from] ferrocd_engine::Error),
    /// A stored lease could not be decoded.
    #[error("etcdserver: corrupt lease data: {0}")]
    Corrupt(String),
}

/// The lessor's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
