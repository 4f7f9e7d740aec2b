//! ferrocd's lease table: etcd's lessor (`server/lease/lessor.go`), without the I/O.
//!
//! [`Lessor`] holds every lease (its granted TTL, its checkpointed remaining TTL, its expiry
//! and the keys attached to it) and answers grant, revoke, keep-alive (renew), time-to-live,
//! expiry and checkpoint with etcd 3.5/3.6 semantics and exact error messages.
//!
//! It is sans-IO on purpose: no thread, no timer, no channel. Time comes from an injected
//! [`Clock`] (a [`ManualClock`] drives it in tests), the server polls [`Lessor::expired`] and
//! [`Lessor::checkpoints`] from its own ticker and proposes the resulting revokes and
//! checkpoints through Raft, and every change that must survive a restart is added to a
//! caller's [`WriteBatch`](ferrocd_engine::WriteBatch), so the server writes it atomically
//! with the key changes of the same Raft entry.
//!
//! Who may do what, as in etcd:
//! - every member applies grant, revoke, attach/detach and checkpoint (they come from Raft);
//! - only the *primary* lessor (the one on the leader, see [`Lessor::promote`]) has expiry
//!   times: it renews (keep-alive is leader-local, not a Raft entry), reports expired leases
//!   and checkpoints. A non-primary lessor's leases live forever until it is promoted.
//!
//! Layout in the engine: bucket [`LEASE_BUCKET`] maps a lease id (8 bytes, big-endian two's
//! complement) to 16 bytes: the granted TTL then the checkpointed remaining TTL, both `i64`
//! big-endian seconds (0: no checkpoint). Attached keys are not stored: etcd rebuilds them from
//! the lease field of the keyspace, so after [`Lessor::load`] the server calls
//! [`Lessor::attach`] for every live key that has a lease.
//!
//! Absences: no dependency on the keyspace (revoke returns the keys to delete; the server
//! deletes them), raft, gRPC or an async runtime; no spreading of expiries on promotion
//! (etcd's pile-up smoothing): the server bounds revokes with the `limit` of
//! [`Lessor::expired`] instead.

mod clock;
mod codec;
mod error;
mod id;
mod keys;
pub mod layout;
mod lessor;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use std::time::Duration;

use ferrocd_engine::Bucket;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use id::IdGenerator;
pub use lessor::{LeaseInfo, Lessor, Renewal, TimeToLive};

/// A lease's id. 0 (etcd's `NoLease`) is never a lease.
pub type LeaseId = i64;

/// The bucket of persisted leases.
pub const LEASE_BUCKET: Bucket = Bucket("lease");

/// The largest TTL a lease may be granted with, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// The remaining seconds a non-primary lessor reports: etcd's "forever" expiry (the largest
/// `time.Duration`) truncated to seconds.
pub const FOREVER_REMAINING_SECS: i64 = i64::MAX / 1_000_000_000;

/// Tunables of a [`Lessor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The smallest TTL a lease gets, in seconds: a grant (or a loaded lease) below it is
    /// raised to it, so no lease can expire during a leader election. The server sets it with
    /// [`Options::min_ttl_for_election_timeout`].
    pub min_ttl_secs: i64,
    /// How long after [`Lessor::expired`] reported a lease it reports it again if it is still
    /// there (the revoke proposal was lost). etcd: 3 s.
    pub expired_retry: Duration,
    /// etcd's `--experimental-enable-lease-checkpoint` with its interval
    /// (`--experimental-lease-checkpoint-interval`, 5 min in etcd): `None` disables
    /// [`Lessor::checkpoints`]. Applying a checkpoint works either way.
    pub checkpoint_interval: Option<Duration>,
}

impl Options {
    /// etcd's minimum lease TTL for an election timeout: ⌈1.5 × timeout⌉ seconds.
    pub fn min_ttl_for_election_timeout(election_timeout: Duration) -> i64 {
        let nanos = election_timeout.as_nanos().saturating_mul(3) / 2;
        i64::try_from(nanos.div_ceil(1_000_000_000)).unwrap_or(i64::MAX)
    }
}

impl Default for Options {
    /// etcd's defaults: a 1 s election timeout (minimum TTL 2 s), a 3 s retry, no checkpoints.
    fn default() -> Self {
        Self {
            min_ttl_secs: Self::min_ttl_for_election_timeout(Duration::from_secs(1)),
            expired_retry: Duration::from_secs(3),
            checkpoint_interval: None,
        }
    }
}
