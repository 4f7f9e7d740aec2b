//! ferrocd's watch hub: etcd's watchers over a revisioned history.
//!
//! The server hands every applied revision's events to [`WatchHub::notify`]; each gRPC Watch
//! stream is a [`WatchStream`] that takes create, cancel and progress requests and yields the
//! [`Message`]s to send, in order.
//!
//! How a watcher moves:
//! - **synced** watchers are registered in the hub by key (single-key watches) or scanned as
//!   ranges; `notify` queues a shared handle to the revision's events for each one that matches,
//!   so fan-out costs a reference count per watcher, not a copy;
//! - a watcher that starts in the past, or whose stream's queue is over its byte budget when
//!   events arrive (a slow consumer), is **behind**: it remembers only the next revision it
//!   needs. When its stream's queue has drained, it catches up, first from the hub's ring of
//!   recent revisions and otherwise from the [`EventHistory`] in bounded chunks, and rejoins the
//!   synced watchers atomically once it has everything up to the hub's revision.
//!
//! So `notify` never waits for a consumer and never reads history: the memory a stream holds
//! is its queue budget plus a few words per watcher, however slow its reader. A watcher whose
//! next revision falls below the compaction revision is cancelled with `compact_revision` set.
//!
//! The guarantees etcd documents hold per watcher: events in revision order, each once, none
//! missing (within the retained history), one revision never split across messages (live
//! events come one revision per message; catch-up messages carry whole revisions), and a
//! progress message for revision R only once every event up to R was queued before it.
//!
//! Absences: no dependency on the MVCC store (history is read through [`EventHistory`]), on
//! leases, auth or gRPC; no threads or timers: the server drives [`WatchHub::progress_tick`].

mod hub;
mod stream;
#[cfg(test)]
mod tests;

use ferrocd_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use ferrocd_proto::mvccpb::{Event, KeyValue};
use prost::Message as _;

pub use hub::WatchHub;
pub use stream::WatchStream;

/// Why a history read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The revisions asked for were compacted.
    #[error("required revision has been compacted")]
    Compacted,
    /// The history could not be read.
    #[error("{0}")]
    Other(String),
}

/// The revisioned history watchers catch up from.
pub trait EventHistory: Send + Sync + 'static {
    /// The events of revisions `from..=to` in revision order: whole revisions only, stopping
    /// after the first revision at which at least `max_events` were collected. Returns them
    /// with the last revision they cover completely.
    ///
    /// # Errors
    /// [`HistoryError::Compacted`] when `from` is below the compaction revision.
    fn events(&self, from: i64, to: i64, max_events: usize) -> Result<(Vec<Event>, i64), HistoryError>;

    /// The revision of the last compaction (-1 before any).
    fn compact_revision(&self) -> i64;

    /// The key-value pair of `key` at `revision`, if it existed then and is still retained.
    fn value_at(&self, key: &[u8], revision: i64) -> Option<KeyValue>;
}

/// Tunables of the hub.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bytes of events one stream may have queued; beyond it, watchers fall behind and
    /// catch up once the queue drains.
    pub stream_budget_bytes: usize,
    /// The most recent revisions kept in memory for watchers rejoining.
    pub ring_revisions: usize,
    /// The most bytes of events kept in that ring.
    pub ring_bytes: usize,
    /// Events read from history per catch-up step (whole revisions, so it may be exceeded).
    pub catch_up_events: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { stream_budget_bytes: 4 << 20, ring_revisions: 4096, ring_bytes: 8 << 20, catch_up_events: 1000 }
    }
}

/// What a stream sends, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A watcher was created.
    Created { watch_id: i64, revision: i64 },
    /// A create request was refused (etcd: created and canceled, watch id -1).
    Refused { reason: String, revision: i64 },
    /// Events for a watcher: one revision (live) or several whole ones (catching up).
    Events { watch_id: i64, revision: i64, events: Vec<Event>, fragment: bool },
    /// The watcher needs history below the compaction revision: it is canceled. (etcd heads
    /// this response with revision 0.)
    Compacted { watch_id: i64, compact_revision: i64 },
    /// The watcher is canceled (on request, or because its history could not be read).
    Canceled { watch_id: i64, revision: i64, reason: String },
    /// Every event up to `revision` was sent (watch id -1: for every watcher of the stream).
    Progress { watch_id: i64, revision: i64 },
}

impl Message {
    /// The revision the response header carries.
    pub fn revision(&self) -> i64 {
        match self {
            Self::Created { revision, .. }
            | Self::Refused { revision, .. }
            | Self::Events { revision, .. }
            | Self::Canceled { revision, .. }
            | Self::Progress { revision, .. } => *revision,
            Self::Compacted { .. } => 0,
        }
    }

    /// Whether the watcher asked for large responses to be split.
    pub fn wants_fragments(&self) -> bool {
        matches!(self, Self::Events { fragment: true, .. })
    }

    /// The etcd response, with a header holding only the revision (the server adds its IDs).
    pub fn into_response(self) -> WatchResponse {
        let header = Some(ResponseHeader { revision: self.revision(), ..Default::default() });
        match self {
            Self::Created { watch_id, .. } => WatchResponse { header, watch_id, created: true, ..Default::default() },
            Self::Refused { reason, .. } => WatchResponse {
                header,
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason: reason,
                ..Default::default()
            },
            Self::Events { watch_id, events, .. } => WatchResponse { header, watch_id, events, ..Default::default() },
            Self::Compacted { watch_id, compact_revision, .. } => {
                WatchResponse { header, watch_id, canceled: true, compact_revision, ..Default::default() }
            }
            Self::Canceled { watch_id, reason, .. } => {
                WatchResponse { header, watch_id, canceled: true, cancel_reason: reason, ..Default::default() }
            }
            Self::Progress { watch_id, .. } => WatchResponse { header, watch_id, ..Default::default() },
        }
    }
}

/// Splits a response of at least `max_bytes` (encoded) holding two or more events into
/// fragments below that size where possible (a single event larger than it still goes alone):
/// every fragment but the last carries `fragment = true`, as etcd's clients reassemble them.
pub fn fragment(resp: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    if resp.events.len() < 2 || resp.encoded_len() < max_bytes {
        return vec![resp];
    }
    let mut shell = resp.clone();
    shell.events = Vec::new();
    shell.fragment = true;
    let base = shell.encoded_len();
    let mut out = Vec::new();
    let mut current = shell.clone();
    let mut size = base;
    for event in resp.events {
        // Each event is a length-delimited field 11: tag, length and body.
        let len = event.encoded_len();
        let cost = 1 + prost::length_delimiter_len(len) + len;
        if !current.events.is_empty() && size + cost >= max_bytes {
            out.push(std::mem::replace(&mut current, shell.clone()));
            size = base;
        }
        size += cost;
        current.events.push(event);
    }
    current.fragment = false;
    out.push(current);
    out
}

/// An estimate of the memory and wire bytes of some events.
pub(crate) fn events_size(events: &[Event]) -> usize {
    events.iter().map(|e| e.kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len()) + 48).sum()
}
