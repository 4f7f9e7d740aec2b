//! The stored form of a lease, fixed-size so that decoding cannot be ambiguous.
//!
//! Key: the id as 8 bytes, big-endian two's complement. Value: 16 bytes, the granted TTL then
//! the checkpointed remaining TTL (0: none), each an `i64` in big-endian seconds. Not etcd's
//! protobuf `leasepb.Lease`: ferrocd does not share etcd's on-disk format anyway, and a fixed
//! layout needs no schema.

use crate::{Error, LeaseId, Result};

/// The engine key of lease `id`.
pub(crate) fn encode_key(id: LeaseId) -> [u8; 8] {
    id.to_be_bytes()
}

/// The engine value of a lease.
pub(crate) fn encode_value(ttl: i64, remaining: i64) -> [u8; 16] {
    let mut value = [0; 16];
    value[..8].copy_from_slice(&ttl.to_be_bytes());
    value[8..].copy_from_slice(&remaining.to_be_bytes());
    value
}

/// The id of a stored key; 0 is never stored.
pub(crate) fn decode_key(key: &[u8]) -> Result<LeaseId> {
    let bytes: [u8; 8] =
        key.try_into().map_err(|_| Error::Corrupt(format!("lease key of {} bytes, not 8", key.len())))?;
    match LeaseId::from_be_bytes(bytes) {
        0 => Err(Error::Corrupt("lease id 0 stored".into())),
        id => Ok(id),
    }
}

/// The `(ttl, remaining)` of a stored value.
pub(crate) fn decode_value(value: &[u8]) -> Result<(i64, i64)> {
    let bytes: [u8; 16] =
        value.try_into().map_err(|_| Error::Corrupt(format!("lease value of {} bytes, not 16", value.len())))?;
    let (ttl, remaining) = bytes.split_at(8);
    let ttl = i64::from_be_bytes(ttl.try_into().expect("8 bytes"));
    let remaining = i64::from_be_bytes(remaining.try_into().expect("8 bytes"));
    Ok((ttl, remaining))
}
