//! A member's state written as etcd's backend.

use std::path::Path;

use ferrocd_engine::{Bucket, ReadView, Scan};
use ferrocd_lease::layout::StoredLease;
use ferrocd_mvcc::layout::{StoredRevisions, parse_record_key};
use ferrocd_proto::etcdserverpb::AlarmMember;
use ferrocd_types::Revision;
use prost::Message;

use crate::schema::{self, ConfState, LeaseRecord, Member};
use crate::{Error, Result};

/// Where etcd's backend goes, one bucket after another in bbolt's order, each bucket's keys in
/// ascending order.
pub trait Sink {
    /// Starts bucket `name` (ending the one before).
    ///
    /// # Errors
    /// The sink's.
    fn bucket(&mut self, name: &[u8]) -> Result<()>;

    /// A record of the current bucket.
    ///
    /// # Errors
    /// The sink's.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
}

impl Sink for ferrocd_bbolt::Writer {
    fn bucket(&mut self, name: &[u8]) -> Result<()> {
        Ok(ferrocd_bbolt::Writer::bucket(self, name)?)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(ferrocd_bbolt::Writer::put(self, key, value)?)
    }
}

/// etcd's `Maintenance.Hash`: CRC-32C over every bucket's name and then its keys and values,
/// leaving out the records that differ between members holding the same data (the `meta`
/// bucket's Raft index, term and storage version).
#[derive(Debug, Clone, Default)]
pub struct BackendHash {
    crc: u32,
    bucket: Vec<u8>,
}

impl BackendHash {
    pub fn finish(&self) -> u32 {
        self.crc
    }

    fn ignored(&self, key: &[u8]) -> bool {
        self.bucket == schema::META && [schema::TERM, schema::CONSISTENT_INDEX, schema::STORAGE_VERSION].contains(&key)
    }
}

impl Sink for BackendHash {
    fn bucket(&mut self, name: &[u8]) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, name);
        self.bucket = name.to_vec();
        Ok(())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if !self.ignored(key) {
            self.crc = crc32c::crc32c_append(self.crc, key);
            self.crc = crc32c::crc32c_append(self.crc, value);
        }
        Ok(())
    }
}

/// What etcd's backend holds that a ferrocd engine does not: the cluster as Raft and the
/// members know it, and the Raft position of the state.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// Every member, voters and learners.
    pub members: Vec<Member>,
    /// The active alarms.
    pub alarms: Vec<AlarmMember>,
    /// The cluster's version (`3.6.0`).
    pub version: String,
    /// The index of the last applied entry (etcd's consistent index).
    pub applied_index: u64,
    /// The term of the state.
    pub term: u64,
}

/// Writes the state `view` holds, with `cluster`, as etcd's backend into `sink`.
///
/// # Errors
/// Engine failures; records that do not decode; the sink's.
pub fn export(view: &impl ReadView, cluster: &Cluster, sink: &mut impl Sink) -> Result<()> {
    sink.bucket(schema::ALARM)?;
    let mut alarms: Vec<Vec<u8>> = cluster.alarms.iter().map(Message::encode_to_vec).collect();
    alarms.sort();
    alarms.dedup();
    for key in alarms {
        sink.put(&key, &[])?;
    }
    sink.bucket(schema::AUTH)?;
    copy(view, ferrocd_auth::AUTH_BUCKET, sink)?;
    sink.bucket(schema::AUTH_ROLES)?;
    copy(view, ferrocd_auth::ROLES_BUCKET, sink)?;
    sink.bucket(schema::AUTH_USERS)?;
    copy(view, ferrocd_auth::USERS_BUCKET, sink)?;
    sink.bucket(schema::CLUSTER)?;
    if !cluster.version.is_empty() {
        sink.put(schema::CLUSTER_VERSION, cluster.version.as_bytes())?;
    }
    sink.bucket(schema::KEY)?;
    scan(view, ferrocd_mvcc::KEY_BUCKET, |k, v| {
        let (rev, tombstone) =
            parse_record_key(k).ok_or_else(|| Error::Corrupt(format!("key record {k:?} is not a revision")))?;
        // Values as they are: a deletion's carries its key and revision (etcd's, the key
        // alone; etcd reads only the key of it).
        sink.put(&schema::revision_key(rev, tombstone), v)
    })?;
    sink.bucket(schema::LEASE)?;
    scan(view, ferrocd_lease::LEASE_BUCKET, |k, v| {
        let lease = StoredLease::decode(k, v).map_err(|e| Error::Corrupt(e.to_string()))?;
        let record = LeaseRecord { id: lease.id, ttl: lease.ttl, remaining_ttl: lease.remaining };
        sink.put(k, &record.encode_to_vec())
    })?;
    sink.bucket(schema::MEMBERS)?;
    let mut members: Vec<(Vec<u8>, &Member)> = cluster.members.iter().map(|m| (m.key(), m)).collect();
    members.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, member) in &members {
        sink.put(key, &serde_json::to_vec(member).map_err(|e| Error::Corrupt(e.to_string()))?)?;
    }
    sink.bucket(schema::MEMBERS_REMOVED)?;
    sink.bucket(schema::META)?;
    let mut conf = ConfState::default();
    for m in &cluster.members {
        if m.is_learner { &mut conf.learners } else { &mut conf.voters }.push(m.id);
    }
    conf.voters.sort_unstable();
    conf.learners.sort_unstable();
    sink.put(schema::CONF_STATE, &serde_json::to_vec(&conf).map_err(|e| Error::Corrupt(e.to_string()))?)?;
    if cluster.applied_index > 0 {
        sink.put(schema::CONSISTENT_INDEX, &cluster.applied_index.to_be_bytes())?;
    }
    let revisions = StoredRevisions::read(view).map_err(|e| Error::Corrupt(e.to_string()))?;
    if let Some(finished) = revisions.finished_compact {
        sink.put(schema::FINISHED_COMPACT, &schema::revision_key(Revision::new(finished, 0), false))?;
    }
    if let Some(scheduled) = revisions.scheduled_compact {
        sink.put(schema::SCHEDULED_COMPACT, &schema::revision_key(Revision::new(scheduled, 0), false))?;
    }
    sink.put(schema::STORAGE_VERSION, schema::STORAGE_VERSION_VALUE.as_bytes())?;
    if cluster.term > 0 {
        sink.put(schema::TERM, &cluster.term.to_be_bytes())?;
    }
    Ok(())
}

/// Writes the state `view` holds, with `cluster`, as a bbolt database file at `path`;
/// returns its size in bytes.
///
/// # Errors
/// As [`export`]; the file cannot be written.
pub fn write_db(view: &impl ReadView, cluster: &Cluster, path: &Path) -> Result<u64> {
    let mut writer = ferrocd_bbolt::Writer::create(path)?;
    export(view, cluster, &mut writer)?;
    Ok(writer.finish()?)
}

/// Every record of `bucket`, in order.
fn scan(view: &impl ReadView, bucket: Bucket, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
    let mut failed = None;
    view.scan(bucket, &[], None, false, &mut |k, v| match f(k, v) {
        Ok(()) => Ok(Scan::Continue),
        Err(e) => {
            failed = Some(e);
            Ok(Scan::Stop)
        }
    })?;
    failed.map_or(Ok(()), Err)
}

fn copy(view: &impl ReadView, bucket: Bucket, sink: &mut impl Sink) -> Result<()> {
    scan(view, bucket, |k, v| sink.put(k, v))
}
