//! Model-based property tests: the lessor against a plain map with explicit expiry times.
//!
//! The model keeps every lease in a `BTreeMap` and finds due leases and checkpoints by
//! scanning it, so it checks the lessor's indexed schedules (exact removal, ordering, retry)
//! and its persistence: every batch goes into a [`MemEngine`], and a reload op (and the end of
//! each case) rebuilds a lessor from it, as a restarted member would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ferrocd_engine::{Engine, MemEngine, WriteBatch};
use proptest::prelude::*;

use crate::{Error, FOREVER_REMAINING_SECS, LeaseId, Lessor, MAX_LEASE_TTL, ManualClock, Options, TimeToLive};

const SEC: u64 = 1_000_000_000;
const MIN_TTL: i64 = 2;
const RETRY: u64 = 3 * SEC;
const INTERVAL_SECS: i64 = 5;
const KEYS: [&[u8]; 5] = [b"a", b"b", b"c", b"d", b"e"];

fn options() -> Options {
    Options {
        min_ttl_secs: MIN_TTL,
        expired_retry: Duration::from_nanos(RETRY),
        checkpoint_interval: Some(Duration::from_secs(INTERVAL_SECS as u64)),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Grant(LeaseId, i64),
    Revoke(LeaseId),
    Attach(LeaseId, usize),
    Detach(LeaseId, usize),
    /// Renew, then (if asked to and the flag says so) apply the clearing checkpoint.
    Renew(LeaseId, bool),
    AdvanceMs(u64),
    PromoteMs(u64),
    Demote,
    /// Poll checkpoints, then apply them all if the flag says so (else the proposal was lost).
    Checkpoints(usize, bool),
    ApplyCheckpoint(LeaseId, i64),
    Expired(usize),
    /// Restart: load from the engine, re-attach keys from the "keyspace".
    Reload,
}

fn id() -> impl Strategy<Value = LeaseId> {
    prop_oneof![1 => Just(0), 10 => -2..=6i64]
}

fn op() -> impl Strategy<Value = Op> {
    let ttl = prop_oneof![8 => -1..25i64, 1 => Just(MAX_LEASE_TTL), 1 => Just(MAX_LEASE_TTL + 1)];
    prop_oneof![
        6 => (id(), ttl).prop_map(|(id, ttl)| Op::Grant(id, ttl)),
        2 => id().prop_map(Op::Revoke),
        3 => (id(), 0..KEYS.len()).prop_map(|(id, k)| Op::Attach(id, k)),
        2 => (id(), 0..KEYS.len()).prop_map(|(id, k)| Op::Detach(id, k)),
        4 => (id(), any::<bool>()).prop_map(|(id, apply)| Op::Renew(id, apply)),
        6 => prop_oneof![0..1_500u64, 0..8_000u64].prop_map(Op::AdvanceMs),
        2 => (0..3_000u64).prop_map(Op::PromoteMs),
        1 => Just(Op::Demote),
        3 => (0..4usize, any::<bool>()).prop_map(|(limit, apply)| Op::Checkpoints(limit, apply)),
        1 => (id(), -1..30i64).prop_map(|(id, r)| Op::ApplyCheckpoint(id, r)),
        4 => (0..5usize).prop_map(Op::Expired),
        1 => Just(Op::Reload),
    ]
}

/// What an op answered, comparable between the lessor and the model.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Ttl(i64),
    Keys(Vec<Vec<u8>>),
    Renewed(i64, bool),
    Ids(Vec<LeaseId>),
    Checkpoints(Vec<(LeaseId, i64)>),
    Applied(bool),
    Failed(String),
}

fn outcome<T>(r: Result<T, Error>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
    r.map_or_else(|e| Outcome::Failed(e.to_string()), ok)
}

fn failed(e: Error) -> Outcome {
    Outcome::Failed(e.to_string())
}

#[derive(Debug, Clone)]
struct ModelLease {
    ttl: i64,
    remaining: i64,
    /// `None`: forever (not primary).
    expiry: Option<u64>,
    /// When `expired` reports it next.
    check: Option<u64>,
    checkpoint_at: Option<u64>,
    keys: BTreeSet<Vec<u8>>,
}

impl ModelLease {
    fn remaining_ttl(&self) -> i64 {
        if self.remaining > 0 { self.remaining } else { self.ttl }
    }
}

#[derive(Debug, Default)]
struct Model {
    leases: BTreeMap<LeaseId, ModelLease>,
    primary: bool,
    now: u64,
}

impl Model {
    fn schedule_checkpoint(&mut self, id: LeaseId) {
        let now = self.now;
        let lease = self.leases.get_mut(&id).unwrap();
        if lease.remaining_ttl() > INTERVAL_SECS {
            lease.checkpoint_at = Some(now + INTERVAL_SECS as u64 * SEC);
        }
    }

    fn apply_checkpoint(&mut self, id: LeaseId, remaining: i64) -> bool {
        let Some(lease) = self.leases.get_mut(&id) else { return false };
        lease.remaining = remaining.max(0);
        if self.primary {
            self.schedule_checkpoint(id);
        }
        true
    }

    fn time_to_live(&self, id: LeaseId) -> Option<TimeToLive> {
        let l = self.leases.get(&id)?;
        let remaining_secs = l.expiry.map_or(FOREVER_REMAINING_SECS, |e| (e.saturating_sub(self.now) / SEC) as i64);
        Some(TimeToLive { granted_ttl: l.ttl, remaining_secs, keys: l.keys.iter().cloned().collect() })
    }

    fn step(&mut self, op: &Op) -> Outcome {
        let now = self.now;
        match *op {
            Op::Grant(id, ttl) => {
                if id == 0 {
                    return failed(Error::LeaseNotFound);
                }
                if ttl > MAX_LEASE_TTL {
                    return failed(Error::TtlTooLarge);
                }
                if self.leases.contains_key(&id) {
                    return failed(Error::LeaseExists);
                }
                let ttl = ttl.max(MIN_TTL);
                let expiry = self.primary.then(|| now + ttl as u64 * SEC);
                let lease =
                    ModelLease { ttl, remaining: 0, expiry, check: expiry, checkpoint_at: None, keys: BTreeSet::new() };
                self.leases.insert(id, lease);
                if self.primary {
                    self.schedule_checkpoint(id);
                }
                Outcome::Ttl(ttl)
            }
            Op::Revoke(id) => match self.leases.remove(&id) {
                Some(l) => Outcome::Keys(l.keys.into_iter().collect()),
                None => failed(Error::LeaseNotFound),
            },
            Op::Attach(id, k) => {
                if !self.leases.contains_key(&id) {
                    return failed(Error::LeaseNotFound);
                }
                for l in self.leases.values_mut() {
                    l.keys.remove(KEYS[k]);
                }
                self.leases.get_mut(&id).unwrap().keys.insert(KEYS[k].to_vec());
                Outcome::Done
            }
            Op::Detach(id, k) => match self.leases.get_mut(&id) {
                Some(l) => {
                    l.keys.remove(KEYS[k]);
                    Outcome::Done
                }
                None => failed(Error::LeaseNotFound),
            },
            Op::Renew(id, apply_clear) => {
                if !self.primary {
                    return failed(Error::NotPrimary);
                }
                let Some(l) = self.leases.get_mut(&id) else { return failed(Error::LeaseNotFound) };
                if l.expiry.unwrap() <= now {
                    return failed(Error::LeaseNotFound);
                }
                l.expiry = Some(now + l.ttl as u64 * SEC);
                l.check = l.expiry;
                let (ttl, clear) = (l.ttl, l.remaining > 0);
                if clear && apply_clear {
                    self.apply_checkpoint(id, 0);
                }
                Outcome::Renewed(ttl, clear)
            }
            Op::AdvanceMs(ms) => {
                self.now += ms * 1_000_000;
                Outcome::Done
            }
            Op::PromoteMs(ms) => {
                self.primary = true;
                let ids: Vec<LeaseId> = self.leases.keys().copied().collect();
                for id in ids {
                    let l = self.leases.get_mut(&id).unwrap();
                    l.expiry = Some(now + l.remaining_ttl() as u64 * SEC + ms * 1_000_000);
                    l.check = l.expiry;
                    l.checkpoint_at = None;
                    self.schedule_checkpoint(id);
                }
                Outcome::Done
            }
            Op::Demote => {
                self.demote();
                Outcome::Done
            }
            Op::Checkpoints(limit, apply) => {
                let mut due: Vec<(u64, LeaseId)> = self
                    .leases
                    .iter()
                    .filter_map(|(&id, l)| l.checkpoint_at.filter(|&t| t <= now).map(|t| (t, id)))
                    .collect();
                due.sort_unstable();
                let mut out = Vec::new();
                for (_, id) in due {
                    if out.len() == limit {
                        break;
                    }
                    let l = self.leases.get_mut(&id).unwrap();
                    l.checkpoint_at = None;
                    let expiry = l.expiry.unwrap();
                    if expiry <= now {
                        continue;
                    }
                    let remaining = (expiry - now).div_ceil(SEC) as i64;
                    if remaining >= l.ttl {
                        l.checkpoint_at = Some(now + INTERVAL_SECS as u64 * SEC);
                    } else {
                        out.push((id, remaining));
                    }
                }
                if apply {
                    for &(id, remaining) in &out {
                        self.apply_checkpoint(id, remaining);
                    }
                }
                Outcome::Checkpoints(out)
            }
            Op::ApplyCheckpoint(id, remaining) => Outcome::Applied(self.apply_checkpoint(id, remaining)),
            Op::Expired(limit) => {
                let mut due: Vec<(u64, LeaseId)> =
                    self.leases.iter().filter_map(|(&id, l)| l.check.filter(|&t| t <= now).map(|t| (t, id))).collect();
                due.sort_unstable();
                due.truncate(limit);
                for &(_, id) in &due {
                    self.leases.get_mut(&id).unwrap().check = Some(now + RETRY);
                }
                Outcome::Ids(due.into_iter().map(|(_, id)| id).collect())
            }
            Op::Reload => {
                self.demote();
                for l in self.leases.values_mut() {
                    l.ttl = l.ttl.max(MIN_TTL);
                }
                Outcome::Done
            }
        }
    }

    fn demote(&mut self) {
        self.primary = false;
        for l in self.leases.values_mut() {
            (l.expiry, l.check, l.checkpoint_at) = (None, None, None);
        }
    }
}

/// The lessor under test, with its engine and clock.
struct Real {
    lessor: Lessor,
    engine: MemEngine,
    clock: ManualClock,
}

impl Real {
    fn write(&self, batch: WriteBatch) {
        self.engine.write(batch, false).unwrap();
    }

    fn load(&self) -> Lessor {
        Lessor::load(&self.engine, options(), Arc::new(self.clock.clone())).unwrap()
    }

    fn step(&mut self, op: &Op, model: &Model) -> Outcome {
        let mut batch = WriteBatch::new();
        let l = &mut self.lessor;
        let out = match *op {
            Op::Grant(id, ttl) => outcome(l.grant(id, ttl, &mut batch), Outcome::Ttl),
            Op::Revoke(id) => outcome(l.revoke(id, &mut batch), Outcome::Keys),
            Op::Attach(id, k) => outcome(l.attach(id, KEYS[k]), |()| Outcome::Done),
            Op::Detach(id, k) => outcome(l.detach(id, KEYS[k]), |()| Outcome::Done),
            Op::Renew(id, apply_clear) => outcome(l.renew(id), |r| {
                if r.clear_checkpoint && apply_clear {
                    assert!(l.apply_checkpoint(id, 0, &mut batch));
                }
                Outcome::Renewed(r.ttl, r.clear_checkpoint)
            }),
            Op::AdvanceMs(ms) => {
                self.clock.advance(Duration::from_millis(ms));
                Outcome::Done
            }
            Op::PromoteMs(ms) => {
                l.promote(Duration::from_millis(ms));
                Outcome::Done
            }
            Op::Demote => {
                l.demote();
                Outcome::Done
            }
            Op::Checkpoints(limit, apply) => {
                let cps = l.checkpoints(limit);
                if apply {
                    for &(id, remaining) in &cps {
                        assert!(l.apply_checkpoint(id, remaining, &mut batch));
                    }
                }
                Outcome::Checkpoints(cps)
            }
            Op::ApplyCheckpoint(id, remaining) => Outcome::Applied(l.apply_checkpoint(id, remaining, &mut batch)),
            Op::Expired(limit) => Outcome::Ids(l.expired(limit)),
            Op::Reload => {
                let mut loaded = self.load();
                // The server re-attaches keys from the keyspace (the model stands for it).
                for (&id, lease) in &model.leases {
                    for key in &lease.keys {
                        loaded.attach(id, key).unwrap();
                    }
                }
                self.lessor = loaded;
                Outcome::Done
            }
        };
        self.write(batch);
        out
    }
}

fn check_state(l: &Lessor, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(l.leases(), model.leases.keys().copied().collect::<Vec<_>>());
    prop_assert_eq!(l.len(), model.leases.len());
    prop_assert_eq!(l.is_primary(), model.primary);
    for (&id, m) in &model.leases {
        prop_assert_eq!(l.time_to_live(id, true), model.time_to_live(id), "lease {}", id);
        let info = l.lease(id).unwrap();
        prop_assert_eq!(info.checkpointed_remaining, m.remaining, "lease {}", id);
        prop_assert_eq!(info.expiry, m.expiry.map(Duration::from_nanos), "lease {}", id);
        prop_assert_eq!(info.keys, m.keys.len());
    }
    for key in KEYS {
        let owner = model.leases.iter().find(|(_, m)| m.keys.contains(key)).map(|(&id, _)| id);
        prop_assert_eq!(l.lease_of(key), owner);
    }
    Ok(())
}

/// What survives a restart: ids, TTLs and checkpointed remaining TTLs.
fn check_persisted(loaded: &Lessor, model: &Model) -> Result<(), TestCaseError> {
    let persisted: Vec<(LeaseId, i64, i64)> = loaded
        .leases()
        .into_iter()
        .map(|id| loaded.lease(id).unwrap())
        .map(|i| (i.id, i.ttl, i.checkpointed_remaining))
        .collect();
    let expected: Vec<(LeaseId, i64, i64)> = model.leases.iter().map(|(&id, m)| (id, m.ttl, m.remaining)).collect();
    prop_assert_eq!(persisted, expected);
    prop_assert!(!loaded.is_primary());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn lessor_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        let clock = ManualClock::new(Duration::from_secs(1_000));
        let mut real = Real {
            lessor: Lessor::new(options(), Arc::new(clock.clone())),
            engine: MemEngine::new(Lessor::BUCKETS),
            clock,
        };
        let mut model = Model { now: 1_000 * SEC, ..Model::default() };
        for (i, op) in ops.iter().enumerate() {
            let got = real.step(op, &model);
            let want = model.step(op);
            prop_assert_eq!(got, want, "step {}: {:?}", i, op);
            check_state(&real.lessor, &model)?;
        }
        check_persisted(&real.load(), &model)?;
    }
}
