//! The write path: every mutating request goes through a [`WritePath`], which orders it,
//! applies it and answers once it is durable.
//!
//! The server's implementation is [`crate::replica::RaftWritePath`]: it proposes the command
//! through Raft (one member or five) and answers from its apply. The services above see only
//! this trait.

use ferrocd_mvcc::{Applied, WriteRequest};

use crate::error::ServerError;

/// A mutating request, as ordered by the write path.
pub type Command = WriteRequest;

/// A change of the lease table, as ordered by the write path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseCommand {
    /// Grant lease `id` (chosen by the leader) for `ttl` seconds.
    Grant { id: i64, ttl: i64 },
    /// Revoke a lease and delete its keys.
    Revoke(i64),
    /// Revoke leases the leader found expired (each with its keys, at its own revision).
    Expire(Vec<i64>),
    /// Record leases' remaining TTLs `(id, seconds)`; 0 clears one.
    Checkpoint(Vec<(i64, i64)>),
}

/// What an applied lease command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseApplied {
    /// The TTL a grant gave (raised to the minimum); 0 for the other commands.
    pub ttl: i64,
    /// The store revision after it.
    pub revision: i64,
}

/// Orders, applies and makes durable the mutating requests.
pub trait WritePath: Send + Sync + 'static {
    /// Applies `cmd` after every command proposed before it; resolves once the result is
    /// durable and visible to reads.
    fn propose(&self, cmd: Command) -> impl std::future::Future<Output = Result<Applied, ServerError>> + Send;

    /// As [`Self::propose`], for a change of the lease table.
    fn propose_lease(
        &self,
        cmd: LeaseCommand,
    ) -> impl std::future::Future<Output = Result<LeaseApplied, ServerError>> + Send;

    /// The index of the last applied command.
    fn applied_index(&self) -> u64;
}
