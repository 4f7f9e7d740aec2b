//! A lease's record as the engine holds it, for tools that convert whole stores (backups in
//! etcd's format and their restore). The layout is in the crate docs.

use ferrocd_engine::WriteBatch;

use crate::{LEASE_BUCKET, LeaseId, Result, codec};

/// A stored lease: its ID, granted TTL and checkpointed remaining TTL (0: none), in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredLease {
    pub id: LeaseId,
    pub ttl: i64,
    pub remaining: i64,
}

impl StoredLease {
    /// Decodes a record of [`LEASE_BUCKET`].
    ///
    /// # Errors
    /// [`crate::Error::Corrupt`] for a record of the wrong shape.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Self> {
        let (ttl, remaining) = codec::decode_value(value)?;
        Ok(Self { id: codec::decode_key(key)?, ttl, remaining })
    }

    /// Records this lease into `batch`.
    pub fn write(&self, batch: &mut WriteBatch) {
        batch.put(LEASE_BUCKET, codec::encode_key(self.id), codec::encode_value(self.ttl, self.remaining));
    }
}
