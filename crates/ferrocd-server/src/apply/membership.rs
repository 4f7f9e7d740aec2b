//! The membership records' applier: the attributes each member publishes through Raft once it
//! starts (name, client URLs), and the cluster ID, recorded by the first publish. Raft's own
//! membership (who votes, who learns) lives in Raft's state blob, not here.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrocd_engine::{ReadView, Scan, WriteBatch};
use prost::Message;

pub use crate::entry::MemberAttrs;

use super::io_error;
use crate::storage::{self, SERVER_BUCKET};

/// The cluster ID, as replicated (a member that joins learns it from the log).
pub(super) const CLUSTER_ID: &[u8] = b"replicated_cluster_id";
/// Prefix of a member's attributes record (`member/<id, 8 bytes big-endian>`).
pub(super) const MEMBER_PREFIX: &[u8] = b"member/";

fn member_key(id: u64) -> Vec<u8> {
    let mut key = MEMBER_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn read_u64(view: &impl ReadView, key: &[u8]) -> io::Result<Option<u64>> {
    storage::read_u64(view, key).map_err(io_error)
}

/// The cluster ID this member knows.
#[derive(Debug)]
pub(super) struct Members {
    cluster_id: AtomicU64,
}

impl Members {
    /// The records in `view`; `cluster_id` until the log records one.
    pub(super) fn open(view: &impl ReadView, cluster_id: u64) -> io::Result<Self> {
        Ok(Self { cluster_id: AtomicU64::new(read_u64(view, CLUSTER_ID)?.unwrap_or(cluster_id)) })
    }

    /// After a snapshot install: the cluster ID the snapshot recorded, if it did.
    pub(super) fn reload(&self, view: &impl ReadView) -> io::Result<()> {
        if let Some(id) = read_u64(view, CLUSTER_ID)? {
            self.cluster_id.store(id, Ordering::Release);
        }
        Ok(())
    }

    pub(super) fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::Acquire)
    }

    /// Records `attrs` into `batch`, and the cluster ID when none is recorded yet.
    pub(super) fn publish(&self, view: &impl ReadView, attrs: &MemberAttrs, batch: &mut WriteBatch) -> io::Result<()> {
        if read_u64(view, CLUSTER_ID)?.is_none() && attrs.cluster_id != 0 {
            batch.put(SERVER_BUCKET, CLUSTER_ID, attrs.cluster_id.to_be_bytes());
            self.cluster_id.store(attrs.cluster_id, Ordering::Release);
        }
        batch.put(SERVER_BUCKET, member_key(attrs.id), attrs.encode_to_vec());
        Ok(())
    }
}

/// The attributes every member published, by ID.
pub(super) fn attrs(view: &impl ReadView) -> io::Result<BTreeMap<u64, MemberAttrs>> {
    let mut out = BTreeMap::new();
    let mut end = MEMBER_PREFIX.to_vec();
    *end.last_mut().expect("non-empty") += 1;
    view.scan(SERVER_BUCKET, MEMBER_PREFIX, Some(&end), false, &mut |_, v| {
        let attrs = MemberAttrs::decode(v).map_err(|e| ferrocd_engine::Error::Corrupt(e.to_string()))?;
        out.insert(attrs.id, attrs);
        Ok(Scan::Continue)
    })
    .map_err(io_error)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixture;
    use super::MemberAttrs;
    use crate::entry::entry::Command;

    fn attrs(id: u64, name: &str, cluster_id: u64) -> MemberAttrs {
        MemberAttrs { id, name: name.into(), client_urls: vec![format!("http://{name}:2379")], cluster_id }
    }

    #[test]
    fn the_first_publish_records_the_cluster_and_each_member_its_latest_attributes() {
        let mut f = Fixture::new();
        assert_eq!(f.applier.cluster_id(), 7, "the configured ID until the log records one");
        f.apply(Command::MemberAttrs(attrs(1, "a", 100))).unwrap();
        f.apply(Command::MemberAttrs(attrs(2, "b", 200))).unwrap();
        f.apply(Command::MemberAttrs(attrs(1, "a2", 100))).unwrap();
        assert_eq!(f.applier.cluster_id(), 100);
        let published = f.applier.member_attrs().unwrap();
        assert_eq!(published.keys().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(published[&1].name, "a2");
        // A restarted member reads the same records.
        let reopened = Fixture::on(f.engine.clone());
        assert_eq!(reopened.applier.cluster_id(), 100);
        assert_eq!(reopened.applier.member_attrs().unwrap(), published);
    }
}
