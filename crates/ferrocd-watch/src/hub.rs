//! The hub: the synced watchers, the ring of recent revisions, and fan-out of applied events.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use ferrocd_proto::mvccpb::Event;
use ferrocd_types::KeyRange;
use parking_lot::Mutex;

use crate::stream::{Item, Spec, StreamShared, WatchStream};
use crate::{EventHistory, Message, Options, events_size};

/// The watch hub of one member. Cheap to clone; every clone is the same hub.
#[derive(Debug)]
pub struct WatchHub<H: EventHistory> {
    pub(crate) shared: Arc<HubShared<H>>,
}

impl<H: EventHistory> Clone for WatchHub<H> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

#[derive(Debug)]
pub(crate) struct HubShared<H> {
    pub(crate) history: H,
    pub(crate) options: Options,
    pub(crate) state: Mutex<HubState>,
}

/// A synced watcher, as the hub knows it.
#[derive(Debug)]
pub(crate) struct Synced {
    pub(crate) stream: Arc<StreamShared>,
    pub(crate) spec: Arc<Spec>,
    /// Revisions below this are not for it (a watch that starts in the future).
    pub(crate) min_rev: i64,
    /// Whether it got events since the last progress tick.
    pub(crate) active: bool,
}

/// Every revision's events in `[from, revision]` of the hub, newest last.
#[derive(Debug)]
pub(crate) struct Ring {
    pub(crate) from: i64,
    pub(crate) revisions: VecDeque<(i64, Arc<[Event]>, usize)>,
    bytes: usize,
}

impl Ring {
    fn new(from: i64) -> Self {
        Self { from, revisions: VecDeque::new(), bytes: 0 }
    }

    fn push(&mut self, revision: i64, events: Arc<[Event]>, size: usize, options: &Options) {
        self.revisions.push_back((revision, events, size));
        self.bytes += size;
        while self.revisions.len() > options.ring_revisions || self.bytes > options.ring_bytes {
            let Some((rev, _, size)) = self.revisions.pop_front() else { break };
            self.bytes -= size;
            self.from = rev + 1;
        }
    }

    fn clear(&mut self, from: i64) {
        *self = Self::new(from);
    }
}

#[derive(Debug)]
pub(crate) struct HubState {
    /// The newest revision notified.
    pub(crate) revision: i64,
    pub(crate) ring: Ring,
    next_global: u64,
    synced: HashMap<u64, Synced>,
    /// Synced single-key watchers by key.
    by_key: HashMap<Vec<u8>, Vec<u64>>,
    /// Synced range watchers.
    ranged: BTreeSet<u64>,
}

impl HubState {
    pub(crate) fn next_global(&mut self) -> u64 {
        self.next_global += 1;
        self.next_global
    }

    pub(crate) fn register(&mut self, global: u64, synced: Synced) {
        match &synced.spec.range {
            KeyRange::Single(key) => self.by_key.entry(key.clone()).or_default().push(global),
            KeyRange::Range { .. } => {
                self.ranged.insert(global);
            }
        }
        self.synced.insert(global, synced);
    }

    /// Removes a synced watcher; `false` if it was not synced.
    pub(crate) fn unregister(&mut self, global: u64) -> bool {
        let Some(w) = self.synced.remove(&global) else { return false };
        match &w.spec.range {
            KeyRange::Single(key) => {
                if let Some(ids) = self.by_key.get_mut(key) {
                    ids.retain(|id| *id != global);
                    if ids.is_empty() {
                        self.by_key.remove(key);
                    }
                }
            }
            KeyRange::Range { .. } => {
                self.ranged.remove(&global);
            }
        }
        true
    }

    pub(crate) fn synced_count(&self) -> usize {
        self.synced.len()
    }
}

impl<H: EventHistory> WatchHub<H> {
    /// A hub whose history is at `revision` (the store's current revision).
    pub fn new(history: H, revision: i64, options: Options) -> Self {
        let state = HubState {
            revision,
            ring: Ring::new(revision + 1),
            next_global: 0,
            synced: HashMap::new(),
            by_key: HashMap::new(),
            ranged: BTreeSet::new(),
        };
        Self { shared: Arc::new(HubShared { history, options, state: Mutex::new(state) }) }
    }

    /// The history watchers read.
    pub fn history(&self) -> &H {
        &self.shared.history
    }

    /// The newest revision notified.
    pub fn revision(&self) -> i64 {
        self.shared.state.lock().revision
    }

    /// Watchers registered as synced (the others are catching up).
    pub fn synced_watchers(&self) -> usize {
        self.shared.state.lock().synced_count()
    }

    /// A new stream of watchers.
    pub fn stream(&self) -> WatchStream<H> {
        WatchStream::new(Arc::clone(&self.shared))
    }

    /// Hands the events of an applied revision to the watchers. Revisions must be notified in
    /// increasing order; one already notified is ignored. Never waits for a consumer: a stream
    /// over its budget has the matching watchers fall behind instead.
    pub fn notify(&self, revision: i64, events: Vec<Event>) {
        let shared = &*self.shared;
        let mut state = shared.state.lock();
        if revision <= state.revision {
            tracing::warn!(revision, notified = state.revision, "watch hub: revision notified twice; ignored");
            return;
        }
        let events: Arc<[Event]> = events.into();
        let size = events_size(&events);
        state.revision = revision;
        state.ring.push(revision, Arc::clone(&events), size, &shared.options);

        let mut hits = Vec::new();
        for event in events.iter() {
            let Some(kv) = &event.kv else { continue };
            if let Some(ids) = state.by_key.get(&kv.key) {
                hits.extend_from_slice(ids);
            }
            hits.extend(state.ranged.iter().filter(|id| state.synced[id].spec.range.contains(&kv.key)));
        }
        hits.sort_unstable();
        hits.dedup();
        let mut behind = Vec::new();
        for id in hits {
            let Some(w) = state.synced.get_mut(&id) else { continue };
            if revision < w.min_rev || !events.iter().any(|e| w.spec.wants(e)) {
                continue;
            }
            w.active = true;
            let mut queue = w.stream.queue.lock();
            if queue.bytes > 0 && queue.bytes + size > shared.options.stream_budget_bytes {
                queue.fall_behind(w.spec.watch_id, revision);
                behind.push(id);
            } else {
                queue.push(Item::Live { spec: Arc::clone(&w.spec), revision, events: Arc::clone(&events), size });
            }
            drop(queue);
            w.stream.wake.notify_one();
        }
        for id in behind {
            state.unregister(id);
        }
    }

    /// The history was replaced underneath (a snapshot installed): the hub moves to
    /// `revision`, and every synced watcher catches up from the revision after the last one it
    /// was notified of (or is canceled, if the new history is compacted past it).
    pub fn reset(&self, revision: i64) {
        let mut state = self.shared.state.lock();
        let next = state.revision + 1;
        let ids: Vec<u64> = state.synced.keys().copied().collect();
        for id in ids {
            let w = state.synced.remove(&id).expect("listed");
            w.stream.queue.lock().fall_behind(w.spec.watch_id, next.max(w.min_rev));
            w.stream.wake.notify_one();
        }
        state.by_key.clear();
        state.ranged.clear();
        state.revision = state.revision.max(revision);
        let from = state.revision + 1;
        state.ring.clear(from);
    }

    /// Sends a progress message to every synced watcher that asked for progress notifications
    /// and got no events since the previous tick (etcd's progress notify interval).
    pub fn progress_tick(&self) {
        let mut state = self.shared.state.lock();
        let revision = state.revision;
        for w in state.synced.values_mut() {
            if w.spec.progress_notify && !w.active {
                w.stream.queue.lock().push_message(Message::Progress { watch_id: w.spec.watch_id, revision });
                w.stream.wake.notify_one();
            }
            w.active = false;
        }
    }
}
