//! Unit and model tests of the store on the in-memory engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrocd_engine::{Engine, MemEngine, ReadView, Scan, WriteBatch};
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest, compare, request_op,
};
use ferrocd_proto::mvccpb::{KeyValue, event::EventType};
use ferrocd_types::KeyRange;
use proptest::prelude::*;

use crate::testing::{self, StoreApi, cmp, op_del, op_put};
use crate::{Error, KEY_BUCKET, KvStore, NoLeases, Options, WriteRequest};

fn store() -> KvStore<MemEngine> {
    KvStore::open(Arc::new(MemEngine::new(KvStore::<MemEngine>::BUCKETS)), Options::default()).unwrap()
}

fn reopen(s: &KvStore<MemEngine>) -> KvStore<MemEngine> {
    KvStore::open(Arc::clone(s.engine()), Options::default()).unwrap()
}

fn stored_revisions(engine: &MemEngine) -> usize {
    let mut n = 0;
    engine
        .scan(KEY_BUCKET, &[], None, false, &mut |_, _| {
            n += 1;
            Ok(Scan::Continue)
        })
        .unwrap();
    n
}

#[test]
fn kv_semantics_suite() {
    let s = store();
    testing::run_suite(&mut StoreApi(&s));
}

#[test]
fn kv_semantics_suite_survives_restart() {
    let s = store();
    testing::run_suite(&mut StoreApi(&s));
    let before = s.range(&testing::range_req("\0", "\0")).unwrap();
    let hash = s.hash_kv(0).unwrap();
    let again = reopen(&s);
    assert_eq!(again.range(&testing::range_req("\0", "\0")).unwrap(), before);
    assert_eq!(again.hash_kv(0).unwrap(), hash);
    assert_eq!(again.compact_revision(), s.compact_revision());
}

#[test]
fn events_describe_each_change() {
    let s = store();
    let (_, events) = s.put(testing::put_req("k", "v")).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].r#type, EventType::Put as i32);
    assert_eq!(events[0].kv.as_ref().unwrap().value, b"v");
    s.put(testing::put_req("k2", "v")).unwrap();
    let (_, events) = s.delete_range(testing::del_req("k", "l")).unwrap();
    assert_eq!(events.len(), 2);
    for e in &events {
        assert_eq!(e.r#type, EventType::Delete as i32);
        let kv = e.kv.as_ref().unwrap();
        assert_eq!((kv.mod_revision, kv.create_revision, kv.version, kv.value.len()), (4, 0, 0, 0));
    }
}

#[test]
fn unpublished_writes_are_invisible() {
    let s = store();
    let applied = s.apply(WriteRequest::Put(testing::put_req("k", "v")), &NoLeases, WriteBatch::new()).unwrap();
    assert_eq!(applied.revision, 2);
    assert_eq!(s.range(&testing::get_req("k")).unwrap().count, 0, "applied but not published");
    let mut at = testing::get_req("k");
    at.revision = 2;
    assert!(matches!(s.range(&at), Err(Error::FutureRevision)));
    s.publish();
    assert_eq!(s.range(&testing::get_req("k")).unwrap().count, 1);
}

#[test]
fn extra_writes_share_the_batch() {
    let s = store();
    let mut extra = WriteBatch::new();
    extra.put(crate::META_BUCKET, b"applied_index".to_vec(), 7u64.to_be_bytes().to_vec());
    s.apply(WriteRequest::Put(testing::put_req("k", "v")), &NoLeases, extra).unwrap();
    assert!(s.engine().get(crate::META_BUCKET, b"applied_index").unwrap().is_some());
}

#[test]
fn compaction_removes_history_from_the_engine() {
    let s = store();
    for i in 0..10 {
        s.put(testing::put_req("k", &i.to_string())).unwrap();
    }
    s.put(testing::put_req("gone", "x")).unwrap();
    s.delete_range(testing::del_req("gone", "")).unwrap();
    assert_eq!(stored_revisions(s.engine()), 12);
    s.compact(CompactionRequest { revision: s.current_revision(), physical: true }).unwrap();
    assert_eq!(stored_revisions(s.engine()), 1, "only the live revision of k is left");
    assert_eq!(s.stats().revisions, 1);
    assert_eq!(s.range(&testing::get_req("k")).unwrap().kvs[0].value, b"9");
}

/// A batch that makes `bucket` of another engine hold exactly what it holds in `source`'s.
fn replacement(source: &KvStore<MemEngine>, bucket: ferrocd_engine::Bucket) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.delete_range(bucket, Vec::new(), vec![0xff; 32]);
    source
        .engine()
        .scan(bucket, &[], None, false, &mut |k, v| {
            batch.put(bucket, k.to_vec(), v.to_vec());
            Ok(Scan::Continue)
        })
        .unwrap();
    batch
}

#[test]
fn readers_wait_while_the_contents_are_replaced() {
    let source = std::sync::Arc::new(store());
    for i in 0..6 {
        source.put(testing::put_req(&format!("k{i}"), &i.to_string())).unwrap();
    }
    let target = std::sync::Arc::new(store());
    target.put(testing::put_req("stale", "x")).unwrap();
    let all = testing::range_req("\0", "\0");
    let (done, finished) = std::sync::mpsc::channel();
    let replaced = target
        .replace_contents(|| {
            // Half of the replacement written: a reader starting now must wait for the rest.
            for (n, bucket) in KvStore::<MemEngine>::BUCKETS.iter().enumerate() {
                target.engine().write(replacement(&source, *bucket), false).unwrap();
                if n == 0 {
                    let (reader, all, done) = (target.clone(), all.clone(), done.clone());
                    std::thread::spawn(move || done.send(reader.range(&all).map(|r| r.kvs)).unwrap());
                    let early = finished.recv_timeout(std::time::Duration::from_millis(200));
                    assert!(early.is_err(), "a reader saw the contents half replaced: {early:?}");
                }
            }
            Ok::<(), Error>(())
        })
        .unwrap();
    replaced.unwrap();
    let seen = finished.recv_timeout(std::time::Duration::from_secs(10)).expect("the reader finishes").unwrap();
    assert_eq!(seen, source.range(&all).unwrap().kvs);
}

#[test]
fn reload_takes_on_contents_replaced_underneath() {
    let source = store();
    for i in 0..6 {
        source.put(testing::put_req(&format!("k{}", i % 3), &i.to_string())).unwrap();
    }
    source.compact(CompactionRequest { revision: 3, physical: true }).unwrap();
    let target = store();
    target.put(testing::put_req("stale", "x")).unwrap();
    // Replace every bucket of the target's engine with the source's, as a snapshot install does.
    for bucket in KvStore::<MemEngine>::BUCKETS {
        target.engine().write(replacement(&source, *bucket), true).unwrap();
    }
    target.reload().unwrap();
    assert_eq!(target.current_revision(), source.current_revision());
    assert_eq!(target.compact_revision(), 3);
    assert_eq!(target.stats(), source.stats());
    let all = testing::range_req("\0", "\0");
    assert_eq!(target.range(&all).unwrap().kvs, source.range(&all).unwrap().kvs);
    assert_eq!(target.hash_kv(0).unwrap(), source.hash_kv(0).unwrap());
}

#[test]
fn interrupted_compaction_finishes_on_open() {
    let s = store();
    for i in 0..5 {
        s.put(testing::put_req("k", &i.to_string())).unwrap();
    }
    let applied = s
        .apply(WriteRequest::Compact(CompactionRequest { revision: 5, physical: false }), &NoLeases, WriteBatch::new())
        .unwrap();
    assert_eq!(applied.compaction.as_ref().map(|j| j.len()), Some(3));
    drop(applied); // the job never runs: a crash
    assert_eq!(stored_revisions(s.engine()), 5);
    let again = reopen(&s);
    assert_eq!(stored_revisions(again.engine()), 2);
    assert_eq!(again.compact_revision(), 5);
    let mut old = testing::get_req("k");
    old.revision = 4;
    assert!(matches!(again.range(&old), Err(Error::Compacted)));
}

#[test]
fn hash_is_stable_and_sensitive() {
    let a = store();
    let b = store();
    for s in [&a, &b] {
        s.put(testing::put_req("x", "1")).unwrap();
        s.put(testing::put_req("y", "2")).unwrap();
    }
    assert_eq!(a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
    b.put(testing::put_req("y", "3")).unwrap();
    assert_eq!(
        a.hash_kv(3).unwrap().hash,
        b.hash_kv(3).unwrap().hash,
        "the hash at a past revision ignores later writes"
    );
    a.put(testing::put_req("y", "4")).unwrap();
    assert_ne!(a.hash_kv(0).unwrap().hash, b.hash_kv(0).unwrap().hash);
    assert!(matches!(a.hash_kv(99), Err(Error::FutureRevision)));
}

#[test]
fn compact_zero_once_on_a_fresh_store() {
    // etcd's quirk: the compact revision starts at -1, so compacting at 0 succeeds once.
    let s = store();
    s.compact(CompactionRequest { revision: 0, physical: false }).unwrap();
    assert!(matches!(s.compact(CompactionRequest { revision: 0, physical: false }), Err(Error::Compacted)));
    s.compact(CompactionRequest { revision: 1, physical: false }).unwrap();
}

// ---- model test ---------------------------------------------------------------------------------

/// The whole keyspace at every revision: `history[r]` is the state at revision `r`.
#[derive(Debug)]
struct Model {
    history: Vec<BTreeMap<Vec<u8>, KeyValue>>,
    compacted: i64,
}

impl Model {
    fn new() -> Self {
        Self { history: vec![BTreeMap::new(), BTreeMap::new()], compacted: -1 }
    }
    fn current(&self) -> i64 {
        self.history.len() as i64 - 1
    }
    fn last(&self) -> &BTreeMap<Vec<u8>, KeyValue> {
        self.history.last().unwrap()
    }
    /// Applies puts and single-key deletes as one revision (if anything changes).
    fn write(&mut self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) {
        let rev = self.current() + 1;
        let mut next = self.last().clone();
        let mut changed = false;
        for k in deletes {
            changed |= next.remove(k).is_some();
        }
        for (k, v) in puts {
            let (create, version) = next.get(k).map_or((rev, 1), |p| (p.create_revision, p.version + 1));
            next.insert(
                k.clone(),
                KeyValue {
                    key: k.clone(),
                    create_revision: create,
                    mod_revision: rev,
                    version,
                    value: v.clone(),
                    lease: 0,
                },
            );
            changed = true;
        }
        if changed {
            self.history.push(next);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>, Vec<u8>),
    /// If `version(key) == version` then put every pair else delete `key`.
    Txn {
        key: Vec<u8>,
        version: i64,
        puts: Vec<(Vec<u8>, Vec<u8>)>,
    },
    Compact(i64),
    Read {
        key: Vec<u8>,
        end: Vec<u8>,
        revision: i64,
    },
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        b"a".to_vec(),
        b"b".to_vec(),
        b"b\0".to_vec(),
        b"c".to_vec(),
        b"d/1".to_vec(),
        b"d/2".to_vec(),
    ])
}

fn end() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![Vec::new(), vec![0], b"c".to_vec(), b"d0".to_vec(), b"b\0".to_vec()])
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key(), prop::collection::vec(any::<u8>(), 0..4)).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (key(), end()).prop_map(|(k, e)| Op::Delete(k, e)),
        2 => (key(), 0..3i64, prop::collection::btree_map(key(), prop::collection::vec(any::<u8>(), 0..3), 0..3))
            .prop_map(|(key, version, puts)| Op::Txn { key, version, puts: puts.into_iter().collect() }),
        1 => (0..40i64).prop_map(Op::Compact),
        4 => (key(), end(), -1..40i64).prop_map(|(key, end, revision)| Op::Read { key, end, revision }),
    ]
}

fn check_read(
    s: &KvStore<MemEngine>,
    model: &Model,
    key: &[u8],
    end: &[u8],
    revision: i64,
) -> Result<(), TestCaseError> {
    let req = RangeRequest { key: key.to_vec(), range_end: end.to_vec(), revision, ..Default::default() };
    let got = s.range(&req);
    if revision > model.current() {
        prop_assert!(matches!(got, Err(Error::FutureRevision)));
        return Ok(());
    }
    let at = if revision <= 0 { model.current() } else { revision };
    if at < model.compacted {
        prop_assert!(matches!(got, Err(Error::Compacted)), "{got:?}");
        return Ok(());
    }
    let range = KeyRange::from_request(key, end);
    let want: Vec<KeyValue> =
        model.history[at as usize].values().filter(|kv| range.contains(&kv.key)).cloned().collect();
    let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(got.count, want.len() as i64);
    prop_assert_eq!(got.kvs, want);
    prop_assert_eq!(got.header.unwrap().revision, model.current());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        let s = store();
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    let resp = s.put(PutRequest { key: k.clone(), value: v.clone(), ..Default::default() }).unwrap();
                    model.write(&[(k, v)], &[]);
                    prop_assert_eq!(resp.0.header.unwrap().revision, model.current());
                }
                Op::Delete(k, e) => {
                    let range = KeyRange::from_request(&k, &e);
                    let doomed: Vec<Vec<u8>> = model.last().keys().filter(|key| range.contains(key)).cloned().collect();
                    let resp = s.delete_range(DeleteRangeRequest { key: k, range_end: e, ..Default::default() }).unwrap();
                    prop_assert_eq!(resp.0.deleted, doomed.len() as i64);
                    model.write(&[], &doomed);
                }
                Op::Txn { key, version, puts } => {
                    let holds = model.last().get(&key).map_or(0, |kv| kv.version) == version;
                    let req = TxnRequest {
                        compare: vec![cmp(
                            std::str::from_utf8(&key).unwrap(),
                            compare::CompareTarget::Version,
                            compare::CompareResult::Equal,
                            compare::TargetUnion::Version(version),
                        )],
                        success: puts.iter().map(|(k, v)| ferrocd_proto::etcdserverpb::RequestOp {
                            request: Some(request_op::Request::RequestPut(PutRequest { key: k.clone(), value: v.clone(), ..Default::default() })),
                        }).collect(),
                        failure: vec![op_del(std::str::from_utf8(&key).unwrap(), "")],
                    };
                    let resp = s.txn(req).unwrap().0;
                    prop_assert_eq!(resp.succeeded, holds);
                    if holds { model.write(&puts, &[]) } else { model.write(&[], &[key]) }
                    prop_assert_eq!(resp.header.unwrap().revision, model.current());
                }
                Op::Compact(r) => {
                    let got = s.compact(CompactionRequest { revision: r, physical: true });
                    if r <= model.compacted {
                        prop_assert!(matches!(got, Err(Error::Compacted)));
                    } else if r > model.current() {
                        prop_assert!(matches!(got, Err(Error::FutureRevision)));
                    } else {
                        prop_assert!(got.is_ok());
                        model.compacted = r;
                    }
                }
                Op::Read { key, end, revision } => check_read(&s, &model, &key, &end, revision)?,
            }
        }
        // Every readable revision answers as the model, before and after a restart.
        let again = reopen(&s);
        for store in [&s, &again] {
            for r in 0..=model.current() {
                check_read(store, &model, b"\0", b"\0", r)?;
            }
        }
        prop_assert_eq!(s.hash_kv(0).unwrap(), again.hash_kv(0).unwrap());
    }
}

#[test]
fn txn_put_then_read_uses_pending_values() {
    let s = store();
    let req =
        TxnRequest { success: vec![op_put("a", "1"), op_del("zz", ""), testing::op_get("a")], ..Default::default() };
    let (resp, events) = s.txn(req).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(resp.responses.len(), 3);
}

#[test]
fn unknown_compare_enums_behave_as_etcd() {
    let s = store();
    s.put(testing::put_req("k", "v")).unwrap();
    let odd_target =
        ferrocd_proto::etcdserverpb::Compare { key: b"k".to_vec(), target: 7, result: 0, ..Default::default() };
    let odd_result =
        ferrocd_proto::etcdserverpb::Compare { key: b"k".to_vec(), target: 0, result: 9, ..Default::default() };
    for c in [odd_target, odd_result] {
        let (resp, _) = s.txn(TxnRequest { compare: vec![c], ..Default::default() }).unwrap();
        assert!(resp.succeeded, "etcd holds an unknown target as equal and an unknown result as true");
    }
}

#[test]
fn out_of_order_compaction_jobs_are_cleaned_up_on_open() {
    let s = store();
    for i in 0..6 {
        s.put(testing::put_req("k", &i.to_string())).unwrap();
    }
    let first = s
        .apply(WriteRequest::Compact(CompactionRequest { revision: 4, physical: false }), &NoLeases, WriteBatch::new())
        .unwrap();
    let second = s
        .apply(WriteRequest::Compact(CompactionRequest { revision: 5, physical: false }), &NoLeases, WriteBatch::new())
        .unwrap();
    second.compaction.unwrap().run(&s).unwrap();
    drop(first); // the earlier job never ran: a crash
    // Puts made revisions 2..=7; the second job removed 4 only, leaving 2 and 3 behind.
    assert_eq!(stored_revisions(s.engine()), 5);
    let again = reopen(&s);
    assert_eq!(stored_revisions(again.engine()), 3, "only 5, 6 and 7 are left");
    assert_eq!(again.stats().revisions, 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// History read back by revision equals the events the writes returned: whole revisions,
    /// in order, in chunks of at least `max` events, and nothing below a compaction.
    #[test]
    fn history_replays_the_events_of_each_write(
        ops in prop::collection::vec(op(), 1..40),
        reads in prop::collection::vec((0i64..45, 0i64..45, 1usize..6), 1..8),
        compact_at in prop::option::of(1i64..45),
    ) {
        let s = store();
        let mut written = Vec::new();
        for op in ops {
            let events = match op {
                Op::Put(k, v) => s.put(PutRequest { key: k, value: v, ..Default::default() }).unwrap().1,
                Op::Delete(k, e) => s.delete_range(DeleteRangeRequest { key: k, range_end: e, ..Default::default() }).unwrap().1,
                Op::Txn { puts, .. } => {
                    let req = TxnRequest {
                        success: puts.iter().map(|(k, v)| ferrocd_proto::etcdserverpb::RequestOp {
                            request: Some(request_op::Request::RequestPut(PutRequest { key: k.clone(), value: v.clone(), ..Default::default() })),
                        }).collect(),
                        ..Default::default()
                    };
                    s.txn(req).unwrap().1
                }
                Op::Compact(_) | Op::Read { .. } => Vec::new(),
            };
            written.extend(events);
        }
        let compacted = compact_at.filter(|r| *r <= s.current_revision());
        if let Some(r) = compacted {
            s.compact(CompactionRequest { revision: r, physical: true }).unwrap();
        }
        let rev = |e: &ferrocd_proto::mvccpb::Event| e.kv.as_ref().unwrap().mod_revision;
        for (from, to, max) in reads {
            let got = s.events(from, to, max);
            if compacted.is_some_and(|c| from < c) {
                prop_assert!(matches!(got, Err(Error::Compacted)));
                continue;
            }
            let (events, through) = got.unwrap();
            let to = to.min(s.current_revision());
            prop_assert!(through <= to);
            let want: Vec<_> = written.iter().filter(|e| rev(e) >= from && rev(e) <= through).cloned().collect();
            if compacted.is_none() {
                prop_assert_eq!(&events, &want);
            } else {
                // At the compaction revision itself only what compaction kept remains.
                let above: Vec<_> = want.iter().filter(|e| Some(rev(e)) > compacted).collect();
                let got_above: Vec<_> = events.iter().filter(|e| Some(rev(e)) > compacted).collect();
                prop_assert_eq!(got_above, above);
            }
            if through < to {
                // Cut only once enough events were read, and never inside a revision.
                prop_assert!(events.len() >= max);
                prop_assert!(written.iter().any(|e| rev(e) == through + 1));
            }
        }
    }
}
