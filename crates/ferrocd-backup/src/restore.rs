//! etcd's backend read back into a ferrocd engine: restore and migration from etcd.

use ferrocd_bbolt::Reader;
use ferrocd_engine::{Bucket, Engine, WriteBatch};
use ferrocd_lease::layout::StoredLease;
use ferrocd_mvcc::layout::{StoredRevisions, record_key};
use ferrocd_types::Revision;
use prost::Message;

use crate::schema::{self, LeaseRecord};
use crate::{Error, Result};

/// The most bytes written to the engine in one batch.
const BATCH_BYTES: usize = 4 << 20;

/// etcdutl's options that change what is restored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Move the revision this far past the snapshot's newest (`--bump-revision`), so watchers
    /// and informers of the old cluster never see a revision again with other contents.
    pub bump_revision: u64,
    /// Compact at the bumped revision (`--mark-compacted`), so those watchers are told to
    /// start over rather than resume from a revision that no longer means the same.
    pub mark_compacted: bool,
}

impl RestoreOptions {
    /// etcdutl's rule: the two go together.
    ///
    /// # Errors
    /// etcdutl's error when one is given without the other.
    pub fn validate(&self) -> Result<()> {
        if (self.bump_revision > 0) != self.mark_compacted {
            // etcdutl's words, flag name and all.
            return Err(Error::Invalid("--mark-compacted required if --revision-bump > 0".into()));
        }
        Ok(())
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// The store's revision after it.
    pub revision: i64,
    /// The compacted revision (0 when none).
    pub compact_revision: i64,
    /// Records of the keyspace's history.
    pub records: u64,
    pub leases: u64,
    pub users: u64,
    pub roles: u64,
}

/// Writes the state of etcd's backend `db` into `engine` (empty, opened with the keyspace's,
/// leases' and auth's buckets), and syncs it.
///
/// Members and alarms are not restored: a restore makes a new cluster, whose members the
/// caller records; an alarm of the old cluster names a member that is gone (etcd keeps them,
/// and a restored cluster then refuses writes until they are disarmed).
///
/// # Errors
/// A file that is not etcd's backend ([`Error::Invalid`]); records that do not decode;
/// engine failures; invalid options.
pub fn restore(db: &Reader, engine: &impl Engine, options: RestoreOptions) -> Result<Restored> {
    restore_reporting(db, engine, options, &mut |_| {})
}

/// Key revisions restored between two calls of a restore's `progress`.
pub const PROGRESS_EVERY: u64 = 10_000;

/// [`restore`], calling `progress` with what was written so far every [`PROGRESS_EVERY`] key
/// revisions (for a progress line on long restores).
///
/// # Errors
/// [`restore`]'s.
pub fn restore_reporting(
    db: &Reader,
    engine: &impl Engine,
    options: RestoreOptions,
    progress: &mut dyn FnMut(&Restored),
) -> Result<Restored> {
    options.validate()?;
    let buckets = db.buckets()?;
    if !buckets.iter().any(|b| b == schema::KEY) {
        return Err(Error::Invalid("not an etcd backend: it has no `key` bucket".into()));
    }
    let has = |name: &[u8]| buckets.iter().any(|b| b == name);
    let mut out = Restored::default();
    let mut batch = Batch { engine, batch: WriteBatch::new() };
    let mut latest = Revision::new(1, 0);
    db.for_each(schema::KEY, |k, v| {
        let (rev, tombstone) = schema::parse_revision_key(k)
            .ok_or_else(|| ferrocd_bbolt::Error::Corrupt(format!("`key` record {k:?} is not a revision")))?;
        latest = latest.max(rev);
        out.records += 1;
        if out.records % PROGRESS_EVERY == 0 {
            progress(&out);
        }
        let value = if tombstone { deletion(rev, v)? } else { v.to_vec() };
        batch.put(ferrocd_mvcc::KEY_BUCKET, record_key(rev, tombstone), value)
    })?;
    if has(schema::LEASE) {
        db.for_each(schema::LEASE, |_, v| {
            let lease =
                LeaseRecord::decode(v).map_err(|e| ferrocd_bbolt::Error::Corrupt(format!("`lease` record: {e}")))?;
            let stored = StoredLease { id: lease.id, ttl: lease.ttl, remaining: lease.remaining_ttl };
            let mut b = WriteBatch::new();
            stored.write(&mut b);
            out.leases += 1;
            batch.append(b)
        })?;
    }
    for (name, bucket, count) in [
        (schema::AUTH, ferrocd_auth::AUTH_BUCKET, None),
        (schema::AUTH_USERS, ferrocd_auth::USERS_BUCKET, Some(&mut out.users)),
        (schema::AUTH_ROLES, ferrocd_auth::ROLES_BUCKET, Some(&mut out.roles)),
    ] {
        if has(name) {
            let mut count = count;
            db.for_each(name, |k, v| {
                if let Some(c) = count.as_deref_mut() {
                    *c += 1;
                }
                batch.put(bucket, k.to_vec(), v.to_vec())
            })?;
        }
    }
    let compact = |key: &[u8]| -> Result<Option<i64>> {
        let Some(v) = db.get(schema::META, key)? else { return Ok(None) };
        let (rev, _) = schema::parse_revision_key(&v)
            .ok_or_else(|| Error::Corrupt(format!("meta {} is not a revision", String::from_utf8_lossy(key))))?;
        Ok(Some(rev.main))
    };
    let (mut scheduled, finished) = if has(schema::META) {
        (compact(schema::SCHEDULED_COMPACT)?, compact(schema::FINISHED_COMPACT)?)
    } else {
        (None, None)
    };
    let mut current = latest.main.max(scheduled.unwrap_or(0)).max(finished.unwrap_or(0));
    if options.bump_revision > 0 {
        let bump =
            i64::try_from(options.bump_revision).map_err(|_| Error::Invalid("--bump-revision is too large".into()))?;
        current = latest.main.checked_add(bump).ok_or_else(|| Error::Invalid("--bump-revision is too large".into()))?;
        if options.mark_compacted {
            scheduled = Some(current);
        }
    }
    let mut meta = WriteBatch::new();
    StoredRevisions { current: Some(current), scheduled_compact: scheduled, finished_compact: finished }
        .write(&mut meta);
    batch.append(meta)?;
    batch.flush()?;
    engine.sync()?;
    out.revision = current;
    out.compact_revision = scheduled.unwrap_or(0);
    Ok(out)
}

/// A deletion's record as ferrocd keeps it: the key with the revision of the deletion (etcd
/// keeps the key alone and takes the revision from the record's key).
fn deletion(rev: Revision, value: &[u8]) -> std::result::Result<Vec<u8>, ferrocd_bbolt::Error> {
    let mut kv = ferrocd_proto::mvccpb::KeyValue::decode(value)
        .map_err(|e| ferrocd_bbolt::Error::Corrupt(format!("`key` record at revision {}: {e}", rev.main)))?;
    if kv.mod_revision == rev.main {
        return Ok(value.to_vec());
    }
    kv.mod_revision = rev.main;
    Ok(kv.encode_to_vec())
}

/// Writes accumulated in bounded batches.
struct Batch<'a, E: Engine> {
    engine: &'a E,
    batch: WriteBatch,
}

impl<E: Engine> Batch<'_, E> {
    fn put(&mut self, bucket: Bucket, key: Vec<u8>, value: Vec<u8>) -> std::result::Result<(), ferrocd_bbolt::Error> {
        self.batch.put(bucket, key, value);
        self.flush_if_full()
    }

    fn append(&mut self, other: WriteBatch) -> std::result::Result<(), ferrocd_bbolt::Error> {
        self.batch.append(other);
        self.flush_if_full()
    }

    fn flush_if_full(&mut self) -> std::result::Result<(), ferrocd_bbolt::Error> {
        if self.batch.payload_bytes() >= BATCH_BYTES {
            self.flush().map_err(|e| ferrocd_bbolt::Error::Corrupt(format!("writing the store: {e}")))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(self.engine.write(std::mem::take(&mut self.batch), false)?)
    }
}
