//! The shared vocabulary of ferrocd's crates.
//!
//! - [`Revision`]: etcd's `(main, sub)` revision and its order-preserving byte encoding;
//! - [`KeyRange`]: the one place that interprets etcd's `key` / `range_end` pair;
//! - [`ErrorCode`]: the gRPC status codes etcd's errors travel with, so crates below the
//!   server can say which code an error maps to without depending on tonic.

mod key_range;
mod revision;

pub use key_range::{KeyRange, prefix_end};
pub use revision::Revision;

/// The gRPC status codes etcd's errors use, with gRPC's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl ErrorCode {
    /// The code with gRPC's number `code`, if etcd's errors use it.
    pub fn from_i32(code: i32) -> Option<Self> {
        use ErrorCode::*;
        [
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        ]
        .into_iter()
        .find(|c| *c as i32 == code)
    }
}
