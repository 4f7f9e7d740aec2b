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

/// Orders, applies and makes durable the mutating requests.
pub trait WritePath: Send + Sync + 'static {
    /// Applies `cmd` after every command proposed before it; resolves once the result is
    /// durable and visible to reads.
    fn propose(&self, cmd: Command) -> impl std::future::Future<Output = Result<Applied, ServerError>> + Send;

    /// The index of the last applied command.
    fn applied_index(&self) -> u64;
}
