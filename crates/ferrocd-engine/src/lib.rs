//! Byte-level ordered storage for ferrocd.
//!
//! This crate defines the [`Engine`] trait every storage backend implements, an in-memory
//! reference implementation ([`MemEngine`]) and, behind the `testing` feature, a conformance
//! suite ([`testing::run_suite`]) that every implementation must pass.
//!
//! Absences, on purpose: no dependency on any other ferrocd crate, no RocksDB, no async. An
//! engine knows nothing of revisions, keys of etcd or raft; it stores opaque bytes in named
//! buckets.

mod batch;
mod error;
mod mem;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod timed;

pub use batch::{BatchOp, WriteBatch};
pub use error::{Error, Result};
pub use mem::MemEngine;
pub use timed::{DiskObserver, Timed};

use std::path::Path;

/// A named keyspace inside an engine (a column family in RocksDB).
///
/// The set of buckets is fixed when an engine is opened; using another is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket(pub &'static str);

impl Bucket {
    /// The bucket's name, as stored.
    pub fn name(self) -> &'static str {
        self.0
    }
}

/// What a scan visitor wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Go on to the next pair.
    Continue,
    /// Stop the scan; the scan returns `Ok(())`.
    Stop,
}

/// A scan's visitor: gets each key and value, says whether to go on.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<Scan> + 'a;

/// Read access shared by an engine and its snapshots.
pub trait ReadView {
    /// The value stored under `key` in `bucket`, if any.
    ///
    /// # Errors
    /// [`Error::UnknownBucket`] for a bucket the engine was not opened with; I/O errors.
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Visits the pairs of `bucket` whose keys lie in `[start, end)` (`end = None`: no upper
    /// bound), in ascending key order (descending with `reverse`), until the visitor says
    /// [`Scan::Stop`] or the range is exhausted.
    ///
    /// # Errors
    /// [`Error::UnknownBucket`]; I/O errors; an error returned by the visitor is passed on.
    fn scan(
        &self,
        bucket: Bucket,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
        visit: &mut Visitor<'_>,
    ) -> Result<()>;
}

/// An ordered byte store with atomic write batches and explicit durability.
///
/// Contracts every implementation keeps (the conformance suite checks them):
/// - a batch is atomic: after a crash either all of its operations are visible or none;
/// - batches are applied in the order `write` is called, and a read that starts after `write`
///   returned sees it;
/// - `write(batch, true)` returns only once the batch, and every batch written before it, is
///   durable; `sync()` makes every batch written so far durable (group commit: many unsynced
///   writes followed by one `sync`);
/// - a snapshot is a consistent point-in-time view unaffected by later writes.
pub trait Engine: ReadView + Send + Sync + 'static {
    /// A consistent, read-only point-in-time view of the engine.
    type Snapshot<'a>: ReadView + Send + Sync
    where
        Self: 'a;

    /// Applies `batch` atomically; with `sync` it is durable when this returns.
    ///
    /// # Errors
    /// [`Error::UnknownBucket`]; I/O errors (then nothing of the batch was applied).
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()>;

    /// Makes every batch written so far durable.
    ///
    /// # Errors
    /// I/O errors.
    fn sync(&self) -> Result<()>;

    /// A point-in-time view of every bucket.
    fn snapshot(&self) -> Self::Snapshot<'_>;

    /// The space the engine uses, in bytes (on disk for a persistent engine).
    fn size_bytes(&self) -> u64;

    /// Reclaims the space of deleted data in `bucket` (an online operation: reads and writes
    /// go on while it runs).
    ///
    /// # Errors
    /// [`Error::UnknownBucket`]; I/O errors.
    fn compact_bucket(&self, bucket: Bucket) -> Result<()>;

    /// Writes a consistent point-in-time copy of every bucket into `dir`, which must not exist
    /// yet (Raft snapshots are made of these). A persistent engine makes it cheap (RocksDB:
    /// hard links to its table files).
    ///
    /// # Errors
    /// `dir` exists; I/O errors.
    fn checkpoint(&self, dir: &Path) -> Result<()>;

    /// Opens, read-only, the copy [`Engine::checkpoint`] wrote into `dir`, with `buckets`.
    ///
    /// # Errors
    /// No copy there, or one without a bucket asked for; I/O errors.
    fn open_checkpoint(dir: &Path, buckets: &[Bucket]) -> Result<Self>
    where
        Self: Sized;
}
