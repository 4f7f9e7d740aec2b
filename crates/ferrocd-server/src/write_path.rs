//! The write path: every mutating request goes through a [`WritePath`], which orders it,
//! applies it and answers once it is durable.
//!
//! [`LocalWritePath`] is the single-member implementation: one apply thread takes every
//! queued request, applies them in order, then makes them all durable with one fsync (group
//! commit) and visible before answering. Replication slots in here: a raft-backed write path
//! proposes the same [`Command`]s and answers from the apply on every member, without any
//! change to the services above it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrocd_engine::{Engine, WriteBatch};
use ferrocd_mvcc::{Applied, KvStore, NoLeases, WriteRequest};
use tokio::sync::{mpsc, oneshot};

use crate::error::ServerError;
use crate::storage::{APPLIED_INDEX, SERVER_BUCKET};

/// A mutating request, as ordered by the write path.
pub type Command = WriteRequest;

/// Orders, applies and makes durable the mutating requests.
pub trait WritePath: Send + Sync + 'static {
    /// Applies `cmd` after every command proposed before it; resolves once the result is
    /// durable and visible to reads.
    fn propose(&self, cmd: Command) -> impl std::future::Future<Output = Result<Applied, ServerError>> + Send;

    /// The index of the last applied command.
    fn applied_index(&self) -> u64;
}

struct Proposal {
    cmd: Command,
    reply: oneshot::Sender<Result<Applied, ServerError>>,
}

/// The most commands applied before one fsync.
const MAX_BATCH: usize = 4096;

/// The single-member write path with group commit.
#[derive(Debug, Clone)]
pub struct LocalWritePath {
    tx: mpsc::UnboundedSender<Proposal>,
    applied: Arc<AtomicU64>,
}

impl std::fmt::Debug for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proposal").field("cmd", &self.cmd).finish()
    }
}

impl LocalWritePath {
    /// Starts the apply thread for `kv`, continuing from `applied_index`.
    pub fn start<E: Engine>(kv: Arc<KvStore<E>>, applied_index: u64) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let applied = Arc::new(AtomicU64::new(applied_index));
        let counter = Arc::clone(&applied);
        std::thread::Builder::new().name("ferrocd-apply".into()).spawn(move || apply_loop(kv, rx, counter))?;
        Ok(Self { tx, applied })
    }
}

impl WritePath for LocalWritePath {
    async fn propose(&self, cmd: Command) -> Result<Applied, ServerError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Proposal { cmd, reply }).map_err(|_| ServerError::Stopped)?;
        answer.await.map_err(|_| ServerError::Stopped)?
    }

    fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }
}

fn apply_loop<E: Engine>(kv: Arc<KvStore<E>>, mut rx: mpsc::UnboundedReceiver<Proposal>, applied: Arc<AtomicU64>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut index = applied.load(Ordering::Acquire);
        let mut done: Vec<Done> = Vec::with_capacity(batch.len());
        for p in batch.drain(..) {
            // A compaction must not overtake unpublished writes: readers would meet its
            // compacted revision while the revisions below it are not yet visible to them.
            if matches!(p.cmd, WriteRequest::Compact(_)) && !flush(&kv, &applied, index, &mut done) {
                return;
            }
            index += 1;
            let mut extra = WriteBatch::new();
            extra.put(SERVER_BUCKET, APPLIED_INDEX, index.to_be_bytes());
            let physical = matches!(&p.cmd, WriteRequest::Compact(c) if c.physical);
            let result = kv.apply(p.cmd, &NoLeases, extra);
            if let Err(e @ (ferrocd_mvcc::Error::Engine(_) | ferrocd_mvcc::Error::Corrupt(_))) = &result {
                // The store is no longer consistent with the engine: stop serving writes.
                tracing::error!(error = %e, "storage failure while applying; the write path stops");
                let _ = p.reply.send(Err(ServerError::Storage(e.to_string())));
                return;
            }
            done.push((p.reply, physical, result));
        }
        if !flush(&kv, &applied, index, &mut done) {
            return;
        }
    }
}

/// An applied command waiting for its answer: the reply, whether it waits for a physical
/// compaction, the result.
type Done = (oneshot::Sender<Result<Applied, ServerError>>, bool, Result<Applied, ferrocd_mvcc::Error>);

/// Makes every applied command durable (one fsync) and visible, then answers them. Returns
/// false when the storage failed and the write path must stop.
fn flush<E: Engine>(kv: &Arc<KvStore<E>>, applied: &AtomicU64, index: u64, done: &mut Vec<Done>) -> bool {
    if done.is_empty() {
        return true;
    }
    if let Err(e) = kv.sync() {
        tracing::error!(error = %e, "fsync failed; the write path stops");
        for (reply, _, _) in done.drain(..) {
            let _ = reply.send(Err(ServerError::Storage(e.to_string())));
        }
        return false;
    }
    kv.publish();
    applied.store(index, Ordering::Release);
    for (reply, physical, result) in done.drain(..) {
        match result {
            Ok(mut applied) => match applied.compaction.take() {
                Some(job) if physical => spawn_compaction(Arc::clone(kv), job, Some((reply, applied))),
                Some(job) => {
                    let _ = reply.send(Ok(applied));
                    spawn_compaction(Arc::clone(kv), job, None);
                }
                None => {
                    let _ = reply.send(Ok(applied));
                }
            },
            Err(e) => {
                let _ = reply.send(Err(ServerError::Mvcc(e)));
            }
        }
    }
    true
}

/// Runs a compaction's physical removal off the apply thread; answers `waiting` when done.
fn spawn_compaction<E: Engine>(
    kv: Arc<KvStore<E>>,
    job: ferrocd_mvcc::CompactionJob,
    waiting: Option<(oneshot::Sender<Result<Applied, ServerError>>, Applied)>,
) {
    let run = move || {
        let result = job.run(&kv);
        if let Err(e) = &result {
            tracing::error!(error = %e, "compaction failed");
        }
        if let Some((reply, applied)) = waiting {
            let _ = reply.send(result.map(|()| applied).map_err(ServerError::Mvcc));
        }
    };
    if let Err(e) = std::thread::Builder::new().name("ferrocd-compact".into()).spawn(run) {
        tracing::error!(error = %e, "cannot start the compaction thread");
    }
}
