//! The replicated state machine: etcd's keyspace and membership records applied from the Raft
//! log on every member, and the write path that proposes through Raft.
//!
//! Every mutating request is encoded as a [`LogCommand`], proposed, and applied by
//! [`KvMachine`] in log order on every member; the proposer answers from its own apply. Each
//! entry's Raft state blob is written in the same engine batch as its effects, so after a crash
//! the store sits at an entry boundary and Raft resumes after the last applied entry (never
//! re-applying or skipping one). The log and the store share one engine, so one write-ahead
//! log orders both and the log's group fsync also makes the applied effects durable.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrocd_engine::{Bucket, Engine, ReadView, Scan, WriteBatch};
use ferrocd_engine_rocks::RocksEngine;
use ferrocd_lease::{LEASE_BUCKET, Lessor};
use ferrocd_mvcc::{Applied, KEY_BUCKET, KvStore, Leases, META_BUCKET, WriteRequest};
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, PutRequest,
    TxnRequest,
};
use ferrocd_proto::mvccpb::{Event, event::EventType};
use ferrocd_raft::{Apply, Committed, Payload, RaftNode};
use ferrocd_watch::Options as WatchOptions;
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::oneshot;

use crate::error::ServerError;
use crate::history::{Hub, StoreHistory};
use crate::storage::{self, APPLIED_INDEX, SERVER_BUCKET};
use crate::write_path::{Command, LeaseApplied, LeaseCommand, WritePath};

/// The Raft state blob of the last applied entry.
const RAFT_STATE: &[u8] = b"raft_state";
/// The cluster ID, as replicated (a member that joins learns it from the log).
const CLUSTER_ID: &[u8] = b"replicated_cluster_id";
/// Prefix of a member's attributes record (`member/<id, 8 bytes big-endian>`).
const MEMBER_PREFIX: &[u8] = b"member/";
/// Present while a snapshot is being installed: the directory it is installed from.
const INSTALLING: &[u8] = b"installing_snapshot";

/// What the Raft log carries.
#[derive(Clone, PartialEq, Message)]
pub struct LogCommand {
    #[prost(oneof = "log_command::Kind", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9")]
    pub kind: Option<log_command::Kind>,
}

pub mod log_command {
    use super::{
        CompactionRequest, DeleteRangeRequest, KeyList, LeaseCheckpointRequest, LeaseGrantRequest, LeaseIds,
        MemberAttrs, PutRequest, TxnRequest,
    };

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Put(PutRequest),
        #[prost(message, tag = "2")]
        DeleteRange(DeleteRangeRequest),
        #[prost(message, tag = "3")]
        Txn(TxnRequest),
        #[prost(message, tag = "4")]
        Compact(CompactionRequest),
        #[prost(message, tag = "5")]
        MemberAttrs(MemberAttrs),
        /// Delete exactly these keys at one revision.
        #[prost(message, tag = "6")]
        DeleteKeys(KeyList),
        /// Grant a lease (the leader chose its ID).
        #[prost(message, tag = "7")]
        LeaseGrant(LeaseGrantRequest),
        /// Revoke leases, each with its keys at its own revision: one lease on request, or
        /// a batch the leader found expired (leases already gone are skipped then).
        #[prost(message, tag = "8")]
        LeaseRevoke(LeaseIds),
        /// Record leases' remaining TTLs (etcd's lease checkpoints).
        #[prost(message, tag = "9")]
        LeaseCheckpoint(LeaseCheckpointRequest),
    }
}

/// Keys, for [`log_command::Kind::DeleteKeys`].
#[derive(Clone, PartialEq, Message)]
pub struct KeyList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub keys: Vec<Vec<u8>>,
}

/// Leases to revoke, for [`log_command::Kind::LeaseRevoke`].
#[derive(Clone, PartialEq, Message)]
pub struct LeaseIds {
    #[prost(int64, repeated, tag = "1")]
    pub ids: Vec<i64>,
    /// Expired leases: a lease already gone is skipped, not an error.
    #[prost(bool, tag = "2")]
    pub expired: bool,
}

/// A member's published attributes (etcd publishes them through Raft once a member starts).
#[derive(Clone, PartialEq, Message)]
pub struct MemberAttrs {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, repeated, tag = "3")]
    pub client_urls: Vec<String>,
    /// The cluster the member belongs to (recorded once, by the first publish).
    #[prost(uint64, tag = "4")]
    pub cluster_id: u64,
}

impl From<WriteRequest> for LogCommand {
    fn from(req: WriteRequest) -> Self {
        use log_command::Kind;
        let kind = match req {
            WriteRequest::Put(r) => Kind::Put(r),
            WriteRequest::DeleteRange(r) => Kind::DeleteRange(r),
            WriteRequest::Txn(r) => Kind::Txn(r),
            WriteRequest::Compact(r) => Kind::Compact(r),
            WriteRequest::DeleteKeys(keys) => Kind::DeleteKeys(KeyList { keys }),
        };
        Self { kind: Some(kind) }
    }
}

impl From<LeaseCommand> for LogCommand {
    fn from(cmd: LeaseCommand) -> Self {
        use log_command::Kind;
        let kind = match cmd {
            LeaseCommand::Grant { id, ttl } => Kind::LeaseGrant(LeaseGrantRequest { id, ttl }),
            LeaseCommand::Revoke(id) => Kind::LeaseRevoke(LeaseIds { ids: vec![id], expired: false }),
            LeaseCommand::Expire(ids) => Kind::LeaseRevoke(LeaseIds { ids, expired: true }),
            LeaseCommand::Checkpoint(points) => Kind::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints: points
                    .into_iter()
                    .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                    .collect(),
            }),
        };
        Self { kind: Some(kind) }
    }
}

/// What an applied command answers.
#[derive(Debug)]
pub enum Reply {
    /// A keyspace change (a lease revoke answers with the deletion of its keys).
    Kv(Applied),
    /// A lease command that changed no key: the granted TTL (grant) and the store revision.
    Lease { ttl: i64, revision: i64 },
}

/// The answer of an applied command to the member that proposed it.
#[derive(Debug)]
pub struct Outcome {
    result: Result<Reply, ServerError>,
    /// For a physical compaction: resolves when this member's compaction job has run.
    compacted: Option<oneshot::Receiver<Result<(), ferrocd_mvcc::Error>>>,
}

impl Outcome {
    fn done(result: Result<Reply, ServerError>) -> Option<Self> {
        Some(Self { result, compacted: None })
    }

    /// The applied result, once a physical compaction asked for has finished.
    async fn finish(self) -> Result<Reply, ServerError> {
        let reply = self.result?;
        if let Some(done) = self.compacted {
            done.await.map_err(|_| ServerError::Stopped)??;
        }
        Ok(reply)
    }
}

/// How a member's lease table is set up.
#[derive(Debug, Clone)]
pub struct LeaseSetup {
    pub options: ferrocd_lease::Options,
    /// How much a new leader extends every lease (an election timeout, as etcd).
    pub extend: std::time::Duration,
}

/// The mvcc store's view of the lease table, for Put with a lease.
struct LessorLeases<'a>(&'a Lessor);

impl Leases for LessorLeases<'_> {
    fn exists(&self, id: i64) -> bool {
        self.0.exists(id)
    }
}

/// A lease table loaded from `engine`, with the keys of `kv` attached again.
fn load_lessor(kv: &KvStore<RocksEngine>, setup: &LeaseSetup) -> io::Result<Lessor> {
    let clock: Arc<dyn ferrocd_lease::Clock> = Arc::new(ferrocd_lease::SystemClock::new());
    let mut lessor = Lessor::load(&**kv.engine(), setup.options.clone(), clock).map_err(io_error)?;
    for (key, lease) in kv.leased_keys() {
        if let Err(e) = lessor.attach(lease, &key) {
            tracing::warn!(lease = %format!("{lease:x}"), error = %e, "a key's lease is missing; key left unattached");
        }
    }
    Ok(lessor)
}

/// etcd's keyspace and membership records as a Raft state machine.
#[derive(Debug)]
pub struct KvMachine {
    kv: Arc<KvStore<RocksEngine>>,
    /// Gets every applied revision's events, once they are visible.
    hub: Hub,
    /// The lease table; changed only by applied entries, except expiry times (the leader's).
    lessor: Mutex<Lessor>,
    lease_setup: LeaseSetup,
    cluster_id: AtomicU64,
    applied: AtomicU64,
}

fn io_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn member_key(id: u64) -> Vec<u8> {
    let mut key = MEMBER_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn read_u64(view: &impl ReadView, key: &[u8]) -> io::Result<Option<u64>> {
    storage::read_u64(view, key).map_err(io_error)
}

impl KvMachine {
    /// The state machine over `kv`; a snapshot install a crash interrupted is finished first.
    /// `cluster_id` is used until the log records one.
    ///
    /// # Errors
    /// Engine failures; a snapshot to finish installing that is gone.
    pub fn open(
        kv: Arc<KvStore<RocksEngine>>,
        cluster_id: u64,
        watch: WatchOptions,
        lease_setup: LeaseSetup,
    ) -> io::Result<Self> {
        let engine = Arc::clone(kv.engine());
        if let Some(dir) = engine.get(SERVER_BUCKET, INSTALLING).map_err(io_error)? {
            let dir = std::path::PathBuf::from(String::from_utf8_lossy(&dir).into_owned());
            tracing::warn!(dir = %dir.display(), "finishing a snapshot install a crash interrupted");
            install_from(&*engine, &dir)?;
            kv.reload().map_err(io_error)?;
        }
        let machine = Self {
            cluster_id: AtomicU64::new(read_u64(&*engine, CLUSTER_ID)?.unwrap_or(cluster_id)),
            applied: AtomicU64::new(read_u64(&*engine, APPLIED_INDEX)?.unwrap_or(0)),
            hub: Hub::new(StoreHistory(Arc::clone(&kv)), kv.current_revision(), watch),
            lessor: Mutex::new(load_lessor(&kv, &lease_setup)?),
            lease_setup,
            kv,
        };
        Ok(machine)
    }

    pub fn kv(&self) -> &Arc<KvStore<RocksEngine>> {
        &self.kv
    }

    /// The member's watch hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The member's lease table.
    pub fn lessor(&self) -> &Mutex<Lessor> {
        &self.lessor
    }

    /// Makes the lease table primary when this member leads (every lease's expiry extended
    /// by an election timeout, so none expires early because leadership moved), and
    /// non-primary when it does not.
    pub fn sync_lease_role(&self, leader: bool) {
        let mut lessor = self.lessor.lock();
        if leader && !lessor.is_primary() {
            lessor.promote(self.lease_setup.extend);
        } else if !leader && lessor.is_primary() {
            lessor.demote();
        }
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::Acquire)
    }

    /// The index of the last entry applied here.
    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The attributes every member published, by ID.
    ///
    /// # Errors
    /// Engine failures; undecodable records.
    pub fn member_attrs(&self) -> io::Result<std::collections::BTreeMap<u64, MemberAttrs>> {
        let mut out = std::collections::BTreeMap::new();
        let mut end = MEMBER_PREFIX.to_vec();
        *end.last_mut().expect("non-empty") += 1;
        self.kv
            .engine()
            .scan(SERVER_BUCKET, MEMBER_PREFIX, Some(&end), false, &mut |_, v| {
                let attrs = MemberAttrs::decode(v).map_err(|e| ferrocd_engine::Error::Corrupt(e.to_string()))?;
                out.insert(attrs.id, attrs);
                Ok(Scan::Continue)
            })
            .map_err(io_error)?;
        Ok(out)
    }

    /// Applies one entry; the events of a change are added to `events` (for watchers).
    fn apply_one(&self, entry: &Committed<'_>, events: &mut Vec<(i64, Vec<Event>)>) -> io::Result<Option<Outcome>> {
        let engine = self.kv.engine();
        // The entry's Raft state and index, written with its effects (or alone).
        let record = || {
            let mut batch = WriteBatch::new();
            batch.put(SERVER_BUCKET, RAFT_STATE, entry.raft_state);
            batch.put(SERVER_BUCKET, APPLIED_INDEX, entry.index.to_be_bytes());
            batch
        };
        let mut extra = record();
        let Payload::Command(bytes) = entry.payload else {
            // Membership lives in the Raft state blob; noops change nothing else.
            engine.write(extra, false).map_err(io_error)?;
            return Ok(None);
        };
        let command = LogCommand::decode(bytes).map_err(|e| io_error(format!("undecodable log entry: {e}")))?;
        use log_command::Kind;
        if matches!(command.kind, Some(Kind::LeaseRevoke(_))) {
            // Tests: a member slow to apply a revoke it has committed.
            fail::fail_point!("apply-lease-revoke");
        }
        let mut lessor = self.lessor.lock();
        let request = match command.kind {
            Some(Kind::Put(r)) => WriteRequest::Put(r),
            Some(Kind::DeleteRange(r)) => WriteRequest::DeleteRange(r),
            Some(Kind::Txn(r)) => WriteRequest::Txn(r),
            Some(Kind::DeleteKeys(list)) => WriteRequest::DeleteKeys(list.keys),
            Some(Kind::Compact(r)) => {
                // A compaction must not overtake unpublished writes: readers would meet its
                // compacted revision while the revisions below it are not visible to them yet.
                self.kv.publish();
                WriteRequest::Compact(r)
            }
            Some(Kind::MemberAttrs(attrs)) => {
                if read_u64(&**engine, CLUSTER_ID)?.is_none() && attrs.cluster_id != 0 {
                    extra.put(SERVER_BUCKET, CLUSTER_ID, attrs.cluster_id.to_be_bytes());
                    self.cluster_id.store(attrs.cluster_id, Ordering::Release);
                }
                extra.put(SERVER_BUCKET, member_key(attrs.id), attrs.encode_to_vec());
                engine.write(extra, false).map_err(io_error)?;
                return Ok(None);
            }
            Some(Kind::LeaseGrant(r)) => {
                let result = lessor.grant(r.id, r.ttl, &mut extra);
                let batch = if result.is_ok() { extra } else { record() };
                engine.write(batch, false).map_err(io_error)?;
                let revision = self.kv.current_revision();
                return Ok(Outcome::done(result.map(|ttl| Reply::Lease { ttl, revision }).map_err(ServerError::from)));
            }
            Some(Kind::LeaseRevoke(r)) => return self.revoke(&mut lessor, &r, extra, events),
            Some(Kind::LeaseCheckpoint(r)) => {
                for point in &r.checkpoints {
                    lessor.apply_checkpoint(point.id, point.remaining_ttl, &mut extra);
                }
                engine.write(extra, false).map_err(io_error)?;
                return Ok(Outcome::done(Ok(Reply::Lease { ttl: 0, revision: self.kv.current_revision() })));
            }
            None => {
                engine.write(extra, false).map_err(io_error)?;
                return Ok(None);
            }
        };
        let physical = matches!(&request, WriteRequest::Compact(c) if c.physical);
        let applied = match self.apply_kv(&mut lessor, request, extra, events)? {
            Ok(applied) => applied,
            Err(e) => {
                // A refused request changes nothing but still consumes its entry.
                engine.write(record(), false).map_err(io_error)?;
                return Ok(Outcome::done(Err(e.into())));
            }
        };
        drop(lessor);
        let mut applied = applied;
        let mut compacted = None;
        if let Some(job) = applied.compaction.take() {
            // Every member runs its own compaction, off the apply thread.
            self.kv.publish();
            let (done, wait) = oneshot::channel();
            let kv = Arc::clone(&self.kv);
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
            compacted = physical.then_some(wait);
        }
        Ok(Some(Outcome { result: Ok(Reply::Kv(applied)), compacted }))
    }

    /// Applies a keyspace change with `extra` in its batch, keeping the lease table's key
    /// attachments in step with it. The outer error is a storage failure (the member stops
    /// applying); the inner one a refused request.
    fn apply_kv(
        &self,
        lessor: &mut Lessor,
        request: WriteRequest,
        extra: WriteBatch,
        events: &mut Vec<(i64, Vec<Event>)>,
    ) -> io::Result<Result<Applied, ferrocd_mvcc::Error>> {
        match self.kv.apply(request, &LessorLeases(lessor), extra) {
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
            Err(e) => Ok(Err(e)),
        }
    }

    /// Revokes leases: each lease's removal and the deletion of its keys are one engine batch
    /// and one revision (none if it had no live key); the entry's record goes with the last.
    fn revoke(
        &self,
        lessor: &mut Lessor,
        req: &LeaseIds,
        record: WriteBatch,
        events: &mut Vec<(i64, Vec<Event>)>,
    ) -> io::Result<Option<Outcome>> {
        let mut record = Some(record);
        let mut last = None;
        for (i, &id) in req.ids.iter().enumerate() {
            let mut batch = WriteBatch::new();
            let keys = match lessor.revoke(id, &mut batch) {
                Ok(keys) => keys,
                Err(e) if req.expired => {
                    tracing::debug!(lease = %format!("{id:x}"), error = %e, "expired lease already gone");
                    continue;
                }
                Err(e) => {
                    self.kv.engine().write(record.take().unwrap_or_default(), false).map_err(io_error)?;
                    return Ok(Outcome::done(Err(e.into())));
                }
            };
            if i + 1 == req.ids.len() {
                batch.append(record.take().unwrap_or_default());
            }
            match self.apply_kv(lessor, WriteRequest::DeleteKeys(keys), batch, events)? {
                Ok(applied) => last = Some(applied),
                Err(e) => return Err(io_error(format!("revoking lease {id:x}: {e}"))),
            }
        }
        if let Some(record) = record {
            self.kv.engine().write(record, false).map_err(io_error)?;
        }
        let reply = match last {
            Some(applied) => Reply::Kv(applied),
            None => Reply::Lease { ttl: 0, revision: self.kv.current_revision() },
        };
        Ok(Outcome::done(Ok(reply)))
    }
}

impl Apply for KvMachine {
    type Response = Outcome;

    fn apply(&self, entries: &[Committed<'_>]) -> io::Result<Vec<Option<Outcome>>> {
        let mut out = Vec::with_capacity(entries.len());
        let mut events = Vec::new();
        for entry in entries {
            out.push(self.apply_one(entry, &mut events)?);
        }
        // Committed entries may be shown before their effects reach the disk here: a crash
        // re-applies them from the log.
        self.kv.publish();
        // Watchers get revisions once readers can see them; the hub never waits for them.
        for (revision, events) in events {
            self.hub.notify(revision, events);
        }
        if let Some(last) = entries.last() {
            self.applied.store(last.index, Ordering::Release);
        }
        Ok(out)
    }

    fn raft_state(&self) -> io::Result<Option<Vec<u8>>> {
        self.kv.engine().get(SERVER_BUCKET, RAFT_STATE).map_err(io_error)
    }

    fn snapshot(&self, dir: &Path) -> io::Result<Vec<u8>> {
        // A RocksDB checkpoint of the whole engine, in place of the empty directory: cheap
        // (hard links), and the Raft state blob read back from it is exactly its point.
        std::fs::remove_dir(dir)?;
        self.kv.engine().checkpoint(dir).map_err(io_error)?;
        let image = RocksEngine::open_checkpoint(dir, &storage::buckets()).map_err(io_error)?;
        Ok(image.get(SERVER_BUCKET, RAFT_STATE).map_err(io_error)?.unwrap_or_default())
    }

    fn install(&self, dir: &Path) -> io::Result<()> {
        let engine = self.kv.engine();
        // A snapshot that does not open is refused before anything is changed.
        drop(RocksEngine::open_checkpoint(dir, &storage::buckets()).map_err(io_error)?);
        let mut mark = WriteBatch::new();
        mark.put(SERVER_BUCKET, INSTALLING, dir.to_string_lossy().as_bytes().to_vec());
        engine.write(mark, true).map_err(io_error)?;
        // Readers wait meanwhile: none sees the keyspace half replaced.
        self.kv.replace_contents(|| install_from(&**engine, dir)).map_err(io_error)??;
        self.hub.reset(self.kv.current_revision());
        {
            let mut lessor = self.lessor.lock();
            let primary = lessor.is_primary();
            *lessor = load_lessor(&self.kv, &self.lease_setup)?;
            if primary {
                lessor.promote(self.lease_setup.extend);
            }
        }
        self.cluster_id.store(read_u64(&**engine, CLUSTER_ID)?.unwrap_or(self.cluster_id()), Ordering::Release);
        self.applied.store(read_u64(&**engine, APPLIED_INDEX)?.unwrap_or(0), Ordering::Release);
        tracing::info!(
            applied_index = self.applied_index(),
            revision = self.kv.current_revision(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }
}

/// The buckets a snapshot replaces (the Raft log's are Raft's own).
const REPLICATED: &[Bucket] = &[KEY_BUCKET, META_BUCKET, LEASE_BUCKET, SERVER_BUCKET];
/// The most bytes written to the engine in one batch while installing.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// Whether a key of the server bucket is replicated state (the member's own IDs are not).
fn replicated_server_key(key: &[u8]) -> bool {
    key == RAFT_STATE || key == APPLIED_INDEX || key == CLUSTER_ID || key.starts_with(MEMBER_PREFIX)
}

/// Replaces the replicated state in `engine` with the checkpoint in `dir`, in bounded batches;
/// the last batch clears the install mark. Idempotent, so a crash midway is finished on open.
fn install_from(engine: &impl Engine, dir: &Path) -> io::Result<()> {
    let image = RocksEngine::open_checkpoint(dir, &storage::buckets()).map_err(io_error)?;
    let mut batch = WriteBatch::new();
    for bucket in &REPLICATED[..3] {
        batch.delete_range(*bucket, Vec::new(), vec![0xff; 64]);
    }
    engine
        .scan(SERVER_BUCKET, &[], None, false, &mut |k, _| {
            if replicated_server_key(k) {
                batch.delete(SERVER_BUCKET, k.to_vec());
            }
            Ok(Scan::Continue)
        })
        .map_err(io_error)?;
    for bucket in REPLICATED {
        let mut failed = None;
        image
            .scan(*bucket, &[], None, false, &mut |k, v| {
                if *bucket == SERVER_BUCKET && !replicated_server_key(k) {
                    return Ok(Scan::Continue);
                }
                batch.put(*bucket, k.to_vec(), v.to_vec());
                if batch.payload_bytes() >= INSTALL_BATCH_BYTES
                    && let Err(e) = engine.write(std::mem::take(&mut batch), false)
                {
                    failed = Some(e);
                    return Ok(Scan::Stop);
                }
                Ok(Scan::Continue)
            })
            .map_err(io_error)?;
        if let Some(e) = failed {
            return Err(io_error(e));
        }
    }
    batch.delete(SERVER_BUCKET, INSTALLING);
    engine.write(batch, true).map_err(io_error)
}

/// The write path through Raft: proposes on the leader; on a follower it answers
/// [`ServerError::NotLeader`] naming the leader, for the service to forward the request.
#[derive(Debug, Clone)]
pub struct RaftWritePath {
    pub node: Arc<RaftNode<KvMachine>>,
    pub machine: Arc<KvMachine>,
}

/// Maps a Raft failure to etcd's error.
pub fn raft_error(e: ferrocd_raft::Error) -> ServerError {
    use ferrocd_raft::Error as E;
    match e {
        E::NotLeader { leader: Some((id, node)) } => ServerError::NotLeader { id, urls: node.urls },
        E::NotLeader { leader: None } => ServerError::NoLeader,
        E::NoQuorum => ServerError::Timeout,
        E::Timeout { cause, .. } => match cause {
            ferrocd_raft::TimeoutCause::Unknown => ServerError::Timeout,
            ferrocd_raft::TimeoutCause::LeaderFailure => ServerError::TimeoutLeaderFailure,
            ferrocd_raft::TimeoutCause::ConnectionLost => ServerError::TimeoutConnectionLost,
        },
        E::Discarded => ServerError::LeaderChanged,
        E::Stopped(_) => ServerError::Stopped,
        E::MemberNotFound(_) => ServerError::MemberNotFound,
        E::ChangeInProgress => ServerError::Precondition("a membership change is in progress".into()),
        E::Config(why) => ServerError::Precondition(why),
        E::Io(e) => ServerError::Storage(e.to_string()),
    }
}

impl RaftWritePath {
    async fn submit(&self, cmd: LogCommand) -> Result<Reply, ServerError> {
        let outcome = self.node.propose(cmd.encode_to_vec()).await.map_err(raft_error)?;
        outcome.finish().await
    }
}

impl WritePath for RaftWritePath {
    async fn propose(&self, cmd: Command) -> Result<Applied, ServerError> {
        match self.submit(LogCommand::from(cmd)).await? {
            Reply::Kv(applied) => Ok(applied),
            Reply::Lease { .. } => Err(ServerError::Storage("a keyspace command answered as a lease command".into())),
        }
    }

    async fn propose_lease(&self, cmd: LeaseCommand) -> Result<LeaseApplied, ServerError> {
        Ok(match self.submit(LogCommand::from(cmd)).await? {
            Reply::Kv(applied) => LeaseApplied { ttl: 0, revision: applied.revision },
            Reply::Lease { ttl, revision } => LeaseApplied { ttl, revision },
        })
    }

    fn applied_index(&self) -> u64 {
        self.machine.applied_index()
    }
}
