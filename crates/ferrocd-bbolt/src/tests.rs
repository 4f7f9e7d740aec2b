//! Round trips through [`Writer`] and [`Reader`], and files damaged by hand.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::format::{
    BUCKET_LEAF_FLAG, FREELIST_PAGE, LEAF_PAGE, META_SIZE, Meta, PAGE_HEADER_SIZE, PageHeader, PageView, u64_at,
};
use crate::{BucketStats, Error, Reader, Writer};

type Buckets = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    (dir, path)
}

fn write(path: &Path, page_size: u32, buckets: &Buckets) -> u64 {
    let mut w = Writer::with_page_size(path, page_size).unwrap();
    for (name, kvs) in buckets {
        w.bucket(name).unwrap();
        for (k, v) in kvs {
            w.put(k, v).unwrap();
        }
    }
    w.finish().unwrap()
}

fn read_all(path: &Path) -> Buckets {
    let r = Reader::open(path).unwrap();
    r.check().unwrap();
    let mut out = Vec::new();
    for name in r.buckets().unwrap() {
        let mut kvs = Vec::new();
        r.for_each(&name, |k, v| {
            kvs.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        out.push((name, kvs));
    }
    out
}

fn stats_of(path: &Path, name: &[u8]) -> BucketStats {
    Reader::open(path).unwrap().stats().unwrap().into_iter().find(|s| s.name == name).unwrap()
}

fn meta_at(path: &Path, page: u64, page_size: u64) -> Meta {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = [0u8; META_SIZE];
    f.read_exact_at(&mut buf, page * page_size + PAGE_HEADER_SIZE as u64).unwrap();
    Meta::decode(&buf).unwrap()
}

fn put_meta(path: &Path, page: u64, meta: &Meta) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&meta.encode(), page * u64::from(meta.page_size) + PAGE_HEADER_SIZE as u64).unwrap();
}

fn read_page(path: &Path, id: u64, page_size: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; page_size];
    f.read_exact_at(&mut buf, id * page_size as u64).unwrap();
    buf
}

fn write_page(path: &Path, id: u64, page: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(page, id * page.len() as u64).unwrap();
}

fn check_errors(path: &Path) -> Vec<String> {
    match Reader::open(path).unwrap().check() {
        Err(Error::Check(errors)) => errors,
        other => panic!("check should fail, got {other:?}"),
    }
}

fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
    (k.as_bytes().to_vec(), v.as_bytes().to_vec())
}

/// Three buckets each too big to be inline, 4096-byte pages.
fn three_buckets() -> Buckets {
    (0..3u8)
        .map(|b| {
            let kvs = (0..200).map(|i| kv(&format!("key-{i:04}"), &format!("value-{b}-{i}"))).collect();
            (vec![b'a' + b], kvs)
        })
        .collect()
}

#[test]
fn no_buckets() {
    let (_d, path) = scratch();
    let len = write(&path, 4096, &vec![]);
    // metas, empty root leaf, freelist
    assert_eq!(len, 4 * 4096);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    let r = Reader::open(&path).unwrap();
    assert_eq!((r.page_size(), r.high_water(), r.size(), r.txid()), (4096, 4, len, 2));
    assert_eq!(r.freelist_page(), Some(3));
    assert!(r.buckets().unwrap().is_empty());
    assert!(matches!(r.get(b"x", b"k"), Err(Error::BucketNotFound(_))));
    r.check().unwrap();
}

#[test]
fn empty_buckets_are_inline() {
    let (_d, path) = scratch();
    let buckets: Buckets = vec![(b"alpha".to_vec(), vec![]), (b"beta".to_vec(), vec![])];
    write(&path, 4096, &buckets);
    assert_eq!(read_all(&path), buckets);
    let s = stats_of(&path, b"alpha");
    assert!(s.inline);
    assert_eq!((s.keys, s.leaf_pages, s.depth), (0, 0, 1));
    assert_eq!(Reader::open(&path).unwrap().high_water(), 4);
}

#[test]
fn one_key() {
    let (_d, path) = scratch();
    let buckets: Buckets = vec![(b"b".to_vec(), vec![kv("k", "v")])];
    write(&path, 4096, &buckets);
    assert_eq!(read_all(&path), buckets);
    let r = Reader::open(&path).unwrap();
    assert_eq!(r.get(b"b", b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(r.get(b"b", b"j").unwrap(), None);
    assert_eq!(r.get(b"b", b"l").unwrap(), None);
    assert!(matches!(r.get(b"c", b"k"), Err(Error::BucketNotFound(_))));
}

#[test]
fn paged_buckets_and_lookups() {
    let (_d, path) = scratch();
    let buckets = three_buckets();
    write(&path, 4096, &buckets);
    assert_eq!(read_all(&path), buckets);
    let r = Reader::open(&path).unwrap();
    for (name, kvs) in &buckets {
        for (k, v) in kvs {
            assert_eq!(r.get(name, k).unwrap().as_ref(), Some(v));
        }
        assert_eq!(r.get(name, b"key-").unwrap(), None);
        assert_eq!(r.get(name, b"key-0000x").unwrap(), None);
        assert_eq!(r.get(name, b"zzz").unwrap(), None);
    }
    let s = stats_of(&path, b"a");
    assert!(!s.inline);
    assert_eq!((s.keys, s.depth, s.branch_pages), (200, 2, 1));
    assert!(s.leaf_pages >= 2);
}

#[test]
fn big_keys_and_values_overflow() {
    let (_d, path) = scratch();
    let big_value: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let big_key = vec![b'k'; crate::MAX_KEY_SIZE];
    let mut kvs = vec![(b"a".to_vec(), b"small".to_vec()), (b"b".to_vec(), big_value.clone())];
    kvs.push((b"c".to_vec(), vec![]));
    kvs.push((big_key.clone(), big_value.clone()));
    kvs.push((b"l".to_vec(), vec![7; 4000]));
    kvs.push((b"m".to_vec(), vec![8; 4096]));
    // Many big keys: branch pages must still hold two children each (and overflow).
    let mut more: Vec<(Vec<u8>, Vec<u8>)> = (0..40u8).map(|i| ([vec![b'n', i]; 1].concat(), vec![i; 5000])).collect();
    for (i, (k, _)) in more.iter_mut().enumerate() {
        k.extend(std::iter::repeat_n(b'x', 9000 + i));
    }
    kvs.extend(more);
    let buckets: Buckets = vec![(b"big".to_vec(), kvs.clone()), (b"wide".to_vec(), vec![kv("z", "z")])];
    write(&path, 4096, &buckets);
    assert_eq!(read_all(&path), buckets);
    let r = Reader::open(&path).unwrap();
    assert_eq!(r.get(b"big", &big_key).unwrap(), Some(big_value.clone()));
    assert_eq!(r.get(b"big", b"b").unwrap(), Some(big_value));
    assert_eq!(r.get(b"big", b"c").unwrap(), Some(vec![]));
    let s = stats_of(&path, b"big");
    assert!(s.overflow_pages > 40, "{s:?}");
    assert!(s.depth >= 3, "{s:?}");
}

#[test]
fn three_branch_levels() {
    let (_d, path) = scratch();
    let kvs: Vec<_> = (0..20_000u32).map(|i| (format!("{i:040}").into_bytes(), i.to_be_bytes().to_vec())).collect();
    let buckets: Buckets = vec![(b"deep".to_vec(), kvs.clone()), (b"e".to_vec(), vec![kv("1", "2")])];
    write(&path, 1024, &buckets);
    assert_eq!(read_all(&path), buckets);
    let s = stats_of(&path, b"deep");
    assert!(s.depth >= 4, "three branch levels above the leaves: {s:?}");
    assert_eq!(s.keys, 20_000);
    let r = Reader::open(&path).unwrap();
    assert_eq!(r.page_size(), 1024);
    for i in (0..20_000u32).step_by(997) {
        assert_eq!(r.get(b"deep", format!("{i:040}").as_bytes()).unwrap(), Some(i.to_be_bytes().to_vec()));
    }
    assert_eq!(r.get(b"deep", format!("{:040}", 20_000).as_bytes()).unwrap(), None);
}

#[test]
fn element_count_per_page_stays_below_u16() {
    let (_d, path) = scratch();
    // 2 MiB pages would hold ~110000 such elements; a page's count is a u16.
    let kvs: Vec<_> = (0..70_000u32).map(|i| (i.to_be_bytes()[1..].to_vec(), vec![])).collect();
    let buckets: Buckets = vec![(b"b".to_vec(), kvs)];
    write(&path, 2 << 20, &buckets);
    assert_eq!(read_all(&path), buckets);
    let s = stats_of(&path, b"b");
    assert_eq!((s.leaf_pages, s.branch_pages, s.keys), (2, 1, 70_000));
}

#[test]
fn many_buckets_make_a_deep_root() {
    let (_d, path) = scratch();
    let buckets: Buckets = (0..3000u32)
        .map(|i| (format!("bucket-{i:05}").into_bytes(), (0..(i % 3)).map(|j| kv(&j.to_string(), "v")).collect()))
        .collect();
    write(&path, 1024, &buckets);
    assert_eq!(read_all(&path), buckets);
}

#[test]
fn order_and_arguments_are_enforced() {
    let (_d, path) = scratch();
    let mut w = Writer::create(&path).unwrap();
    assert!(matches!(w.put(b"k", b"v"), Err(Error::Invalid(_))));
    assert!(matches!(w.bucket(b""), Err(Error::Invalid(_))));
    w.bucket(b"m").unwrap();
    assert!(matches!(w.put(b"", b"v"), Err(Error::Invalid(_))));
    assert!(matches!(w.put(&vec![1; crate::MAX_KEY_SIZE + 1], b"v"), Err(Error::Invalid(_))));
    w.put(b"b", b"1").unwrap();
    assert!(matches!(w.put(b"b", b"2"), Err(Error::Order(_))));
    assert!(matches!(w.put(b"a", b"2"), Err(Error::Order(_))));
    w.put(b"c", b"3").unwrap();
    assert!(matches!(w.bucket(b"m"), Err(Error::Order(_))));
    assert!(matches!(w.bucket(b"a"), Err(Error::Order(_))));
    w.bucket(b"n").unwrap();
    w.put(b"a", b"4").unwrap();
    w.finish().unwrap();
    assert_eq!(
        read_all(&path),
        vec![(b"m".to_vec(), vec![kv("b", "1"), kv("c", "3")]), (b"n".to_vec(), vec![kv("a", "4")])]
    );
    assert!(matches!(Writer::with_page_size(&path, 3000), Err(Error::Invalid(_))));
    assert!(matches!(Writer::with_page_size(&path, 512), Err(Error::Invalid(_))));
}

#[test]
fn unfinished_file_is_refused() {
    let (_d, path) = scratch();
    let mut w = Writer::create(&path).unwrap();
    w.bucket(b"a").unwrap();
    w.put(b"k", b"v").unwrap();
    drop(w);
    let err = Reader::open(&path).unwrap_err();
    assert!(matches!(err, Error::Corrupt(ref m) if m.contains("no valid meta")), "{err}");
}

#[test]
fn metas_follow_write_to_convention() {
    let (_d, path) = scratch();
    write(&path, 4096, &three_buckets());
    let m0 = meta_at(&path, 0, 4096);
    let m1 = meta_at(&path, 1, 4096);
    assert_eq!(m0.txid, m1.txid + 1);
    assert_eq!(Meta { txid: m0.txid, ..m1 }, m0);
    let hdr0 = PageHeader::parse(&read_page(&path, 0, 4096)).unwrap();
    let hdr1 = PageHeader::parse(&read_page(&path, 1, 4096)).unwrap();
    assert_eq!((hdr0.id, hdr1.id, hdr0.flags), (0, 1, crate::format::META_PAGE));
    // The freelist is the last page, and empty.
    let fl = PageHeader::parse(&read_page(&path, m0.freelist, 4096)).unwrap();
    assert_eq!((fl.flags, fl.count, m0.freelist + 1), (FREELIST_PAGE, 0, m0.pgid));
}

#[test]
fn damaged_meta_falls_back_then_fails() {
    let (_d, path) = scratch();
    let buckets = three_buckets();
    write(&path, 4096, &buckets);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    // Flip a checksum byte of meta 0 (txid 2): meta 1 (txid 1) is used.
    let at = PAGE_HEADER_SIZE as u64 + 60;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
    let r = Reader::open(&path).unwrap();
    assert_eq!(r.txid(), 1);
    assert_eq!(read_all(&path), buckets);
    // Damage meta 1's magic too: nothing valid is left.
    f.write_all_at(&[0], 4096 + PAGE_HEADER_SIZE as u64).unwrap();
    let err = Reader::open(&path).unwrap_err();
    assert!(matches!(err, Error::Corrupt(ref m) if m.contains("checksum") && m.contains("magic")), "{err}");
}

#[test]
fn newer_meta_wins_and_second_meta_found_without_the_first() {
    let (_d, path) = scratch();
    write(&path, 8192, &three_buckets());
    let m1 = meta_at(&path, 1, 8192);
    put_meta(&path, 1, &Meta { txid: 9, ..m1 });
    assert_eq!(Reader::open(&path).unwrap().txid(), 9);
    // Break meta 0 entirely: the page size is then found by probing for meta 1.
    write_page(&path, 0, &vec![0u8; 8192]);
    let r = Reader::open(&path).unwrap();
    assert_eq!((r.txid(), r.page_size()), (9, 8192));
    r.check().unwrap();
}

#[test]
fn unreachable_page_fails_check() {
    let (_d, path) = scratch();
    write(&path, 4096, &three_buckets());
    let r = Reader::open(&path).unwrap();
    r.check().unwrap();
    let hwm = r.high_water();
    // Raise the high-water mark over one more (zeroed) page that nothing references.
    for page in 0..2 {
        let m = meta_at(&path, page, 4096);
        put_meta(&path, page, &Meta { pgid: hwm + 1, ..m });
    }
    write_page(&path, hwm, &vec![0u8; 4096]);
    let errors = check_errors(&path);
    assert_eq!(errors, vec![format!("page {hwm}: unreachable unfreed")]);
    // Listing it in the freelist makes the file consistent again.
    let m = meta_at(&path, 0, 4096);
    let mut fl = read_page(&path, m.freelist, 4096);
    fl[10..12].copy_from_slice(&1u16.to_le_bytes());
    fl[16..24].copy_from_slice(&hwm.to_le_bytes());
    write_page(&path, m.freelist, &fl);
    Reader::open(&path).unwrap().check().unwrap();
    // A reachable page in the freelist is an error too, and so is a page freed twice.
    fl[10..12].copy_from_slice(&3u16.to_le_bytes());
    fl[24..32].copy_from_slice(&m.root.to_le_bytes());
    fl[32..40].copy_from_slice(&hwm.to_le_bytes());
    write_page(&path, m.freelist, &fl);
    let errors = check_errors(&path);
    assert!(errors.contains(&format!("page {}: reachable freed", m.root)), "{errors:?}");
    assert!(errors.contains(&format!("page {hwm}: already freed")), "{errors:?}");
}

#[test]
fn no_freelist_means_unreachable_is_free() {
    let (_d, path) = scratch();
    write(&path, 4096, &three_buckets());
    for page in 0..2 {
        let m = meta_at(&path, page, 4096);
        put_meta(&path, page, &Meta { freelist: crate::format::NO_FREELIST, ..m });
    }
    let r = Reader::open(&path).unwrap();
    assert_eq!(r.freelist_page(), None);
    r.check().unwrap();
}

/// The root bucket's leaf page and its elements' values (page ids of the buckets).
fn root_leaf(path: &Path) -> (u64, Vec<u8>) {
    let m = meta_at(path, 0, 4096);
    (m.root, read_page(path, m.root, 4096))
}

#[test]
fn page_referenced_twice_fails_check() {
    let (_d, path) = scratch();
    write(&path, 4096, &three_buckets());
    let (root, mut page) = root_leaf(&path);
    let view = PageView::new(&page, &|| String::new()).unwrap();
    assert_eq!(view.header.flags, LEAF_PAGE);
    let a = view.leaf(0, &|| String::new()).unwrap();
    let b = view.leaf(1, &|| String::new()).unwrap();
    assert_eq!(a.flags, BUCKET_LEAF_FLAG);
    let a_root = u64_at(a.value, 0).unwrap();
    let b_root = u64_at(b.value, 0).unwrap();
    // Point bucket "b" at bucket "a"'s root page.
    let b_value_at = page.windows(8).position(|w| w == b_root.to_le_bytes()).unwrap();
    page[b_value_at..b_value_at + 8].copy_from_slice(&a_root.to_le_bytes());
    write_page(&path, root, &page);
    let errors = check_errors(&path);
    assert!(errors.iter().any(|e| e.starts_with(&format!("page {a_root}: multiple references"))), "{errors:?}");
    assert!(errors.contains(&format!("page {b_root}: unreachable unfreed")), "{errors:?}");
}

#[test]
fn keys_out_of_order_fail_check() {
    let (_d, path) = scratch();
    write(&path, 4096, &three_buckets());
    let r = Reader::open(&path).unwrap();
    // Find a leaf of bucket "a" holding "key-0001" and turn it into "key-0000".
    let leaf = (2..r.high_water())
        .find(|&id| {
            let p = read_page(&path, id, 4096);
            p[8] == LEAF_PAGE as u8 && p.windows(8).any(|w| w == b"key-0001")
        })
        .unwrap();
    let mut page = read_page(&path, leaf, 4096);
    let at = page.windows(8).position(|w| w == b"key-0001").unwrap();
    page[at + 7] = b'0';
    write_page(&path, leaf, &page);
    let errors = check_errors(&path);
    assert!(errors.iter().any(|e| e.contains("needs to be > than previous element")), "{errors:?}");
    // A branch key larger than its child's first key breaks the order too.
    let (_d2, path2) = scratch();
    write(&path2, 4096, &three_buckets());
    let stats = stats_of(&path2, b"b");
    assert_eq!(stats.branch_pages, 1);
    let r = Reader::open(&path2).unwrap();
    let branch = (2..r.high_water()).find(|&id| read_page(&path2, id, 4096)[8] == 0x01).unwrap();
    let mut page = read_page(&path2, branch, 4096);
    // The last branch key: make it sort after its whole child ("key-0zzz"-like).
    let at = page.windows(4).rposition(|w| w == b"key-").unwrap();
    page[at + 4] = b'9';
    write_page(&path2, branch, &page);
    let errors = check_errors(&path2);
    assert!(errors.iter().any(|e| e.contains("needs to be >= the key in the ancestor")), "{errors:?}");
}

#[test]
fn nested_buckets_are_refused_by_for_each_and_get() {
    let (_d, path) = scratch();
    // A bucket holding an empty inline nested bucket.
    let mut w = Writer::create(&path).unwrap();
    w.bucket(b"outer").unwrap();
    w.put(b"a", b"1").unwrap();
    let mut nested = vec![0u8; 16];
    nested.extend_from_slice(&PageHeader { id: 0, flags: LEAF_PAGE, count: 0, overflow: 0 }.encode());
    w.put_raw(BUCKET_LEAF_FLAG, b"inner", &nested).unwrap();
    w.finish().unwrap();
    let r = Reader::open(&path).unwrap();
    r.check().unwrap();
    assert!(matches!(r.for_each(b"outer", |_, _| Ok(())), Err(Error::Unsupported(_))));
    assert!(matches!(r.get(b"outer", b"inner"), Err(Error::Unsupported(_))));
    assert_eq!(r.get(b"outer", b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(r.stats().unwrap()[0].nested_buckets, 1);
}

#[test]
fn for_each_stops_at_the_callers_error() {
    let (_d, path) = scratch();
    write(&path, 4096, &three_buckets());
    let r = Reader::open(&path).unwrap();
    let mut seen = 0;
    let err = r
        .for_each(b"a", |_, _| {
            seen += 1;
            if seen == 5 { Err(Error::Invalid("stop".into())) } else { Ok(()) }
        })
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
    assert_eq!(seen, 5);
}

#[test]
fn truncated_file_is_corrupt() {
    let (_d, path) = scratch();
    write(&path, 4096, &three_buckets());
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 4096 * 3).unwrap();
    let r = Reader::open(&path).unwrap();
    assert!(matches!(r.check(), Err(Error::Check(_))));
    let mut failed = false;
    for name in [b"a", b"b", b"c"] {
        failed |= matches!(r.for_each(name, |_, _| Ok(())), Err(Error::Corrupt(_)));
    }
    assert!(failed);
}
