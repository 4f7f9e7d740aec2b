//! The lease table and its two schedules: expiry checks and checkpoints.
//!
//! Times are `u64` nanoseconds on the injected clock, with `u64::MAX` meaning never (a
//! non-primary lessor's expiries, an unscheduled check). Both schedules are ordered sets of
//! `(time, id)` and every lease remembers its own entry in each, so rescheduling or revoking
//! removes the old entry exactly: no stale entry is ever reported, and a poll costs O(log n) per
//! lease it returns, however many leases there are.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ferrocd_engine::{Bucket, ReadView, Scan, WriteBatch};

use crate::codec::{decode_key, decode_value, encode_key, encode_value};
use crate::keys::Keys;
use crate::{Clock, Error, FOREVER_REMAINING_SECS, IdGenerator, LEASE_BUCKET, LeaseId, MAX_LEASE_TTL, Options, Result};

/// "Never", as a time.
const NEVER: u64 = u64::MAX;
const NANOS_PER_SEC: u64 = 1_000_000_000;

fn to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER)
}

fn secs_to_nanos(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0).saturating_mul(NANOS_PER_SEC)
}

/// One lease: 48 bytes, and no heap allocation until a key is attached.
#[derive(Debug)]
struct Lease {
    /// The granted TTL in seconds, after raising to the minimum.
    ttl: i64,
    /// The checkpointed remaining TTL in seconds; 0 (or less): none.
    remaining: i64,
    /// When the lease expires; [`NEVER`] on a non-primary lessor.
    expiry: u64,
    /// This lease's entry in the expiry schedule: its expiry, or a later retry time once
    /// [`Lessor::expired`] has reported it; [`NEVER`]: not scheduled.
    next_check: u64,
    /// This lease's entry in the checkpoint schedule; [`NEVER`]: not scheduled.
    next_checkpoint: u64,
    keys: Option<Box<Keys>>,
}

// The per-lease cost the crate promises (one hash-map slot holds it plus the 8-byte id).
const _: () = assert!(std::mem::size_of::<Lease>() == 48);

impl Lease {
    fn new(ttl: i64, remaining: i64) -> Self {
        Self { ttl, remaining, expiry: NEVER, next_check: NEVER, next_checkpoint: NEVER, keys: None }
    }

    /// What a promotion gives the lease to live: the checkpointed remaining TTL if any, else
    /// the whole TTL (etcd's `Lease.RemainingTTL`).
    fn remaining_ttl(&self) -> i64 {
        if self.remaining > 0 { self.remaining } else { self.ttl }
    }

    fn remove_key(&mut self, key: &[u8]) {
        if let Some(keys) = &mut self.keys {
            keys.remove(key);
            if keys.is_empty() {
                self.keys = None;
            }
        }
    }
}

type Queue = BTreeSet<(u64, LeaseId)>;

/// Moves lease `id`'s entry in `queue` (remembered in `slot`) to `at`; [`NEVER`] removes it.
fn requeue(queue: &mut Queue, slot: &mut u64, id: LeaseId, at: u64) {
    if *slot != NEVER {
        queue.remove(&(*slot, id));
    }
    *slot = at;
    if at != NEVER {
        queue.insert((at, id));
    }
}

/// The two schedules, apart from the table so both can be borrowed mutably together.
#[derive(Debug, Default)]
struct Schedule {
    /// `(next_check, id)` of every lease of a primary lessor.
    expiry: Queue,
    /// `(next_checkpoint, id)` of the leases of a primary lessor due a checkpoint.
    checkpoint: Queue,
}

impl Schedule {
    fn expire_at(&mut self, id: LeaseId, lease: &mut Lease, at: u64) {
        lease.expiry = at;
        requeue(&mut self.expiry, &mut lease.next_check, id, at);
    }

    /// etcd's `scheduleCheckpointIfNeeded`: a lease that would live longer than an interval
    /// gets a checkpoint one interval from now (replacing any it had).
    fn checkpoint_if_needed(&mut self, id: LeaseId, lease: &mut Lease, now: u64, interval: Option<Duration>) {
        let Some(interval) = interval else { return };
        if lease.remaining_ttl() > i64::try_from(interval.as_secs()).unwrap_or(i64::MAX) {
            requeue(&mut self.checkpoint, &mut lease.next_checkpoint, id, now.saturating_add(to_nanos(interval)));
        }
    }

    fn forget(&mut self, id: LeaseId, lease: &mut Lease) {
        requeue(&mut self.expiry, &mut lease.next_check, id, NEVER);
        requeue(&mut self.checkpoint, &mut lease.next_checkpoint, id, NEVER);
    }
}

/// What [`Lessor::time_to_live`] tells of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeToLive {
    /// The TTL the lease was granted (raised to the minimum), in seconds.
    pub granted_ttl: i64,
    /// Whole seconds until expiry, truncated as etcd does; 0 for a lease that expired and awaits
    /// its revoke (etcd would report a negative number); [`FOREVER_REMAINING_SECS`] on a
    /// non-primary lessor (the server asks the leader instead).
    pub remaining_secs: i64,
    /// The attached keys, ascending; empty unless asked for.
    pub keys: Vec<Vec<u8>>,
}

/// What a successful [`Lessor::renew`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// The lease's TTL: it now expires this many seconds from now.
    pub ttl: i64,
    /// The lease has a checkpointed remaining TTL, now stale. A keep-alive is leader-local (no
    /// Raft entry), so renew does not touch persisted state; instead the server must propose
    /// a checkpoint of `(id, 0)` through Raft, so that every member drops it and a later leader
    /// does not expire the lease early (etcd's fix for etcd-io/etcd#13491).
    pub clear_checkpoint: bool,
}

/// The full state of one lease, for status, metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: LeaseId,
    /// The granted TTL, in seconds.
    pub ttl: i64,
    /// The checkpointed remaining TTL, in seconds; 0: none.
    pub checkpointed_remaining: i64,
    /// When the lease expires on the clock; `None` on a non-primary lessor.
    pub expiry: Option<Duration>,
    /// How many keys are attached.
    pub keys: usize,
}

/// etcd's lease table. See the crate docs.
///
/// Not synchronised: the server owns it behind its own lock, since most operations are part
/// of applying a Raft entry anyway.
pub struct Lessor {
    leases: HashMap<LeaseId, Lease>,
    /// The lease each attached key belongs to.
    owners: HashMap<Vec<u8>, LeaseId>,
    schedule: Schedule,
    primary: bool,
    options: Options,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Lessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lessor")
            .field("leases", &self.leases.len())
            .field("attached_keys", &self.owners.len())
            .field("primary", &self.primary)
            .field("options", &self.options)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Lessor {
    /// The buckets the lessor uses, to open an engine with.
    pub const BUCKETS: &'static [Bucket] = &[LEASE_BUCKET];

    /// An empty, non-primary lessor.
    pub fn new(options: Options, clock: Arc<dyn Clock>) -> Self {
        Self {
            leases: HashMap::new(),
            owners: HashMap::new(),
            schedule: Schedule::default(),
            primary: false,
            options,
            clock,
        }
    }

    /// Rebuilds the lessor from the leases stored in `view`: non-primary, every TTL raised to
    /// the minimum of `options`, checkpointed remaining TTLs kept, and no keys attached (the
    /// server re-attaches them from the keyspace, which stores each key's lease).
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an undecodable lease; [`Error::Engine`].
    pub fn load(view: &impl ReadView, options: Options, clock: Arc<dyn Clock>) -> Result<Self> {
        let mut lessor = Self::new(options, clock);
        let min_ttl = lessor.options.min_ttl_secs;
        let mut corrupt = None;
        view.scan(LEASE_BUCKET, &[], None, false, &mut |key, value| match decode_key(key)
            .and_then(|id| Ok((id, decode_value(value)?)))
        {
            Ok((id, (ttl, remaining))) => {
                lessor.leases.insert(id, Lease::new(ttl.max(min_ttl), remaining.max(0)));
                Ok(Scan::Continue)
            }
            Err(e) => {
                corrupt = Some(e);
                Ok(Scan::Stop)
            }
        })?;
        if let Some(e) = corrupt {
            return Err(e);
        }
        tracing::info!(leases = lessor.leases.len(), "loaded leases");
        Ok(lessor)
    }

    fn now(&self) -> u64 {
        to_nanos(self.clock.now())
    }

    /// The lessor's tunables.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Whether the lessor is primary (see [`Lessor::promote`]).
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// The number of leases.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether there is no lease.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Whether lease `id` exists (expired leases exist until revoked).
    pub fn exists(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    /// Every lease id, ascending (etcd orders by expiry, which a follower does not have).
    pub fn leases(&self) -> Vec<LeaseId> {
        let mut ids: Vec<LeaseId> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The state of lease `id`.
    pub fn lease(&self, id: LeaseId) -> Option<LeaseInfo> {
        self.leases.get(&id).map(|lease| LeaseInfo {
            id,
            ttl: lease.ttl,
            checkpointed_remaining: lease.remaining.max(0),
            expiry: (lease.expiry != NEVER).then(|| Duration::from_nanos(lease.expiry)),
            keys: lease.keys.as_ref().map_or(0, |keys| keys.len()),
        })
    }

    /// The lease `key` is attached to.
    pub fn lease_of(&self, key: &[u8]) -> Option<LeaseId> {
        self.owners.get(key).copied()
    }

    /// etcd's LeaseTimeToLive for lease `id`, with its keys if `with_keys`; `None`: no such
    /// lease (etcd: TTL -1).
    pub fn time_to_live(&self, id: LeaseId, with_keys: bool) -> Option<TimeToLive> {
        let lease = self.leases.get(&id)?;
        let remaining_secs = if lease.expiry == NEVER {
            FOREVER_REMAINING_SECS
        } else {
            i64::try_from(lease.expiry.saturating_sub(self.now()) / NANOS_PER_SEC).unwrap_or(i64::MAX)
        };
        let keys = match (&lease.keys, with_keys) {
            (Some(keys), true) => keys.iter().cloned().collect(),
            _ => Vec::new(),
        };
        Some(TimeToLive { granted_ttl: lease.ttl, remaining_secs, keys })
    }

    /// Grants lease `id` with `ttl` seconds (raised to the minimum TTL) and returns the TTL
    /// granted. A primary lessor starts its expiry clock now; a non-primary one never expires
    /// it. The lease's record is added to `batch`.
    ///
    /// Checks in etcd's order: id 0 ([`Error::LeaseNotFound`], as etcd: the server replaces a
    /// requested 0 by a fresh id before proposing), then [`Error::TtlTooLarge`], then
    /// [`Error::LeaseExists`]. Negative ids are valid, as in etcd: a client may ask for one.
    ///
    /// # Errors
    /// As above; on error nothing changes and nothing is added to `batch`.
    pub fn grant(&mut self, id: LeaseId, ttl: i64, batch: &mut WriteBatch) -> Result<i64> {
        if id == 0 {
            return Err(Error::LeaseNotFound);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(Error::TtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(Error::LeaseExists);
        }
        let ttl = ttl.max(self.options.min_ttl_secs);
        batch.put(LEASE_BUCKET, encode_key(id), encode_value(ttl, 0));
        let now = self.now();
        let lease = self.leases.entry(id).or_insert(Lease::new(ttl, 0));
        if self.primary {
            self.schedule.expire_at(id, lease, now.saturating_add(secs_to_nanos(ttl)));
            self.schedule.checkpoint_if_needed(id, lease, now, self.options.checkpoint_interval);
        }
        Ok(ttl)
    }

    /// Removes lease `id` and returns its keys, ascending, for the server to delete in the
    /// same Raft entry. The removal of its record is added to `batch`.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`].
    pub fn revoke(&mut self, id: LeaseId, batch: &mut WriteBatch) -> Result<Vec<Vec<u8>>> {
        let mut lease = self.leases.remove(&id).ok_or(Error::LeaseNotFound)?;
        self.schedule.forget(id, &mut lease);
        batch.delete(LEASE_BUCKET, encode_key(id));
        let keys = lease.keys.map_or_else(Vec::new, |keys| keys.into_sorted_vec());
        for key in &keys {
            self.owners.remove(key);
        }
        Ok(keys)
    }

    /// Attaches `key` to lease `id`, detaching it from the lease it had: a key belongs to at
    /// most one lease. Not persisted (see the crate docs).
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`]; nothing changes then.
    pub fn attach(&mut self, id: LeaseId, key: &[u8]) -> Result<()> {
        if !self.leases.contains_key(&id) {
            return Err(Error::LeaseNotFound);
        }
        match self.owners.insert(key.to_vec(), id) {
            Some(old) if old == id => return Ok(()),
            Some(old) => self.leases.get_mut(&old).expect("owners name live leases").remove_key(key),
            None => {}
        }
        let lease = self.leases.get_mut(&id).expect("checked above");
        match &mut lease.keys {
            Some(keys) => {
                keys.insert(key.to_vec());
            }
            None => lease.keys = Some(Box::new(Keys::one(key.to_vec()))),
        }
        Ok(())
    }

    /// Detaches `key` from lease `id`; nothing happens if it is not attached to it.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`].
    pub fn detach(&mut self, id: LeaseId, key: &[u8]) -> Result<()> {
        let lease = self.leases.get_mut(&id).ok_or(Error::LeaseNotFound)?;
        if self.owners.get(key) == Some(&id) {
            self.owners.remove(key);
            lease.remove_key(key);
        }
        Ok(())
    }

    /// A keep-alive: lease `id` now expires its whole TTL from now. Only on a primary lessor;
    /// changes no persisted state (see [`Renewal::clear_checkpoint`]).
    ///
    /// # Errors
    /// [`Error::NotPrimary`] first; [`Error::LeaseNotFound`] for a missing lease or one that
    /// has expired (it awaits its revoke: etcd waits for it, then answers not found).
    pub fn renew(&mut self, id: LeaseId) -> Result<Renewal> {
        if !self.primary {
            return Err(Error::NotPrimary);
        }
        let now = self.now();
        let lease = self.leases.get_mut(&id).ok_or(Error::LeaseNotFound)?;
        if lease.expiry <= now {
            return Err(Error::LeaseNotFound);
        }
        self.schedule.expire_at(id, lease, now.saturating_add(secs_to_nanos(lease.ttl)));
        Ok(Renewal { ttl: lease.ttl, clear_checkpoint: lease.remaining > 0 })
    }

    /// Makes the lessor primary (its member became leader): every lease expires its remaining
    /// TTL (the checkpointed one if any, else the whole TTL) plus `extend` from now. etcd
    /// extends by an election timeout, so that no lease expires because of the election.
    /// Also (re)schedules checkpoints. Calling it on a primary restarts every expiry clock.
    pub fn promote(&mut self, extend: Duration) {
        let now = self.now();
        let extend = to_nanos(extend);
        let interval = self.options.checkpoint_interval;
        self.primary = true;
        self.schedule = Schedule::default();
        for (&id, lease) in &mut self.leases {
            lease.next_check = NEVER;
            lease.next_checkpoint = NEVER;
            let at = now.saturating_add(secs_to_nanos(lease.remaining_ttl())).saturating_add(extend);
            self.schedule.expire_at(id, lease, at);
            self.schedule.checkpoint_if_needed(id, lease, now, interval);
        }
        tracing::debug!(leases = self.leases.len(), "lessor promoted");
    }

    /// Makes the lessor non-primary (its member lost leadership): no lease expires, no
    /// checkpoint is due, renew fails with [`Error::NotPrimary`].
    pub fn demote(&mut self) {
        self.primary = false;
        self.schedule = Schedule::default();
        for lease in self.leases.values_mut() {
            lease.expiry = NEVER;
            lease.next_check = NEVER;
            lease.next_checkpoint = NEVER;
        }
        tracing::debug!(leases = self.leases.len(), "lessor demoted");
    }

    /// Up to `limit` leases that have expired, for the server to propose their revokes, in
    /// the order they fell due. They stay in the table until the revoke is applied; meanwhile
    /// each reported lease is not reported again until [`Options::expired_retry`] has passed
    /// (then it is, in case the proposal was lost). A renewed or revoked lease is never
    /// reported. Only a primary lessor has expired leases. O(log n) per lease returned.
    pub fn expired(&mut self, limit: usize) -> Vec<LeaseId> {
        let now = self.now();
        let mut due = Vec::new();
        while due.len() < limit {
            match self.schedule.expiry.first() {
                Some(&(at, id)) if at <= now => {
                    self.schedule.expiry.pop_first();
                    due.push(id);
                }
                _ => break,
            }
        }
        // Requeue after the loop, so that a zero retry delay cannot report a lease twice.
        let retry = now.saturating_add(to_nanos(self.options.expired_retry));
        for &id in &due {
            let lease = self.leases.get_mut(&id).expect("scheduled leases exist");
            lease.next_check = NEVER;
            requeue(&mut self.schedule.expiry, &mut lease.next_check, id, retry);
        }
        due
    }

    /// Up to `limit` checkpoints `(id, remaining seconds, rounded up)` due now, for a primary
    /// with checkpoints enabled to propose (then [`Lessor::apply_checkpoint`] them on every
    /// member). As etcd: a lease is due one checkpoint interval after it was granted, promoted
    /// or last checkpointed, if it would live longer than an interval; an expired lease is
    /// skipped. Unlike etcd, a lease renewed less than a second ago (its remaining TTL is its
    /// TTL, nothing to record) is rescheduled one interval later rather than dropped.
    pub fn checkpoints(&mut self, limit: usize) -> Vec<(LeaseId, i64)> {
        let Some(interval) = self.options.checkpoint_interval else { return Vec::new() };
        let now = self.now();
        let mut due = Vec::new();
        let mut later = Vec::new();
        while due.len() < limit {
            let Some(&(at, id)) = self.schedule.checkpoint.first() else { break };
            if at > now {
                break;
            }
            self.schedule.checkpoint.pop_first();
            let lease = self.leases.get_mut(&id).expect("scheduled leases exist");
            lease.next_checkpoint = NEVER;
            if lease.expiry <= now {
                continue;
            }
            let remaining = i64::try_from((lease.expiry - now).div_ceil(NANOS_PER_SEC)).unwrap_or(i64::MAX);
            if remaining >= lease.ttl {
                later.push(id);
            } else {
                due.push((id, remaining));
            }
        }
        let at = now.saturating_add(to_nanos(interval));
        for id in later {
            let lease = self.leases.get_mut(&id).expect("scheduled leases exist");
            requeue(&mut self.schedule.checkpoint, &mut lease.next_checkpoint, id, at);
        }
        due
    }

    /// Applies a checkpoint from Raft: lease `id` records `remaining` seconds (0: none) as
    /// its remaining TTL, used by the next [`Lessor::promote`]; its expiry does not change.
    /// The record is added to `batch`. A primary schedules the lease's next checkpoint. Returns
    /// false, changing nothing, if the lease does not exist (etcd ignores it too: it was
    /// revoked after the checkpoint was proposed).
    pub fn apply_checkpoint(&mut self, id: LeaseId, remaining: i64, batch: &mut WriteBatch) -> bool {
        let now = self.now();
        let Some(lease) = self.leases.get_mut(&id) else { return false };
        lease.remaining = remaining.max(0);
        batch.put(LEASE_BUCKET, encode_key(id), encode_value(lease.ttl, lease.remaining));
        if self.primary {
            self.schedule.checkpoint_if_needed(id, lease, now, self.options.checkpoint_interval);
        }
        true
    }

    /// The next id of `ids` not in use, for a grant that leaves the id to the server. A grant
    /// proposed concurrently may still take it first; the later grant then fails with
    /// [`Error::LeaseExists`], as in etcd.
    pub fn fresh_id(&self, ids: &mut IdGenerator) -> LeaseId {
        loop {
            let id = ids.next_id();
            if !self.leases.contains_key(&id) {
                return id;
            }
        }
    }
}
