//! The lease table's applier: grants, revokes (each lease with its keys, at its own revision)
//! and checkpoints of remaining TTLs.

use std::io;
use std::sync::Arc;

use ferrocd_engine::{Engine, WriteBatch};
use ferrocd_lease::Lessor;
use ferrocd_mvcc::{KvStore, WriteRequest};
use ferrocd_proto::etcdserverpb::{LeaseCheckpointRequest, LeaseGrantRequest};

use super::{Outcome, Reply, Step, io_error, kv};
use crate::entry::LeaseIds;
use crate::error::ServerError;
use crate::replica::LeaseApplied;

/// How a member's lease table is set up.
#[derive(Debug, Clone)]
pub struct LeaseSetup {
    pub options: ferrocd_lease::Options,
    /// How much a new leader extends every lease (an election timeout, as etcd).
    pub extend: std::time::Duration,
}

/// A lease table loaded from `kv`'s engine, with the keys of `kv` attached again.
pub(super) fn load<E: Engine>(kv: &KvStore<E>, setup: &LeaseSetup) -> io::Result<Lessor> {
    let clock: Arc<dyn ferrocd_lease::Clock> = Arc::new(ferrocd_lease::SystemClock::new());
    let mut lessor = Lessor::load(&**kv.engine(), setup.options.clone(), clock).map_err(io_error)?;
    for (key, lease) in kv.leased_keys() {
        if let Err(e) = lessor.attach(lease, &key) {
            tracing::warn!(lease = %format!("{lease:x}"), error = %e, "a key's lease is missing; key left unattached");
        }
    }
    Ok(lessor)
}

fn lease_reply<E: Engine>(kv: &KvStore<E>, ttl: i64) -> Reply {
    Reply::Lease(LeaseApplied { ttl, revision: kv.current_revision() })
}

/// Grants lease `req.id` for `req.ttl` seconds (raised to the minimum TTL).
pub(super) fn grant<E: Engine>(
    kv: &KvStore<E>,
    lessor: &mut Lessor,
    req: &LeaseGrantRequest,
    mut step: Step<'_, '_>,
) -> io::Result<Outcome> {
    let result = lessor.grant(req.id, req.ttl, &mut step.record);
    let batch = if result.is_ok() { step.record } else { Step::record(step.entry) };
    kv.engine().write(batch, false).map_err(io_error)?;
    Ok(Outcome::done(result.map(|ttl| lease_reply(kv, ttl)).map_err(ServerError::from)))
}

/// Records leases' remaining TTLs (0 clears one).
pub(super) fn checkpoint<E: Engine>(
    kv: &KvStore<E>,
    lessor: &mut Lessor,
    req: &LeaseCheckpointRequest,
    mut step: Step<'_, '_>,
) -> io::Result<Outcome> {
    for point in &req.checkpoints {
        lessor.apply_checkpoint(point.id, point.remaining_ttl, &mut step.record);
    }
    kv.engine().write(step.record, false).map_err(io_error)?;
    Ok(Outcome::done(Ok(lease_reply(kv, 0))))
}

/// Revokes leases: each lease's removal and the deletion of its keys are one engine batch and
/// one revision (none if it had no live key); the entry's record goes with the last.
pub(super) fn revoke<E: Engine>(
    kv: &KvStore<E>,
    lessor: &mut Lessor,
    req: &LeaseIds,
    step: Step<'_, '_>,
) -> io::Result<Outcome> {
    let mut record = Some(step.record);
    let mut revision = None;
    for (i, &id) in req.ids.iter().enumerate() {
        let mut batch = WriteBatch::new();
        let keys = match lessor.revoke(id, &mut batch) {
            Ok(keys) => keys,
            Err(e) if req.expired => {
                tracing::debug!(lease = %format!("{id:x}"), error = %e, "expired lease already gone");
                continue;
            }
            Err(e) => {
                kv.engine().write(record.take().unwrap_or_default(), false).map_err(io_error)?;
                return Ok(Outcome::done(Err(e.into())));
            }
        };
        if i + 1 == req.ids.len() {
            batch.append(record.take().unwrap_or_default());
        }
        match kv::apply(kv, lessor, WriteRequest::DeleteKeys(keys), batch, step.events)? {
            Ok(applied) => revision = Some(applied.revision),
            Err(e) => return Err(io_error(format!("revoking lease {id:x}: {e}"))),
        }
    }
    if let Some(record) = record {
        kv.engine().write(record, false).map_err(io_error)?;
    }
    let reply = match revision {
        Some(revision) => Reply::Lease(LeaseApplied { ttl: 0, revision }),
        None => lease_reply(kv, 0),
    };
    Ok(Outcome::done(Ok(reply)))
}

#[cfg(test)]
mod tests {
    use ferrocd_proto::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, PutRequest};

    use super::super::Reply;
    use super::super::testing::Fixture;
    use crate::entry::{LeaseIds, entry::Command};
    use crate::replica::LeaseApplied;

    fn grant(f: &mut Fixture, id: i64, ttl: i64) -> LeaseApplied {
        match f.apply(Command::LeaseGrant(LeaseGrantRequest { id, ttl })).unwrap() {
            Reply::Lease(done) => done,
            other => panic!("a grant answered {other:?}"),
        }
    }

    fn put(f: &mut Fixture, key: &str, lease: i64) {
        f.apply(Command::Put(PutRequest { key: key.into(), value: b"v".to_vec(), lease, ..Default::default() }))
            .unwrap();
    }

    #[test]
    fn a_grant_is_raised_to_the_minimum_ttl_and_twice_is_refused() {
        let mut f = Fixture::new();
        let min = ferrocd_lease::Options::default().min_ttl_secs;
        assert_eq!(grant(&mut f, 1, 1).ttl, min.max(1));
        let again = f.apply(Command::LeaseGrant(LeaseGrantRequest { id: 1, ttl: 10 }));
        assert!(again.unwrap_err().to_string().contains("lease already exists"));
        assert!(f.applier.lessor().lock().exists(1));
    }

    #[test]
    fn a_revoke_deletes_the_leases_keys_at_one_revision() {
        let mut f = Fixture::new();
        grant(&mut f, 1, 60);
        put(&mut f, "a", 1);
        put(&mut f, "b", 1);
        put(&mut f, "c", 0);
        let before = f.applier.kv().current_revision();
        let Reply::Lease(done) = f.apply(Command::LeaseRevoke(LeaseIds { ids: vec![1], expired: false })).unwrap()
        else {
            panic!("a revoke answers as a lease command")
        };
        assert_eq!(done.revision, before + 1);
        assert!(!f.applier.lessor().lock().exists(1));
        let left = f.applier.kv().leased_keys();
        assert!(left.is_empty(), "{left:?}");
        // Unknown on request: etcd's error; expired leases already gone are skipped.
        assert!(f.apply(Command::LeaseRevoke(LeaseIds { ids: vec![1], expired: false })).is_err());
        assert!(f.apply(Command::LeaseRevoke(LeaseIds { ids: vec![1, 2], expired: true })).is_ok());
    }

    #[test]
    fn leases_their_keys_and_checkpoints_survive_a_restart() {
        let mut f = Fixture::new();
        grant(&mut f, 5, 60);
        put(&mut f, "k", 5);
        let point = LeaseCheckpoint { id: 5, remaining_ttl: 42 };
        f.apply(Command::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints: vec![point] })).unwrap();
        let reopened = Fixture::on(f.engine.clone());
        let mut lessor = reopened.applier.lessor().lock();
        assert_eq!(lessor.lease_of(b"k"), Some(5));
        // A new leader counts from the checkpointed remaining TTL, not from the granted one.
        lessor.promote(std::time::Duration::ZERO);
        let ttl = lessor.time_to_live(5, false).unwrap();
        assert_eq!(ttl.granted_ttl, 60);
        assert!((40..=42).contains(&ttl.remaining_secs), "{}", ttl.remaining_secs);
    }
}
