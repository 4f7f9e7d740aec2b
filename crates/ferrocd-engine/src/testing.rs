//! The conformance suite every [`Engine`] implementation runs.
//!
//! Call [`run_suite`] from a test of the implementing crate with a function that opens a fresh,
//! empty engine with the given buckets.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::{Bucket, Engine, Error, ReadView, Scan, WriteBatch};

const A: Bucket = Bucket("a");
const B: Bucket = Bucket("b");
const BUCKETS: &[Bucket] = &[A, B];

/// Runs every conformance check against engines made by `open`.
///
/// # Panics
/// On the first check that fails.
pub fn run_suite<E: Engine>(mut open: impl FnMut(&[Bucket]) -> E) {
    put_get_delete(&open(BUCKETS));
    unknown_bucket_is_an_error(&open(BUCKETS));
    scan_bounds_and_order(&open(BUCKETS));
    batch_is_ordered_and_atomic(&open(BUCKETS));
    buckets_are_isolated(&open(BUCKETS));
    snapshot_is_isolated(&open(BUCKETS));
    sync_and_size(&open(BUCKETS));
    checkpoint_is_a_point_in_time_copy(&open(BUCKETS));
    matches_model(&mut open);
}

fn checkpoint_is_a_point_in_time_copy<E: Engine>(engine: &E) {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let copy = dir.path().join("copy");
    put(engine, A, b"k", b"v");
    put(engine, B, b"", b"empty key");
    put(engine, B, b"empty value", b"");
    engine.checkpoint(&copy).expect("checkpoint");
    put(engine, A, b"later", b"x");
    let image = E::open_checkpoint(&copy, BUCKETS).expect("open the checkpoint");
    assert_eq!(collect(&image, A, b"", None, false), vec![(b"k".to_vec(), b"v".to_vec())]);
    assert_eq!(
        collect(&image, B, b"", None, false),
        vec![(b"".to_vec(), b"empty key".to_vec()), (b"empty value".to_vec(), b"".to_vec())]
    );
    assert!(engine.checkpoint(&copy).is_err(), "the target must not exist");
    assert!(E::open_checkpoint(&dir.path().join("nothing"), BUCKETS).is_err());
}

fn collect(
    view: &impl ReadView,
    bucket: Bucket,
    start: &[u8],
    end: Option<&[u8]>,
    reverse: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    view.scan(bucket, start, end, reverse, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(Scan::Continue)
    })
    .expect("scan");
    out
}

fn put(engine: &impl Engine, bucket: Bucket, key: &[u8], value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.put(bucket, key, value);
    engine.write(batch, false).expect("write");
}

fn put_get_delete(engine: &impl Engine) {
    assert_eq!(engine.get(A, b"k").unwrap(), None);
    put(engine, A, b"k", b"v1");
    assert_eq!(engine.get(A, b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    put(engine, A, b"k", b"v2");
    assert_eq!(engine.get(A, b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    put(engine, A, b"empty", b"");
    assert_eq!(engine.get(A, b"empty").unwrap().as_deref(), Some(&b""[..]), "an empty value is still a value");
    let mut batch = WriteBatch::new();
    batch.delete(A, b"k".to_vec());
    batch.delete(A, b"never-there".to_vec());
    engine.write(batch, true).unwrap();
    assert_eq!(engine.get(A, b"k").unwrap(), None);
}

fn unknown_bucket_is_an_error(engine: &impl Engine) {
    let nope = Bucket("nope");
    assert!(matches!(engine.get(nope, b"k"), Err(Error::UnknownBucket("nope"))));
    let mut batch = WriteBatch::new();
    batch.put(A, b"k", b"v");
    batch.put(nope, b"k", b"v");
    assert!(engine.write(batch, false).is_err());
    assert_eq!(engine.get(A, b"k").unwrap(), None, "a rejected batch applies nothing");
    assert!(engine.scan(nope, b"", None, false, &mut |_, _| Ok(Scan::Continue)).is_err());
}

fn scan_bounds_and_order(engine: &impl Engine) {
    for k in [&b"a"[..], b"b", b"b\0", b"c", b"\xff", b"\xff\xff"] {
        put(engine, A, k, k);
    }
    let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(collect(engine, A, b"", None, false)),
        vec![b"a".to_vec(), b"b".to_vec(), b"b\0".to_vec(), b"c".to_vec(), b"\xff".to_vec(), b"\xff\xff".to_vec()]
    );
    assert_eq!(keys(collect(engine, A, b"b", Some(b"c"), false)), vec![b"b".to_vec(), b"b\0".to_vec()]);
    assert_eq!(keys(collect(engine, A, b"b", Some(b"c"), true)), vec![b"b\0".to_vec(), b"b".to_vec()]);
    assert_eq!(keys(collect(engine, A, b"c", None, true)), vec![b"\xff\xff".to_vec(), b"\xff".to_vec(), b"c".to_vec()]);
    assert!(collect(engine, A, b"c", Some(b"b"), false).is_empty(), "end before start is empty");
    assert!(collect(engine, A, b"c", Some(b"c"), true).is_empty(), "end equal to start is empty");
    let mut seen = 0;
    engine
        .scan(A, b"", None, false, &mut |_, _| {
            seen += 1;
            Ok(if seen == 2 { Scan::Stop } else { Scan::Continue })
        })
        .unwrap();
    assert_eq!(seen, 2, "Stop ends the scan");
    let err = engine.scan(A, b"", None, false, &mut |_, _| Err(Error::Corrupt("visitor".into())));
    assert!(matches!(err, Err(Error::Corrupt(_))), "the visitor's error is passed on");
}

fn batch_is_ordered_and_atomic(engine: &impl Engine) {
    let mut batch = WriteBatch::new();
    batch.put(A, b"x", b"1");
    batch.delete(A, b"x".to_vec());
    batch.put(A, b"y", b"1");
    batch.put(A, b"y", b"2");
    for k in [&b"r1"[..], b"r2", b"r3"] {
        batch.put(A, k, b"r");
    }
    batch.delete_range(A, b"r1".to_vec(), b"r3".to_vec());
    batch.put(A, b"r2", b"again");
    engine.write(batch, true).unwrap();
    assert_eq!(engine.get(A, b"x").unwrap(), None);
    assert_eq!(engine.get(A, b"y").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(engine.get(A, b"r1").unwrap(), None);
    assert_eq!(engine.get(A, b"r2").unwrap().as_deref(), Some(&b"again"[..]));
    assert_eq!(engine.get(A, b"r3").unwrap().as_deref(), Some(&b"r"[..]));
}

fn buckets_are_isolated(engine: &impl Engine) {
    put(engine, A, b"k", b"in a");
    put(engine, B, b"k", b"in b");
    assert_eq!(engine.get(A, b"k").unwrap().as_deref(), Some(&b"in a"[..]));
    assert_eq!(engine.get(B, b"k").unwrap().as_deref(), Some(&b"in b"[..]));
    let mut batch = WriteBatch::new();
    batch.delete_range(A, b"".to_vec(), b"\xff\xff\xff".to_vec());
    engine.write(batch, false).unwrap();
    assert_eq!(engine.get(B, b"k").unwrap().as_deref(), Some(&b"in b"[..]));
    assert_eq!(collect(engine, B, b"", None, false).len(), 1);
}

fn snapshot_is_isolated(engine: &impl Engine) {
    put(engine, A, b"k", b"old");
    let snap = engine.snapshot();
    put(engine, A, b"k", b"new");
    put(engine, A, b"k2", b"new");
    assert_eq!(snap.get(A, b"k").unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(collect(&snap, A, b"", None, false), vec![(b"k".to_vec(), b"old".to_vec())]);
    assert_eq!(engine.get(A, b"k").unwrap().as_deref(), Some(&b"new"[..]));
}

fn sync_and_size(engine: &impl Engine) {
    for i in 0..100u32 {
        put(engine, A, &i.to_be_bytes(), &[7u8; 1000]);
    }
    engine.sync().unwrap();
    assert!(engine.size_bytes() > 0, "an engine holding 100 KB reports a size");
    engine.compact_bucket(A).unwrap();
    assert_eq!(collect(engine, A, b"", None, false).len(), 100, "compaction keeps live data");
}

#[derive(Debug, Clone)]
enum ModelOp {
    Put(u8, Vec<u8>, Vec<u8>),
    Delete(u8, Vec<u8>),
    DeleteRange(u8, Vec<u8>, Vec<u8>),
}

fn small_key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(0u8), Just(1), Just(b'a'), Just(0xff)], 0..4)
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        4 => (0..2u8, small_key(), prop::collection::vec(any::<u8>(), 0..8)).prop_map(|(b, k, v)| ModelOp::Put(b, k, v)),
        2 => (0..2u8, small_key()).prop_map(|(b, k)| ModelOp::Delete(b, k)),
        1 => (0..2u8, small_key(), small_key()).prop_map(|(b, s, e)| ModelOp::DeleteRange(b, s, e)),
    ]
}

fn matches_model<E: Engine>(open: &mut impl FnMut(&[Bucket]) -> E) {
    let strategy = (
        prop::collection::vec(prop::collection::vec(model_op(), 1..6), 1..12),
        small_key(),
        prop::option::of(small_key()),
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config { cases: 48, ..Config::default() });
    let open = std::cell::RefCell::new(open);
    runner
        .run(&strategy, |(batches, start, end, reverse)| {
            let engine = (open.borrow_mut())(BUCKETS);
            let mut model: [BTreeMap<Vec<u8>, Vec<u8>>; 2] = Default::default();
            for ops in batches {
                let mut batch = WriteBatch::new();
                for op in ops {
                    match op {
                        ModelOp::Put(b, k, v) => {
                            batch.put(BUCKETS[b as usize], k.clone(), v.clone());
                            model[b as usize].insert(k, v);
                        }
                        ModelOp::Delete(b, k) => {
                            batch.delete(BUCKETS[b as usize], k.clone());
                            model[b as usize].remove(&k);
                        }
                        ModelOp::DeleteRange(b, s, e) => {
                            batch.delete_range(BUCKETS[b as usize], s.clone(), e.clone());
                            model[b as usize].retain(|k, _| !(k >= &s && k < &e));
                        }
                    }
                }
                engine.write(batch, false).unwrap();
            }
            for (i, bucket) in BUCKETS.iter().enumerate() {
                let mut want: Vec<(Vec<u8>, Vec<u8>)> = model[i]
                    .iter()
                    .filter(|(k, _)| {
                        k.as_slice() >= start.as_slice() && end.as_ref().is_none_or(|e| k.as_slice() < e.as_slice())
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if reverse {
                    want.reverse();
                }
                prop_assert_eq!(collect(&engine, *bucket, &start, end.as_deref(), reverse), want);
                for (k, v) in &model[i] {
                    let stored = engine.get(*bucket, k).unwrap();
                    prop_assert_eq!(stored.as_ref(), Some(v));
                }
            }
            Ok(())
        })
        .unwrap();
}
