//! etcd's auth and RBAC, sans I/O (as `ferrocd-lease`): the state every member applies and the
//! checks every request passes.
//!
//! - [`AuthStore`]: users, roles, key-range permissions, the enabled flag and the auth
//!   revision, changed only through the server's applied log entries, each change added to the
//!   caller's [`WriteBatch`](ferrocd_engine::WriteBatch) in etcd's layout (buckets
//!   [`USERS_BUCKET`], [`ROLES_BUCKET`], [`AUTH_BUCKET`]; records are `authpb` messages), so
//!   a backup in etcd's format can carry them as they are;
//! - the permission check: each user's READ and WRITE ranges merged into a [`RangeSet`] when
//!   their roles change, so "is `[key, range_end)` fully covered" is one ordered lookup, not a
//!   scan of roles per request;
//! - [`password`]: bcrypt in Go's `$2a$` form, at etcd's cost;
//! - [`Tokens`]: simple tokens (issued through the log, sliding TTL) and JWT.
//!
//! Absences: no threads, no clock of its own, no gRPC. The server decides which check each
//! RPC needs (etcd's table), runs bcrypt off its async threads, and maps [`Error`] to gRPC.

mod error;
pub mod password;
mod range_set;
mod store;
#[cfg(test)]
mod tests;
mod token;

use ferrocd_engine::Bucket;

pub use error::{Error, Result};
pub use range_set::RangeSet;
pub use store::{AuthInfo, AuthStore, Perm};
pub use token::{DEFAULT_JWT_TTL, TokenOptions, Tokens};

/// Users, by name: `authpb.User`.
pub const USERS_BUCKET: Bucket = Bucket("authUsers");
/// Roles, by name: `authpb.Role`.
pub const ROLES_BUCKET: Bucket = Bucket("authRoles");
/// `authEnabled` (one byte, 1 when on) and `authRevision` (u64 big-endian).
pub const AUTH_BUCKET: Bucket = Bucket("auth");
/// Every bucket auth keeps.
pub const BUCKETS: [Bucket; 3] = [AUTH_BUCKET, USERS_BUCKET, ROLES_BUCKET];

/// The user and the role that may do everything.
pub const ROOT: &str = "root";
