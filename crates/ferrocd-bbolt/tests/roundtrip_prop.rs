//! Random buckets (random names, random sorted keys, values from empty to several pages)
//! written with the writer read back equal, with a passing consistency check.

use std::collections::BTreeMap;

use ferrocd_bbolt::{Reader, Writer};
use proptest::prelude::*;

type Db = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 0..64),
        2 => proptest::collection::vec(any::<u8>(), 64..1500),
        1 => (1000usize..12_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 1..24),
        1 => (1usize..3000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

fn db() -> impl Strategy<Value = Db> {
    proptest::collection::btree_map(
        proptest::collection::vec(any::<u8>(), 1..12),
        proptest::collection::btree_map(key(), value(), 0..300),
        0..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn written_files_read_back_equal(db in db(), page_size in prop_oneof![Just(1024u32), Just(4096u32)]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut w = Writer::with_page_size(&path, page_size).unwrap();
        for (name, kvs) in &db {
            w.bucket(name).unwrap();
            for (k, v) in kvs {
                w.put(k, v).unwrap();
            }
        }
        let len = w.finish().unwrap();

        let r = Reader::open(&path).unwrap();
        prop_assert_eq!(r.size(), len);
        prop_assert_eq!(r.page_size(), page_size);
        r.check().unwrap();
        let names = r.buckets().unwrap();
        prop_assert_eq!(&names, &db.keys().cloned().collect::<Vec<_>>());
        let mut back = Db::new();
        for name in names {
            let mut kvs = BTreeMap::new();
            let mut previous: Option<Vec<u8>> = None;
            r.for_each(&name, |k, v| {
                assert!(previous.as_deref() < Some(k), "keys come in strictly ascending order");
                previous = Some(k.to_vec());
                kvs.insert(k.to_vec(), v.to_vec());
                Ok(())
            }).unwrap();
            back.insert(name, kvs);
        }
        prop_assert_eq!(&back, &db);
        for (name, kvs) in &db {
            for (k, v) in kvs.iter().step_by(7) {
                prop_assert_eq!(r.get(name, k).unwrap(), Some(v.clone()));
            }
            let mut absent = kvs.keys().next_back().cloned().unwrap_or_default();
            absent.push(0);
            prop_assert_eq!(r.get(name, &absent).unwrap(), None);
        }
    }
}
