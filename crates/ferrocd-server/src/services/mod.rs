//! etcd's gRPC services, over the shared server state.
//!
//! Services that are not built yet are simply not registered: tonic answers their methods with
//! gRPC `Unimplemented`, never with a fake success.

pub mod kv;
pub mod maintenance;

use std::sync::Arc;

use ferrocd_engine::Engine;
use ferrocd_mvcc::KvStore;
use ferrocd_proto::etcdserverpb::ResponseHeader;
use prost::Message;

use crate::error::ServerError;
use crate::write_path::WritePath;

/// The raft term reported by a single member that is always its own leader.
pub const SINGLE_MEMBER_TERM: u64 = 1;

/// What every service shares.
#[derive(Debug)]
pub struct Shared<E: Engine, W: WritePath> {
    pub kv: Arc<KvStore<E>>,
    pub writes: W,
    pub member_id: u64,
    pub cluster_id: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub quota_bytes: u64,
}

impl<E: Engine, W: WritePath> Shared<E, W> {
    /// A response header at `revision`.
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: SINGLE_MEMBER_TERM,
        })
    }

    /// Fills the cluster fields of a header the store set the revision of.
    pub fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or_else(|| self.kv.current_revision(), |h| h.revision);
        *header = self.header(revision);
    }

    /// etcd's size limit on a request that goes through the log.
    pub fn check_size(&self, req: &impl Message) -> Result<(), ServerError> {
        if req.encoded_len() > self.max_request_bytes { Err(ServerError::RequestTooLarge) } else { Ok(()) }
    }

    /// etcd's backend quota: a write that adds data fails once the store is past its quota.
    pub fn check_quota(&self, req: &impl Message) -> Result<(), ServerError> {
        let size = self.kv.engine().size_bytes();
        if size.saturating_add(req.encoded_len() as u64) > self.quota_bytes {
            Err(ServerError::NoSpace)
        } else {
            Ok(())
        }
    }
}
