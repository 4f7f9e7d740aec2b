//! The RocksDB implementation of ferrocd's [`Engine`].
//!
//! One column family per [`Bucket`]; writes go through RocksDB's write-ahead log, and a synced
//! write (or [`Engine::sync`]) fsyncs it, so many unsynced writes can share one fsync.
//!
//! This is the only crate of the workspace that compiles RocksDB.

use std::path::{Path, PathBuf};

use ferrocd_engine::{BatchOp, Bucket, Engine, Error, ReadView, Result, Scan, Visitor, WriteBatch};
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DB, DBRawIteratorWithThreadMode, Options, ReadOptions,
    SnapshotWithThreadMode, WriteOptions,
};

/// A RocksDB database opened with a fixed set of buckets.
pub struct RocksEngine {
    db: DB,
    path: PathBuf,
    buckets: Vec<Bucket>,
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine").field("path", &self.path).field("buckets", &self.buckets).finish()
    }
}

/// The memory all memtables may use together.
const DB_WRITE_BUFFER_BYTES: usize = 32 << 20;

fn backend(e: rocksdb::Error) -> Error {
    Error::Backend(e.into_string())
}

fn cf_options() -> Options {
    let mut opts = Options::default();
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    opts.set_block_based_table_factory(&table);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts
}

impl RocksEngine {
    /// Opens (creating it when missing) the database at `path` with `buckets`.
    ///
    /// # Errors
    /// [`Error::Backend`] when RocksDB cannot open the directory.
    pub fn open(path: impl AsRef<Path>, buckets: &[Bucket]) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        // One cap on the memtables of all column families together (each would otherwise grow
        // to 64 MiB): a write-heavy bucket such as a log is flushed early instead of holding
        // tens of MiB of entries that are read back rarely.
        opts.set_db_write_buffer_size(DB_WRITE_BUFFER_BYTES);
        opts.set_keep_log_file_num(4);
        let cfs = buckets.iter().map(|b| ColumnFamilyDescriptor::new(b.name(), cf_options()));
        let db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(backend)?;
        Ok(Self { db, path, buckets: buckets.to_vec() })
    }

    /// Opens the database at `path` (e.g. a checkpoint) read-only, with `buckets`.
    ///
    /// # Errors
    /// [`Error::Backend`] when RocksDB cannot open it.
    pub fn open_read_only(path: impl AsRef<Path>, buckets: &[Bucket]) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let cfs = buckets.iter().map(|b| ColumnFamilyDescriptor::new(b.name(), cf_options()));
        let db = DB::open_cf_descriptors_read_only(&Options::default(), &path, cfs, false).map_err(backend)?;
        Ok(Self { db, path, buckets: buckets.to_vec() })
    }

    /// The directory the database lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, bucket: Bucket) -> Result<&ColumnFamily> {
        self.db.cf_handle(bucket.name()).ok_or(Error::UnknownBucket(bucket.name()))
    }
}

fn scan_with(mut iter: DBRawIteratorWithThreadMode<'_, DB>, reverse: bool, visit: &mut Visitor<'_>) -> Result<()> {
    if reverse {
        iter.seek_to_last();
    } else {
        iter.seek_to_first();
    }
    while let Some((k, v)) = iter.item() {
        if visit(k, v)? == Scan::Stop {
            return Ok(());
        }
        if reverse {
            iter.prev();
        } else {
            iter.next();
        }
    }
    iter.status().map_err(backend)
}

fn bounded(start: &[u8], end: Option<&[u8]>) -> ReadOptions {
    let mut opts = ReadOptions::default();
    opts.set_iterate_lower_bound(start.to_vec());
    if let Some(end) = end {
        opts.set_iterate_upper_bound(end.to_vec());
    }
    opts
}

impl ReadView for RocksEngine {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(bucket)?, key).map_err(backend)
    }

    fn scan(
        &self,
        bucket: Bucket,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        let cf = self.cf(bucket)?;
        if end.is_some_and(|end| end <= start) {
            return Ok(());
        }
        scan_with(self.db.raw_iterator_cf_opt(cf, bounded(start, end)), reverse, visit)
    }
}

/// A point-in-time view of a [`RocksEngine`] (a RocksDB snapshot).
pub struct RocksSnapshot<'a> {
    engine: &'a RocksEngine,
    snap: SnapshotWithThreadMode<'a, DB>,
}

impl std::fmt::Debug for RocksSnapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksSnapshot").field("engine", &self.engine.path).finish()
    }
}

impl ReadView for RocksSnapshot<'_> {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snap.get_cf(self.engine.cf(bucket)?, key).map_err(backend)
    }

    fn scan(
        &self,
        bucket: Bucket,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        let cf = self.engine.cf(bucket)?;
        if end.is_some_and(|end| end <= start) {
            return Ok(());
        }
        let mut opts = bounded(start, end);
        opts.set_snapshot(&self.snap);
        scan_with(self.engine.db.raw_iterator_cf_opt(cf, opts), reverse, visit)
    }
}

impl Engine for RocksEngine {
    type Snapshot<'a> = RocksSnapshot<'a>;

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put { bucket, key, value } => wb.put_cf(self.cf(bucket)?, key, value),
                BatchOp::Delete { bucket, key } => wb.delete_cf(self.cf(bucket)?, key),
                BatchOp::DeleteRange { bucket, start, end } => {
                    if start < end {
                        wb.delete_range_cf(self.cf(bucket)?, start, end);
                    }
                }
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(wb, &opts).map_err(backend)
    }

    fn sync(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(backend)
    }

    fn snapshot(&self) -> RocksSnapshot<'_> {
        RocksSnapshot { engine: self, snap: self.db.snapshot() }
    }

    fn size_bytes(&self) -> u64 {
        let prop = |cf: &ColumnFamily, name: &str| self.db.property_int_value_cf(cf, name).ok().flatten().unwrap_or(0);
        self.buckets
            .iter()
            .filter_map(|b| self.cf(*b).ok())
            .map(|cf| prop(cf, "rocksdb.total-sst-files-size") + prop(cf, "rocksdb.cur-size-all-mem-tables"))
            .sum()
    }

    fn compact_bucket(&self, bucket: Bucket) -> Result<()> {
        self.db.compact_range_cf(self.cf(bucket)?, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    /// A RocksDB checkpoint, whose table files are hard links when `dir` is on the same
    /// filesystem (so it costs little time and space however large the database is).
    fn checkpoint(&self, dir: &Path) -> Result<()> {
        rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(backend)?.create_checkpoint(dir).map_err(backend)
    }

    fn open_checkpoint(dir: &Path, buckets: &[Bucket]) -> Result<Self> {
        Self::open_read_only(dir, buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        let mut dirs = Vec::new();
        ferrocd_engine::testing::run_suite(|buckets| {
            let dir = tempfile::tempdir().unwrap();
            let engine = RocksEngine::open(dir.path(), buckets).unwrap();
            dirs.push(dir);
            engine
        });
    }

    #[test]
    fn synced_writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bucket("b");
        {
            let engine = RocksEngine::open(dir.path(), &[b]).unwrap();
            let mut batch = WriteBatch::new();
            batch.put(b, b"k", b"v");
            engine.write(batch, true).unwrap();
            let mut batch = WriteBatch::new();
            batch.put(b, b"k2", b"v2");
            engine.write(batch, false).unwrap();
            engine.sync().unwrap();
        }
        let engine = RocksEngine::open(dir.path(), &[b]).unwrap();
        assert_eq!(engine.get(b, b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(engine.get(b, b"k2").unwrap().as_deref(), Some(&b"v2"[..]));
    }

    #[test]
    fn a_checkpoint_is_a_point_in_time_copy() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bucket("b");
        let engine = RocksEngine::open(dir.path().join("db"), &[b]).unwrap();
        let mut batch = WriteBatch::new();
        batch.put(b, b"k", b"v");
        engine.write(batch, false).unwrap();
        engine.checkpoint(&dir.path().join("copy")).unwrap();
        let mut batch = WriteBatch::new();
        batch.put(b, b"later", b"x");
        engine.write(batch, false).unwrap();
        let copy = RocksEngine::open_read_only(dir.path().join("copy"), &[b]).unwrap();
        assert_eq!(copy.get(b, b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(copy.get(b, b"later").unwrap(), None);
        assert!(engine.checkpoint(&dir.path().join("copy")).is_err(), "the target must not exist");
    }
}
