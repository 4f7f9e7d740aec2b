//! Watches on every member of a 3-member ferrocd cluster while writes go through all members,
//! the leader is moved and then killed with SIGKILL and restarted. Every watcher's responses are
//! checked against the applied history, as etcd documents its watch guarantees: ordered, unique,
//! no gaps (also across a resume after its member restarts), a revision never split across
//! responses, previous values as the history has them, and progress responses that vouch only
//! for events already delivered. Every member's history is the same.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::request_op::Request as OpRequest;
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse,
};
use ferrocd_proto::mvccpb::event::EventType;
use ferrocd_proto::mvccpb::{Event, KeyValue};
use ferrocd_test_utils::{Cluster, Kind, etcdctl_ok, wait_for};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use crate::cluster::{TIMING, WAIT, agreed_leader, ids, one_at_a_time};

/// Write operations in all: some before the watchers open, the rest under watch.
const OPS: usize = 400;
/// Operations written before the watchers open (watchers from the past catch up on them).
const BEFORE_WATCH: usize = 40;
const WRITERS: usize = 3;
/// Keys `w/k00` … `w/k15`: few, so keys are updated, deleted and re-created often.
const KEYS: usize = 16;
/// Once this many operations are done the leader is moved to a follower…
const MOVE_AT: usize = 120;
/// … and once this many are done the (new) leader is killed;
const KILL_AT: usize = 220;
/// it is restarted once this many are done (on the two survivors),
const RESTART_AT: usize = 270;
/// and operations from this one on wait for it, so some load runs on the restarted member.
const AFTER_RESTART: usize = 320;
/// How long one operation is retried, and how long a watcher tries to reconnect.
const RETRY_FOR: Duration = Duration::from_secs(30);
const PROGRESS_INTERVAL: &str = "--experimental-watch-progress-notify-interval=200ms";

fn key(i: usize) -> Vec<u8> {
    format!("w/k{:02}", i % KEYS).into_bytes()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn revision_of(resp: &WatchResponse) -> i64 {
    resp.header.as_ref().map_or(0, |h| h.revision)
}

fn event_revision(e: &Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// etcd's `IsProgressNotify`: no events, not a create, cancel or compaction response.
fn is_progress(resp: &WatchResponse) -> bool {
    resp.events.is_empty() && !resp.created && !resp.canceled && resp.compact_revision == 0
}

fn brief(e: &Event) -> String {
    let kv = e.kv.clone().unwrap_or_default();
    let prev = e.prev_kv.as_ref().map(|p| format!(" prev={}@{}", String::from_utf8_lossy(&p.value), p.mod_revision));
    format!(
        "{} {}={} @{} c{} v{}{}",
        if e.r#type == EventType::Delete as i32 { "DELETE" } else { "PUT" },
        String::from_utf8_lossy(&kv.key),
        String::from_utf8_lossy(&kv.value),
        kv.mod_revision,
        kv.create_revision,
        kv.version,
        prev.unwrap_or_default()
    )
}

// ---------------------------------------------------------------------------------------------
// The checker.

/// What a watcher watches and how it asks for progress.
#[derive(Debug, Clone)]
struct Watcher {
    name: String,
    member: usize,
    key: Vec<u8>,
    /// etcd's `range_end`: empty for one key.
    range_end: Vec<u8>,
    /// The first revision wanted; 0 for "from now" (the created response's revision + 1).
    start: i64,
    prev_kv: bool,
    progress_notify: bool,
    /// Sends a progress request after every few event responses and whenever it is idle.
    progress_requests: bool,
}

impl Watcher {
    /// A watcher of every key from revision 2, with previous values.
    fn everything(name: &str) -> Self {
        Self {
            name: name.into(),
            member: 0,
            key: vec![0],
            range_end: vec![0],
            start: 2,
            prev_kv: true,
            progress_notify: false,
            progress_requests: false,
        }
    }
}

impl Watcher {
    fn covers(&self, key: &[u8]) -> bool {
        if self.range_end.is_empty() {
            key == self.key
        } else if self.range_end == [0] {
            key >= &self.key[..]
        } else {
            key >= &self.key[..] && key < &self.range_end[..]
        }
    }
}

/// One Watch stream of a watcher, from its create request to its end.
#[derive(Debug, Default)]
struct Session {
    /// The `start_revision` it was created with.
    start: i64,
    responses: Vec<WatchResponse>,
    /// Why it ended, if it did before the test stopped it.
    ended: Option<String>,
}

/// Everything a watcher received.
#[derive(Debug, Default)]
struct Record {
    sessions: Vec<Session>,
    /// The newest revision it has every event up to, by its events and progress responses:
    /// a resume starts after it.
    covered: i64,
    /// A response it must never get (a cancel), or why it gave up.
    failed: Option<String>,
}

impl Record {
    fn absorb(&mut self, resp: WatchResponse) {
        let session = self.sessions.last_mut().expect("a session is open");
        if resp.created && session.start == 0 {
            self.covered = self.covered.max(revision_of(&resp));
        }
        if let Some(last) = resp.events.last() {
            self.covered = self.covered.max(event_revision(last));
        }
        if is_progress(&resp) {
            self.covered = self.covered.max(revision_of(&resp));
        }
        if resp.canceled {
            self.failed = Some(format!("canceled: {resp:?}"));
        }
        session.responses.push(resp);
    }
}

/// Replays `history` (every event from revision 2 on, with previous values) from an empty
/// keyspace, checking that it is a well-formed etcd history ending at `last`: contiguous
/// revisions, no key twice in one revision, versions and create revisions as the replay gives
/// them, deletes only of existing keys, and each event's `prev_kv` the replayed previous value.
/// Answers the events with the replay's previous values.
fn replay(history: &[Event], last: i64) -> Result<Vec<Event>, String> {
    let mut state: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
    let mut revision = 1;
    let mut keys_of_revision: Vec<Vec<u8>> = Vec::new();
    let mut out = Vec::with_capacity(history.len());
    for (i, e) in history.iter().enumerate() {
        let at = || format!("history event {i} ({})", brief(e));
        let kv = e.kv.as_ref().ok_or_else(|| format!("{}: no key-value", at()))?;
        let r = kv.mod_revision;
        if r == revision + 1 {
            revision = r;
            keys_of_revision.clear();
        } else if r != revision || i == 0 {
            return Err(format!("{}: revision {r} follows {revision} (revisions are contiguous from 2)", at()));
        }
        if keys_of_revision.contains(&kv.key) {
            return Err(format!("{}: the key changes twice in revision {r}", at()));
        }
        keys_of_revision.push(kv.key.clone());
        let prev = state.get(&kv.key).cloned();
        if e.r#type == EventType::Put as i32 {
            let (create, version) = prev.as_ref().map_or((r, 1), |p| (p.create_revision, p.version + 1));
            if (kv.create_revision, kv.version) != (create, version) {
                return Err(format!("{}: the replay gives create revision {create}, version {version}", at()));
            }
            state.insert(kv.key.clone(), kv.clone());
        } else if state.remove(&kv.key).is_none() {
            return Err(format!("{}: deletes a key that does not exist", at()));
        }
        if e.prev_kv != prev {
            return Err(format!("{}: prev_kv {:?}, the replay gives {prev:?}", at(), e.prev_kv));
        }
        out.push(Event { prev_kv: prev, ..e.clone() });
    }
    if revision != last {
        return Err(format!("the history ends at revision {revision}, the cluster is at {last}"));
    }
    Ok(out)
}

/// What one watcher's check counted.
#[derive(Debug, Default, PartialEq)]
struct Checked {
    events: usize,
    responses: usize,
    progress: usize,
    resumes: usize,
}

/// Checks one watcher's sessions against `truth` (the replayed history, ending at `last`).
fn check_watcher(w: &Watcher, sessions: &[Session], truth: &[Event], last: i64) -> Result<Checked, String> {
    let first = sessions.first().and_then(|s| s.responses.first()).ok_or("no response at all")?;
    let start = if w.start == 0 { revision_of(first) + 1 } else { w.start };
    let expected: Vec<Event> = truth
        .iter()
        .filter(|e| (start..=last).contains(&event_revision(e)))
        .filter(|e| e.kv.as_ref().is_some_and(|kv| w.covers(&kv.key)))
        .map(|e| if w.prev_kv { e.clone() } else { Event { prev_kv: None, ..e.clone() } })
        .collect();
    // How many expected events are at or below revision `r`.
    let upto = |r: i64| expected.partition_point(|e| event_revision(e) <= r);
    let mut got: Vec<Event> = Vec::new();
    let mut checked = Checked::default();
    // The newest revision of the events received so far.
    let mut newest = 0;
    for (s, session) in sessions.iter().enumerate() {
        if s > 0 {
            checked.resumes += 1;
            if got.len() != upto(session.start - 1) {
                return Err(format!(
                    "session {s} resumed at revision {} with {} events received, but {} were due below it",
                    session.start,
                    got.len(),
                    upto(session.start - 1)
                ));
            }
        }
        let watch_id = session.responses.first().map_or(-1, |r| r.watch_id);
        for (i, resp) in session.responses.iter().enumerate() {
            let at = format!("session {s} response {i} (header revision {})", revision_of(resp));
            checked.responses += 1;
            if i == 0 {
                if !resp.created || resp.canceled || resp.watch_id < 0 {
                    return Err(format!("{at}: the first response does not confirm the create: {resp:?}"));
                }
                continue;
            }
            if resp.created || resp.canceled || resp.compact_revision != 0 || resp.fragment {
                return Err(format!("{at}: unexpected {resp:?}"));
            }
            // Progress answering a request is for the whole stream (watch id -1).
            if resp.watch_id != watch_id && !(resp.events.is_empty() && resp.watch_id == -1) {
                return Err(format!("{at}: watch id {}, created as {watch_id}", resp.watch_id));
            }
            if resp.events.is_empty() {
                let r = revision_of(resp);
                if got.len() < upto(r) {
                    return Err(format!(
                        "{at}: progress at revision {r}, but only {} of the {} events up to it had arrived",
                        got.len(),
                        upto(r)
                    ));
                }
                checked.progress += 1;
                continue;
            }
            let (from, to) = (event_revision(&resp.events[0]), event_revision(&resp.events[resp.events.len() - 1]));
            if from <= newest {
                return Err(format!(
                    "{at}: its events start at revision {from}, not after the previous response's {newest} \
                     (out of order, repeated, or one revision split across responses)"
                ));
            }
            if revision_of(resp) < to {
                return Err(format!("{at}: the header is below its events' revision {to}"));
            }
            newest = to;
            got.extend(resp.events.iter().cloned());
        }
    }
    if let Some(i) = (0..got.len().max(expected.len())).find(|&i| got.get(i) != expected.get(i)) {
        return Err(format!(
            "event {i} (of {} received, {} expected from revision {start} to {last}): received {}, expected {}",
            got.len(),
            expected.len(),
            got.get(i).map_or("nothing".into(), brief),
            expected.get(i).map_or("nothing".into(), brief),
        ));
    }
    checked.events = got.len();
    Ok(checked)
}

// ---------------------------------------------------------------------------------------------
// Watchers, each on its own thread, runtime, connection and stream.

fn create_request(w: &Watcher, start: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: w.key.clone(),
            range_end: w.range_end.clone(),
            start_revision: start,
            prev_kv: w.prev_kv,
            progress_notify: w.progress_notify,
            ..Default::default()
        })),
    }
}

fn progress_request() -> WatchRequest {
    WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) }
}

type Opened = (mpsc::UnboundedSender<WatchRequest>, Streaming<WatchResponse>);

/// Opens a Watch stream on `endpoint` whose first request is `first`.
async fn open(endpoint: &str, first: WatchRequest) -> Result<Opened, String> {
    let channel = Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let (requests, rx) = mpsc::unbounded_channel();
    requests.send(first).map_err(|e| e.to_string())?;
    let mut client = WatchClient::new(channel).max_decoding_message_size(usize::MAX);
    let call = client.watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    let responses = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| "the watch call timed out".to_string())?
        .map_err(|s| s.to_string())?
        .into_inner();
    Ok((requests, responses))
}

/// Runs a watcher until `stop`: records every response; when its stream breaks (its member
/// died) it reconnects to the same member and resumes after the newest revision it has
/// everything up to, as etcd's clients do.
fn spawn_watcher(w: Watcher, endpoint: String, record: Arc<Mutex<Record>>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        runtime().block_on(async {
            let mut pause = Duration::from_millis(10);
            let mut gave_up = Instant::now() + RETRY_FOR;
            while !stop.load(Ordering::Acquire) {
                let start = {
                    let r = lock(&record);
                    if r.sessions.is_empty() { w.start } else { r.covered + 1 }
                };
                let (requests, mut responses) = match open(&endpoint, create_request(&w, start)).await {
                    Ok(opened) => opened,
                    Err(e) => {
                        if Instant::now() > gave_up {
                            lock(&record).failed = Some(format!("could not reopen its stream: {e}"));
                            return;
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(200));
                        continue;
                    }
                };
                pause = Duration::from_millis(10);
                {
                    let mut r = lock(&record);
                    r.sessions.push(Session { start, ..Session::default() });
                    if start > 0 {
                        r.covered = r.covered.max(start - 1);
                    }
                }
                let mut event_responses = 0_u64;
                let ended = loop {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    match tokio::time::timeout(Duration::from_millis(100), responses.message()).await {
                        Err(_idle) => {
                            if w.progress_requests {
                                let _ = requests.send(progress_request());
                            }
                        }
                        Ok(Ok(Some(resp))) => {
                            let has_events = !resp.events.is_empty();
                            let mut r = lock(&record);
                            r.absorb(resp);
                            if r.failed.is_some() {
                                return;
                            }
                            drop(r);
                            event_responses += u64::from(has_events);
                            if w.progress_requests && has_events && event_responses.is_multiple_of(8) {
                                let _ = requests.send(progress_request());
                            }
                        }
                        Ok(Ok(None)) => break "the stream ended".to_string(),
                        Ok(Err(status)) => break status.to_string(),
                    }
                };
                lock(&record).sessions.last_mut().expect("open").ended = Some(ended);
                gave_up = Instant::now() + RETRY_FOR;
            }
        });
    })
}

/// Every event from revision 2 to `last` as `endpoint` serves them: one fresh watch of every
/// key, with previous values.
fn history(endpoint: &str, last: i64) -> Vec<Event> {
    runtime().block_on(async {
        let all = Watcher::everything("history");
        let (_requests, mut responses) = open(endpoint, create_request(&all, 2)).await.expect("a history watch");
        let mut events: Vec<Event> = Vec::new();
        while events.last().map_or(0, event_revision) < last {
            let resp = tokio::time::timeout(WAIT, responses.message())
                .await
                .unwrap_or_else(|_| {
                    panic!("{endpoint}: no history past revision {}", events.last().map_or(0, event_revision))
                })
                .expect("the history stream")
                .expect("the history stream ended");
            assert!(!resp.canceled, "{endpoint}: the history watch was canceled: {resp:?}");
            events.extend(resp.events);
        }
        events
    })
}

// ---------------------------------------------------------------------------------------------
// The write load.

enum Write {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
}

fn put_op(key: Vec<u8>, value: &str) -> RequestOp {
    RequestOp { request: Some(OpRequest::RequestPut(PutRequest { key, value: value.into(), ..Default::default() })) }
}

fn delete_op(key: Vec<u8>) -> RequestOp {
    RequestOp { request: Some(OpRequest::RequestDeleteRange(DeleteRangeRequest { key, ..Default::default() })) }
}

/// Operation `i` (its `attempt`th try): puts, single-key and range deletes, and transactions
/// changing several keys in one revision, drawn from `i`.
fn write(i: usize, attempt: usize) -> Write {
    let mut h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    let a = (h >> 8) as usize % KEYS;
    let value = format!("v{i}.{attempt}");
    match h % 20 {
        0..=9 => Write::Put(PutRequest { key: key(a), value: value.into(), ..Default::default() }),
        10..=12 => Write::Delete(DeleteRangeRequest { key: key(a), ..Default::default() }),
        13 => {
            let a = a % (KEYS - 3);
            Write::Delete(DeleteRangeRequest { key: key(a), range_end: key(a + 3), ..Default::default() })
        }
        _ => {
            // Four distinct keys; the compare picks the branch, both change something.
            let [b, c, d] = [a + 3, a + 7, a + 11];
            let compare = Compare {
                result: CompareResult::Greater as i32,
                target: CompareTarget::Version as i32,
                key: key(a),
                target_union: Some(TargetUnion::Version(0)),
                ..Default::default()
            };
            Write::Txn(TxnRequest {
                compare: vec![compare],
                success: vec![put_op(key(b), &value), put_op(key(c), &value), delete_op(key(d))],
                failure: vec![put_op(key(a), &value), delete_op(key(b))],
            })
        }
    }
}

/// Errors a client retries (elsewhere): the member is down, has no leader, lost it, timed out.
fn transient(status: &Status) -> bool {
    !matches!(
        status.code(),
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::OutOfRange
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unimplemented
            | Code::ResourceExhausted
    )
}

/// Shared state of the writers.
#[derive(Debug, Default)]
struct Load {
    next: AtomicUsize,
    done: AtomicUsize,
    retries: AtomicUsize,
    /// Operations from [`AFTER_RESTART`] on wait for this.
    restarted: AtomicBool,
}

/// Writers taking operations of `ops` in turn, each through the members in turn (the next one
/// on every retry).
fn spawn_writers(endpoints: &[String], ops: Range<usize>, load: &Arc<Load>) -> Vec<JoinHandle<Result<(), String>>> {
    load.next.store(ops.start, Ordering::Release);
    (0..WRITERS)
        .map(|_| {
            let (endpoints, load, end) = (endpoints.to_vec(), Arc::clone(load), ops.end);
            std::thread::spawn(move || {
                let rt = runtime();
                let mut clients: Vec<KvClient<Channel>> = rt.block_on(async {
                    endpoints
                        .iter()
                        .map(|e| {
                            let endpoint = Endpoint::from_shared(format!("http://{e}")).expect("a URI");
                            KvClient::new(endpoint.connect_timeout(Duration::from_secs(1)).connect_lazy())
                        })
                        .collect()
                });
                loop {
                    let i = load.next.fetch_add(1, Ordering::AcqRel);
                    if i >= end {
                        return Ok(());
                    }
                    if i >= AFTER_RESTART {
                        wait_for("the killed member to restart", WAIT, || load.restarted.load(Ordering::Acquire));
                    }
                    let gave_up = Instant::now() + RETRY_FOR;
                    for attempt in 0.. {
                        let kv = &mut clients[(i + attempt) % endpoints.len()];
                        let sent = rt.block_on(async {
                            let call = async {
                                match write(i, attempt) {
                                    Write::Put(r) => kv.put(r).await.map(drop),
                                    Write::Delete(r) => kv.delete_range(r).await.map(drop),
                                    Write::Txn(r) => kv.txn(r).await.map(drop),
                                }
                            };
                            tokio::time::timeout(Duration::from_secs(5), call)
                                .await
                                .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer within 5 s")))
                        });
                        match sent {
                            Ok(()) => break,
                            Err(status) if transient(&status) && Instant::now() < gave_up => {
                                load.retries.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(10 * (attempt as u64 + 1).min(20)));
                            }
                            Err(status) => return Err(format!("operation {i}, attempt {attempt}: {status}")),
                        }
                    }
                    load.done.fetch_add(1, Ordering::AcqRel);
                }
            })
        })
        .collect()
}

fn join_writers(writers: Vec<JoinHandle<Result<(), String>>>) {
    for writer in writers {
        writer.join().expect("a writer panicked").expect("a write failed");
    }
}

/// The cluster's revision, by a linearizable read through `endpoint`.
fn current_revision(endpoint: &str) -> i64 {
    runtime().block_on(async {
        let mut kv = KvClient::connect(format!("http://{endpoint}")).await.expect("connect");
        kv.range(RangeRequest { key: b"w/".to_vec(), ..Default::default() })
            .await
            .expect("a linearizable read")
            .into_inner()
            .header
            .expect("a header")
            .revision
    })
}

// ---------------------------------------------------------------------------------------------

#[test]
fn watchers_on_every_member_get_the_applied_history_through_leader_changes() {
    let _serial = one_at_a_time();
    let began = Instant::now();
    let flags: Vec<&str> = TIMING.iter().copied().chain([PROGRESS_INTERVAL]).collect();
    let mut cluster = Cluster::start(Kind::Ferrocd, 3, &flags);
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    let all = cluster.endpoints();
    let ids = ids(&cluster);
    let load = Arc::new(Load::default());

    // Some history first, for the watchers that start in the past.
    join_writers(spawn_writers(&endpoints, 0..BEFORE_WATCH, &load));
    let before = current_revision(&endpoints[0]);

    // Four watchers on every member, each on its own stream.
    let mut watchers = Vec::new();
    for member in 0..endpoints.len() {
        let w = |name: &str, key: &str, range_end: &str, start: i64| Watcher {
            name: format!("m{}-{name}", member + 1),
            member,
            key: key.into(),
            range_end: range_end.into(),
            start,
            prev_kv: true,
            progress_notify: false,
            progress_requests: false,
        };
        watchers.push(Watcher { progress_notify: true, ..w("prefix-from-now", "w/", "w0", 0) });
        watchers.push(Watcher { progress_requests: true, ..w("prefix-from-2", "w/", "w0", 2) });
        watchers.push(Watcher {
            prev_kv: false,
            progress_requests: true,
            ..w("range-from-past", "w/k04", "w/k09", before - 10)
        });
        watchers.push(Watcher { progress_notify: true, ..w("one-key-from-now", "w/k03", "", 0) });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let records: Vec<Arc<Mutex<Record>>> = watchers.iter().map(|_| Arc::default()).collect();
    let threads: Vec<JoinHandle<()>> = watchers
        .iter()
        .zip(&records)
        .map(|(w, r)| spawn_watcher(w.clone(), endpoints[w.member].clone(), Arc::clone(r), Arc::clone(&stop)))
        .collect();
    wait_for("every watcher to be created", WAIT, || {
        records.iter().all(|r| lock(r).sessions.first().is_some_and(|s| !s.responses.is_empty()))
    });

    // The load, with the leader moved, then killed and restarted, in the middle of it.
    let writers = spawn_writers(&endpoints, BEFORE_WATCH..OPS, &load);
    let done = |n: usize| load.done.load(Ordering::Acquire) >= n;
    wait_for("the writes before the leader moves", WAIT, || done(MOVE_AT));
    let mut leader = None;
    wait_for("an agreed leader", WAIT, || {
        leader = agreed_leader(&all);
        leader.is_some()
    });
    let target = *ids.keys().find(|&&id| Some(id) != leader).expect("a follower");
    etcdctl_ok(&all, &["move-leader", &format!("{target:x}")]);
    wait_for("the leader to move", WAIT, || agreed_leader(&all) == Some(target));
    wait_for("the writes before the leader dies", WAIT, || done(KILL_AT));
    let mut leader = None;
    wait_for("an agreed leader", WAIT, || {
        leader = agreed_leader(&all);
        leader.is_some()
    });
    let victim = ids[&leader.expect("a leader")];
    cluster.members[victim].kill();
    let killed_at = load.done.load(Ordering::Acquire);
    wait_for("writes through the survivors", WAIT, || done(RESTART_AT));
    cluster.members[victim].restart();
    load.restarted.store(true, Ordering::Release);
    join_writers(writers);
    let last = current_revision(&endpoints[victim]);
    let load_done = began.elapsed();

    // Every watcher gets everything up to the last revision (by events or progress).
    let reached = || records.iter().all(|r| lock(r).covered >= last || lock(r).failed.is_some());
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("every watcher to reach the last revision", WAIT, reached);
    }));
    stop.store(true, Ordering::Release);
    for t in threads {
        t.join().expect("a watcher panicked");
    }
    let status: Vec<String> = watchers
        .iter()
        .zip(&records)
        .map(|(w, r)| {
            let r = lock(r);
            format!("{}: covered {}, {} session(s), failed: {:?}", w.name, r.covered, r.sessions.len(), r.failed)
        })
        .collect();
    assert!(waited.is_ok(), "watchers did not reach revision {last}:\n{}", status.join("\n"));

    // Every member's history is the same, and a well-formed one.
    let histories: Vec<Vec<Event>> = endpoints.iter().map(|e| history(e, last)).collect();
    for (m, h) in histories.iter().enumerate().skip(1) {
        if let Some(i) = (0..h.len().max(histories[0].len())).find(|&i| h.get(i) != histories[0].get(i)) {
            panic!(
                "member {} differs from member 1 at event {i}: {} vs {}",
                m + 1,
                h.get(i).map_or("nothing".into(), brief),
                histories[0].get(i).map_or("nothing".into(), brief)
            );
        }
    }
    let truth = replay(&histories[0], last).unwrap_or_else(|e| panic!("member 1's history: {e}"));

    let mut failures = Vec::new();
    let mut totals = Checked::default();
    for (w, r) in watchers.iter().zip(&records) {
        let r = lock(r);
        if let Some(why) = &r.failed {
            failures.push(format!("{}: {why}", w.name));
            continue;
        }
        match check_watcher(w, &r.sessions, &truth, last) {
            Ok(c) => {
                totals.events += c.events;
                totals.responses += c.responses;
                totals.progress += c.progress;
                totals.resumes += c.resumes;
            }
            Err(e) => {
                let ends: Vec<&str> = r.sessions.iter().filter_map(|s| s.ended.as_deref()).collect();
                failures.push(format!("{}: {e} (sessions ended: {ends:?})", w.name));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} watchers failed:\n{}", failures.len(), watchers.len(), failures.join("\n"));
    // The killed member's watchers did resume, and progress responses were checked.
    assert!(totals.resumes >= 4, "{totals:?}");
    assert!(totals.progress > 0, "{totals:?}");
    eprintln!(
        "{} revisions, {} writes ({} retried, leader killed after {killed_at}); {} watchers checked: \
         {totals:?}; load {load_done:?}, in all {:?}",
        last,
        OPS,
        load.retries.load(Ordering::Relaxed),
        watchers.len(),
        began.elapsed()
    );
}

/// The checker itself: it accepts a faithful transcript and rejects a gap, a repeat, a
/// revision split across responses, a wrong previous value and a progress response that
/// vouches for an event not yet delivered.
#[test]
fn the_watch_checker_catches_broken_guarantees() {
    let kv = |key: &str, value: &str, create: i64, rev: i64, version: i64| KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: rev,
        version,
        lease: 0,
    };
    let put =
        |kv: KeyValue, prev: Option<KeyValue>| Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: prev };
    let del = |key: &str, rev: i64, prev: KeyValue| Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue { key: key.into(), mod_revision: rev, ..Default::default() }),
        prev_kv: Some(prev),
    };
    let (a2, b3, a4, b4) = (kv("a", "1", 2, 2, 1), kv("b", "2", 3, 3, 1), kv("a", "3", 2, 4, 2), kv("b", "4", 3, 4, 2));
    let history = vec![
        put(a2.clone(), None),
        put(b3.clone(), None),
        put(a4.clone(), Some(a2.clone())),
        put(b4.clone(), Some(b3.clone())),
        del("a", 5, a4.clone()),
    ];
    let truth = replay(&history, 5).unwrap();
    assert!(replay(&history[..4], 5).unwrap_err().contains("ends at revision 4"));
    assert!(replay(&history[1..], 5).unwrap_err().contains("contiguous"));

    let w = Watcher::everything("t");
    let resp = |rev: i64, events: Vec<Event>| WatchResponse {
        header: Some(ferrocd_proto::etcdserverpb::ResponseHeader { revision: rev, ..Default::default() }),
        events,
        ..Default::default()
    };
    let created = WatchResponse { created: true, ..resp(1, vec![]) };
    let session = |start: i64, responses: Vec<WatchResponse>| Session { start, responses, ended: None };
    let check = |sessions: &[Session]| check_watcher(&w, sessions, &truth, 5);

    // Faithful: revisions 2–3 in one catch-up response, a progress, a resume at 4.
    let good = [
        session(2, vec![created.clone(), resp(3, history[..2].to_vec()), resp(3, vec![])]),
        session(4, vec![created.clone(), resp(5, history[2..4].to_vec()), resp(5, history[4..].to_vec())]),
    ];
    assert_eq!(check(&good), Ok(Checked { events: 5, responses: 6, progress: 1, resumes: 1 }));

    let gap = [session(2, vec![created.clone(), resp(5, history[..2].to_vec()), resp(5, history[3..].to_vec())])];
    assert!(check(&gap).unwrap_err().contains("received PUT b=4"), "{:?}", check(&gap));
    let repeat = [
        session(2, vec![created.clone(), resp(3, history[..2].to_vec())]),
        session(3, vec![created.clone(), resp(5, history[1..].to_vec())]),
    ];
    assert!(check(&repeat).unwrap_err().contains("resumed at revision 3"), "{:?}", check(&repeat));
    let split = [session(2, vec![created.clone(), resp(4, history[..3].to_vec()), resp(5, history[3..].to_vec())])];
    assert!(check(&split).unwrap_err().contains("split"), "{:?}", check(&split));
    let mut wrong_prev = history.clone();
    wrong_prev[2].prev_kv = Some(b3.clone());
    let wrong =
        [session(2, vec![created.clone(), resp(5, wrong_prev[..2].to_vec()), resp(5, wrong_prev[2..].to_vec())])];
    assert!(check(&wrong).unwrap_err().contains("prev=2@3"), "{:?}", check(&wrong));
    let early_progress = [session(2, vec![created.clone(), resp(3, history[..1].to_vec()), resp(3, vec![])])];
    assert!(check(&early_progress).unwrap_err().contains("progress at revision 3"), "{:?}", check(&early_progress));
}
