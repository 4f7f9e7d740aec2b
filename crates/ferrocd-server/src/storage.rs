//! Opening the data directory: the engine with every bucket the server uses, and the server's
//! own records (member and cluster IDs, applied index).

use std::collections::BTreeMap;
use std::path::Path;

use ferrocd_engine::{Bucket, Engine, ReadView, WriteBatch};
use ferrocd_engine_rocks::RocksEngine;
use ferrocd_mvcc::KvStore;

/// The server's own records.
pub const SERVER_BUCKET: Bucket = Bucket("server");
/// The index of the last applied command.
pub const APPLIED_INDEX: &[u8] = b"applied_index";
const MEMBER_ID: &[u8] = b"member_id";
const CLUSTER_ID: &[u8] = b"cluster_id";

/// Every bucket of a member's engine: the keyspace, the server's records and the Raft log,
/// in one engine so one write-ahead log orders them all.
pub fn buckets() -> Vec<Bucket> {
    let mut all = KvStore::<RocksEngine>::BUCKETS.to_vec();
    all.extend_from_slice(ferrocd_lease::Lessor::BUCKETS);
    all.extend_from_slice(&ferrocd_auth::BUCKETS);
    all.push(crate::apply::ALARM_BUCKET);
    all.push(SERVER_BUCKET);
    all.extend_from_slice(ferrocd_raft::BUCKETS);
    all
}

/// Opens (creating when new) the engine in `<data_dir>/member/db`.
///
/// # Errors
/// The directory cannot be created or the engine cannot open it.
pub fn open_engine(data_dir: &Path) -> anyhow::Result<RocksEngine> {
    let dir = data_dir.join("member").join("db");
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", dir.display()))?;
    Ok(RocksEngine::open(&dir, &buckets())?)
}

/// A `u64` record of the server bucket, if present.
///
/// # Errors
/// Engine failures; [`ferrocd_engine::Error::Corrupt`] for a record that is not 8 bytes.
pub fn read_u64(view: &impl ReadView, key: &[u8]) -> ferrocd_engine::Result<Option<u64>> {
    view.get(SERVER_BUCKET, key)?
        .map(|v| {
            v.as_slice().try_into().map(u64::from_be_bytes).map_err(|_| {
                ferrocd_engine::Error::Corrupt(format!("server record {:?}", String::from_utf8_lossy(key)))
            })
        })
        .transpose()
}

/// The IDs this data directory was created with, recording `fresh` on first start.
///
/// # Errors
/// Engine failures.
pub fn identity(engine: &impl Engine, fresh: (u64, u64)) -> anyhow::Result<(u64, u64)> {
    if let Some(stored) = stored_identity(engine)? {
        return Ok(stored);
    }
    let mut batch = WriteBatch::new();
    batch.put(SERVER_BUCKET, MEMBER_ID, fresh.0.to_be_bytes());
    batch.put(SERVER_BUCKET, CLUSTER_ID, fresh.1.to_be_bytes());
    engine.write(batch, true)?;
    Ok(fresh)
}

/// The member and cluster IDs this data directory was created with, if any.
///
/// # Errors
/// Engine failures.
pub fn stored_identity(engine: &impl Engine) -> anyhow::Result<Option<(u64, u64)>> {
    Ok(read_u64(engine, MEMBER_ID)?.zip(read_u64(engine, CLUSTER_ID)?))
}

/// The membership a restore gave the data directory (JSON: member ID → peer URLs), until the
/// first start has bootstrapped Raft with it and purged the log.
const RESTORED_MEMBERS: &[u8] = b"restored_members";

/// Records the membership a restore gave this data directory, for its first start.
///
/// # Errors
/// Storage failures.
pub fn record_restored_members(engine: &impl Engine, members: &BTreeMap<u64, Vec<String>>) -> anyhow::Result<()> {
    let mut batch = WriteBatch::new();
    batch.put(SERVER_BUCKET, RESTORED_MEMBERS, serde_json::to_vec(members)?);
    engine.write(batch, true)?;
    Ok(())
}

/// The membership a restore recorded, if this data directory's first start has not used it
/// yet.
///
/// # Errors
/// Storage failures; a record that does not decode.
pub fn restored_members(engine: &impl Engine) -> anyhow::Result<Option<BTreeMap<u64, Vec<String>>>> {
    match engine.get(SERVER_BUCKET, RESTORED_MEMBERS)? {
        Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
        None => Ok(None),
    }
}

/// Forgets the restored membership, once Raft holds it and the log is purged.
///
/// # Errors
/// Storage failures.
pub fn restore_done(engine: &impl Engine) -> anyhow::Result<()> {
    let mut batch = WriteBatch::new();
    batch.delete(SERVER_BUCKET, RESTORED_MEMBERS);
    engine.write(batch, true)?;
    Ok(())
}
