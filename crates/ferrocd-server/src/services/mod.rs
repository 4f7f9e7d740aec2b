//! etcd's gRPC services, over the shared server state.
//!
//! Services that are not built yet are simply not registered: tonic answers their methods with
//! gRPC `Unimplemented`, never with a fake success.

pub mod kv;
pub mod maintenance;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    pub db_size: SizeCache,
}

/// The store's size for the quota check, re-read at most every [`SizeCache::TTL`]: asking
/// RocksDB for it takes locks and cost 4% of a write's CPU when done per request. A quota is a
/// soft limit (etcd's too lets the last batch through), so a few milliseconds of staleness only
/// moves where writes stop by a few writes.
#[derive(Debug)]
pub struct SizeCache {
    born: Instant,
    /// Milliseconds after `born` of the last refresh, plus one (0: never).
    refreshed: AtomicU64,
    bytes: AtomicU64,
}

impl Default for SizeCache {
    fn default() -> Self {
        Self { born: Instant::now(), refreshed: AtomicU64::new(0), bytes: AtomicU64::new(0) }
    }
}

impl SizeCache {
    pub const TTL: Duration = Duration::from_millis(20);

    pub fn get(&self, engine: &impl Engine) -> u64 {
        let now = self.born.elapsed().as_millis() as u64 + 1;
        let last = self.refreshed.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= Self::TTL.as_millis() as u64 {
            self.refreshed.store(now, Ordering::Relaxed);
            self.bytes.store(engine.size_bytes(), Ordering::Relaxed);
        }
        self.bytes.load(Ordering::Relaxed)
    }
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
        let size = self.db_size.get(self.kv.engine().as_ref());
        if size.saturating_add(req.encoded_len() as u64) > self.quota_bytes {
            Err(ServerError::NoSpace)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use ferrocd_engine::{Bucket, Engine, MemEngine, WriteBatch};

    use super::SizeCache;

    #[test]
    fn size_cache_follows_the_engine() {
        let bucket = Bucket("key");
        let engine = MemEngine::new(&[bucket]);
        let cache = SizeCache::default();
        let empty = cache.get(&engine);
        let mut batch = WriteBatch::new();
        batch.put(bucket, b"k".to_vec(), vec![0; 4096]);
        engine.write(batch, true).unwrap();
        let grown = engine.size_bytes();
        assert!(grown > empty);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while cache.get(&engine) != grown {
            assert!(std::time::Instant::now() < deadline, "the cache never saw the write");
            std::thread::yield_now();
        }
    }
}
