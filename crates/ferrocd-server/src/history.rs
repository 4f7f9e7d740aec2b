//! The keyspace's history as the watch hub reads it.

use std::sync::Arc;

use ferrocd_engine_rocks::RocksEngine;
use ferrocd_mvcc::KvStore;
use ferrocd_proto::mvccpb::{Event, KeyValue};
use ferrocd_watch::{EventHistory, HistoryError, WatchHub};

/// The watch hub of a member.
pub type Hub = WatchHub<StoreHistory>;

/// [`EventHistory`] over the member's MVCC store.
#[derive(Debug, Clone)]
pub struct StoreHistory(pub Arc<KvStore<RocksEngine>>);

impl EventHistory for StoreHistory {
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
