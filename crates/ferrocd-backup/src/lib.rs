//! etcd's backend over ferrocd's stores, both ways.
//!
//! - [`export`] writes a member's state — the keyspace's history, leases, users and roles, and
//!   the cluster facts the caller passes in ([`Cluster`]: members, alarms, Raft's index and
//!   term) — as etcd's backend: etcd's buckets in bbolt's order, etcd's keys and encodings
//!   ([`schema`]), into any [`Sink`]. Into a [`ferrocd_bbolt::Writer`] that is a database file
//!   etcd's tools and etcd itself open ([`write_db`]); into a [`BackendHash`] it is etcd's
//!   `Maintenance.Hash`.
//! - [`restore`] reads such a file — a snapshot of a real etcd, or one of ferrocd — back into a
//!   ferrocd engine, keeping every revision (optionally bumped and compacted, as etcdutl does).
//! - [`snapshot_file`] checks a snapshot file's SHA-256 trailer, as etcdutl does, and
//!   [`status`] answers `snapshot status`.
//!
//! The engine is read through one consistent [`ReadView`], so a snapshot is a point in time
//! however long it takes; nothing is held in memory beyond one record.

mod export;
mod restore;
pub mod schema;
pub mod snapshot_file;

pub use export::{BackendHash, Cluster, Sink, export, write_db};
pub use restore::{PROGRESS_EVERY, RestoreOptions, Restored, restore, restore_reporting};
pub use snapshot_file::{Status, status};

/// What can go wrong reading or writing etcd's backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Bbolt(#[from] ferrocd_bbolt::Error),
    #[error("{0}")]
    Engine(#[from] ferrocd_engine::Error),
    /// A record that is not in etcd's (or ferrocd's) format.
    #[error("{0}")]
    Corrupt(String),
    /// A snapshot file whose checksum is missing or wrong, or an option etcdutl refuses.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests;
