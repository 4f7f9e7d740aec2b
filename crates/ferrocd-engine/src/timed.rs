//! An engine whose durability work is timed: [`Timed`] wraps any [`Engine`] and tells a
//! [`DiskObserver`] how long each `sync` and each batch `write` took (a server turns them into
//! its fsync and commit latency metrics). Everything else passes straight through.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Bucket, Engine, ReadView, Result, Visitor, WriteBatch};

/// Told how long the engine's durability work takes.
pub trait DiskObserver: Send + Sync + std::fmt::Debug {
    /// A [`Engine::sync`] (the log's fsync) took `took`.
    fn synced(&self, took: Duration);
    /// A batch [`Engine::write`] took `took`.
    fn written(&self, took: Duration);
}

/// `E`, timed (see the module's documentation).
#[derive(Debug)]
pub struct Timed<E> {
    inner: E,
    observer: Option<Arc<dyn DiskObserver>>,
}

impl<E> Timed<E> {
    /// `inner`, its syncs and writes told to `observer`.
    pub fn new(inner: E, observer: Arc<dyn DiskObserver>) -> Self {
        Self { inner, observer: Some(observer) }
    }

    /// The wrapped engine.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    fn timed<T>(&self, work: impl FnOnce() -> T, tell: impl FnOnce(&dyn DiskObserver, Duration)) -> T {
        let Some(observer) = &self.observer else { return work() };
        let began = Instant::now();
        let out = work();
        tell(observer.as_ref(), began.elapsed());
        out
    }
}

impl<E: Engine> ReadView for Timed<E> {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(bucket, key)
    }

    fn scan(
        &self,
        bucket: Bucket,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        self.inner.scan(bucket, start, end, reverse, visit)
    }
}

impl<E: Engine> Engine for Timed<E> {
    type Snapshot<'a>
        = E::Snapshot<'a>
    where
        Self: 'a;

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        self.timed(|| self.inner.write(batch, sync), |o, took| o.written(took))
    }

    fn sync(&self) -> Result<()> {
        self.timed(|| self.inner.sync(), |o, took| o.synced(took))
    }

    fn snapshot(&self) -> Self::Snapshot<'_> {
        self.inner.snapshot()
    }

    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }

    fn compact_bucket(&self, bucket: Bucket) -> Result<()> {
        self.inner.compact_bucket(bucket)
    }

    fn checkpoint(&self, dir: &Path) -> Result<()> {
        self.inner.checkpoint(dir)
    }

    /// The copy, untimed (nothing to tell an observer about a read-only copy).
    fn open_checkpoint(dir: &Path, buckets: &[Bucket]) -> Result<Self> {
        Ok(Self { inner: E::open_checkpoint(dir, buckets)?, observer: None })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::MemEngine;

    #[derive(Debug, Default)]
    struct Count {
        synced: AtomicUsize,
        written: AtomicUsize,
    }

    impl DiskObserver for Count {
        fn synced(&self, _: Duration) {
            self.synced.fetch_add(1, Ordering::Relaxed);
        }
        fn written(&self, _: Duration) {
            self.written.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn syncs_and_writes_are_told_and_reads_pass_through() {
        const B: Bucket = Bucket("b");
        let count = Arc::new(Count::default());
        let engine = Timed::new(MemEngine::new(&[B]), count.clone());
        let mut batch = WriteBatch::new();
        batch.put(B, b"k".to_vec(), b"v".to_vec());
        engine.write(batch, false).unwrap();
        engine.sync().unwrap();
        engine.sync().unwrap();
        assert_eq!(engine.get(B, b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!((count.written.load(Ordering::Relaxed), count.synced.load(Ordering::Relaxed)), (1, 2));
    }

    #[test]
    fn a_timed_engine_keeps_every_engine_contract() {
        crate::testing::run_suite(|buckets| Timed::new(MemEngine::new(buckets), Arc::new(Count::default())));
    }
}
