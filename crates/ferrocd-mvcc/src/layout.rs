//! The store's records as the engine holds them, for tools that convert whole keyspaces (backups
//! in etcd's format and their restore): the key of a change, and the store's revisions.

use ferrocd_engine::{ReadView, WriteBatch};
use ferrocd_types::Revision;

use crate::{META_BUCKET, META_CURRENT, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT, Result, decode_i64, encode_i64};

/// The engine key of a change: its revision's 16 bytes, then `t` for a deletion.
pub fn record_key(rev: Revision, tombstone: bool) -> Vec<u8> {
    let mut key = Vec::with_capacity(Revision::ENCODED_LEN + 1);
    key.extend_from_slice(&rev.to_bytes());
    if tombstone {
        key.push(b't');
    }
    key
}

/// The revision of a key-bucket record and whether it is a deletion (a tombstone); `None` for
/// a key that is not a record's.
pub fn parse_record_key(key: &[u8]) -> Option<(Revision, bool)> {
    let rev = Revision::from_bytes(key)?;
    match &key[Revision::ENCODED_LEN..] {
        [] => Some((rev, false)),
        [b't'] => Some((rev, true)),
        _ => None,
    }
}

/// The store's revisions as recorded in the `meta` bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredRevisions {
    /// The current revision recorded (the store takes the newest record's if that is newer).
    pub current: Option<i64>,
    /// The last compaction scheduled.
    pub scheduled_compact: Option<i64>,
    /// The last compaction whose removals finished.
    pub finished_compact: Option<i64>,
}

impl StoredRevisions {
    /// The revisions `view` records.
    ///
    /// # Errors
    /// Engine failures; a record that is not 8 bytes.
    pub fn read(view: &impl ReadView) -> Result<Self> {
        let meta =
            |key: &[u8]| -> Result<Option<i64>> { view.get(META_BUCKET, key)?.map(|v| decode_i64(&v)).transpose() };
        Ok(Self {
            current: meta(META_CURRENT)?,
            scheduled_compact: meta(META_SCHEDULED_COMPACT)?,
            finished_compact: meta(META_FINISHED_COMPACT)?,
        })
    }

    /// Records these revisions into `batch` (the ones that are set).
    pub fn write(&self, batch: &mut WriteBatch) {
        for (key, value) in [
            (META_CURRENT, self.current),
            (META_SCHEDULED_COMPACT, self.scheduled_compact),
            (META_FINISHED_COMPACT, self.finished_compact),
        ] {
            if let Some(v) = value {
                batch.put(META_BUCKET, key, encode_i64(v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_parse_back() {
        let rev = Revision::new(5, 2);
        assert_eq!(parse_record_key(&record_key(rev, false)), Some((rev, false)));
        assert_eq!(parse_record_key(&record_key(rev, true)), Some((rev, true)));
        assert_eq!(parse_record_key(&[0; 15]), None);
        let mut odd = record_key(rev, false);
        odd.push(b'x');
        assert_eq!(parse_record_key(&odd), None);
    }
}
