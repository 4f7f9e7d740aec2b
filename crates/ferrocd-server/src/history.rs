//! The keyspace's history as the watch hub reads it.

use std::sync::Arc;

use ferrocd_engine::Engine;
use ferrocd_mvcc::KvStore;
use ferrocd_proto::mvccpb::{Event, KeyValue};
use ferrocd_watch::{EventHistory, HistoryError, WatchHub};

/// The watch hub of a member.
pub type Hub<E> = WatchHub<StoreHistory<E>>;

/// [`EventHistory`] over the member's MVCC store.
#[derive(Debug)]
pub struct StoreHistory<E: Engine>(pub Arc<KvStore<E>>);

impl<E: Engine> Clone for StoreHistory<E> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<E: Engine> EventHistory for StoreHistory<E> {
    fn events(&self, from: i64, to: i64, max_events: usize) -> Result<(Vec<Event>, i64), HistoryError> {
        self.0.events(from, to, max_events).map_err(|e| match e {
            ferrocd_mvcc::Error::Compacted => HistoryError::Compacted,
            e => HistoryError::Other(e.to_string()),
        })
    }

    fn compact_revision(&self) -> i64 {
        self.0.compact_revision()
    }

    fn value_at(&self, key: &[u8], revision: i64) -> Option<KeyValue> {
        self.0.value_at(key, revision).unwrap_or_else(|e| {
            tracing::warn!(error = %e, revision, "watch: previous value unreadable; sent without it");
            None
        })
    }
}
