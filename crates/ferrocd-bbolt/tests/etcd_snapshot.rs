//! Reads a snapshot saved by a real etcd 3.4.23 (`etcdctl snapshot save`), whose bbolt file has
//! no synced freelist, inline buckets, an overflow page and the 32-byte sha256 etcd appends;
//! then rewrites it with the writer and reads the copy back.
//!
//! The fixture's expectations come from `etcdctl snapshot status` on it: hash f4cf9444,
//! revision 64, 70 keys, 61440 bytes.

use std::path::{Path, PathBuf};

use ferrocd_bbolt::{Reader, Writer};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/etcd-3.4.23-snapshot.db")
}

/// CRC-32C (Castagnoli), as etcd's snapshot status hashes with.
fn crc32c(mut crc: u32, bytes: &[u8]) -> u32 {
    crc = !crc;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// What `etcdctl snapshot status` computes: the hash over bucket names, keys and values, the
/// revision of the last key of bucket "key", and the number of keys.
fn status(path: &Path) -> (u32, u64, u64, u64) {
    let r = Reader::open(path).unwrap();
    r.check().unwrap();
    let (mut hash, mut revision, mut keys) = (0u32, 0u64, 0u64);
    for name in r.buckets().unwrap() {
        hash = crc32c(hash, &name);
        r.for_each(&name, |k, v| {
            hash = crc32c(crc32c(hash, k), v);
            if name == b"key" {
                revision = u64::from_be_bytes(k[..8].try_into().unwrap());
            }
            keys += 1;
            Ok(())
        })
        .unwrap();
    }
    (hash, revision, keys, r.size())
}

#[test]
fn crc32c_reference() {
    assert_eq!(crc32c(0, b"123456789"), 0xE306_9283);
}

#[test]
fn reads_a_real_etcd_snapshot() {
    let path = fixture();
    let r = Reader::open(&path).unwrap();
    assert_eq!(r.page_size(), 4096);
    assert_eq!(r.freelist_page(), None, "etcd 3.4 does not sync the freelist");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), r.size() + 32, "etcd appends a sha256");
    let names: Vec<String> = r.buckets().unwrap().into_iter().map(|n| String::from_utf8(n).unwrap()).collect();
    assert_eq!(
        names,
        ["alarm", "auth", "authRoles", "authUsers", "cluster", "key", "lease", "members", "members_removed", "meta"]
    );
    assert_eq!(status(&path), (0xf4cf_9444, 64, 70, 61440));

    let stats = r.stats().unwrap();
    let by_name = |n: &str| stats.iter().find(|s| s.name == n.as_bytes()).unwrap();
    assert!(by_name("alarm").inline && by_name("lease").inline);
    assert!(!by_name("key").inline);
    assert!(by_name("key").overflow_pages >= 2, "the 9000-byte value spans pages");

    // Lookups by descent.
    assert_eq!(r.get(b"meta", b"consistent_index").unwrap().map(|v| v.len()), Some(8));
    assert!(r.get(b"meta", b"nope").unwrap().is_none());
    assert!(r.get(b"authUsers", b"alice").unwrap().is_some());
    assert!(r.get(b"authRoles", b"r1").unwrap().is_some());
    let mut big = None;
    r.for_each(b"key", |k, v| {
        if v.windows(3).any(|w| w == b"big") && v.len() > 9000 {
            big = Some(k.to_vec());
        }
        Ok(())
    })
    .unwrap();
    let big = big.expect("the 9000-byte value");
    assert!(r.get(b"key", &big).unwrap().unwrap().ends_with(&[b'x'; 100]));
}

#[test]
fn rewrites_a_real_etcd_snapshot() {
    let src = Reader::open(&fixture()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    let mut w = Writer::create(&copy).unwrap();
    for name in src.buckets().unwrap() {
        w.bucket(&name).unwrap();
        src.for_each(&name, |k, v| w.put(k, v)).unwrap();
    }
    let len = w.finish().unwrap();
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), len);
    let (hash, revision, keys, _) = status(&copy);
    assert_eq!((hash, revision, keys), (0xf4cf_9444, 64, 70));
}
