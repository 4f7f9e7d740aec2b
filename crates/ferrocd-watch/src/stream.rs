//! One Watch stream: its watchers, its queue of messages, and catch-up of watchers behind.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ferrocd_proto::etcdserverpb::WatchCreateRequest;
use ferrocd_proto::etcdserverpb::watch_create_request::FilterType;
use ferrocd_proto::mvccpb::Event;
use ferrocd_proto::mvccpb::event::EventType;
use ferrocd_types::KeyRange;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::hub::{HubShared, HubState, Synced};
use crate::{EventHistory, HistoryError, Message, events_size};

/// etcd's cancel reasons for refused creates.
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// Queue items or catch-up steps taken before a waiting stream yields to other tasks.
const CATCH_UP_STEPS: usize = 16;

enum Step {
    Ready(Message),
    /// Work remains (a watcher is catching up).
    Busy,
    /// Nothing to send until the hub or a request wakes the stream.
    Idle,
}

/// What a watcher watches, fixed at creation.
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) watch_id: i64,
    pub(crate) range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    pub(crate) progress_notify: bool,
    fragment: bool,
}

impl Spec {
    /// Whether the watcher gets `event`.
    pub(crate) fn wants(&self, event: &Event) -> bool {
        let Some(kv) = &event.kv else { return false };
        let filtered = if event.r#type == EventType::Delete as i32 { self.no_delete } else { self.no_put };
        !filtered && self.range.contains(&kv.key)
    }
}

/// A queued message, or events still to be filtered and completed for their watcher.
#[derive(Debug)]
pub(crate) enum Item {
    Ready(Message),
    /// One revision's events as notified, shared by every watcher they matched.
    Live {
        spec: Arc<Spec>,
        revision: i64,
        events: Arc<[Event]>,
        size: usize,
    },
    /// Whole revisions read for a watcher catching up, already filtered; `revision` is the
    /// hub's when they were read (etcd heads catch-up responses with its current revision).
    Batch {
        spec: Arc<Spec>,
        revision: i64,
        events: Vec<Event>,
        size: usize,
    },
}

impl Item {
    fn size(&self) -> usize {
        match self {
            Self::Ready(_) => 64,
            Self::Live { size, .. } | Self::Batch { size, .. } => *size,
        }
    }
}

/// A watcher, as its stream knows it.
#[derive(Debug)]
struct Slot {
    spec: Arc<Spec>,
    /// Its key in the hub's registry.
    global: u64,
    /// The next revision it needs, while it is behind (not registered in the hub).
    behind: Option<i64>,
}

#[derive(Debug, Default)]
pub(crate) struct Queue {
    items: VecDeque<Item>,
    pub(crate) bytes: usize,
    watchers: HashMap<i64, Slot>,
    /// Watchers behind, in catch-up order (entries of watchers gone or synced are skipped).
    behind: VecDeque<i64>,
    behind_count: usize,
    next_watch_id: i64,
    /// A progress request waits for every watcher to be synced.
    progress_wanted: bool,
}

impl Queue {
    pub(crate) fn push(&mut self, item: Item) {
        self.bytes += item.size();
        self.items.push_back(item);
    }

    pub(crate) fn push_message(&mut self, message: Message) {
        self.push(Item::Ready(message));
    }

    fn pop(&mut self) -> Option<Item> {
        let item = self.items.pop_front()?;
        self.bytes -= item.size();
        Some(item)
    }

    /// Marks a watcher behind from `next` (the hub has unregistered it, or is about to).
    pub(crate) fn fall_behind(&mut self, watch_id: i64, next: i64) {
        if let Some(slot) = self.watchers.get_mut(&watch_id) {
            if slot.behind.is_none() {
                self.behind_count += 1;
                self.behind.push_back(watch_id);
            }
            slot.behind = Some(next);
        }
    }

    /// The watcher is synced again; answers a waiting progress request once none is behind.
    fn caught_up(&mut self, watch_id: i64, revision: i64) {
        if let Some(slot) = self.watchers.get_mut(&watch_id)
            && slot.behind.take().is_some()
        {
            self.behind_count -= 1;
        }
        self.answer_progress(revision);
    }

    fn answer_progress(&mut self, revision: i64) {
        if self.progress_wanted && self.behind_count == 0 {
            self.progress_wanted = false;
            self.push_message(Message::Progress { watch_id: -1, revision });
        }
    }

    /// Forgets a watcher. What is queued for it is still sent, before the message that ends
    /// it: a progress message already queued vouches for those events.
    fn remove(&mut self, watch_id: i64) -> Option<Slot> {
        let slot = self.watchers.remove(&watch_id)?;
        if slot.behind.is_some() {
            self.behind_count -= 1;
        }
        Some(slot)
    }

    fn free_id(&mut self) -> i64 {
        while self.watchers.contains_key(&self.next_watch_id) {
            self.next_watch_id += 1;
        }
        let id = self.next_watch_id;
        self.next_watch_id += 1;
        id
    }
}

/// What the hub keeps of a stream.
#[derive(Debug, Default)]
pub(crate) struct StreamShared {
    pub(crate) queue: Mutex<Queue>,
    pub(crate) wake: Notify,
}

/// One etcd Watch stream: create, cancel and progress requests in, [`Message`]s out.
///
/// Dropping it removes its watchers from the hub.
#[derive(Debug)]
pub struct WatchStream<H: EventHistory> {
    hub: Arc<HubShared<H>>,
    me: Arc<StreamShared>,
}

impl<H: EventHistory> WatchStream<H> {
    pub(crate) fn new(hub: Arc<HubShared<H>>) -> Self {
        Self { hub, me: Arc::new(StreamShared::default()) }
    }

    /// Creates a watcher as etcd does: a refused request yields a [`Message::Refused`], an
    /// accepted one a [`Message::Created`] and then its events (or, for a start revision
    /// below the compaction revision, a [`Message::Compacted`]).
    pub fn create(&self, req: &WatchCreateRequest) {
        let key = if req.key.is_empty() { vec![0] } else { req.key.clone() };
        let range = KeyRange::from_request(&key, &req.range_end);
        let mut state = self.hub.state.lock();
        let mut queue = self.me.queue.lock();
        let revision = state.revision;
        let refuse = if range.is_empty() {
            Some(EMPTY_RANGE)
        } else if req.watch_id != 0 && queue.watchers.contains_key(&req.watch_id) {
            Some(DUPLICATE_ID)
        } else if req.start_revision < 0 {
            Some(COMPACTED)
        } else {
            None
        };
        if let Some(reason) = refuse {
            queue.push_message(Message::Refused { reason: reason.into(), revision });
            drop(queue);
            self.me.wake.notify_one();
            return;
        }
        let watch_id = if req.watch_id != 0 { req.watch_id } else { queue.free_id() };
        let spec = Arc::new(Spec {
            watch_id,
            range,
            no_put: req.filters.contains(&(FilterType::Noput as i32)),
            no_delete: req.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: req.prev_kv,
            progress_notify: req.progress_notify,
            fragment: req.fragment,
        });
        let global = state.next_global();
        queue.watchers.insert(watch_id, Slot { spec: Arc::clone(&spec), global, behind: None });
        queue.push_message(Message::Created { watch_id, revision });
        let start = req.start_revision;
        if start == 0 || start > revision {
            let min_rev = start.max(revision + 1);
            state.register(global, Synced { stream: Arc::clone(&self.me), spec, min_rev, active: false });
        } else {
            // In the past: caught up by the stream (compaction is checked there, after the
            // created message, as etcd orders them).
            queue.fall_behind(watch_id, start);
        }
        drop(queue);
        self.me.wake.notify_one();
    }

    /// Refuses a create request for a reason of the caller's (etcd's auth check, made before
    /// [`Self::create`]): a created-and-canceled answer with `reason`, the stream open.
    pub fn refuse(&self, reason: String) {
        let revision = self.hub.state.lock().revision;
        self.me.queue.lock().push_message(Message::Refused { reason, revision });
        self.me.wake.notify_one();
    }

    /// Cancels a watcher; an unknown ID is ignored, as etcd does.
    pub fn cancel(&self, watch_id: i64) {
        let mut state = self.hub.state.lock();
        let mut queue = self.me.queue.lock();
        if let Some(slot) = queue.remove(watch_id) {
            state.unregister(slot.global);
            let revision = state.revision;
            queue.push_message(Message::Canceled { watch_id, revision, reason: String::new() });
            queue.answer_progress(revision);
            drop(queue);
            self.me.wake.notify_one();
        }
    }

    /// etcd's progress request: one [`Message::Progress`] with watch id -1 at the hub's
    /// revision, sent once every watcher of the stream is synced (at once if they are).
    pub fn request_progress(&self) {
        let state = self.hub.state.lock();
        let mut queue = self.me.queue.lock();
        queue.progress_wanted = true;
        queue.answer_progress(state.revision);
        drop(queue);
        self.me.wake.notify_one();
    }

    /// The watchers of this stream.
    pub fn watchers(&self) -> usize {
        self.me.queue.lock().watchers.len()
    }

    /// The bytes this stream has queued.
    pub fn queued_bytes(&self) -> usize {
        self.me.queue.lock().bytes
    }

    /// The next message to send, waiting until there is one.
    pub async fn next(&self) -> Message {
        loop {
            match self.step() {
                Step::Ready(message) => return message,
                // Long catch-ups let other tasks run between steps.
                Step::Busy => tokio::task::yield_now().await,
                Step::Idle => self.me.wake.notified().await,
            }
        }
    }

    /// The next message to send, if one is ready now (catching up watchers behind when the
    /// queue is empty).
    pub fn try_next(&self) -> Option<Message> {
        loop {
            match self.step() {
                Step::Ready(message) => return Some(message),
                Step::Busy => {}
                Step::Idle => return None,
            }
        }
    }

    /// Takes the next message, or runs a few catch-up steps.
    fn step(&self) -> Step {
        for _ in 0..CATCH_UP_STEPS {
            let item = self.me.queue.lock().pop();
            let message = match item {
                Some(Item::Ready(message)) => Some(message),
                Some(Item::Live { spec, revision, events, .. }) => {
                    let events: Vec<Event> = events.iter().filter(|e| spec.wants(e)).cloned().collect();
                    self.complete(&spec, revision, events)
                }
                Some(Item::Batch { spec, revision, events, .. }) => self.complete(&spec, revision, events),
                None if self.catch_up_one() => None,
                None => return Step::Idle,
            };
            if let Some(message) = message {
                return Step::Ready(message);
            }
        }
        Step::Busy
    }

    /// The message for a watcher's events, with `prev_kv` read where asked for.
    fn complete(&self, spec: &Spec, revision: i64, mut events: Vec<Event>) -> Option<Message> {
        if events.is_empty() {
            return None;
        }
        if spec.prev_kv {
            for event in &mut events {
                let Some(kv) = &event.kv else { continue };
                let created = event.r#type == EventType::Put as i32 && kv.version == 1;
                if !created {
                    event.prev_kv = self.hub.history.value_at(&kv.key, kv.mod_revision - 1);
                }
            }
        }
        Some(Message::Events { watch_id: spec.watch_id, revision, events, fragment: spec.fragment })
    }

    /// One step of catch-up for the first watcher behind; `false` when none is.
    fn catch_up_one(&self) -> bool {
        let hub = &*self.hub;
        let mut state = hub.state.lock();
        let mut queue = self.me.queue.lock();
        let (watch_id, next) = loop {
            let Some(id) = queue.behind.pop_front() else { return false };
            if let Some(next) = queue.watchers.get(&id).and_then(|s| s.behind) {
                break (id, next);
            }
        };
        let slot = &queue.watchers[&watch_id];
        let (spec, global) = (Arc::clone(&slot.spec), slot.global);
        let revision = state.revision;
        let compacted = hub.history.compact_revision();
        if next < compacted {
            queue.remove(watch_id);
            queue.push_message(Message::Compacted { watch_id, compact_revision: compacted });
            queue.answer_progress(revision);
            return true;
        }
        if next > revision {
            self.join(&mut state, &mut queue, spec, global, next);
            return true;
        }
        if state.ring.from <= next {
            // Everything it needs is in memory: take it, within the budget.
            let mut events = Vec::new();
            let mut size = 0;
            let mut through = next - 1;
            for (rev, evs, _) in state.ring.revisions.iter().filter(|(rev, ..)| *rev >= next) {
                let wanted: Vec<Event> = evs.iter().filter(|e| spec.wants(e)).cloned().collect();
                let bytes = events_size(&wanted);
                if size > 0 && queue.bytes + size + bytes > hub.options.stream_budget_bytes {
                    break;
                }
                size += bytes;
                events.extend(wanted);
                through = *rev;
            }
            if !events.is_empty() {
                queue.push(Item::Batch { spec: Arc::clone(&spec), revision, events, size });
            }
            if through >= revision {
                self.join(&mut state, &mut queue, spec, global, revision + 1);
            } else {
                queue.fall_behind(watch_id, through + 1);
                queue.behind.push_back(watch_id);
            }
            return true;
        }
        // From history, without holding the hub: writes go on meanwhile.
        drop(queue);
        drop(state);
        let read = hub.history.events(next, revision, hub.options.catch_up_events);
        let state = hub.state.lock();
        let mut queue = self.me.queue.lock();
        // The same watcher (not one re-created under its ID meanwhile), still needing `next`:
        // otherwise what was read is another watcher's, or already sent.
        let same = queue.watchers.get(&watch_id).filter(|s| s.global == global);
        if same.and_then(|s| s.behind) != Some(next) {
            return true; // canceled, re-created or moved meanwhile
        }
        match read {
            Ok((events, through)) => {
                let events: Vec<Event> = events.into_iter().filter(|e| spec.wants(e)).collect();
                if !events.is_empty() {
                    let size = events_size(&events);
                    queue.push(Item::Batch { spec, revision: state.revision, events, size });
                }
                queue.fall_behind(watch_id, through + 1);
                queue.behind.push_back(watch_id);
            }
            Err(HistoryError::Compacted) => {
                queue.remove(watch_id);
                let compact_revision = hub.history.compact_revision();
                queue.push_message(Message::Compacted { watch_id, compact_revision });
                queue.answer_progress(state.revision);
            }
            Err(HistoryError::Other(reason)) => {
                tracing::warn!(watch_id, %reason, "watch: history read failed; watcher canceled");
                queue.remove(watch_id);
                queue.push_message(Message::Canceled { watch_id, revision: state.revision, reason });
                queue.answer_progress(state.revision);
            }
        }
        true
    }

    /// Registers a watcher that has everything below `min_rev` as synced.
    fn join(&self, state: &mut HubState, queue: &mut Queue, spec: Arc<Spec>, global: u64, min_rev: i64) {
        let watch_id = spec.watch_id;
        state.register(global, Synced { stream: Arc::clone(&self.me), spec, min_rev, active: false });
        queue.caught_up(watch_id, state.revision);
    }
}

impl<H: EventHistory> Drop for WatchStream<H> {
    fn drop(&mut self) {
        let mut state = self.hub.state.lock();
        let mut queue = self.me.queue.lock();
        for slot in queue.watchers.values() {
            state.unregister(slot.global);
        }
        *queue = Queue::default();
    }
}
