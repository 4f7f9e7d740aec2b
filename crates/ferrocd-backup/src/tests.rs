//! A store written as etcd's backend and read back equals the store, at every revision.

use std::sync::Arc;

use ferrocd_engine::{Bucket, Engine, MemEngine, ReadView, WriteBatch};
use ferrocd_lease::layout::StoredLease;
use ferrocd_mvcc::{KvStore, Options};
use ferrocd_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};
use proptest::prelude::*;

use crate::schema::{self, Member};
use crate::{BackendHash, Cluster, RestoreOptions, export, restore, write_db};

fn buckets() -> Vec<Bucket> {
    let mut all = KvStore::<MemEngine>::BUCKETS.to_vec();
    all.extend_from_slice(ferrocd_lease::Lessor::BUCKETS);
    all.extend_from_slice(&ferrocd_auth::BUCKETS);
    all
}

fn store() -> KvStore<MemEngine> {
    KvStore::open(Arc::new(MemEngine::new(&buckets())), Options::default()).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u16),
    Delete(u8),
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..8, 0u16..3000).prop_map(|(k, len)| Op::Put(k, len)),
        2 => (0u8..8).prop_map(Op::Delete),
        1 => Just(Op::Compact),
    ]
}

fn run(kv: &KvStore<MemEngine>, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Put(k, len) => {
                let req = PutRequest { key: vec![b'k', *k], value: vec![*k; usize::from(*len)], ..Default::default() };
                kv.put(req).unwrap();
            }
            Op::Delete(k) => {
                kv.delete_range(DeleteRangeRequest { key: vec![b'k', *k], ..Default::default() }).unwrap();
            }
            Op::Compact => {
                let revision = kv.current_revision() - 1;
                if revision > kv.compact_revision() {
                    kv.compact(CompactionRequest { revision, physical: true }).unwrap();
                }
            }
        }
    }
}

/// Every key at every revision the store still answers, and its revisions.
fn contents(kv: &KvStore<MemEngine>) -> Vec<(i64, Vec<ferrocd_proto::mvccpb::KeyValue>)> {
    let first = kv.compact_revision().max(1);
    (first..=kv.current_revision())
        .map(|revision| {
            let req = RangeRequest { key: vec![0], range_end: vec![0], revision, ..Default::default() };
            (revision, kv.range(&req).unwrap().kvs)
        })
        .collect()
}

fn cluster() -> Cluster {
    Cluster {
        members: vec![Member {
            id: 0x1234,
            peer_urls: vec!["http://a:2380".into()],
            is_learner: false,
            name: "a".into(),
            client_urls: vec![],
        }],
        alarms: vec![],
        version: "3.6.0".into(),
        applied_index: 42,
        term: 3,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_store_written_as_etcds_backend_restores_equal(ops in proptest::collection::vec(op(), 0..60)) {
        let kv = store();
        run(&kv, &ops);
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db");
        write_db(&**kv.engine(), &cluster(), &path).unwrap();
        let db = ferrocd_bbolt::Reader::open(&path).unwrap();
        db.check().unwrap();
        let engine = Arc::new(MemEngine::new(&buckets()));
        let restored = restore(&db, &*engine, RestoreOptions::default()).unwrap();
        let back = KvStore::open(engine, Options::default()).unwrap();
        prop_assert_eq!(restored.revision, kv.current_revision());
        prop_assert_eq!(back.current_revision(), kv.current_revision());
        prop_assert_eq!(back.compact_revision(), kv.compact_revision());
        prop_assert_eq!(contents(&back), contents(&kv));
        prop_assert_eq!(back.hash_kv(0).unwrap().hash, kv.hash_kv(0).unwrap().hash);
    }
}

#[test]
fn leases_users_and_the_cluster_are_in_etcds_buckets() {
    let kv = store();
    kv.put(PutRequest { key: b"a".to_vec(), value: b"1".to_vec(), ..Default::default() }).unwrap();
    let mut batch = WriteBatch::new();
    StoredLease { id: 7, ttl: 60, remaining: 30 }.write(&mut batch);
    batch.put(ferrocd_auth::AUTH_BUCKET, b"authEnabled".to_vec(), vec![1]);
    batch.put(ferrocd_auth::USERS_BUCKET, b"root".to_vec(), b"user record".to_vec());
    kv.engine().write(batch, true).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    let mut c = cluster();
    c.alarms = vec![ferrocd_proto::etcdserverpb::AlarmMember { member_id: 5, alarm: 1 }];
    write_db(&**kv.engine(), &c, &path).unwrap();
    let db = ferrocd_bbolt::Reader::open(&path).unwrap();
    assert_eq!(db.buckets().unwrap(), schema::BUCKETS.iter().map(|b| b.to_vec()).collect::<Vec<_>>());
    let get = |b: &[u8], k: &[u8]| db.get(b, k).unwrap();
    assert_eq!(get(schema::META, schema::CONSISTENT_INDEX), Some(42u64.to_be_bytes().to_vec()));
    assert_eq!(get(schema::META, schema::TERM), Some(3u64.to_be_bytes().to_vec()));
    assert_eq!(get(schema::META, schema::CONF_STATE).as_deref(), Some(&br#"{"voters":[4660],"auto_leave":false}"#[..]));
    assert_eq!(get(schema::CLUSTER, schema::CLUSTER_VERSION).as_deref(), Some(&b"3.6.0"[..]));
    assert_eq!(
        get(schema::MEMBERS, b"1234").as_deref(),
        Some(&br#"{"id":4660,"peerURLs":["http://a:2380"],"name":"a"}"#[..])
    );
    assert_eq!(get(schema::AUTH_USERS, b"root").as_deref(), Some(&b"user record"[..]));
    assert_eq!(get(schema::ALARM, &[0x08, 0x05, 0x10, 0x01]), Some(vec![]));
    let lease = get(schema::LEASE, &7i64.to_be_bytes()).unwrap();
    let lease = <schema::LeaseRecord as prost::Message>::decode(lease.as_slice()).unwrap();
    assert_eq!((lease.id, lease.ttl, lease.remaining_ttl), (7, 60, 30));
    // The revision key is etcd's: main, `_`, sub.
    assert!(get(schema::KEY, &schema::revision_key(ferrocd_types::Revision::new(2, 0), false)).is_some());

    // Restored: the lease and the user come back; members and alarms do not (a new cluster).
    let engine = MemEngine::new(&buckets());
    let restored = restore(&db, &engine, RestoreOptions::default()).unwrap();
    assert_eq!((restored.leases, restored.users, restored.roles, restored.records), (1, 1, 0, 1));
    assert_eq!(engine.get(ferrocd_auth::USERS_BUCKET, b"root").unwrap().as_deref(), Some(&b"user record"[..]));
}

#[test]
fn the_backend_hash_leaves_out_what_differs_between_members() {
    let kv = store();
    kv.put(PutRequest { key: b"a".to_vec(), value: b"1".to_vec(), ..Default::default() }).unwrap();
    let hash = |c: &Cluster| {
        let mut h = BackendHash::default();
        export(&**kv.engine(), c, &mut h).unwrap();
        h.finish()
    };
    let a = hash(&cluster());
    let other_position = Cluster { applied_index: 99, term: 8, ..cluster() };
    assert_eq!(a, hash(&other_position));
    kv.put(PutRequest { key: b"a".to_vec(), value: b"2".to_vec(), ..Default::default() }).unwrap();
    assert_ne!(a, hash(&cluster()));
}

#[test]
fn a_bumped_restore_moves_the_revision_on_and_compacts_there() {
    let kv = store();
    for v in ["1", "2"] {
        kv.put(PutRequest { key: b"a".to_vec(), value: v.into(), ..Default::default() }).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    write_db(&**kv.engine(), &cluster(), &path).unwrap();
    let db = ferrocd_bbolt::Reader::open(&path).unwrap();
    let bad = RestoreOptions { bump_revision: 5, mark_compacted: false };
    let e = restore(&db, &MemEngine::new(&buckets()), bad).unwrap_err();
    assert_eq!(e.to_string(), "--mark-compacted required if --revision-bump > 0");
    let engine = Arc::new(MemEngine::new(&buckets()));
    let options = RestoreOptions { bump_revision: 100, mark_compacted: true };
    let restored = restore(&db, &*engine, options).unwrap();
    assert_eq!((restored.revision, restored.compact_revision), (103, 103));
    let back = KvStore::open(engine, Options::default()).unwrap();
    assert_eq!((back.current_revision(), back.compact_revision()), (103, 103));
    let now = back.range(&RangeRequest { key: b"a".to_vec(), ..Default::default() }).unwrap();
    assert_eq!(now.kvs[0].value, b"2");
    let old = back.range(&RangeRequest { key: b"a".to_vec(), revision: 2, ..Default::default() });
    assert!(old.is_err(), "revisions before the bump are compacted");
    let next = back.put(PutRequest { key: b"b".to_vec(), ..Default::default() }).unwrap().0;
    assert_eq!(next.header.unwrap().revision, 104);
}

#[test]
fn snapshot_files_need_their_checksum() {
    use sha2::Digest;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    write_db(&**store().engine(), &cluster(), &path).unwrap();
    let e = crate::snapshot_file::verify(&path, false).unwrap_err();
    assert_eq!(e.to_string(), "snapshot missing hash but --skip-hash-check=false");
    assert!(crate::snapshot_file::verify(&path, true).is_ok());
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len() as u64;
    bytes.extend_from_slice(&sha2::Sha256::digest(&bytes));
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(crate::snapshot_file::verify(&path, false).unwrap(), len);
    let status = crate::status(&path).unwrap();
    assert_eq!((status.revision, status.total_keys, status.version.as_str()), (0, 0, "3.6.0"));
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let e = crate::snapshot_file::verify(&path, false).unwrap_err().to_string();
    assert!(e.starts_with("expected sha256 [") && e.contains("], got ["), "{e}");
}

#[test]
fn etcds_deletions_get_their_revision_back_on_restore() {
    use prost::Message;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    let mut w = ferrocd_bbolt::Writer::create(&path).unwrap();
    w.bucket(schema::KEY).unwrap();
    let put = ferrocd_proto::mvccpb::KeyValue {
        key: b"a".to_vec(),
        value: b"1".to_vec(),
        create_revision: 2,
        mod_revision: 2,
        version: 1,
        lease: 0,
    };
    let rev = |main| ferrocd_types::Revision::new(main, 0);
    w.put(&schema::revision_key(rev(2), false), &put.encode_to_vec()).unwrap();
    // etcd's deletion: the key alone.
    let gone = ferrocd_proto::mvccpb::KeyValue { key: b"a".to_vec(), ..Default::default() };
    w.put(&schema::revision_key(rev(3), true), &gone.encode_to_vec()).unwrap();
    w.finish().unwrap();
    let engine = Arc::new(MemEngine::new(&buckets()));
    restore(&ferrocd_bbolt::Reader::open(&path).unwrap(), &*engine, RestoreOptions::default()).unwrap();
    let back = KvStore::open(engine, Options::default()).unwrap();
    assert_eq!(back.current_revision(), 3);
    let (events, _) = back.events(2, 3, 10).unwrap();
    let revisions: Vec<i64> = events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect();
    assert_eq!(revisions, [2, 3]);
}

#[test]
fn a_long_restore_reports_its_progress() {
    let kv = store();
    let puts = crate::PROGRESS_EVERY * 2 + 5;
    for i in 0..puts {
        kv.put(PutRequest { key: format!("k{}", i % 100).into_bytes(), ..Default::default() }).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    write_db(&**kv.engine(), &cluster(), &path).unwrap();
    let db = ferrocd_bbolt::Reader::open(&path).unwrap();
    let mut seen = Vec::new();
    let engine = MemEngine::new(&buckets());
    let restored =
        crate::restore_reporting(&db, &engine, RestoreOptions::default(), &mut |r| seen.push(r.records)).unwrap();
    assert_eq!(restored.records, puts);
    assert_eq!(seen, [crate::PROGRESS_EVERY, crate::PROGRESS_EVERY * 2]);
}
