//! The traffic of one history: KV clients (puts of unique values, linearizable and
//! serializable gets, deletes, compare-and-set transactions) on a few keys, watchers that
//! resume where they stopped, and lock contenders that hold etcd's lock with a kept-alive
//! lease. Everything is recorded with real-time intervals on one clock for the checkers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use ferrocd_lincheck::{History, Op, Outcome, Output};
use ferrocd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::request_op::Request as RequestOp;
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest,
    RangeRequest, TxnRequest, WatchCreateRequest, WatchRequest,
};
use ferrocd_proto::mvccpb::Event;
use ferrocd_proto::v3lockpb::lock_client::LockClient;
use ferrocd_proto::v3lockpb::{LockRequest, UnlockRequest};
use parking_lot::{Mutex, RwLock};
use tonic::transport::Channel;

use crate::auth::{Authed, Session};

/// How long a client waits for any one request (then its outcome is unknown).
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// A lock contender's lease TTL, in seconds.
const LOCK_TTL: i64 = 2;

/// What one KV operation did, as far as its client knows.
#[derive(Debug, Clone)]
pub enum Done {
    /// No answer, or an error (its status): it may or may not have taken effect.
    Unknown(String),
    /// A put or a successful compare-and-set, at this revision.
    Wrote { revision: i64 },
    /// A delete at this revision, of `deleted` keys.
    Deleted { revision: i64, deleted: i64 },
    /// A compare-and-set whose compare failed, at this revision.
    NotSwapped { revision: i64 },
    /// A read at this revision: the key's value and mod revision, or absent.
    Read { revision: i64, kv: Option<(Vec<u8>, i64)> },
}

/// One KV operation, with what it did.
#[derive(Debug, Clone)]
pub struct KvOp {
    pub client: u64,
    /// When it was sent, on the history's clock (`ferrocd_lincheck::History::now`).
    pub call: u64,
    pub key: Vec<u8>,
    pub kind: KvKind,
    pub done: Done,
}

#[derive(Debug, Clone)]
pub enum KvKind {
    Put { value: Vec<u8> },
    Get { serializable: bool },
    Delete,
    Cas { expect: Option<Vec<u8>>, new: Vec<u8> },
}

/// What one watcher received: every event, and which response carried it.
#[derive(Debug, Clone, Default)]
pub struct WatchLog {
    pub watcher: u64,
    /// The first revision it asked for.
    pub start: i64,
    /// `(response number, event)` in the order received.
    pub events: Vec<(u64, Event)>,
    /// Streams it had to open again (after an error or a member going away).
    pub reconnects: u64,
}

/// One time a contender held the lock, as it believed: from the Lock answer until the earlier
/// of its unlock request and the end of its lease's validity (the last keep-alive's send time
/// plus the TTL it answered, counting no renewal after a lapse).
#[derive(Debug, Clone)]
pub struct Hold {
    pub contender: u64,
    pub from: Instant,
    pub until: Instant,
    pub key: Vec<u8>,
}

/// Everything one history's traffic recorded.
#[derive(Debug)]
pub struct Recording {
    /// The linearizable operations, for the linearizability checker.
    pub lin: History,
    pub ops: Mutex<Vec<KvOp>>,
    pub watches: Mutex<Vec<WatchLog>>,
    pub holds: Mutex<Vec<Hold>>,
}

/// What the traffic of one history shares.
#[derive(Debug)]
pub struct Traffic {
    /// The members' hosts and channels clients pick from (the orchestrator updates them as
    /// members come and go).
    pub endpoints: RwLock<Vec<(usize, Channel)>>,
    pub keys: Vec<Vec<u8>>,
    /// The watched prefix (the keys' common prefix).
    pub prefix: Vec<u8>,
    pub lock_name: Vec<u8>,
    /// The first revision watchers ask for.
    pub start_revision: i64,
    pub stop: AtomicBool,
    /// Watchers stop once they have received this revision (set at the end).
    pub watch_until: AtomicI64,
    pub recording: Recording,
    /// The user the traffic runs as (anonymous while auth is off).
    pub session: Session,
}

impl Traffic {
    pub fn new(
        endpoints: Vec<(usize, Channel)>,
        history: u64,
        keys: usize,
        start_revision: i64,
        session: Session,
    ) -> Self {
        let prefix = format!("kv{history:05}/").into_bytes();
        Self {
            endpoints: RwLock::new(endpoints),
            keys: (0..keys).map(|k| [prefix.clone(), format!("k{k}").into_bytes()].concat()).collect(),
            prefix,
            lock_name: format!("lock{history:05}").into_bytes(),
            start_revision,
            stop: AtomicBool::new(false),
            watch_until: AtomicI64::new(i64::MAX),
            recording: Recording {
                lin: History::new(),
                ops: Mutex::new(Vec::new()),
                watches: Mutex::new(Vec::new()),
                holds: Mutex::new(Vec::new()),
            },
            session,
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The channel a client at position `turn` uses, without a token.
    pub fn raw_channel(&self, turn: usize) -> Option<Channel> {
        let endpoints = self.endpoints.read();
        (!endpoints.is_empty()).then(|| endpoints[turn % endpoints.len()].1.clone())
    }

    /// The channel a client at position `turn` uses, its requests carrying the traffic's
    /// token, and the same channel without it (to log in again).
    fn channel(&self, turn: usize) -> Option<(Authed, Channel)> {
        self.raw_channel(turn).map(|raw| (self.session.on(raw.clone()), raw))
    }
}

/// The end of `prefix`'s range.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Runs `call` with the client deadline, as a gRPC deadline too.
async fn timed<T>(call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, tonic::Status> {
    match tokio::time::timeout(OP_TIMEOUT, call).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("the client gave up")),
    }
}

/// An error, briefly: its code and message.
fn failure(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(OP_TIMEOUT);
    request
}

/// A KV client: random operations on the history's keys until told to stop. After a failure
/// it moves to the next member.
pub async fn kv_client(traffic: Arc<Traffic>, client: u64, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut turn = client as usize;
    let mut seq = 0u64;
    let mut seen: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    while !traffic.stopped() {
        let Some((channel, raw)) = traffic.channel(turn) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut kv = KvClient::new(channel);
        let key = traffic.keys[rng.usize(..traffic.keys.len())].clone();
        seq += 1;
        let value = format!("c{client}-{seq}").into_bytes();
        let roll = rng.u32(..100);
        let kind = match roll {
            0..30 => KvKind::Put { value },
            30..55 => KvKind::Get { serializable: false },
            55..70 => KvKind::Get { serializable: true },
            70..80 => KvKind::Delete,
            _ => KvKind::Cas { expect: seen.get(&key).cloned().flatten(), new: value },
        };
        let lin_op = match &kind {
            KvKind::Put { value } => Some(Op::put(key.clone(), value.clone())),
            KvKind::Get { serializable: false } => Some(Op::get(key.clone())),
            KvKind::Get { serializable: true } => None,
            KvKind::Delete => Some(Op::delete(key.clone())),
            KvKind::Cas { expect, new } => Some(Op::cas(key.clone(), expect.clone(), Some(new.clone()))),
        };
        let call = traffic.recording.lin.now();
        let id = lin_op.map(|op| traffic.recording.lin.invoke(client, op));
        let (done, output) = perform(&mut kv, &key, &kind).await;
        if let Some(id) = id {
            traffic.recording.lin.complete(id, output.map_or(Outcome::Unknown, Outcome::Ok));
        }
        match &done {
            Done::Read { kv: value, .. } => {
                seen.insert(key.clone(), value.as_ref().map(|(v, _)| v.clone()));
            }
            Done::Unknown(error) => {
                // A token no longer good: log in again and stay (as etcd's clients do).
                if !(crate::auth::stale(error) && traffic.session.login(raw).await.is_ok()) {
                    turn += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => {}
        }
        traffic.recording.ops.lock().push(KvOp { client, call, key, kind, done });
    }
}

/// Sends one operation: what it did, and its answer for the linearizability checker.
async fn perform(kv: &mut KvClient<Authed>, key: &[u8], kind: &KvKind) -> (Done, Option<Output>) {
    let revision = |h: Option<ferrocd_proto::etcdserverpb::ResponseHeader>| h.map_or(0, |h| h.revision);
    match kind {
        KvKind::Put { value } => {
            let req = PutRequest { key: key.to_vec(), value: value.clone(), ..Default::default() };
            match timed(kv.put(request(req))).await {
                Ok(r) => (Done::Wrote { revision: revision(r.header) }, Some(Output::Ack)),
                Err(e) => (Done::Unknown(failure(&e)), None),
            }
        }
        KvKind::Get { serializable } => {
            let req = RangeRequest { key: key.to_vec(), serializable: *serializable, ..Default::default() };
            match timed(kv.range(request(req))).await {
                Ok(r) => {
                    let found = r.kvs.first().map(|kv| (kv.value.clone(), kv.mod_revision));
                    let output = Output::Read(found.as_ref().map(|(v, _)| v.clone()));
                    (Done::Read { revision: revision(r.header), kv: found }, Some(output))
                }
                Err(e) => (Done::Unknown(failure(&e)), None),
            }
        }
        KvKind::Delete => {
            let req = DeleteRangeRequest { key: key.to_vec(), ..Default::default() };
            match timed(kv.delete_range(request(req))).await {
                Ok(r) => (Done::Deleted { revision: revision(r.header), deleted: r.deleted }, Some(Output::Ack)),
                Err(e) => (Done::Unknown(failure(&e)), None),
            }
        }
        KvKind::Cas { expect, new } => {
            let compare = match expect {
                Some(value) => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Value as i32,
                    key: key.to_vec(),
                    target_union: Some(TargetUnion::Value(value.clone())),
                    ..Default::default()
                },
                None => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Create as i32,
                    key: key.to_vec(),
                    target_union: Some(TargetUnion::CreateRevision(0)),
                    ..Default::default()
                },
            };
            let put = PutRequest { key: key.to_vec(), value: new.clone(), ..Default::default() };
            let req = TxnRequest {
                compare: vec![compare],
                success: vec![ferrocd_proto::etcdserverpb::RequestOp { request: Some(RequestOp::RequestPut(put)) }],
                failure: vec![],
            };
            match timed(kv.txn(request(req))).await {
                Ok(r) if r.succeeded => (Done::Wrote { revision: revision(r.header) }, Some(Output::Cas(true))),
                Ok(r) => (Done::NotSwapped { revision: revision(r.header) }, Some(Output::Cas(false))),
                Err(e) => (Done::Unknown(failure(&e)), None),
            }
        }
    }
}

/// A watcher of the history's prefix from its start revision: on any failure it opens a new
/// stream on the next member from the revision after the last one it received, as a client
/// resuming a watch does.
pub async fn watcher(traffic: Arc<Traffic>, watcher: u64) {
    let mut log = WatchLog { watcher, start: traffic.start_revision, ..WatchLog::default() };
    let mut next = traffic.start_revision;
    let mut turn = watcher as usize + 1;
    let mut response = 0u64;
    let done = |next: i64| next > traffic.watch_until.load(Ordering::Relaxed);
    'streams: while !done(next) {
        if traffic.stopped() && traffic.watch_until.load(Ordering::Relaxed) == i64::MAX {
            break;
        }
        let Some((channel, raw)) = traffic.channel(turn) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let create = WatchCreateRequest {
            key: traffic.prefix.clone(),
            range_end: prefix_end(&traffic.prefix),
            start_revision: next,
            ..Default::default()
        };
        let _ = tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await;
        let opened = tokio::time::timeout(OP_TIMEOUT, WatchClient::new(channel).watch(tokio_stream_from(rx))).await;
        let Ok(Ok(stream)) = opened else {
            log.reconnects += 1;
            turn += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        loop {
            if done(next) {
                break 'streams;
            }
            // Wake up now and then to see whether the history is over.
            let message = match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
                Err(_) => continue,
                Ok(message) => message,
            };
            match message {
                Ok(Some(resp)) if resp.canceled => {
                    // Refused for its token: log in again before the next stream.
                    if crate::auth::stale(&resp.cancel_reason) {
                        let _ = traffic.session.login(raw.clone()).await;
                    }
                    break;
                }
                Ok(Some(resp)) => {
                    response += 1;
                    for event in resp.events {
                        let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                        next = next.max(revision + 1);
                        log.events.push((response, event));
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        drop(tx);
        log.reconnects += 1;
        turn += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    traffic.recording.watches.lock().push(log);
}

/// A request stream from a channel receiver.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// How long a contender's lease is valid, as it knows: renewed by each keep-alive answered
/// with a TTL (from the time it was sent), and never again once it lapsed.
#[derive(Debug)]
struct Validity {
    until: Instant,
    lapsed: bool,
    lost: bool,
}

impl Validity {
    fn renewed(&mut self, sent: Instant, ttl: i64) {
        if self.lapsed || self.lost {
            return;
        }
        if sent > self.until {
            self.lapsed = true;
        } else if ttl > 0 {
            self.until = self.until.max(sent + Duration::from_secs(ttl as u64));
        } else {
            self.lost = true;
            self.until = self.until.min(sent);
        }
    }

    fn end(&self) -> Instant {
        self.until
    }
}

/// A lock contender: takes etcd's lock with a lease of its own, holds it a moment, unlocks,
/// and again, until told to stop.
pub async fn locker(traffic: Arc<Traffic>, contender: u64, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut turn = contender as usize + 2;
    while !traffic.stopped() {
        let Some((channel, raw)) = traffic.channel(turn) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        turn += 1;
        let mut leases = LeaseClient::new(channel.clone());
        let sent = Instant::now();
        let granted = match timed(leases.lease_grant(request(LeaseGrantRequest { ttl: LOCK_TTL, id: 0 }))).await {
            Ok(granted) => granted,
            Err(status) => {
                traffic.session.renew(&status, raw).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let lease = granted.id;
        let validity = Arc::new(Mutex::new(Validity {
            until: sent + Duration::from_secs(granted.ttl.max(0) as u64),
            lapsed: false,
            lost: false,
        }));
        let keeper = tokio::spawn(keep_alive(traffic.clone(), channel.clone(), lease, Arc::clone(&validity)));
        let mut locks = LockClient::new(channel.clone());
        let locked = timed(locks.lock(request(LockRequest { name: traffic.lock_name.clone(), lease }))).await;
        if let Err(status) = &locked {
            traffic.session.renew(status, raw).await;
        }
        if let Ok(locked) = locked {
            let from = Instant::now();
            tokio::time::sleep(Duration::from_millis(rng.u64(50..300))).await;
            let release = Instant::now();
            let until = release.min(validity.lock().end());
            traffic.recording.holds.lock().push(Hold { contender, from, until, key: locked.key.clone() });
            let _ = timed(locks.unlock(request(UnlockRequest { key: locked.key }))).await;
        }
        keeper.abort();
        let _ = timed(leases.lease_revoke(request(LeaseRevokeRequest { id: lease }))).await;
    }
}

/// Keeps `lease` alive every half second over one stream (a new one after a failure),
/// recording each answer in `validity`.
async fn keep_alive(traffic: Arc<Traffic>, channel: Authed, lease: i64, validity: Arc<Mutex<Validity>>) {
    let mut channel = channel;
    let mut turn = lease as usize;
    loop {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut client = LeaseClient::new(channel.clone());
        let Ok(Ok(stream)) = tokio::time::timeout(OP_TIMEOUT, client.lease_keep_alive(tokio_stream_from(rx))).await
        else {
            turn += 1;
            channel = traffic.channel(turn).map_or(channel, |c| c.0);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        loop {
            let sent = Instant::now();
            if tx.send(LeaseKeepAliveRequest { id: lease }).await.is_err() {
                break;
            }
            match tokio::time::timeout(OP_TIMEOUT, stream.message()).await {
                Ok(Ok(Some(answer))) => validity.lock().renewed(sent, answer.ttl),
                Ok(Err(status)) => {
                    if let Some(raw) = traffic.raw_channel(turn) {
                        traffic.session.renew(&status, raw).await;
                    }
                    break;
                }
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        turn += 1;
        channel = traffic.channel(turn).map_or(channel, |c| c.0);
    }
}
