//! Reading and bulk-writing bbolt database files.
//!
//! bbolt (Go's `go.etcd.io/bbolt`, the storage of etcd's backend and of its snapshots) keeps a
//! B+tree of pages in one file: two meta pages, then branch, leaf and freelist pages. Top-level
//! buckets are keys of the root bucket; their values point at each bucket's own tree, or hold it
//! inline when it is small. This crate knows buckets and byte keys/values only.
//!
//! - [`Writer`] builds a new file from buckets and keys given in ascending order, streaming:
//!   it keeps in memory one pending page per tree level, however big the file. The result is a
//!   tight file (every page below the high-water mark is in use, with an empty freelist) that
//!   bbolt 1.3/1.4 opens, checks and modifies.
//! - [`Reader`] reads any bbolt file page by page with positional reads (inline buckets,
//!   overflow pages, files without a synced freelist), looks keys up by descending the trees,
//!   and runs bbolt's consistency check ([`Reader::check`]).
//!
//! The byte layout follows bbolt's `internal/common` package: little-endian integers, 16-byte
//! page headers and elements, FNV-1a checksummed meta records.

mod format;
mod reader;
mod writer;

pub use format::{MAX_KEY_SIZE, MAX_PAGE_SIZE, MAX_VALUE_SIZE, MIN_PAGE_SIZE};
pub use reader::{BucketStats, Reader};
pub use writer::{DEFAULT_PAGE_SIZE, Writer};

/// A failure to read or write a bbolt file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read or written.
    #[error("bbolt file I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a valid bbolt file (bad meta pages, malformed or out-of-range pages).
    #[error("corrupt bbolt file: {0}")]
    Corrupt(String),
    /// Buckets or keys given to the [`Writer`] out of ascending order.
    #[error("out of order: {0}")]
    Order(String),
    /// An argument bbolt would refuse (empty or too-large key, bad page size, no bucket open).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The named top-level bucket does not exist.
    #[error("no bucket {0:?}")]
    BucketNotFound(String),
    /// The file uses something this crate does not handle (a nested bucket where keys were asked).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// [`Reader::check`] found inconsistencies; each string is one, worded like bbolt's.
    #[error("consistency check failed with {} error(s): {}", .0.len(), .0.join("; "))]
    Check(Vec<String>),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
