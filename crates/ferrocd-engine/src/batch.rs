//! Engine-independent write batches.

use crate::Bucket;

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Store `value` under `key`.
    Put { bucket: Bucket, key: Vec<u8>, value: Vec<u8> },
    /// Remove `key`.
    Delete { bucket: Bucket, key: Vec<u8> },
    /// Remove every key in `[start, end)`.
    DeleteRange { bucket: Bucket, start: Vec<u8>, end: Vec<u8> },
}

/// An ordered list of operations applied atomically by [`crate::Engine::write`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    bytes: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put of `value` under `key`.
    pub fn put(&mut self, bucket: Bucket, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += key.len() + value.len();
        self.ops.push(BatchOp::Put { bucket, key, value });
    }

    /// Adds a delete of `key`.
    pub fn delete(&mut self, bucket: Bucket, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.bytes += key.len();
        self.ops.push(BatchOp::Delete { bucket, key });
    }

    /// Adds a delete of every key in `[start, end)`.
    pub fn delete_range(&mut self, bucket: Bucket, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        let (start, end) = (start.into(), end.into());
        self.bytes += start.len() + end.len();
        self.ops.push(BatchOp::DeleteRange { bucket, start, end });
    }

    /// Appends every operation of `other`, after this batch's own.
    pub fn append(&mut self, other: WriteBatch) {
        self.bytes += other.bytes;
        self.ops.extend(other.ops);
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The sum of the key and value lengths in the batch.
    pub fn payload_bytes(&self) -> usize {
        self.bytes
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Consumes the batch into its operations.
    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }
}
