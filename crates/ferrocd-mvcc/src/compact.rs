//! Compaction: dropping history below a revision, first from the index, then from the engine.

use ferrocd_engine::{Engine, WriteBatch};
use ferrocd_types::Revision;

use crate::index::KeyIndex;
use crate::{KEY_BUCKET, KvStore, META_BUCKET, META_FINISHED_COMPACT, Result, encode_i64, record_key};

/// How many revisions one engine batch of a compaction removes.
const BATCH: usize = 1000;

/// The physical removal of the revisions a compaction made unreachable.
///
/// The index forgets them at once (reads below the compaction fail from then on); this job
/// removes them from the engine in batches, then records the compaction as finished. Reads
/// never need what it removes. If a crash interrupts it, [`KvStore::open`] runs it again.
#[derive(Debug)]
#[must_use = "a compaction's revisions stay on disk until the job runs"]
pub struct CompactionJob {
    at: i64,
    doomed: Vec<(Revision, bool)>,
}

pub(crate) fn plan(index: &mut KeyIndex, at: i64) -> CompactionJob {
    let mut doomed = Vec::new();
    index.compact(at, |rev, tombstone| doomed.push((rev, tombstone)));
    CompactionJob { at, doomed }
}

impl CompactionJob {
    /// The compaction revision.
    pub fn revision(&self) -> i64 {
        self.at
    }

    /// How many stored revisions the job removes.
    pub fn len(&self) -> usize {
        self.doomed.len()
    }

    /// Whether there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.doomed.is_empty()
    }

    /// Removes the revisions from `store`'s engine and records the compaction as finished.
    ///
    /// # Errors
    /// Engine failures.
    pub fn run<E: Engine>(mut self, store: &KvStore<E>) -> Result<()> {
        let _one_at_a_time = store.compactor.lock();
        self.doomed.sort_unstable();
        for chunk in self.doomed.chunks(BATCH) {
            let mut batch = WriteBatch::new();
            for (rev, tombstone) in chunk {
                batch.delete(KEY_BUCKET, record_key(*rev, *tombstone));
            }
            store.engine.write(batch, false)?;
        }
        let finished = store
            .engine
            .get(META_BUCKET, META_FINISHED_COMPACT)?
            .and_then(|v| v.try_into().ok())
            .map(i64::from_be_bytes);
        if finished.is_none_or(|f| f < self.at) {
            let mut batch = WriteBatch::new();
            batch.put(META_BUCKET, META_FINISHED_COMPACT, encode_i64(self.at));
            store.engine.write(batch, false)?;
        }
        tracing::debug!(revision = self.at, removed = self.doomed.len(), "compaction finished");
        Ok(())
    }
}
