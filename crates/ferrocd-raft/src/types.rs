//! openraft's type configuration for ferrocd-raft, and the codec of everything stored or sent.
//! Nothing here is public: the crate's API speaks in its own types.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Node;

/// A command the application proposed: opaque bytes, decoded by its [`crate::Apply`], and the
/// proposer's tag when a caller on the proposing member waits for the application's response
/// (see [`crate::pending`]).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Command {
    pub bytes: Vec<u8>,
    pub tag: Option<Tag>,
}

impl Command {
    /// A command nobody on this member waits for the response of.
    pub(crate) fn untagged(bytes: Vec<u8>) -> Self {
        Self { bytes, tag: None }
    }
}

/// Names a proposal on the member that made it: `incarnation` is random per process, so a tag
/// from another member, or from this member before a restart, matches no waiter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Tag {
    pub incarnation: u64,
    pub seq: u64,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({} bytes)", self.bytes.len())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// openraft's answer to a proposer: nothing. The application's typed response reaches its
/// caller through [`crate::pending::Pending`], keyed by the command's [`Tag`].
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Reply;

openraft::declare_raft_types!(
    /// ferrocd-raft's openraft configuration: one leader per term (as etcd's Raft), u64 member IDs.
    pub(crate) TypeConfig:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = Node,
        LeaderId = openraft::impls::leader_id_std::LeaderId<Self::Term, Self::NodeId>,
        AsyncRuntime = openraft_rt_tokio::TokioRuntime,
);

pub(crate) type Entry = openraft::alias::EntryOf<TypeConfig>;
pub(crate) type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub(crate) type Vote = openraft::alias::VoteOf<TypeConfig>;
pub(crate) type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type Membership = openraft::Membership<u64, Node>;
pub(crate) type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// Encodes a stored or sent value.
pub(crate) fn encode<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(std::io::Error::other)
}

/// Decodes a value [`encode`] wrote; a corrupt record is an `InvalidData` error.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> std::io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
