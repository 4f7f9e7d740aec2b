//! Unit tests of the lessor, one operation and one error at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocd_engine::{BatchOp, Engine, MemEngine, WriteBatch};

use crate::codec::{encode_key, encode_value};
use crate::{
    Clock, Error, FOREVER_REMAINING_SECS, IdGenerator, LEASE_BUCKET, LeaseId, Lessor, MAX_LEASE_TTL, ManualClock,
    Options, Renewal, SystemClock, TimeToLive,
};

const SEC: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn options() -> Options {
    Options { min_ttl_secs: 2, expired_retry: 3 * SEC, checkpoint_interval: None }
}

fn lessor(options: Options) -> (Lessor, ManualClock) {
    let clock = ManualClock::new(100 * SEC);
    (Lessor::new(options, Arc::new(clock.clone())), clock)
}

fn primary() -> (Lessor, ManualClock) {
    let (mut l, clock) = lessor(options());
    l.promote(Duration::ZERO);
    (l, clock)
}

fn grant(l: &mut Lessor, id: LeaseId, ttl: i64) -> i64 {
    l.grant(id, ttl, &mut WriteBatch::new()).unwrap()
}

fn ttl_of(l: &Lessor, id: LeaseId) -> i64 {
    l.time_to_live(id, false).unwrap().remaining_secs
}

#[test]
fn error_messages_are_etcds() {
    assert_eq!(Error::LeaseNotFound.to_string(), "etcdserver: requested lease not found");
    assert_eq!(Error::LeaseExists.to_string(), "etcdserver: lease already exists");
    assert_eq!(Error::TtlTooLarge.to_string(), "etcdserver: too large lease TTL");
    assert_eq!(Error::NotPrimary.to_string(), "not a primary lessor");
}

#[test]
fn min_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
    assert_eq!(Options::min_ttl_for_election_timeout(SEC), 2);
    assert_eq!(Options::min_ttl_for_election_timeout(2 * SEC), 3);
    assert_eq!(Options::min_ttl_for_election_timeout(ms(100)), 1);
    assert_eq!(Options::min_ttl_for_election_timeout(Duration::ZERO), 0);
    assert_eq!(Options::default().min_ttl_secs, 2);
}

#[test]
fn grant_persists_and_raises_to_the_minimum() {
    let (mut l, _) = lessor(options());
    let mut batch = WriteBatch::new();
    assert_eq!(l.grant(7, 1, &mut batch).unwrap(), 2);
    assert_eq!(l.grant(8, 60, &mut batch).unwrap(), 60);
    assert_eq!(l.grant(-3, -5, &mut batch).unwrap(), 2, "negative ids and TTLs are etcd's too");
    assert_eq!(l.grant(9, MAX_LEASE_TTL, &mut batch).unwrap(), MAX_LEASE_TTL);
    assert_eq!(
        batch.ops()[..2],
        [
            BatchOp::Put { bucket: LEASE_BUCKET, key: 7i64.to_be_bytes().to_vec(), value: encode_value(2, 0).to_vec() },
            BatchOp::Put {
                bucket: LEASE_BUCKET,
                key: 8i64.to_be_bytes().to_vec(),
                value: encode_value(60, 0).to_vec()
            },
        ]
    );
    assert_eq!(l.leases(), vec![-3, 7, 8, 9]);
    assert_eq!(l.len(), 4);
    assert!(l.exists(8) && !l.exists(10) && !l.is_empty());
    let info = l.lease(8).unwrap();
    assert_eq!((info.ttl, info.checkpointed_remaining, info.expiry, info.keys), (60, 0, None, 0));
}

#[test]
fn grant_errors_change_nothing() {
    let (mut l, _) = lessor(options());
    grant(&mut l, 1, 10);
    let mut batch = WriteBatch::new();
    assert!(matches!(l.grant(0, 10, &mut batch), Err(Error::LeaseNotFound)));
    assert!(matches!(l.grant(2, MAX_LEASE_TTL + 1, &mut batch), Err(Error::TtlTooLarge)));
    assert!(matches!(l.grant(1, MAX_LEASE_TTL + 1, &mut batch), Err(Error::TtlTooLarge)), "TTL checked first");
    assert!(matches!(l.grant(1, 30, &mut batch), Err(Error::LeaseExists)));
    assert!(batch.is_empty());
    assert_eq!(l.leases(), vec![1]);
    assert_eq!(l.lease(1).unwrap().ttl, 10);
}

#[test]
fn revoke_returns_sorted_keys_and_deletes_the_record() {
    let (mut l, _) = lessor(options());
    grant(&mut l, 1, 10);
    grant(&mut l, 2, 10);
    for key in [&b"c"[..], b"a", b"b"] {
        l.attach(1, key).unwrap();
    }
    l.attach(2, b"z").unwrap();
    let mut batch = WriteBatch::new();
    assert_eq!(l.revoke(1, &mut batch).unwrap(), vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(batch.ops(), [BatchOp::Delete { bucket: LEASE_BUCKET, key: 1i64.to_be_bytes().to_vec() }]);
    assert_eq!(l.lease_of(b"a"), None);
    assert_eq!(l.lease_of(b"z"), Some(2));
    assert!(matches!(l.revoke(1, &mut batch), Err(Error::LeaseNotFound)));
    assert_eq!(batch.len(), 1);
    assert_eq!(l.revoke(2, &mut batch).unwrap(), vec![b"z".to_vec()]);
    assert!(l.is_empty());
}

#[test]
fn a_key_belongs_to_one_lease_at_most() {
    let (mut l, _) = lessor(options());
    grant(&mut l, 1, 10);
    grant(&mut l, 2, 10);
    assert!(matches!(l.attach(3, b"k"), Err(Error::LeaseNotFound)));
    assert!(matches!(l.detach(3, b"k"), Err(Error::LeaseNotFound)));
    l.attach(1, b"k").unwrap();
    l.attach(1, b"k").unwrap();
    assert_eq!(l.lease(1).unwrap().keys, 1);
    l.attach(2, b"k").unwrap();
    assert_eq!(l.lease_of(b"k"), Some(2));
    assert_eq!((l.lease(1).unwrap().keys, l.lease(2).unwrap().keys), (0, 1));
    l.detach(1, b"k").unwrap();
    assert_eq!(l.lease_of(b"k"), Some(2), "detaching from another lease does nothing");
    l.detach(2, b"k").unwrap();
    l.detach(2, b"k").unwrap();
    assert_eq!(l.lease_of(b"k"), None);
    assert_eq!(l.revoke(2, &mut WriteBatch::new()).unwrap(), Vec::<Vec<u8>>::new());
}

#[test]
fn many_keys_stay_sorted_through_growth_and_shrinking() {
    let (mut l, _) = lessor(options());
    grant(&mut l, 1, 10);
    let keys: Vec<Vec<u8>> = (0..100u32).rev().map(|i| format!("key{i:03}").into_bytes()).collect();
    for key in &keys {
        l.attach(1, key).unwrap();
    }
    for key in keys.iter().step_by(2) {
        l.detach(1, key).unwrap();
    }
    let mut expected: Vec<Vec<u8>> = keys.iter().skip(1).step_by(2).cloned().collect();
    expected.sort();
    assert_eq!(l.time_to_live(1, true).unwrap().keys, expected);
    assert_eq!(l.lease(1).unwrap().keys, 50);
    assert_eq!(l.revoke(1, &mut WriteBatch::new()).unwrap(), expected);
}

#[test]
fn time_to_live_truncates_and_lists_keys_on_request() {
    let (mut l, clock) = lessor(options());
    grant(&mut l, 1, 10);
    l.attach(1, b"b").unwrap();
    l.attach(1, b"a").unwrap();
    assert_eq!(
        l.time_to_live(1, false),
        Some(TimeToLive { granted_ttl: 10, remaining_secs: FOREVER_REMAINING_SECS, keys: vec![] })
    );
    l.promote(Duration::ZERO);
    assert_eq!(ttl_of(&l, 1), 10);
    clock.advance(ms(1));
    assert_eq!(ttl_of(&l, 1), 9);
    clock.advance(ms(8_999));
    assert_eq!(ttl_of(&l, 1), 1, "exactly one second left");
    clock.advance(ms(1));
    assert_eq!(ttl_of(&l, 1), 0);
    clock.advance(5 * SEC);
    let ttl = l.time_to_live(1, true).unwrap();
    assert_eq!((ttl.granted_ttl, ttl.remaining_secs), (10, 0), "expired, awaiting revoke");
    assert_eq!(ttl.keys, vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(l.time_to_live(2, true), None);
}

#[test]
fn renew_needs_a_primary_and_a_live_lease() {
    let (mut l, clock) = lessor(options());
    grant(&mut l, 1, 10);
    assert!(matches!(l.renew(1), Err(Error::NotPrimary)));
    assert!(matches!(l.renew(2), Err(Error::NotPrimary)), "primary checked first");
    l.promote(Duration::ZERO);
    assert!(matches!(l.renew(2), Err(Error::LeaseNotFound)));
    clock.advance(6 * SEC);
    assert_eq!(ttl_of(&l, 1), 4);
    assert_eq!(l.renew(1).unwrap(), Renewal { ttl: 10, clear_checkpoint: false });
    assert_eq!(ttl_of(&l, 1), 10);
    clock.advance(10 * SEC);
    assert!(matches!(l.renew(1), Err(Error::LeaseNotFound)), "expired exactly now");
    assert!(l.exists(1), "an expired lease stays until revoked");
    l.demote();
    assert!(matches!(l.renew(1), Err(Error::NotPrimary)));
}

#[test]
fn renew_asks_to_clear_a_checkpoint_but_persists_nothing() {
    let (mut l, clock) = primary();
    grant(&mut l, 1, 100);
    assert!(l.apply_checkpoint(1, 40, &mut WriteBatch::new()));
    assert_eq!(ttl_of(&l, 1), 100, "a checkpoint does not move the expiry");
    clock.advance(SEC);
    assert_eq!(l.renew(1).unwrap(), Renewal { ttl: 100, clear_checkpoint: true });
    assert_eq!(ttl_of(&l, 1), 100, "renew gives the whole TTL, not the checkpoint");
    assert_eq!(l.lease(1).unwrap().checkpointed_remaining, 40, "cleared only through Raft");
    l.apply_checkpoint(1, 0, &mut WriteBatch::new());
    assert_eq!(l.renew(1).unwrap(), Renewal { ttl: 100, clear_checkpoint: false });
}

#[test]
fn promote_uses_checkpoints_and_extends_demote_stops_the_clocks() {
    let (mut l, clock) = lessor(options());
    grant(&mut l, 1, 100);
    grant(&mut l, 2, 100);
    l.apply_checkpoint(2, 30, &mut WriteBatch::new());
    assert!(!l.is_primary());
    l.promote(2 * SEC);
    assert!(l.is_primary());
    assert_eq!((ttl_of(&l, 1), ttl_of(&l, 2)), (102, 32));
    assert_eq!(l.lease(2).unwrap().expiry, Some(clock.now() + 32 * SEC));
    grant(&mut l, 3, 5);
    assert_eq!(ttl_of(&l, 3), 5, "a grant on a primary is not extended");
    clock.advance(40 * SEC);
    assert_eq!(l.expired(10), vec![3, 2]);
    l.demote();
    assert!(!l.is_primary());
    assert_eq!(l.lease(1).unwrap().expiry, None);
    assert_eq!(ttl_of(&l, 3), FOREVER_REMAINING_SECS);
    clock.advance(1000 * SEC);
    assert_eq!(l.expired(10), Vec::<LeaseId>::new());
    grant(&mut l, 4, 5);
    assert_eq!(ttl_of(&l, 4), FOREVER_REMAINING_SECS);
    l.promote(Duration::ZERO);
    assert_eq!((ttl_of(&l, 1), ttl_of(&l, 2), ttl_of(&l, 4)), (100, 30, 5));
}

#[test]
fn expired_reports_in_due_order_up_to_the_limit() {
    let (mut l, clock) = primary();
    for (id, ttl) in [(1, 30), (2, 10), (3, 20), (4, 10), (5, 40)] {
        grant(&mut l, id, ttl);
    }
    assert!(l.expired(10).is_empty());
    clock.advance(30 * SEC);
    assert_eq!(l.expired(3), vec![2, 4, 3]);
    assert_eq!(l.expired(3), vec![1]);
    assert!(l.expired(3).is_empty(), "reported leases wait for the retry delay");
    assert!(l.expired(0).is_empty());
    clock.advance(ms(2_999));
    assert!(l.expired(10).is_empty());
    clock.advance(ms(1));
    assert_eq!(l.expired(10), vec![1, 2, 3, 4], "still not revoked: reported again");
    l.revoke(2, &mut WriteBatch::new()).unwrap();
    clock.advance(10 * SEC);
    assert_eq!(l.expired(10), vec![1, 3, 4, 5], "a revoked lease is never reported");
}

#[test]
fn a_renewed_lease_is_not_reported() {
    let (mut l, clock) = primary();
    grant(&mut l, 1, 10);
    grant(&mut l, 2, 10);
    clock.advance(9 * SEC);
    l.renew(1).unwrap();
    clock.advance(SEC);
    assert_eq!(l.expired(10), vec![2]);
    clock.advance(8 * SEC);
    assert_eq!(l.expired(10), vec![2]);
    clock.advance(SEC);
    assert_eq!(l.expired(10), vec![1]);
}

#[test]
fn a_zero_retry_delay_still_reports_each_lease_once_per_call() {
    let (mut l, clock) = lessor(Options { expired_retry: Duration::ZERO, ..options() });
    l.promote(Duration::ZERO);
    grant(&mut l, 1, 5);
    grant(&mut l, 2, 5);
    clock.advance(5 * SEC);
    assert_eq!(l.expired(10), vec![1, 2]);
    assert_eq!(l.expired(10), vec![1, 2]);
}

fn checkpointing() -> (Lessor, ManualClock) {
    let (mut l, clock) = lessor(Options { checkpoint_interval: Some(10 * SEC), ..options() });
    l.promote(Duration::ZERO);
    (l, clock)
}

#[test]
fn checkpoints_are_off_unless_enabled() {
    let (mut l, clock) = primary();
    grant(&mut l, 1, 100);
    clock.advance(50 * SEC);
    assert!(l.checkpoints(10).is_empty());
}

#[test]
fn checkpoints_fall_due_an_interval_after_grant_and_round_up() {
    let (mut l, clock) = checkpointing();
    grant(&mut l, 1, 100);
    grant(&mut l, 2, 10);
    grant(&mut l, 3, 11);
    clock.advance(ms(9_999));
    assert!(l.checkpoints(10).is_empty());
    clock.advance(ms(500));
    assert_eq!(l.checkpoints(10), vec![(1, 90), (3, 1)], "a lease no longer than an interval is never due");
    assert!(l.checkpoints(10).is_empty(), "not again before it is applied");
    let mut batch = WriteBatch::new();
    assert!(l.apply_checkpoint(1, 90, &mut batch));
    assert_eq!(
        batch.ops(),
        [BatchOp::Put { bucket: LEASE_BUCKET, key: encode_key(1).to_vec(), value: encode_value(100, 90).to_vec() }]
    );
    assert!(l.apply_checkpoint(3, 1, &mut WriteBatch::new()));
    clock.advance(10 * SEC);
    assert_eq!(l.checkpoints(10), vec![(1, 80)], "rescheduled by apply, unless it would not outlive an interval");
}

#[test]
fn checkpoints_respect_the_limit_and_skip_expired_and_just_renewed_leases() {
    let (mut l, clock) = checkpointing();
    for id in 1..=5 {
        grant(&mut l, id, 100);
    }
    grant(&mut l, 6, 12);
    clock.advance(ms(12_500));
    l.renew(2).unwrap();
    clock.advance(ms(500));
    assert_eq!(l.checkpoints(2), vec![(1, 87), (3, 87)], "2 was renewed: nothing to record, try later");
    assert_eq!(l.checkpoints(10), vec![(4, 87), (5, 87)], "6 expired");
    clock.advance(10 * SEC);
    assert_eq!(l.checkpoints(10), vec![(2, 90)]);
    l.demote();
    clock.advance(100 * SEC);
    assert!(l.checkpoints(10).is_empty(), "only a primary checkpoints");
}

#[test]
fn checkpoints_of_missing_leases_are_ignored() {
    let (mut l, _) = checkpointing();
    let mut batch = WriteBatch::new();
    assert!(!l.apply_checkpoint(1, 5, &mut batch));
    assert!(batch.is_empty());
    grant(&mut l, 1, 100);
    l.apply_checkpoint(1, -5, &mut batch);
    assert_eq!(l.lease(1).unwrap().checkpointed_remaining, 0);
}

fn engine_with(batch: WriteBatch) -> MemEngine {
    let engine = MemEngine::new(Lessor::BUCKETS);
    engine.write(batch, true).unwrap();
    engine
}

#[test]
fn load_rebuilds_leases_without_keys_and_not_primary() {
    let (mut l, clock) = primary();
    let mut batch = WriteBatch::new();
    for (id, ttl) in [(1, 10), (-2, 20), (3, 30), (i64::MAX, 40)] {
        l.grant(id, ttl, &mut batch).unwrap();
    }
    l.attach(1, b"k").unwrap();
    l.apply_checkpoint(3, 7, &mut batch);
    l.revoke(-2, &mut batch).unwrap();
    let engine = engine_with(batch);
    let loaded = Lessor::load(&engine, options(), Arc::new(clock.clone())).unwrap();
    assert!(!loaded.is_primary());
    assert_eq!(loaded.leases(), vec![1, 3, i64::MAX]);
    assert_eq!(loaded.lease(1).unwrap().keys, 0, "keys come back from the keyspace");
    assert_eq!(loaded.lease(3).unwrap().checkpointed_remaining, 7);
    assert_eq!(loaded.lease(i64::MAX).unwrap().ttl, 40);

    let raised = Lessor::load(&engine.snapshot(), Options { min_ttl_secs: 15, ..options() }, Arc::new(clock)).unwrap();
    assert_eq!(raised.leases().iter().map(|&id| raised.lease(id).unwrap().ttl).collect::<Vec<_>>(), [15, 30, 40]);
}

#[test]
fn load_rejects_corrupt_records() {
    for (key, value) in [
        (vec![0; 7], encode_value(5, 0).to_vec()),
        (encode_key(0).to_vec(), encode_value(5, 0).to_vec()),
        (encode_key(1).to_vec(), vec![0; 15]),
        (encode_key(1).to_vec(), vec![0; 17]),
    ] {
        let mut batch = WriteBatch::new();
        batch.put(LEASE_BUCKET, key, value);
        let engine = engine_with(batch);
        let err = Lessor::load(&engine, options(), Arc::new(SystemClock::new())).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err}");
    }
    let missing_bucket = MemEngine::new(&[]);
    assert!(matches!(Lessor::load(&missing_bucket, options(), Arc::new(SystemClock::new())), Err(Error::Engine(_))));
}

#[test]
fn the_stored_layout_is_big_endian_id_ttl_remaining() {
    assert_eq!(encode_key(0x0102_0304_0506_0708), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(encode_key(-1), [0xff; 8]);
    assert_eq!(encode_value(0x10, 0x0203), [0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 2, 3]);
}

#[test]
fn ids_follow_etcds_generator_and_skip_ids_in_use() {
    let mut ids = IdGenerator::new(0x1234, 0x00ab_cdef_0123);
    assert_eq!(ids.next_id(), 0x1234_abcd_ef01_2301);
    assert_eq!(ids.next_id(), 0x1234_abcd_ef01_2302);
    let mut high = IdGenerator::new(0xffff, 0);
    assert_eq!(high.next_id(), 0x7fff_0000_0000_0001, "always positive");
    let mut zero = IdGenerator::new(0, (1 << 40) - 1);
    for _ in 0..255 {
        zero.next_id();
    }
    assert_eq!(zero.next_id(), 1, "wraps past 0");

    let (mut l, _) = lessor(options());
    let mut ids = IdGenerator::new(1, 0);
    let first = ids.clone().next_id();
    grant(&mut l, first, 10);
    grant(&mut l, first + 1, 10);
    assert_eq!(l.fresh_id(&mut ids), first + 2);
}

#[test]
fn clocks() {
    let system = SystemClock::new();
    let a = system.now();
    assert!(system.now() >= a);
    let manual = ManualClock::new(SEC);
    let shared = manual.clone();
    manual.advance(SEC);
    assert_eq!(shared.now(), 2 * SEC);
    assert_eq!(ManualClock::default().now(), Duration::ZERO);
}

#[test]
fn a_lessor_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Lessor>();
}

#[test]
fn debug_output_is_a_summary() {
    let (mut l, _) = primary();
    grant(&mut l, 1, 10);
    let debug = format!("{l:?}");
    assert!(debug.contains("leases: 1") && debug.contains("primary: true"), "{debug}");
}

/// Scale: a million leases fit and granting them is quick; expiring 100,000 at once is too.
#[test]
fn a_million_leases() {
    const N: i64 = 1_000_000;
    let (mut l, clock) = primary();
    let start = Instant::now();
    let mut batch = WriteBatch::new();
    for id in 1..=N {
        // Spread the TTLs so that expiry order differs from id order.
        l.grant(id * 7919 % N + 1, 10 + id % 100, &mut batch).unwrap();
        if batch.len() == 10_000 {
            batch = WriteBatch::new();
        }
    }
    let granted = start.elapsed();
    assert_eq!(l.len(), N as usize);

    clock.advance(10 * SEC);
    let start = Instant::now();
    let expired = l.expired(200_000);
    let expiring = start.elapsed();
    assert_eq!(expired.len(), 10_000, "TTL 10 only");
    clock.advance(19 * SEC);
    let start = Instant::now();
    let mut reported = 0;
    loop {
        let chunk = l.expired(1_000);
        if chunk.is_empty() {
            break;
        }
        reported += chunk.len();
    }
    let chunked = start.elapsed();
    assert_eq!(reported, 200_000, "TTLs 10 to 29, TTL 10 reported again after the retry delay");
    eprintln!("1M grants: {granted:?}; 10k expired: {expiring:?}; 200k expired by 1k: {chunked:?}");
}

#[test]
fn a_hundred_thousand_expire_at_once() {
    let (mut l, clock) = primary();
    let mut batch = WriteBatch::new();
    for id in 1..=100_000 {
        l.grant(id, 5, &mut batch).unwrap();
    }
    clock.advance(5 * SEC);
    let start = Instant::now();
    let expired = l.expired(usize::MAX);
    let took = start.elapsed();
    assert_eq!(expired, (1..=100_000).collect::<Vec<_>>());
    assert!(l.expired(usize::MAX).is_empty());
    for &id in &expired[..50_000] {
        l.revoke(id, &mut batch).unwrap();
    }
    clock.advance(3 * SEC);
    assert_eq!(l.expired(usize::MAX).len(), 50_000);
    eprintln!("100k expired in {took:?}");
    assert!(took < 5 * SEC, "{took:?}");
}
