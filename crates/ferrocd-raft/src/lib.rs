//! Raft replication for any state machine, on openraft.
//!
//! This crate knows nothing about etcd. An application implements [`Apply`] — apply committed
//! commands in order, store an opaque Raft state blob atomically with their effects, write and
//! install snapshots as directories — and gets a replicated, durable log of its commands:
//!
//! - the log lives on a ferrocd [`Engine`](ferrocd_engine::Engine) opened with [`BUCKETS`]
//!   (usually the application's own engine, so one write-ahead log orders both), with group
//!   commit: many appends share one fsync, and openraft is told an entry is durable only after
//!   its fsync;
//! - snapshots are directories (e.g. an engine checkpoint), never one buffer in memory;
//! - openraft's types do not appear in this API.
//!
//! See `testing::MemKv` (feature `testing`) for a small state machine built on it.

pub mod grpc;
mod log_store;
pub mod mem;
mod network;
mod node;
mod pending;
mod snapshot;
mod state_machine;
#[cfg(test)]
mod suite;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod types;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use ferrocd_engine::Bucket;
use serde::{Deserialize, Serialize};

pub use network::{Network, PeerObserver};
pub use node::{Error, RaftConfig, RaftNode, Role, Status, TimeoutCause};
pub use snapshot::SnapshotDir;

/// A member's ID (etcd's member IDs are u64 too).
pub type NodeId = u64;

/// The engine buckets the Raft log uses; open the engine with them (beside the application's).
pub const BUCKETS: &[Bucket] = &[log_store::LOG, log_store::META];

/// How to reach a member: its peer URLs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Node {
    pub urls: Vec<String>,
}

/// A cluster membership: who votes and who only learns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Members {
    pub voters: BTreeMap<NodeId, Node>,
    pub learners: BTreeMap<NodeId, Node>,
    /// Whether this is the transitional (joint) configuration of a change.
    pub joint: bool,
}

impl Members {
    fn from_membership(m: &types::Membership) -> Self {
        let voter_ids: Vec<NodeId> = m.voter_ids().collect();
        let mut members = Self { joint: m.get_joint_config().len() > 1, ..Self::default() };
        for (id, node) in m.nodes() {
            if voter_ids.contains(id) {
                members.voters.insert(*id, node.clone());
            } else {
                members.learners.insert(*id, node.clone());
            }
        }
        members
    }
}

/// What a committed log entry carries.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// A command the application proposed.
    Command(&'a [u8]),
    /// A membership change taking effect.
    Membership(&'a Members),
    /// An entry Raft writes for itself (a new leader's first entry).
    Noop,
}

/// A committed log entry, handed to [`Apply::apply`].
#[derive(Debug, Clone, Copy)]
pub struct Committed<'a> {
    pub index: u64,
    pub term: u64,
    pub payload: Payload<'a>,
    /// Raft's state once this entry is applied: store it atomically with the entry's effects
    /// (or only the last entry's, when the whole batch is stored atomically).
    pub raft_state: &'a [u8],
}

/// The replicated state machine an application plugs in.
///
/// Contract: `apply` stores each entry's effects atomically with its `raft_state` blob (in one
/// engine batch; durability may come with the log's next fsync when both share an engine), so
/// after a crash the state is at an entry boundary; `raft_state` returns the last blob stored. A snapshot
/// written by `snapshot` holds the data and the blob as of one point; `install` replaces the
/// data (and the blob) with a snapshot's.
pub trait Apply: Send + Sync + 'static {
    /// The answer to a command, returned to the member that proposed it.
    type Response: Send + Sync + 'static;

    /// Applies committed entries, in log order, storing each one's `raft_state` with its
    /// effects. Answers one response per entry (`None` for entries that carry no command).
    ///
    /// # Errors
    /// An error stops this member's Raft: it never skips an entry.
    fn apply(&self, entries: &[Committed<'_>]) -> io::Result<Vec<Option<Self::Response>>>;

    /// The Raft state blob stored by the last `apply` or `install`, if any.
    ///
    /// # Errors
    /// I/O errors.
    fn raft_state(&self) -> io::Result<Option<Vec<u8>>>;

    /// Writes a consistent image of the state into the empty directory `dir`, and answers the
    /// Raft state blob as of that image.
    ///
    /// # Errors
    /// I/O errors.
    fn snapshot(&self, dir: &Path) -> io::Result<Vec<u8>>;

    /// Replaces the state with the image in `dir` (written by `snapshot`, here or on another
    /// member).
    ///
    /// # Errors
    /// I/O errors; a corrupt image.
    fn install(&self, dir: &Path) -> io::Result<()>;
}
