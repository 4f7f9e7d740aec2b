//! The checkers of one history, against the revision history every member agrees on:
//!
//! - every member's history of the watched prefix is the same (read by a watch from the
//!   history's first revision on each member);
//! - every acknowledged write is in it at the revision its answer gave, every read saw what it
//!   holds at the revision its answer gave (serializable reads included), no value appears that
//!   nobody wrote, none twice;
//! - the linearizable operations are linearizable (`ferrocd-lincheck`);
//! - every watcher received exactly the history, in order, without gaps or duplicates across
//!   its reconnections, each revision in one response;
//! - no two lock contenders believed they held the lock at the same time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::auth::Authed;
use crate::workload::{Done, Hold, KvKind, KvOp, WatchLog, prefix_end};
use anyhow::{Context as _, bail};
use ferrocd_lincheck::Verdict;
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{WatchCreateRequest, WatchProgressRequest, WatchRequest};
use ferrocd_proto::mvccpb::Event;
use ferrocd_proto::mvccpb::event::EventType;

/// The search budget of the linearizability checker per history.
const LIN_STEPS: u64 = 50_000_000;

/// What the checkers found: violations (must be none) and notes.
#[derive(Debug, Default)]
pub struct Findings {
    pub violations: Vec<String>,
    /// Keys the linearizability search could not decide within its budget.
    pub inconclusive: usize,
}

impl Findings {
    pub fn violation(&mut self, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(what);
        }
    }
}

/// The events of `prefix` from revision `from` through `upto`, as member `channel` serves
/// them: a watch from `from`, read until a progress notification vouches for `upto`.
///
/// # Errors
/// When the member does not deliver them within 20 s.
pub async fn events_upto(channel: Authed, prefix: &[u8], from: i64, upto: i64) -> anyhow::Result<Vec<Event>> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let create = WatchCreateRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        start_revision: from,
        ..Default::default()
    };
    tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await?;
    let requests = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let read = async {
        let mut stream = WatchClient::new(channel).watch(requests).await?.into_inner();
        let mut events = Vec::new();
        loop {
            let progress = WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) };
            tx.send(progress).await?;
            let resp = stream.message().await?.context("the watch ended")?;
            if resp.canceled {
                bail!("the watch was canceled: {}", resp.cancel_reason);
            }
            let progress = resp.events.is_empty() && !resp.created;
            events.extend(resp.events);
            if progress && resp.header.as_ref().is_some_and(|h| h.revision >= upto) {
                break;
            }
        }
        events.retain(|e| revision(e) <= upto);
        Ok::<_, anyhow::Error>(events)
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.context("reading the history timed out")?
}

fn revision(event: &Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

fn describe(event: &Event) -> String {
    let kv = event.kv.clone().unwrap_or_default();
    let kind = if event.r#type == EventType::Delete as i32 { "delete" } else { "put" };
    format!("{kind} {}={} @{}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value), kv.mod_revision)
}

/// A value and its mod revision; `None` where the key is deleted.
type Value = Option<(Vec<u8>, i64)>;

/// Each key's states through the history: `(revision, value)`.
struct States(HashMap<Vec<u8>, Vec<(i64, Value)>>);

impl States {
    fn new(history: &[Event]) -> Self {
        let mut states: HashMap<Vec<u8>, Vec<(i64, Value)>> = HashMap::new();
        for event in history {
            let Some(kv) = &event.kv else { continue };
            let state = (event.r#type != EventType::Delete as i32).then(|| (kv.value.clone(), kv.mod_revision));
            states.entry(kv.key.clone()).or_default().push((kv.mod_revision, state));
        }
        Self(states)
    }

    /// The key's value at `revision` (keys start absent in a history).
    fn at(&self, key: &[u8], revision: i64) -> Option<(Vec<u8>, i64)> {
        let changes = self.0.get(key)?;
        let i = changes.partition_point(|(r, _)| *r <= revision);
        i.checked_sub(1).and_then(|i| changes[i].1.clone())
    }

    /// The change of `key` at exactly `revision`, if any: `Some(None)` a deletion.
    fn change(&self, key: &[u8], revision: i64) -> Option<Option<(Vec<u8>, i64)>> {
        let changes = self.0.get(key)?;
        changes.iter().find(|(r, _)| *r == revision).map(|(_, s)| s.clone())
    }
}

/// Every member's history must be the same; answers it.
pub fn agreed(per_member: &[(usize, Vec<Event>)], findings: &mut Findings) -> Vec<Event> {
    let (first_slot, first) = &per_member[0];
    for (slot, events) in &per_member[1..] {
        if events != first {
            let at = events.iter().zip(first).position(|(a, b)| a != b).unwrap_or(events.len().min(first.len()));
            findings.violation(format!(
                "host {slot}'s history differs from host {first_slot}'s at event {at}: {:?} vs {:?} ({} vs {} events)",
                events.get(at).map(describe),
                first.get(at).map(describe),
                events.len(),
                first.len()
            ));
        }
    }
    first.clone()
}

/// The KV operations against the history.
pub fn kv_ops(history: &[Event], ops: &[KvOp], findings: &mut Findings) {
    let states = States::new(history);
    let name = |key: &[u8]| String::from_utf8_lossy(key).into_owned();
    let mut written: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        match &op.kind {
            KvKind::Put { value } | KvKind::Cas { new: value, .. } => {
                written.insert(value.clone());
            }
            _ => {}
        }
    }
    for op in ops {
        let key = &op.key;
        match (&op.kind, &op.done) {
            (_, Done::Unknown(_)) => {}
            (KvKind::Put { value } | KvKind::Cas { new: value, .. }, Done::Wrote { revision }) => {
                match states.change(key, *revision) {
                    Some(Some((v, _))) if v == *value => {}
                    other => findings.violation(format!(
                        "acknowledged write {}={} at revision {revision} is not in the history (found {other:?})",
                        name(key),
                        name(value)
                    )),
                }
            }
            (KvKind::Delete, Done::Deleted { revision, deleted }) => {
                let change = states.change(key, *revision);
                let ok = if *deleted > 0 { change == Some(None) } else { states.at(key, *revision).is_none() };
                if !ok {
                    findings.violation(format!(
                        "delete of {} answered deleted={deleted} at revision {revision}; the history has {:?} there",
                        name(key),
                        states.at(key, *revision)
                    ));
                }
            }
            (KvKind::Cas { expect, .. }, Done::NotSwapped { revision }) => {
                let now = states.at(key, *revision).map(|(v, _)| v);
                if now == *expect {
                    findings.violation(format!(
                        "compare-and-set of {} failed at revision {revision}, where the value was the one expected",
                        name(key)
                    ));
                }
            }
            (KvKind::Get { serializable }, Done::Read { revision, kv }) => {
                let truth = states.at(key, *revision);
                if truth != *kv {
                    findings.violation(format!(
                        "{} read of {} at revision {revision} saw {:?}; the history has {:?}",
                        if *serializable { "serializable" } else { "linearizable" },
                        name(key),
                        kv.as_ref().map(|(v, r)| (name(v), *r)),
                        truth.as_ref().map(|(v, r)| (name(v), *r))
                    ));
                }
            }
            (kind, done) => findings.violation(format!("{kind:?} answered {done:?}")),
        }
    }
    let mut seen = HashSet::new();
    for event in history {
        if event.r#type == EventType::Delete as i32 {
            continue;
        }
        let value = event.kv.as_ref().map(|kv| kv.value.clone()).unwrap_or_default();
        if !written.contains(&value) {
            findings.violation(format!("the history holds a value nobody wrote: {}", describe(event)));
        }
        if !seen.insert(value) {
            findings.violation(format!("a value was written twice: {}", describe(event)));
        }
    }
}

/// The linearizable operations, with the linearizability checker.
pub fn linearizable(history: &ferrocd_lincheck::History, findings: &mut Findings) {
    match ferrocd_lincheck::check_with_limit(history, LIN_STEPS) {
        Verdict::Linearizable => {}
        Verdict::Inconclusive { keys } => findings.inconclusive += keys.len(),
        Verdict::Violation(v) => findings.violation(format!(
            "not linearizable on key {}: after {} operations (value {:?}) none of {:?} can go next",
            String::from_utf8_lossy(&v.key),
            v.linearized.len(),
            v.state.as_ref().map(|s| String::from_utf8_lossy(s).into_owned()),
            v.stuck.iter().map(|(id, r)| format!("{id}: {:?} -> {:?}", r.op, r.outcome)).collect::<Vec<_>>()
        )),
    }
}

/// Every watcher's events against the history.
pub fn watches(history: &[Event], logs: &[WatchLog], findings: &mut Findings) {
    for log in logs {
        let received: Vec<&Event> = log.events.iter().map(|(_, e)| e).collect();
        let expected: Vec<&Event> = history.iter().filter(|e| revision(e) >= log.start).collect();
        if received != expected {
            let at =
                received.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(received.len().min(expected.len()));
            findings.violation(format!(
                "watcher {} (from revision {}, {} reconnects) received {} events, the history has {}; first difference at {at}: got {:?}, history {:?}",
                log.watcher,
                log.start,
                log.reconnects,
                received.len(),
                expected.len(),
                received.get(at).map(|e| describe(e)),
                expected.get(at).map(|e| describe(e))
            ));
        }
        let mut response_of: BTreeMap<i64, u64> = BTreeMap::new();
        for (response, event) in &log.events {
            let rev = revision(event);
            if let Some(first) = response_of.insert(rev, *response)
                && first != *response
            {
                findings.violation(format!("watcher {}: revision {rev} split across two responses", log.watcher));
            }
        }
    }
}

/// No two contenders held the lock at once, as each believed.
pub fn locks(holds: &[Hold], findings: &mut Findings) {
    let mut holds: Vec<&Hold> = holds.iter().filter(|h| h.from < h.until).collect();
    holds.sort_by_key(|h| h.from);
    for (i, a) in holds.iter().enumerate() {
        for b in &holds[i + 1..] {
            if b.from >= a.until {
                break;
            }
            findings.violation(format!(
                "contenders {} and {} both held the lock (keys {} and {}) for {:?}",
                a.contender,
                b.contender,
                String::from_utf8_lossy(&a.key),
                String::from_utf8_lossy(&b.key),
                a.until.min(b.until) - b.from
            ));
        }
    }
}
