//! ferrocd's revisioned keyspace: etcd's MVCC semantics over any storage [`Engine`].
//!
//! [`KvStore`] keeps every change of every key, addressed by revision, until it is compacted.
//! It answers etcd's Range, Put, DeleteRange, Txn and Compact with etcd's semantics and exact
//! errors, returns the events of each write (for watchers), and hashes the keyspace at a
//! revision (for HashKV).
//!
//! Layout in the engine: bucket `key` maps a revision (16 bytes, plus a `t` for a deletion) to
//! the encoded `mvccpb.KeyValue`; bucket `meta` holds the current and compacted revisions. An
//! in-memory index maps each key to its revisions (with create revision, version and lease),
//! so values are never held in memory and keys-only and count-only reads never touch the engine.
//!
//! Writes are split from durability and visibility, so a caller can group commit:
//! [`KvStore::apply`] writes to the engine without fsync, [`KvStore::sync`] makes every applied
//! write durable, and [`KvStore::publish`] makes them visible to readers. Readers never see a
//! revision that is not published. The convenience methods ([`KvStore::put`], ...) do all three.
//!
//! Absences: no dependency on leases (a [`Leases`] hook answers whether a lease exists), watch,
//! auth, raft or gRPC.

mod compact;
mod error;
mod index;
pub mod layout;
mod range;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod validate;
mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use ferrocd_engine::{Bucket, Engine, ReadView, Scan, WriteBatch};
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use ferrocd_proto::mvccpb::{Event, KeyValue, event::EventType};
use ferrocd_types::Revision;
use parking_lot::{Mutex, RwLock};
use prost::Message;

pub use compact::CompactionJob;
pub use error::{Error, Result};
use index::{Entry, KeyIndex};
use layout::record_key;

/// The bucket of key revisions.
pub const KEY_BUCKET: Bucket = Bucket("key");
/// The bucket of the store's own metadata.
pub const META_BUCKET: Bucket = Bucket("meta");

const META_CURRENT: &[u8] = b"current_rev";
const META_SCHEDULED_COMPACT: &[u8] = b"scheduled_compact_rev";
const META_FINISHED_COMPACT: &[u8] = b"finished_compact_rev";

/// Answers whether a lease exists, for Put with a lease.
pub trait Leases {
    fn exists(&self, id: i64) -> bool;
}

/// No lease exists.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLeases;

impl Leases for NoLeases {
    fn exists(&self, _id: i64) -> bool {
        false
    }
}

/// Tunables of the store.
#[derive(Debug, Clone)]
pub struct Options {
    /// etcd's `--max-txn-ops`: the most compares, or ops per branch, of one Txn.
    pub max_txn_ops: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { max_txn_ops: 128 }
    }
}

/// A request that changes the store.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteRequest {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    /// Delete exactly these keys (those that exist) at one revision: a lease's revoke.
    /// Answered as a DeleteRange.
    DeleteKeys(Vec<Vec<u8>>),
}

/// The answer to a [`WriteRequest`], of the matching kind.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
}

/// What applying a write did.
#[derive(Debug)]
pub struct Applied {
    pub response: WriteResponse,
    /// The store revision after the write (unchanged when nothing changed).
    pub revision: i64,
    /// One event per changed key, in change order, all at `revision`.
    pub events: Vec<Event>,
    /// For a Compact: the physical removal still to run (see [`CompactionJob::run`]).
    pub compaction: Option<CompactionJob>,
}

/// The hash of the keyspace history at a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    /// CRC-32C over the stored revisions `<= revision` that compaction kept.
    pub hash: u32,
    pub revision: i64,
    pub compact_revision: i64,
}

/// Counts for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub keys: usize,
    pub revisions: usize,
}

#[derive(Debug)]
struct State {
    index: KeyIndex,
    /// The newest applied revision.
    current: i64,
    /// Reads below this fail; -1 before the first compaction, as in etcd.
    compacted: i64,
}

/// etcd's MVCC keyspace over an engine. See the crate docs.
#[derive(Debug)]
pub struct KvStore<E: Engine> {
    engine: Arc<E>,
    state: RwLock<State>,
    /// The newest revision readers may see.
    published: AtomicI64,
    /// Serialises physical compactions.
    compactor: Mutex<()>,
    options: Options,
}

fn encode_i64(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

fn decode_i64(bytes: &[u8]) -> Result<i64> {
    bytes.try_into().map(i64::from_be_bytes).map_err(|_| Error::Corrupt("meta value is not 8 bytes".into()))
}

/// The last scheduled compaction revision, with the last finished one.
type Scheduled = (i64, Option<i64>);

/// Reads the store's state from `engine`: the index of every record, the current and compacted
/// revisions, and the last scheduled compaction with the last finished one.
fn load(engine: &impl Engine) -> Result<(State, Option<Scheduled>)> {
    let meta =
        |key: &[u8]| -> Result<Option<i64>> { engine.get(META_BUCKET, key)?.map(|v| decode_i64(&v)).transpose() };
    let mut index = KeyIndex::default();
    let mut last = 1;
    for_each_record(engine, None, |_, _, key, entry| {
        last = last.max(entry.rev.main);
        index.push(&key, entry);
    })?;
    let current = meta(META_CURRENT)?.unwrap_or(1).max(last);
    let scheduled = meta(META_SCHEDULED_COMPACT)?;
    let finished = meta(META_FINISHED_COMPACT)?;
    let compacted = scheduled.unwrap_or(-1);
    Ok((State { index, current, compacted }, scheduled.map(|at| (at, finished))))
}

impl<E: Engine> KvStore<E> {
    /// The buckets the engine must be opened with.
    pub const BUCKETS: &'static [Bucket] = &[KEY_BUCKET, META_BUCKET];

    /// Opens the store kept in `engine`, rebuilding the index from it and finishing a
    /// compaction a crash interrupted.
    ///
    /// # Errors
    /// Engine failures; [`Error::Corrupt`] for undecodable data.
    pub fn open(engine: Arc<E>, options: Options) -> Result<Self> {
        let (state, scheduled) = load(&*engine)?;
        let store = Self {
            published: AtomicI64::new(state.current),
            engine,
            state: RwLock::new(state),
            compactor: Mutex::new(()),
            options,
        };
        store.finish_compaction(scheduled)?;
        Ok(store)
    }

    /// Rebuilds the store from the engine, after the engine's buckets were replaced underneath
    /// it (a replication snapshot installed): readers see the new contents from then on.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn reload(&self) -> Result<()> {
        self.replace_contents(|| Ok::<(), Error>(()))?
    }

    /// Replaces the store's contents: `replace` rewrites the engine's buckets (a replication
    /// snapshot being installed) while readers and writers wait, so none sees them half
    /// replaced; then the store is rebuilt from the engine. When `replace` fails, its error is
    /// answered and the store is left as it was (the engine may be half replaced: the caller
    /// must finish or stop).
    ///
    /// # Errors
    /// As [`Self::open`], for the rebuild; `replace`'s own error inside.
    pub fn replace_contents<X>(
        &self,
        replace: impl FnOnce() -> std::result::Result<(), X>,
    ) -> Result<std::result::Result<(), X>> {
        let _compactor = self.compactor.lock();
        let mut state = self.state.write();
        if let Err(e) = replace() {
            return Ok(Err(e));
        }
        let (loaded, scheduled) = load(&*self.engine)?;
        self.published.store(loaded.current, Ordering::Release);
        *state = loaded;
        drop(state);
        drop(_compactor);
        self.finish_compaction(scheduled)?;
        Ok(Ok(()))
    }

    /// Re-plans the last scheduled compaction: it is idempotent, and it also removes what an
    /// earlier job left behind if jobs finished out of order before a crash.
    fn finish_compaction(&self, scheduled: Option<Scheduled>) -> Result<()> {
        if let Some((at, finished)) = scheduled {
            if finished.is_none_or(|f| f < at) {
                tracing::info!(revision = at, "finishing an interrupted compaction");
            }
            let job = compact::plan(&mut self.state.write().index, at);
            job.run(self)?;
        }
        Ok(())
    }

    /// The engine underneath.
    pub fn engine(&self) -> &Arc<E> {
        &self.engine
    }

    /// The newest revision readers see.
    pub fn current_revision(&self) -> i64 {
        self.published.load(Ordering::Acquire)
    }

    /// The revision of the last compaction (-1 before any).
    pub fn compact_revision(&self) -> i64 {
        self.state.read().compacted
    }

    /// Every live key attached to a lease, with its lease (to rebuild a lease table).
    pub fn leased_keys(&self) -> Vec<(Vec<u8>, i64)> {
        let state = self.state.read();
        let mut out = Vec::new();
        let all = ferrocd_types::KeyRange::Range { start: Vec::new(), end: None };
        state.index.visit_live(&all, i64::MAX, false, |live| {
            if live.entry.lease != 0 {
                out.push((live.key.to_vec(), live.entry.lease));
            }
            true
        });
        out
    }

    /// Keys and revisions held by the index.
    pub fn stats(&self) -> Stats {
        let state = self.state.read();
        Stats { keys: state.index.key_count(), revisions: state.index.revision_count() }
    }

    /// Serves a Range at the published revision (or the revision it asks for).
    ///
    /// # Errors
    /// etcd's request errors ([`Error::EmptyKey`], [`Error::InvalidSortOption`],
    /// [`Error::FutureRevision`], [`Error::Compacted`]); engine failures.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        validate::check_range(req)?;
        let state = self.state.read();
        // Read under the lock: a read that waited for a snapshot install sees its revision.
        let current = self.current_revision();
        let rev = range::read_revision(req.revision, current, state.compacted)?;
        let selection = range::select(&state.index, req, rev);
        // Values are read from a snapshot taken under the lock, so the lock is not held while
        // they are read and a compaction cannot remove them underneath.
        let snapshot = self.engine.snapshot();
        drop(state);
        range::respond(selection, req, current, &EngineValues(&snapshot))
    }

    /// Applies a write: the engine gets it without fsync, readers do not see it yet. Call
    /// [`Self::sync`] to make it durable and [`Self::publish`] to make it visible. `extra` is
    /// written in the same atomic engine batch (for state kept beside the keyspace).
    ///
    /// A request that fails changes nothing.
    ///
    /// # Errors
    /// etcd's request errors; engine failures (after which the store must not be used).
    pub fn apply(&self, req: WriteRequest, leases: &dyn Leases, extra: WriteBatch) -> Result<Applied> {
        let mut state = self.state.write();
        let mut ctx = write::WriteCtx::new(&mut state, &*self.engine, leases, self.options.max_txn_ops);
        let (response, compaction) = match req {
            WriteRequest::Put(r) => (WriteResponse::Put(ctx.put_request(r)?), None),
            WriteRequest::DeleteRange(r) => (WriteResponse::DeleteRange(ctx.delete_request(r)?), None),
            WriteRequest::Txn(r) => (WriteResponse::Txn(ctx.txn_request(r)?), None),
            WriteRequest::DeleteKeys(keys) => (WriteResponse::DeleteRange(ctx.delete_keys(&keys)?), None),
            WriteRequest::Compact(r) => {
                let (resp, job) = ctx.compact_request(r)?;
                (WriteResponse::Compact(resp), Some(job))
            }
        };
        let (revision, events) = ctx.commit(extra)?;
        Ok(Applied { response, revision, events, compaction })
    }

    /// Makes every applied write durable.
    ///
    /// # Errors
    /// Engine failures.
    pub fn sync(&self) -> Result<()> {
        Ok(self.engine.sync()?)
    }

    /// Makes every applied write visible to readers.
    pub fn publish(&self) {
        let current = self.state.read().current;
        self.published.fetch_max(current, Ordering::AcqRel);
    }

    fn apply_now(&self, req: WriteRequest) -> Result<Applied> {
        let applied = self.apply(req, &NoLeases, WriteBatch::new())?;
        self.sync()?;
        self.publish();
        Ok(applied)
    }

    /// Put, durable and visible on return (no lease exists for this convenience path).
    ///
    /// # Errors
    /// As [`Self::apply`].
    pub fn put(&self, req: PutRequest) -> Result<(PutResponse, Vec<Event>)> {
        let applied = self.apply_now(WriteRequest::Put(req))?;
        match applied.response {
            WriteResponse::Put(r) => Ok((r, applied.events)),
            _ => unreachable!("a put answers a put"),
        }
    }

    /// DeleteRange, durable and visible on return.
    ///
    /// # Errors
    /// As [`Self::apply`].
    pub fn delete_range(&self, req: DeleteRangeRequest) -> Result<(DeleteRangeResponse, Vec<Event>)> {
        let applied = self.apply_now(WriteRequest::DeleteRange(req))?;
        match applied.response {
            WriteResponse::DeleteRange(r) => Ok((r, applied.events)),
            _ => unreachable!("a delete answers a delete"),
        }
    }

    /// Txn, durable and visible on return.
    ///
    /// # Errors
    /// As [`Self::apply`].
    pub fn txn(&self, req: TxnRequest) -> Result<(TxnResponse, Vec<Event>)> {
        let applied = self.apply_now(WriteRequest::Txn(req))?;
        match applied.response {
            WriteResponse::Txn(r) => Ok((r, applied.events)),
            _ => unreachable!("a txn answers a txn"),
        }
    }

    /// Compact, with the physical removal done before returning.
    ///
    /// # Errors
    /// As [`Self::apply`].
    pub fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse> {
        let applied = self.apply_now(WriteRequest::Compact(req))?;
        if let Some(job) = applied.compaction {
            job.run(self)?;
        }
        match applied.response {
            WriteResponse::Compact(r) => Ok(r),
            _ => unreachable!("a compact answers a compact"),
        }
    }

    /// The events of the revisions `from..=to` (`to` is capped at the published revision), in
    /// revision order, for watchers catching up: whole revisions only, stopping after the first
    /// revision at which at least `max_events` were collected. Returns the events and the last
    /// revision they cover completely.
    ///
    /// History below the compaction revision is gone: `from` below it fails. (As in etcd, a
    /// deletion at exactly the compaction revision is compacted away too.)
    ///
    /// # Errors
    /// [`Error::Compacted`] when `from` is below the compaction revision; engine failures.
    pub fn events(&self, from: i64, to: i64, max_events: usize) -> Result<(Vec<Event>, i64)> {
        let to = to.min(self.current_revision());
        let state = self.state.read();
        if from < state.compacted {
            return Err(Error::Compacted);
        }
        // A snapshot taken under the lock: no compaction job can remove what it shows.
        let snapshot = self.engine.snapshot();
        drop(state);
        let mut events = Vec::new();
        let mut through = to;
        let mut failure = None;
        let start = Revision::new(from.max(0), 0).to_bytes();
        let end = Revision::new(to.saturating_add(1), 0).to_bytes();
        snapshot.scan(KEY_BUCKET, &start, Some(&end), false, &mut |k, v| {
            let Some(rev) = Revision::from_bytes(k) else {
                failure = Some(Error::Corrupt("short revision key".into()));
                return Ok(Scan::Stop);
            };
            if events.len() >= max_events && events.last().is_some_and(|e: &Event| mod_revision(e) != rev.main) {
                through = rev.main - 1;
                return Ok(Scan::Stop);
            }
            match KeyValue::decode(v) {
                Ok(kv) => {
                    let kind =
                        if k.get(Revision::ENCODED_LEN) == Some(&b't') { EventType::Delete } else { EventType::Put };
                    events.push(Event { r#type: kind as i32, kv: Some(kv), prev_kv: None });
                    Ok(Scan::Continue)
                }
                Err(e) => {
                    failure = Some(Error::Corrupt(format!("revision {rev:?}: {e}")));
                    Ok(Scan::Stop)
                }
            }
        })?;
        failure.map_or(Ok((events, through)), Err)
    }

    /// The key-value pair of `key` as it was at `revision`, if it existed then and that
    /// revision is not compacted (a watcher's `prev_kv`).
    ///
    /// # Errors
    /// Engine failures.
    pub fn value_at(&self, key: &[u8], revision: i64) -> Result<Option<KeyValue>> {
        if revision <= 0 {
            return Ok(None);
        }
        let req = RangeRequest { key: key.to_vec(), revision, ..Default::default() };
        match self.range(&req) {
            Ok(resp) => Ok(resp.kvs.into_iter().next()),
            Err(Error::Compacted | Error::FutureRevision) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The hash of the history at `revision` (0: the current revision), over what compaction
    /// kept; equal stores have equal hashes.
    ///
    /// # Errors
    /// [`Error::FutureRevision`], [`Error::Compacted`]; engine failures.
    pub fn hash_kv(&self, revision: i64) -> Result<KvHash> {
        let current = self.current_revision();
        let state = self.state.read();
        let rev = range::read_revision(revision, current, state.compacted)?;
        let mut hasher = 0u32;
        let end = Revision::new(rev + 1, 0).to_bytes();
        for_each_record(&*self.engine, Some(&end), |k, v, key, entry| {
            if state.index.holds(&key, entry.rev) {
                hasher = crc32c::crc32c_append(hasher, k);
                hasher = crc32c::crc32c_append(hasher, v);
            }
        })?;
        Ok(KvHash { hash: hasher, revision: rev, compact_revision: state.compacted })
    }
}

fn mod_revision(event: &Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// Visits the records of the key bucket below `end` in revision order, decoded; stops at the
/// first record that does not decode.
fn for_each_record(
    view: &impl ReadView,
    end: Option<&[u8]>,
    mut f: impl FnMut(&[u8], &[u8], Vec<u8>, Entry),
) -> Result<()> {
    let mut err = None;
    view.scan(KEY_BUCKET, &[], end, false, &mut |k, v| match decode_record(k, v) {
        Ok((key, entry)) => {
            f(k, v, key, entry);
            Ok(Scan::Continue)
        }
        Err(e) => {
            err = Some(e);
            Ok(Scan::Stop)
        }
    })?;
    err.map_or(Ok(()), Err)
}

/// Decodes one record of the key bucket into its key and index entry.
fn decode_record(k: &[u8], v: &[u8]) -> Result<(Vec<u8>, Entry)> {
    let rev = Revision::from_bytes(k).ok_or_else(|| Error::Corrupt("short revision key".into()))?;
    let tombstone = k.get(Revision::ENCODED_LEN) == Some(&b't');
    let kv = KeyValue::decode(v).map_err(|e| Error::Corrupt(format!("revision {rev:?}: {e}")))?;
    let entry = if tombstone {
        Entry { rev, create: 0, version: 0, lease: 0 }
    } else {
        Entry { rev, create: kv.create_revision, version: kv.version, lease: kv.lease }
    };
    Ok((kv.key, entry))
}

/// Values read from an engine view.
struct EngineValues<'a, V: ReadView>(&'a V);

impl<V: ReadView> range::Values for EngineValues<'_, V> {
    fn value(&self, key: &[u8], entry: &Entry) -> Result<Vec<u8>> {
        read_value(self.0, key, entry)
    }
}

fn read_value(view: &impl ReadView, key: &[u8], entry: &Entry) -> Result<Vec<u8>> {
    let bytes = view
        .get(KEY_BUCKET, &record_key(entry.rev, false))?
        .ok_or_else(|| Error::Corrupt(format!("revision {:?} of {key:?} is missing", entry.rev)))?;
    let kv = KeyValue::decode(bytes.as_slice()).map_err(|e| Error::Corrupt(e.to_string()))?;
    Ok(kv.value)
}

#[cfg(test)]
mod tests;
