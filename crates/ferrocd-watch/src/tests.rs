//! Unit tests of the hub, and a model test: random writes, watchers, cancels, compactions and
//! slow consumers, with every watcher's events checked against the history.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ferrocd_proto::etcdserverpb::watch_create_request::FilterType;
use ferrocd_proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use ferrocd_proto::mvccpb::event::EventType;
use ferrocd_proto::mvccpb::{Event, KeyValue};
use ferrocd_types::KeyRange;
use parking_lot::Mutex;
use proptest::prelude::*;

use crate::{EventHistory, HistoryError, Message, Options, WatchHub, WatchStream, fragment};

/// History in memory: every revision's events, and a compaction mark.
#[derive(Debug, Clone, Default)]
struct MemHistory(Arc<Mutex<MemInner>>);

#[derive(Default)]
struct MemInner {
    revisions: BTreeMap<i64, Vec<Event>>,
    compacted: i64,
    /// Runs (once) in the middle of the next history read, as a concurrent request would.
    during_read: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for MemInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemInner").field("revisions", &self.revisions).field("compacted", &self.compacted).finish()
    }
}

impl EventHistory for MemHistory {
    fn events(&self, from: i64, to: i64, max_events: usize) -> Result<(Vec<Event>, i64), HistoryError> {
        let (read, hook) = {
            let mut inner = self.0.lock();
            (read_events(&inner, from, to, max_events), inner.during_read.take())
        };
        // A request of the stream's client served while this read was under way.
        if let Some(hook) = hook {
            hook();
        }
        read
    }

    fn compact_revision(&self) -> i64 {
        self.0.lock().compacted
    }

    fn value_at(&self, key: &[u8], revision: i64) -> Option<KeyValue> {
        let inner = self.0.lock();
        if revision < inner.compacted {
            return None;
        }
        truth_at(&inner.revisions, key, revision)
    }
}

fn read_events(inner: &MemInner, from: i64, to: i64, max_events: usize) -> Result<(Vec<Event>, i64), HistoryError> {
    if from < inner.compacted {
        return Err(HistoryError::Compacted);
    }
    let mut out = Vec::new();
    for (rev, events) in inner.revisions.range(from..=to) {
        out.extend(events.iter().cloned());
        if out.len() >= max_events {
            return Ok((out, *rev));
        }
    }
    Ok((out, to))
}

fn truth_at(revisions: &BTreeMap<i64, Vec<Event>>, key: &[u8], revision: i64) -> Option<KeyValue> {
    let last = revisions.range(..=revision).flat_map(|(_, evs)| evs).rfind(|e| e.kv.as_ref().unwrap().key == key)?;
    (last.r#type == EventType::Put as i32).then(|| last.kv.clone().unwrap())
}

/// A keyspace that writes revisions into a [`MemHistory`] and notifies a hub.
struct World {
    history: MemHistory,
    hub: WatchHub<MemHistory>,
    revision: i64,
    live: BTreeMap<Vec<u8>, KeyValue>,
}

impl World {
    fn new(options: Options) -> Self {
        let history = MemHistory::default();
        let hub = WatchHub::new(history.clone(), 1, options);
        Self { history, hub, revision: 1, live: BTreeMap::new() }
    }

    /// One revision: puts (`Some(value)`) and deletes (`None`); nothing if nothing changes.
    fn write(&mut self, changes: &[(&[u8], Option<&[u8]>)]) {
        let rev = self.revision + 1;
        let mut events = Vec::new();
        for (key, value) in changes {
            match value {
                Some(value) => {
                    let prev = self.live.get(*key);
                    let kv = KeyValue {
                        key: key.to_vec(),
                        value: value.to_vec(),
                        create_revision: prev.map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.map_or(1, |p| p.version + 1),
                        lease: 0,
                    };
                    self.live.insert(key.to_vec(), kv.clone());
                    events.push(Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: None });
                }
                None => {
                    if self.live.remove(*key).is_some() {
                        let kv = KeyValue { key: key.to_vec(), mod_revision: rev, ..Default::default() };
                        events.push(Event { r#type: EventType::Delete as i32, kv: Some(kv), prev_kv: None });
                    }
                }
            }
        }
        if events.is_empty() {
            return;
        }
        self.revision = rev;
        self.history.0.lock().revisions.insert(rev, events.clone());
        self.hub.notify(rev, events);
    }

    fn put(&mut self, key: &str, value: &str) {
        self.write(&[(key.as_bytes(), Some(value.as_bytes()))]);
    }

    fn compact(&mut self, revision: i64) {
        self.history.0.lock().compacted = revision;
    }
}

fn watch(key: &str, end: &str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.as_bytes().to_vec(),
        start_revision: start,
        ..Default::default()
    }
}

fn drain(stream: &WatchStream<MemHistory>) -> Vec<Message> {
    std::iter::from_fn(|| stream.try_next()).collect()
}

fn keys_and_revs(messages: &[Message]) -> Vec<(i64, String, i64)> {
    let mut out = Vec::new();
    for m in messages {
        if let Message::Events { watch_id, events, .. } = m {
            for e in events {
                let kv = e.kv.as_ref().unwrap();
                out.push((*watch_id, String::from_utf8(kv.key.clone()).unwrap(), kv.mod_revision));
            }
        }
    }
    out
}

#[test]
fn created_then_live_events_for_key_prefix_and_from_key() {
    let mut w = World::new(Options::default());
    let s = w.hub.stream();
    s.create(&watch("a", "", 0));
    s.create(&watch("a", "b", 0));
    s.create(&watch("b", "\0", 0));
    w.put("a", "1");
    w.put("ab", "2");
    w.put("c", "3");
    let got = drain(&s);
    assert_eq!(
        &got[..3],
        &[
            Message::Created { watch_id: 0, revision: 1 },
            Message::Created { watch_id: 1, revision: 1 },
            Message::Created { watch_id: 2, revision: 1 },
        ]
    );
    let mut events = keys_and_revs(&got);
    events.sort();
    assert_eq!(events, vec![(0, "a".into(), 2), (1, "a".into(), 2), (1, "ab".into(), 3), (2, "c".into(), 4)]);
}

#[test]
fn refused_creates_carry_etcds_reasons() {
    let w = World::new(Options::default());
    let s = w.hub.stream();
    s.create(&WatchCreateRequest { watch_id: 7, ..watch("a", "", 0) });
    s.create(&WatchCreateRequest { watch_id: 7, ..watch("b", "", 0) });
    s.create(&watch("b", "a", 0));
    s.create(&watch("a", "", -1));
    s.refuse("rpc error: code = PermissionDenied desc = etcdserver: permission denied".into());
    let reasons: Vec<String> = drain(&s)
        .into_iter()
        .filter_map(|m| match m {
            Message::Refused { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "mvcc: duplicate watch ID provided on the WatchStream",
            "mvcc: watcher range is empty",
            "etcdserver: mvcc: required revision has been compacted",
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
        ]
    );
    let resp = Message::Refused { reason: "r".into(), revision: 3 }.into_response();
    assert!(resp.created && resp.canceled && resp.watch_id == -1 && resp.cancel_reason == "r");
}

#[test]
fn server_ids_skip_ids_in_use_and_an_empty_key_is_the_zero_key() {
    let mut w = World::new(Options::default());
    let s = w.hub.stream();
    s.create(&WatchCreateRequest { watch_id: 1, ..watch("a", "", 0) });
    s.create(&watch("", "", 0));
    s.create(&watch("a", "", 0));
    w.write(&[(b"\0", Some(b"zero"))]);
    let got = drain(&s);
    let ids: Vec<i64> = got
        .iter()
        .filter_map(|m| match m {
            Message::Created { watch_id, .. } => Some(*watch_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [1, 0, 2]);
    assert_eq!(keys_and_revs(&got), vec![(0, "\0".into(), 2)]);
}

#[test]
fn past_start_replays_history_and_future_start_waits() {
    let mut w = World::new(Options::default());
    for i in 0..5 {
        w.put("k", &i.to_string());
    }
    let s = w.hub.stream();
    s.create(&watch("k", "", 3));
    s.create(&watch("k", "", 8));
    for i in 5..8 {
        w.put("k", &i.to_string());
    }
    let got = keys_and_revs(&drain(&s));
    let revs = |id| got.iter().filter(|(w, ..)| *w == id).map(|(.., r)| *r).collect::<Vec<_>>();
    assert_eq!(revs(0), (3..=9).collect::<Vec<_>>());
    assert_eq!(revs(1), vec![8, 9]);
}

#[test]
fn a_compacted_start_is_created_then_canceled_with_the_compact_revision() {
    let mut w = World::new(Options::default());
    for i in 0..5 {
        w.put("k", &i.to_string());
    }
    w.compact(4);
    let s = w.hub.stream();
    s.create(&watch("k", "", 2));
    s.create(&watch("k", "", 4));
    let got = drain(&s);
    assert_eq!(got[0], Message::Created { watch_id: 0, revision: 6 });
    assert_eq!(got[1], Message::Created { watch_id: 1, revision: 6 });
    assert_eq!(got[2], Message::Compacted { watch_id: 0, compact_revision: 4 });
    let resp = got[2].clone().into_response();
    assert!(resp.canceled && resp.compact_revision == 4 && resp.cancel_reason.is_empty());
    assert_eq!(keys_and_revs(&got), vec![(1, "k".into(), 4), (1, "k".into(), 5), (1, "k".into(), 6)]);
}

#[test]
fn filters_and_prev_kv() {
    let mut w = World::new(Options::default());
    let s = w.hub.stream();
    s.create(&WatchCreateRequest { filters: vec![FilterType::Noput as i32], prev_kv: true, ..watch("k", "", 0) });
    s.create(&WatchCreateRequest { filters: vec![FilterType::Nodelete as i32], prev_kv: true, ..watch("k", "", 0) });
    w.put("k", "1");
    w.put("k", "2");
    w.write(&[(b"k", None)]);
    let got = drain(&s);
    let events: Vec<(i64, i32, Option<Vec<u8>>)> = got
        .iter()
        .filter_map(|m| match m {
            Message::Events { watch_id, events, .. } => {
                Some((*watch_id, events[0].r#type, events[0].prev_kv.clone().map(|p| p.value)))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        vec![
            (1, EventType::Put as i32, None),
            (1, EventType::Put as i32, Some(b"1".to_vec())),
            (0, EventType::Delete as i32, Some(b"2".to_vec())),
        ]
    );
}

#[test]
fn one_txn_is_one_message() {
    let mut w = World::new(Options::default());
    let s = w.hub.stream();
    s.create(&watch("a", "z", 0));
    w.write(&[(b"a", Some(b"1")), (b"b", Some(b"2")), (b"c", Some(b"3"))]);
    let got = drain(&s);
    assert!(matches!(&got[1], Message::Events { events, revision: 2, .. } if events.len() == 3));
    assert_eq!(got.len(), 2);
}

#[test]
fn cancel_stops_events_and_unknown_ids_are_ignored() {
    let mut w = World::new(Options::default());
    let s = w.hub.stream();
    s.create(&watch("k", "", 0));
    w.put("k", "1");
    s.cancel(0);
    s.cancel(42);
    w.put("k", "2");
    let got = drain(&s);
    // The event queued before the cancel is still sent, then nothing more.
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(keys_and_revs(&got), vec![(0, "k".into(), 2)]);
    assert_eq!(got[2], Message::Canceled { watch_id: 0, revision: 2, reason: String::new() });
    assert_eq!(w.hub.synced_watchers(), 0);
}

#[test]
fn progress_requests_wait_for_every_watcher_to_be_synced() {
    let mut w = World::new(Options::default());
    for i in 0..3 {
        w.put("k", &i.to_string());
    }
    let s = w.hub.stream();
    s.request_progress();
    assert_eq!(drain(&s), vec![Message::Progress { watch_id: -1, revision: 4 }]);
    s.create(&watch("k", "", 2));
    s.request_progress();
    let got = drain(&s);
    // The progress comes after the replayed events it vouches for.
    assert_eq!(got.last(), Some(&Message::Progress { watch_id: -1, revision: 4 }));
    assert_eq!(keys_and_revs(&got).len(), 3);
    let resp = Message::Progress { watch_id: -1, revision: 4 }.into_response();
    assert!(resp.events.is_empty() && !resp.created && !resp.canceled && resp.watch_id == -1);
}

#[test]
fn progress_ticks_reach_quiet_synced_watchers_that_asked() {
    let mut w = World::new(Options::default());
    let s = w.hub.stream();
    s.create(&WatchCreateRequest { progress_notify: true, ..watch("a", "", 0) });
    s.create(&WatchCreateRequest { progress_notify: true, ..watch("b", "", 0) });
    s.create(&watch("c", "", 0));
    w.put("a", "1");
    w.hub.progress_tick();
    let got = drain(&s);
    assert_eq!(got.last(), Some(&Message::Progress { watch_id: 1, revision: 2 }));
    assert_eq!(got.iter().filter(|m| matches!(m, Message::Progress { .. })).count(), 1);
    w.hub.progress_tick();
    assert_eq!(drain(&s).len(), 2);
}

/// A watcher canceled and created again under the same ID and start revision while its
/// catch-up read was under way: what was read belongs to the old watcher, and the new one gets
/// exactly its own events, from its start.
#[test]
fn a_watch_id_reused_during_a_history_read_gets_only_its_own_events() {
    // A ring of one revision: catching up from revision 2 must read the history.
    let mut w = World::new(Options { ring_revisions: 1, ..Options::default() });
    w.put("a", "1");
    w.put("b", "1");
    w.put("a", "2");
    w.put("b", "2");
    let s = Arc::new(w.hub.stream());
    s.create(&WatchCreateRequest { watch_id: 5, ..watch("a", "", 2) });
    let again = Arc::clone(&s);
    w.history.0.lock().during_read = Some(Box::new(move || {
        again.cancel(5);
        again.create(&WatchCreateRequest { watch_id: 5, ..watch("b", "", 2) });
    }));
    let got = drain(&s);
    let recreated = got.iter().rposition(|m| matches!(m, Message::Created { watch_id: 5, .. })).unwrap();
    assert!(got[..recreated].iter().any(|m| matches!(m, Message::Canceled { watch_id: 5, .. })), "{got:?}");
    assert_eq!(
        keys_and_revs(&got[recreated..]),
        vec![(5, "b".into(), 3), (5, "b".into(), 5)],
        "the new watcher's events, none of the old one's: {got:?}"
    );
}

#[test]
fn a_stalled_stream_holds_its_budget_and_loses_nothing() {
    let options = Options { stream_budget_bytes: 4096, ring_revisions: 16, ..Options::default() };
    let mut w = World::new(options);
    let idle: Vec<_> = (0..2000)
        .map(|i| {
            let s = w.hub.stream();
            s.create(&watch(&format!("idle{i}"), "", 0));
            s
        })
        .collect();
    let stalled = w.hub.stream();
    stalled.create(&watch("hot", "", 0));
    let value = "v".repeat(100);
    for _ in 0..500 {
        w.put("hot", &value);
        assert!(stalled.queued_bytes() <= 4096 + 200);
    }
    // The stalled watcher fell behind; the idle ones are all still synced.
    assert_eq!(w.hub.synced_watchers(), 2000);
    let got = keys_and_revs(&drain(&stalled));
    assert_eq!(got.iter().map(|(.., r)| *r).collect::<Vec<_>>(), (2..=501).collect::<Vec<_>>());
    assert_eq!(w.hub.synced_watchers(), 2001);
    drop(idle);
    assert_eq!(w.hub.synced_watchers(), 1);
}

#[test]
fn reset_moves_synced_watchers_to_catch_up_from_the_new_history() {
    let mut w = World::new(Options::default());
    let s = w.hub.stream();
    s.create(&watch("k", "", 0));
    w.put("k", "1");
    // Revisions 3 and 4 arrive with a snapshot, not through notify.
    for (rev, value) in [(3, "2"), (4, "3")] {
        let kv = KeyValue { key: b"k".to_vec(), value: value.into(), mod_revision: rev, ..Default::default() };
        w.history.0.lock().revisions.insert(rev, vec![Event { r#type: 0, kv: Some(kv), prev_kv: None }]);
    }
    w.revision = 4;
    w.hub.reset(4);
    w.put("k", "4");
    let revs: Vec<i64> = keys_and_revs(&drain(&s)).into_iter().map(|(.., r)| r).collect();
    assert_eq!(revs, [2, 3, 4, 5]);
}

#[test]
fn fragments_split_large_responses_and_keep_order() {
    let events: Vec<Event> = (0..10)
        .map(|i| Event {
            r#type: 0,
            kv: Some(KeyValue { key: vec![b'k', i], value: vec![0; 100], ..Default::default() }),
            prev_kv: None,
        })
        .collect();
    let resp = WatchResponse { watch_id: 3, events: events.clone(), ..Default::default() };
    assert_eq!(fragment(resp.clone(), 1 << 20), vec![resp.clone()]);
    let parts = fragment(resp, 350);
    assert!(parts.len() > 3);
    assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment && p.watch_id == 3));
    assert!(!parts.last().unwrap().fragment);
    assert!(parts.iter().all(|p| prost::Message::encoded_len(p) < 350 || p.events.len() == 1));
    assert_eq!(parts.into_iter().flat_map(|p| p.events).collect::<Vec<_>>(), events);
}

#[tokio::test]
async fn next_waits_for_events() {
    let mut w = World::new(Options::default());
    let s = Arc::new(w.hub.stream());
    s.create(&watch("k", "", 0));
    assert!(matches!(s.next().await, Message::Created { .. }));
    let waiter = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.next().await })
    };
    tokio::task::yield_now().await;
    w.put("k", "1");
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiter).await.unwrap().unwrap();
    assert!(matches!(got, Message::Events { revision: 2, .. }));
}

// ---- the model test ----

const KEYS: &[&[u8]] = &[b"a", b"ab", b"b", b"c", b"d"];

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<(usize, Option<u8>)>),
    Create { stream: usize, key: usize, end: usize, start: i64, no_put: bool, no_delete: bool, prev_kv: bool, id: i64 },
    Cancel { stream: usize, id: i64 },
    Compact(i64),
    Drain { stream: usize, n: usize },
    Progress { stream: usize },
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0..KEYS.len(), prop::option::weighted(0.8, any::<u8>())), 1..4).prop_map(Op::Write),
        3 => (0..2usize, 0..KEYS.len(), 0..5usize, -1i64..12, any::<bool>(), any::<bool>(), any::<bool>(), prop_oneof![3 => Just(0i64), 1 => 1i64..4])
            .prop_map(|(stream, key, end, start, no_put, no_delete, prev_kv, id)| Op::Create {
                stream, key, end, start, no_put: no_put && !no_delete, no_delete, prev_kv, id
            }),
        1 => (0..2usize, 0i64..4).prop_map(|(stream, id)| Op::Cancel { stream, id }),
        1 => (0i64..6).prop_map(Op::Compact),
        4 => (0..2usize, 0..6usize).prop_map(|(stream, n)| Op::Drain { stream, n }),
        1 => (0..2usize).prop_map(|stream| Op::Progress { stream }),
        1 => Just(Op::Tick),
    ]
}

/// The range a model create names: single key, `[key, next key)`, from key, all, or empty.
fn range_end(key: usize, end: usize) -> Vec<u8> {
    match end {
        0 => Vec::new(),
        1 => KEYS.get(key + 1).map_or(vec![0], |k| k.to_vec()),
        2 => vec![0],
        3 => b"z".to_vec(),
        _ => b"a".to_vec(),
    }
}

/// A watcher as seen from its stream's messages.
#[derive(Debug)]
struct Seen {
    req: WatchCreateRequest,
    from: i64,
    events: Vec<Event>,
    last_message_rev: i64,
    ended: Option<Message>,
}

fn expected(revisions: &BTreeMap<i64, Vec<Event>>, w: &Seen) -> Vec<Event> {
    let key = if w.req.key.is_empty() { vec![0] } else { w.req.key.clone() };
    let range = KeyRange::from_request(&key, &w.req.range_end);
    revisions
        .range(w.from..)
        .flat_map(|(_, evs)| evs)
        .filter(|e| {
            let put = e.r#type == EventType::Put as i32;
            range.contains(&e.kv.as_ref().unwrap().key)
                && !(put && w.req.filters.contains(&(FilterType::Noput as i32)))
                && (put || !w.req.filters.contains(&(FilterType::Nodelete as i32)))
        })
        .cloned()
        .collect()
}

fn rev_of(e: &Event) -> i64 {
    e.kv.as_ref().unwrap().mod_revision
}

/// Checks one stream's messages as they arrive.
#[derive(Default)]
struct StreamCheck {
    creates: std::collections::VecDeque<WatchCreateRequest>,
    watchers: Vec<Seen>,
    active: HashMap<i64, usize>,
}

impl StreamCheck {
    fn receive(&mut self, m: Message, history: &MemHistory) -> Result<(), TestCaseError> {
        let revisions = history.0.lock().revisions.clone();
        match &m {
            Message::Created { watch_id, revision } => {
                let req = self.creates.pop_front().expect("a create for every created");
                let from = if req.start_revision == 0 { revision + 1 } else { req.start_revision };
                prop_assert!(!self.active.contains_key(watch_id));
                self.active.insert(*watch_id, self.watchers.len());
                self.watchers.push(Seen { req, from, events: Vec::new(), last_message_rev: 0, ended: None });
            }
            Message::Refused { .. } => {
                self.creates.pop_front().expect("a create for every refusal");
            }
            Message::Events { watch_id, events, .. } => {
                let w = &mut self.watchers[self.active[watch_id]];
                prop_assert!(!events.is_empty());
                // Atomic: a message never starts inside a revision an earlier one began.
                prop_assert!(rev_of(&events[0]) > w.last_message_rev);
                w.last_message_rev = rev_of(events.last().unwrap());
                for e in events {
                    if w.req.prev_kv {
                        let truth = truth_at(&revisions, &e.kv.as_ref().unwrap().key, rev_of(e) - 1);
                        let create = e.r#type == EventType::Put as i32 && e.kv.as_ref().unwrap().version == 1;
                        if create {
                            prop_assert_eq!(&e.prev_kv, &None);
                        } else if e.prev_kv.is_some() {
                            prop_assert_eq!(&e.prev_kv, &truth);
                        } else {
                            prop_assert!(truth.is_none() || rev_of(e) - 1 < history.compact_revision());
                        }
                    }
                    let mut bare = e.clone();
                    bare.prev_kv = None;
                    w.events.push(bare);
                }
            }
            Message::Compacted { watch_id, .. } | Message::Canceled { watch_id, .. } => {
                let index = self.active.remove(watch_id).expect("ends an active watcher");
                self.watchers[index].ended = Some(m.clone());
            }
            Message::Progress { watch_id, revision } => {
                // Bookmark: everything up to `revision` was already sent to the watchers it covers.
                for (id, index) in &self.active {
                    if *watch_id == -1 || watch_id == id {
                        let w = &self.watchers[*index];
                        let want: Vec<Event> =
                            expected(&revisions, w).into_iter().filter(|e| rev_of(e) <= *revision).collect();
                        prop_assert_eq!(
                            &w.events[..want.len().min(w.events.len())],
                            &want[..],
                            "progress at {}",
                            revision
                        );
                        prop_assert!(w.events.len() >= want.len(), "progress at {} before events", revision);
                    }
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_watcher_gets_exactly_the_history_it_asked_for(ops in prop::collection::vec(op(), 1..80)) {
        let options = Options { stream_budget_bytes: 300, ring_revisions: 3, ring_bytes: 400, catch_up_events: 2 };
        let mut world = World::new(options);
        let streams = [world.hub.stream(), world.hub.stream()];
        let mut checks = [StreamCheck::default(), StreamCheck::default()];
        for op in ops {
            match op {
                Op::Write(changes) => {
                    let values: Vec<Option<Vec<u8>>> = changes.iter().map(|(_, v)| v.map(|v| vec![v])).collect();
                    let mut seen = std::collections::HashSet::new();
                    let changes: Vec<(&[u8], Option<&[u8]>)> = changes
                        .iter()
                        .zip(&values)
                        .filter(|((k, _), _)| seen.insert(*k))
                        .map(|((k, _), v)| (KEYS[*k], v.as_deref()))
                        .collect();
                    world.write(&changes);
                }
                Op::Create { stream, key, end, start, no_put, no_delete, prev_kv, id } => {
                    let mut filters = Vec::new();
                    if no_put { filters.push(FilterType::Noput as i32) }
                    if no_delete { filters.push(FilterType::Nodelete as i32) }
                    let req = WatchCreateRequest {
                        key: KEYS[key].to_vec(),
                        range_end: range_end(key, end),
                        start_revision: start,
                        filters,
                        prev_kv,
                        watch_id: id,
                        ..Default::default()
                    };
                    checks[stream].creates.push_back(req.clone());
                    streams[stream].create(&req);
                }
                Op::Cancel { stream, id } => streams[stream].cancel(id),
                Op::Compact(back) => {
                    let at = world.revision - back;
                    if at > world.history.compact_revision() {
                        world.compact(at);
                    }
                }
                Op::Drain { stream, n } => {
                    for _ in 0..n {
                        let Some(m) = streams[stream].try_next() else { break };
                        checks[stream].receive(m, &world.history)?;
                    }
                }
                Op::Progress { stream } => streams[stream].request_progress(),
                Op::Tick => world.hub.progress_tick(),
            }
        }
        let revisions = world.history.0.lock().revisions.clone();
        let mut active = 0;
        for (stream, check) in streams.iter().zip(&mut checks) {
            while let Some(m) = stream.try_next() {
                check.receive(m, &world.history)?;
            }
            prop_assert!(check.creates.is_empty());
            for w in &check.watchers {
                let want = expected(&revisions, w);
                match &w.ended {
                    None => {
                        active += 1;
                        prop_assert_eq!(&w.events, &want);
                    }
                    Some(end) => {
                        // A prefix of whole revisions; a compaction cancel only below its revision.
                        prop_assert_eq!(&w.events[..], &want[..w.events.len()]);
                        if let (Some(last), Some(next)) = (w.events.last(), want.get(w.events.len())) {
                            prop_assert!(rev_of(next) > rev_of(last));
                        }
                        if let Message::Compacted { compact_revision, .. } = end {
                            prop_assert!(w.events.last().is_none_or(|e| rev_of(e) < *compact_revision));
                            prop_assert!(w.from < *compact_revision);
                        }
                    }
                }
            }
        }
        prop_assert_eq!(world.hub.synced_watchers(), active);
    }
}
