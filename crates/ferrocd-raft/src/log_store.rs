//! The Raft log on a ferrocd [`Engine`], with group commit.
//!
//! An append writes its entries to the engine at once (unsynced, so they are readable at once,
//! as openraft requires) and queues its completion callback; one flusher thread takes every
//! queued callback, makes the engine durable with a single `sync`, and completes them in order.
//! Under load many appends share one fsync. A vote and a truncation are written synced: each is
//! durable, with every append before it, when the call returns. Because the log and the
//! application share one engine (one write-ahead log), an apply written after an append is
//! never durable without that append.

use std::fmt;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::mpsc;

use ferrocd_engine::{Bucket, Engine, Scan, WriteBatch};
use openraft::OptionalSend;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};

use crate::types::{Entry, LogId, TypeConfig, Vote, decode, encode};

/// Log entries, keyed by index (8 bytes, big-endian).
pub(crate) const LOG: Bucket = Bucket("raft_log");
/// The vote, the last purged log id and the committed log id.
pub(crate) const META: Bucket = Bucket("raft_meta");

const VOTE: &[u8] = b"vote";
const PURGED: &[u8] = b"purged";
const COMMITTED: &[u8] = b"committed";
/// Sorts after every 8-byte index key.
const PAST_LAST: &[u8] = &[0xff; 9];
/// The most bytes of entries replication reads for one AppendEntries message (at least one
/// entry however large): etcd's leader sends at most 1 MiB per append message too. A follower
/// far behind gets many bounded messages, each acknowledged on its own, so it makes progress
/// however large its backlog — never one message it cannot take in before the answer is due.
pub(crate) const MAX_APPEND_BYTES: usize = 1 << 20;

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn engine_err(e: ferrocd_engine::Error) -> io::Error {
    io::Error::other(e)
}

/// Reads the log: shared by the store and every reader openraft asks for.
pub(crate) struct LogReader<E> {
    engine: Arc<E>,
}

impl<E> Clone for LogReader<E> {
    fn clone(&self) -> Self {
        Self { engine: self.engine.clone() }
    }
}

impl<E> fmt::Debug for LogReader<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogReader")
    }
}

impl<E: Engine> LogReader<E> {
    fn meta<T: serde::de::DeserializeOwned>(&self, name: &[u8]) -> io::Result<Option<T>> {
        match self.engine.get(META, name).map_err(engine_err)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The entries from `start` up to `end` (exclusive; `None`: to the last), stopping early
    /// once `max_bytes` of encoded entries are read (always at least one entry).
    fn entries(&self, start: u64, end: Option<u64>, max_bytes: usize) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let end_key = end.map(key);
        let mut failed = None;
        let mut read = |value: &[u8]| match decode::<Entry>(value) {
            Ok(entry) => {
                out.push(entry);
                bytes = bytes.saturating_add(value.len());
                Ok(if bytes >= max_bytes { Scan::Stop } else { Scan::Continue })
            }
            Err(e) => {
                failed = Some(e);
                Ok(Scan::Stop)
            }
        };
        self.engine
            .scan(LOG, &key(start), end_key.as_ref().map(|k| &k[..]), false, &mut |_, value| read(value))
            .map_err(engine_err)?;
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn last_log_id(&self) -> io::Result<Option<LogId>> {
        let mut last = None;
        self.engine
            .scan(LOG, &key(0), None, true, &mut |_, value| {
                last = Some(value.to_vec());
                Ok(Scan::Stop)
            })
            .map_err(engine_err)?;
        last.map(|bytes| decode::<Entry>(&bytes).map(|e| e.log_id)).transpose()
    }
}

impl<E: Engine> RaftLogReader<TypeConfig> for LogReader<E> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        self.entries(start, end, usize::MAX)
    }

    /// What replication sends in one message: a prefix of `[start, end)` of at most
    /// [`MAX_APPEND_BYTES`] (at least one entry).
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        self.entries(start, Some(end), MAX_APPEND_BYTES)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.meta(VOTE)
    }
}

/// openraft's log storage over an engine that was opened with [`crate::BUCKETS`].
pub(crate) struct LogStore<E> {
    reader: LogReader<E>,
    flushes: mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl<E> fmt::Debug for LogStore<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogStore")
    }
}

impl<E: Engine> LogStore<E> {
    pub(crate) fn new(engine: Arc<E>) -> io::Result<Self> {
        let (flushes, queue) = mpsc::channel::<IOFlushed<TypeConfig>>();
        let flusher = engine.clone();
        std::thread::Builder::new().name("raft-log-sync".into()).spawn(move || {
            // Ends when the store is dropped (the channel closes).
            while let Ok(first) = queue.recv() {
                let mut batch = vec![first];
                batch.extend(queue.try_iter());
                let result = flusher.sync();
                for callback in batch {
                    callback.io_completed(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(io::Error::other(e.to_string())),
                    });
                }
            }
        })?;
        Ok(Self { reader: LogReader { engine }, flushes })
    }

    fn engine(&self) -> &E {
        &self.reader.engine
    }
}

impl<E: Engine> RaftLogStorage<TypeConfig> for LogStore<E> {
    type LogReader = LogReader<E>;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId> = self.reader.meta(PURGED)?;
        let last_log_id = self.reader.last_log_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(META, VOTE, encode(vote)?);
        self.engine().write(batch, true).map_err(engine_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let mut batch = WriteBatch::new();
        match committed {
            Some(id) => batch.put(META, COMMITTED, encode(&id)?),
            None => batch.delete(META, COMMITTED),
        }
        // Durable with the next synced write: a committed id that is lost in a crash is
        // learned again from the leader.
        self.engine().write(batch, false).map_err(engine_err)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        self.reader.meta(COMMITTED)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        for entry in entries {
            batch.put(LOG, key(entry.log_id.index), encode(&entry)?);
        }
        self.engine().write(batch, false).map_err(engine_err)?;
        self.flushes.send(callback).map_err(|_| io::Error::other("the log flusher has stopped"))
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> io::Result<()> {
        let from = last.map_or(0, |id| id.index + 1);
        let mut batch = WriteBatch::new();
        batch.delete_range(LOG, key(from).to_vec(), PAST_LAST.to_vec());
        self.engine().write(batch, true).map_err(engine_err)
    }

    async fn purge(&mut self, upto: LogId) -> io::Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(META, PURGED, encode(&upto)?);
        batch.delete_range(LOG, key(0).to_vec(), key(upto.index + 1).to_vec());
        // Unsynced: a purge lost in a crash leaves entries that are purged again.
        self.engine().write(batch, false).map_err(engine_err)
    }
}

#[cfg(test)]
mod tests {
    use ferrocd_engine::MemEngine;
    use openraft::entry::RaftEntry as _;
    use openraft::vote::leader_id_std::CommittedLeaderId;

    use super::*;
    use crate::types::Command;

    /// A store holding entries 1..=sizes.len(), entry i carrying a command of `sizes[i-1]` bytes.
    async fn store_with(sizes: &[usize]) -> LogStore<MemEngine> {
        let engine = Arc::new(MemEngine::new(crate::BUCKETS));
        let mut batch = WriteBatch::new();
        for (i, size) in sizes.iter().enumerate() {
            let index = i as u64 + 1;
            let log_id = LogId::new(CommittedLeaderId::new(1), index);
            let entry = Entry::new_normal(log_id, Command::untagged(vec![7; *size]));
            batch.put(LOG, key(index), encode(&entry).unwrap());
        }
        engine.write(batch, true).unwrap();
        LogStore::new(engine).unwrap()
    }

    #[tokio::test]
    async fn replication_reads_are_bounded_by_bytes_and_never_empty() {
        let mut log = store_with(&[300 << 10; 10]).await;
        let mut reader = log.get_log_reader().await;
        // 300 KiB entries: the fourth passes 1 MiB, and is the last one read.
        let limited = reader.limited_get_log_entries(1, 11).await.unwrap();
        assert_eq!(limited.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), [1, 2, 3, 4]);
        // The full read is not limited.
        assert_eq!(reader.try_get_log_entries(1..11).await.unwrap().len(), 10);
        // The end of the range still bounds it.
        assert_eq!(reader.limited_get_log_entries(9, 11).await.unwrap().len(), 2);

        // One entry larger than the bound is still sent, alone.
        let mut log = store_with(&[3 << 20, 10]).await;
        let mut reader = log.get_log_reader().await;
        assert_eq!(reader.limited_get_log_entries(1, 3).await.unwrap().len(), 1);
    }
}
