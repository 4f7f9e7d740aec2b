//! Snapshot files as etcd's tools make and read them: a bbolt database, then the SHA-256 of it
//! (32 bytes; a file whose size is 32 past a multiple of 512 has one), and `snapshot status`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use ferrocd_bbolt::Reader;
use ferrocd_proto::mvccpb::KeyValue;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::schema;
use crate::{Error, Result};

/// The length of the trailer.
pub const SHA256_LEN: u64 = 32;

/// Whether a file of `size` bytes ends in a SHA-256 trailer (etcd's rule: bbolt files are
/// multiples of 512 bytes).
pub fn has_checksum(size: u64) -> bool {
    size % 512 == SHA256_LEN
}

/// Checks the SHA-256 trailer of the snapshot at `path` as etcdutl's restore does; answers the
/// length of the database before it. Without a trailer the file is accepted only with
/// `skip_hash_check` (a database file copied from a data directory).
///
/// # Errors
/// etcdutl's errors for a missing or wrong checksum; the file cannot be read.
pub fn verify(path: &Path, skip_hash_check: bool) -> Result<u64> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    if !has_checksum(size) {
        if skip_hash_check {
            return Ok(size);
        }
        return Err(Error::Invalid("snapshot missing hash but --skip-hash-check=false".into()));
    }
    let db_len = size - SHA256_LEN;
    if skip_hash_check {
        return Ok(db_len);
    }
    let mut hasher = Sha256::new();
    std::io::copy(&mut (&mut file).take(db_len), &mut hasher)?;
    let computed = hasher.finalize();
    let mut expected = [0u8; SHA256_LEN as usize];
    file.seek(SeekFrom::Start(db_len))?;
    file.read_exact(&mut expected)?;
    if computed.as_slice() != expected {
        return Err(Error::Invalid(format!("expected sha256 {}, got {}", go_bytes(&expected), go_bytes(&computed))));
    }
    Ok(db_len)
}

/// Bytes as Go's `%v` prints a `[]byte`: `[1 2 3]`.
fn go_bytes(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(u8::to_string).collect();
    format!("[{}]", parts.join(" "))
}

/// `snapshot status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// CRC-32C over every bucket's name, keys and values (nothing left out).
    pub hash: u32,
    /// The newest revision in the file.
    pub revision: i64,
    /// The keys live at that revision.
    pub total_keys: u64,
    /// The database's size in bytes.
    pub total_size: u64,
    /// The storage version recorded (empty for etcd before 3.6).
    pub version: String,
}

/// The status of the snapshot (or database file) at `path`, after bbolt's consistency check.
///
/// # Errors
/// The file is not a bbolt database or fails the check, as etcdutl words it.
pub fn status(path: &Path) -> Result<Status> {
    let db = Reader::open(path)?;
    match db.check() {
        Ok(()) => {}
        Err(ferrocd_bbolt::Error::Check(errors)) => {
            return Err(Error::Invalid(format!(
                "snapshot file integrity check failed. {} errors found.\n{}",
                errors.len(),
                errors.join("\n")
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let mut crc = 0u32;
    let mut revision = 0;
    let mut live = BTreeSet::new();
    for bucket in db.buckets()? {
        crc = crc32c::crc32c_append(crc, &bucket);
        let is_key = bucket == schema::KEY;
        db.for_each(&bucket, |k, v| {
            crc = crc32c::crc32c_append(crc, k);
            crc = crc32c::crc32c_append(crc, v);
            if is_key && let Some((rev, tombstone)) = schema::parse_revision_key(k) {
                revision = rev.main;
                if let Ok(kv) = KeyValue::decode(v) {
                    if tombstone {
                        live.remove(&kv.key);
                    } else {
                        live.insert(kv.key);
                    }
                }
            }
            Ok(())
        })?;
    }
    let version = db.get(schema::META, schema::STORAGE_VERSION)?.map(|v| String::from_utf8_lossy(&v).into_owned());
    Ok(Status {
        hash: crc,
        revision,
        total_keys: live.len() as u64,
        total_size: db.size(),
        version: version.unwrap_or_default(),
    })
}
