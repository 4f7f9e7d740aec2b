//! The keyspace's applier: a KV command applied to the MVCC store in the entry's batch, with the
//! lease table's key attachments kept in step with it.

use std::io;
use std::sync::Arc;

use ferrocd_engine::{Engine, WriteBatch};
use ferrocd_lease::Lessor;
use ferrocd_mvcc::{Applied, CompactionJob, KvStore, Leases, WriteRequest};
use ferrocd_proto::mvccpb::{Event, event::EventType};
use tokio::sync::oneshot;

use super::io_error;

/// The mvcc store's view of the lease table, for Put with a lease.
struct LessorLeases<'a>(&'a Lessor);

impl Leases for LessorLeases<'_> {
    fn exists(&self, id: i64) -> bool {
        self.0.exists(id)
    }
}

/// Applies `request` with `batch` (the entry's record, and whatever else must commit with it)
/// in its engine batch. The outer error is a storage failure (the member stops applying); the
/// inner one a refused request, which wrote nothing (the caller records the entry alone).
pub(super) fn apply<E: Engine>(
    kv: &KvStore<E>,
    lessor: &mut Lessor,
    request: WriteRequest,
    batch: WriteBatch,
    events: &mut Vec<(i64, Vec<Event>)>,
) -> io::Result<Result<Applied, ferrocd_mvcc::Error>> {
    match kv.apply(request, &LessorLeases(lessor), batch) {
        Ok(mut applied) => {
            for event in &applied.events {
                let Some(kv) = &event.kv else { continue };
                let old = lessor.lease_of(&kv.key);
                let new = if event.r#type == EventType::Put as i32 { kv.lease } else { 0 };
                if let Some(old) = old.filter(|old| *old != new) {
                    let _ = lessor.detach(old, &kv.key);
                }
                if new != 0 && old != Some(new) {
                    // The store checked the lease exists.
                    let _ = lessor.attach(new, &kv.key);
                }
            }
            if !applied.events.is_empty() {
                events.push((applied.revision, std::mem::take(&mut applied.events)));
            }
            Ok(Ok(applied))
        }
        Err(e @ (ferrocd_mvcc::Error::Engine(_) | ferrocd_mvcc::Error::Corrupt(_))) => {
            // The store is no longer consistent with the engine: stop applying.
            tracing::error!(error = %e, "storage failure while applying; this member stops");
            Err(io_error(e))
        }
        Err(refused) => Ok(Err(refused)),
    }
}

/// Runs this member's compaction `job` off the apply thread; the receiver resolves when it has.
pub(super) fn compact<E: Engine>(
    kv: Arc<KvStore<E>>,
    job: CompactionJob,
) -> io::Result<oneshot::Receiver<Result<(), ferrocd_mvcc::Error>>> {
    let (done, wait) = oneshot::channel();
    std::thread::Builder::new()
        .name("ferrocd-compact".into())
        .spawn(move || {
            let result = job.run(&kv);
            if let Err(e) = &result {
                tracing::error!(error = %e, "compaction failed");
            }
            let _ = done.send(result);
        })
        .map_err(io_error)?;
    Ok(wait)
}

#[cfg(test)]
mod tests {
    use ferrocd_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest};

    use super::super::Reply;
    use super::super::testing::Fixture;
    use crate::entry::entry::Command;
    use crate::error::ServerError;

    fn put(key: &str, lease: i64) -> Command {
        Command::Put(PutRequest { key: key.into(), value: b"v".to_vec(), lease, ..Default::default() })
    }

    #[test]
    fn puts_and_deletes_keep_leases_attachments_in_step() {
        let mut f = Fixture::new();
        f.apply(Command::LeaseGrant(LeaseGrantRequest { id: 1, ttl: 60 })).unwrap();
        f.apply(Command::LeaseGrant(LeaseGrantRequest { id: 2, ttl: 60 })).unwrap();
        f.apply(put("a", 1)).unwrap();
        f.apply(put("b", 1)).unwrap();
        assert_eq!(f.applier.lessor().lock().lease_of(b"a"), Some(1));
        // Moved to another lease, then to none.
        f.apply(put("a", 2)).unwrap();
        assert_eq!(f.applier.lessor().lock().lease_of(b"a"), Some(2));
        f.apply(put("a", 0)).unwrap();
        assert_eq!(f.applier.lessor().lock().lease_of(b"a"), None);
        // Deleted: detached.
        f.apply(Command::DeleteRange(DeleteRangeRequest { key: b"b".to_vec(), ..Default::default() })).unwrap();
        assert_eq!(f.applier.lessor().lock().lease_of(b"b"), None);
    }

    #[test]
    fn a_refused_write_changes_nothing_but_consumes_its_entry() {
        let mut f = Fixture::new();
        // A put naming a lease that does not exist is etcd's "requested lease not found".
        assert!(matches!(f.apply(put("a", 9)), Err(ServerError::Mvcc(_))));
        assert_eq!(f.applier.kv().current_revision(), 1);
        assert_eq!(f.applier.applied_index(), 1);
        let Reply::Kv(applied) = f.apply(put("a", 0)).unwrap() else { panic!("a put answers a keyspace change") };
        assert_eq!(applied.revision, 2);
        assert_eq!(f.applier.applied_index(), 2);
    }

    #[test]
    fn a_physical_compaction_answers_once_it_has_run() {
        let mut f = Fixture::new();
        for _ in 0..3 {
            f.apply(put("a", 0)).unwrap();
        }
        f.apply(Command::Compact(CompactionRequest { revision: 3, physical: true })).unwrap();
        assert_eq!(f.applier.kv().compact_revision(), 3);
        // Compacted away: below the compacted revision no history is left.
        assert!(f.applier.kv().events(2, 3, 10).is_err());
    }
}
