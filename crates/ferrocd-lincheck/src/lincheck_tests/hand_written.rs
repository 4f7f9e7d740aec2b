//! Hand-written histories, linearizable or not, one anomaly each.

use std::sync::Arc;

use super::{cas, check_records, delete, get, put, unknown, v};
use crate::{History, Op, OpId, Outcome, Output, Record, Verdict, check, check_with_limit};

#[test]
fn empty_history_is_linearizable() {
    assert_eq!(check_records(vec![]), Ok(()));
    assert_eq!(check_with_limit(&History::new(), 1), Verdict::Linearizable);
}

#[test]
fn sequential_history_is_linearizable() {
    let history = vec![
        get(1, 0, 5, "k", None),
        put(1, 10, 20, "k", "a"),
        get(2, 30, 40, "k", Some("a")),
        cas(1, 50, 60, "k", Some("a"), Some("b"), true),
        cas(2, 70, 80, "k", Some("a"), Some("c"), false),
        get(2, 90, 100, "k", Some("b")),
        delete(1, 110, 120, "k"),
        get(2, 130, 140, "k", None),
        cas(1, 150, 160, "k", None, Some("c"), true),
        cas(2, 170, 180, "k", None, Some("d"), false),
        get(1, 190, 200, "k", Some("c")),
        cas(2, 210, 220, "k", Some("c"), None, true),
        get(1, 230, 240, "k", None),
    ];
    assert_eq!(check_records(history), Ok(()));
}

#[test]
fn stale_read_after_completed_put() {
    let violation = check_records(vec![put(1, 0, 10, "k", "a"), get(2, 20, 30, "k", None)]).unwrap_err();
    assert_eq!(violation.key, v("k"));
    assert_eq!(violation.state, Some(v("a")));
    assert_eq!(violation.linearized.iter().map(|(id, _)| id.index()).collect::<Vec<_>>(), [0]);
    assert_eq!(violation.stuck.iter().map(|(id, _)| id.index()).collect::<Vec<_>>(), [1]);
    assert_eq!(violation.stuck[0].1, get(2, 20, 30, "k", None));
}

#[test]
fn read_concurrent_with_put_may_see_either_value() {
    assert_eq!(check_records(vec![put(1, 0, 10, "k", "a"), get(2, 5, 15, "k", None)]), Ok(()));
    assert_eq!(check_records(vec![put(1, 0, 10, "k", "a"), get(2, 5, 15, "k", Some("a"))]), Ok(()));
    assert_eq!(check_records(vec![get(2, 5, 15, "k", Some("a")), put(1, 10, 20, "k", "a")]), Ok(()));
}

#[test]
fn read_cannot_see_a_put_called_after_it_returned() {
    assert!(check_records(vec![get(2, 0, 10, "k", Some("a")), put(1, 20, 30, "k", "a")]).is_err());
}

#[test]
fn touching_intervals_count_as_concurrent() {
    assert_eq!(check_records(vec![put(1, 0, 10, "k", "a"), get(2, 10, 20, "k", None)]), Ok(()));
}

#[test]
fn concurrent_puts_then_reads_must_agree_on_their_order() {
    let puts = || vec![put(1, 0, 10, "k", "a"), put(2, 0, 10, "k", "b")];
    let with = |reads: Vec<Record>| check_records(puts().into_iter().chain(reads).collect());
    assert_eq!(with(vec![get(3, 20, 30, "k", Some("a")), get(4, 40, 50, "k", Some("a"))]), Ok(()));
    assert_eq!(with(vec![get(3, 20, 30, "k", Some("b")), get(4, 40, 50, "k", Some("b"))]), Ok(()));
    assert!(with(vec![get(3, 20, 30, "k", Some("a")), get(4, 40, 50, "k", Some("b"))]).is_err());
    // Concurrent reads after both puts still see one final value.
    assert!(with(vec![get(3, 20, 30, "k", Some("a")), get(4, 20, 30, "k", Some("b"))]).is_err());
}

#[test]
fn reads_during_concurrent_puts_cannot_flip_back() {
    let puts = || vec![put(1, 0, 100, "k", "a"), put(2, 0, 100, "k", "b")];
    let with = |reads: Vec<Record>| check_records(puts().into_iter().chain(reads).collect());
    assert_eq!(with(vec![get(3, 10, 20, "k", Some("a")), get(3, 30, 40, "k", Some("b"))]), Ok(()));
    assert_eq!(with(vec![get(3, 10, 20, "k", Some("b")), get(3, 30, 40, "k", Some("a"))]), Ok(()));
    let flip = vec![get(3, 10, 20, "k", Some("a")), get(3, 30, 40, "k", Some("b")), get(3, 50, 60, "k", Some("a"))];
    assert!(with(flip).is_err());
}

#[test]
fn lost_write() {
    let history = vec![put(1, 0, 10, "k", "a"), put(2, 20, 30, "k", "b"), get(3, 40, 50, "k", Some("a"))];
    let violation = check_records(history).unwrap_err();
    assert_eq!(violation.state, Some(v("b")));
    assert_eq!(violation.stuck.iter().map(|(id, _)| id.index()).collect::<Vec<_>>(), [2]);
}

#[test]
fn lost_delete() {
    let history = vec![put(1, 0, 10, "k", "a"), delete(2, 20, 30, "k"), get(3, 40, 50, "k", Some("a"))];
    assert!(check_records(history).is_err());
}

#[test]
fn concurrent_cas_from_the_same_value_cannot_both_swap() {
    let base = || vec![put(1, 0, 10, "k", "a")];
    let with = |more: Vec<Record>| check_records(base().into_iter().chain(more).collect());
    let both = vec![cas(2, 20, 30, "k", Some("a"), Some("b"), true), cas(3, 20, 30, "k", Some("a"), Some("c"), true)];
    assert!(with(both).is_err());
    let one = vec![cas(2, 20, 30, "k", Some("a"), Some("b"), true), cas(3, 20, 30, "k", Some("a"), Some("c"), false)];
    assert_eq!(with(one), Ok(()));
    // Create-if-absent (etcd's `version == 0` guard) from two clients: one must lose.
    let creates = vec![cas(4, 0, 10, "x", None, Some("a"), true), cas(5, 0, 10, "x", None, Some("b"), true)];
    assert!(check_records(creates).is_err());
}

#[test]
fn cas_that_fails_although_the_value_matched() {
    let history = vec![put(1, 0, 10, "k", "a"), cas(2, 20, 30, "k", Some("a"), Some("b"), false)];
    assert!(check_records(history).is_err());
    // Unless a concurrent write changed the value meanwhile.
    let history =
        vec![put(1, 0, 10, "k", "a"), cas(2, 20, 30, "k", Some("a"), Some("b"), false), put(3, 15, 40, "k", "c")];
    assert_eq!(check_records(history), Ok(()));
}

#[test]
fn cas_that_swaps_a_value_the_key_did_not_hold() {
    let history = vec![put(1, 0, 10, "k", "a"), cas(2, 20, 30, "k", Some("x"), Some("b"), true)];
    assert!(check_records(history).is_err());
    assert!(check_records(vec![cas(2, 20, 30, "k", Some("x"), Some("b"), true)]).is_err());
}

#[test]
fn read_of_the_old_value_after_a_cas_swapped() {
    let history =
        vec![put(1, 0, 10, "k", "a"), cas(2, 20, 30, "k", Some("a"), Some("b"), true), get(3, 40, 50, "k", Some("a"))];
    assert!(check_records(history).is_err());
}

#[test]
fn cas_to_absent_deletes() {
    let history = vec![
        put(1, 0, 10, "k", "a"),
        cas(2, 20, 30, "k", Some("a"), None, true),
        get(3, 40, 50, "k", None),
        cas(2, 60, 70, "k", None, None, true),
    ];
    assert_eq!(check_records(history), Ok(()));
}

#[test]
fn unknown_put_may_apply_late() {
    let history = vec![
        unknown(1, 0, Op::put("k", "a")),
        get(2, 10, 20, "k", None),
        put(3, 30, 40, "k", "b"),
        get(2, 50, 60, "k", Some("b")),
        get(2, 1_000, 1_010, "k", Some("a")),
    ];
    assert_eq!(check_records(history), Ok(()));
}

#[test]
fn unknown_put_may_never_apply() {
    let history = vec![unknown(1, 0, Op::put("k", "a")), get(2, 10, 20, "k", None), get(2, 1_000, 1_010, "k", None)];
    assert_eq!(check_records(history), Ok(()));
}

#[test]
fn unknown_put_cannot_be_undone() {
    let history = vec![unknown(1, 0, Op::put("k", "a")), get(2, 10, 20, "k", Some("a")), get(2, 30, 40, "k", None)];
    assert!(check_records(history).is_err());
}

#[test]
fn unknown_put_cannot_apply_before_its_call() {
    let history = vec![get(2, 0, 10, "k", Some("a")), unknown(1, 20, Op::put("k", "a"))];
    assert!(check_records(history).is_err());
}

#[test]
fn unknown_put_applies_at_most_once() {
    let history = vec![
        unknown(1, 0, Op::put("k", "a")),
        get(2, 10, 20, "k", Some("a")),
        put(3, 30, 40, "k", "b"),
        get(2, 50, 60, "k", Some("a")),
    ];
    let violation = check_records(history).unwrap_err();
    assert_eq!(violation.stuck.iter().map(|(id, _)| id.index()).collect::<Vec<_>>(), [3]);
}

#[test]
fn interchangeable_unknown_writes_each_apply_at_most_once() {
    let history = || {
        vec![
            unknown(1, 0, Op::put("k", "a")),
            unknown(2, 0, Op::put("k", "a")),
            get(3, 10, 20, "k", Some("a")),
            put(4, 30, 40, "k", "b"),
            get(3, 50, 60, "k", Some("b")),
            get(3, 70, 80, "k", Some("a")),
        ]
    };
    assert_eq!(check_records(history()), Ok(()));
    let mut thrice = history();
    thrice.extend([put(4, 90, 100, "k", "b"), get(3, 110, 120, "k", Some("a"))]);
    assert!(check_records(thrice).is_err());
}

/// Writes of unknown outcome whose values nobody reads are interchangeable; the one called first
/// (not the one recorded first) must be the one tried first.
#[test]
fn interchangeable_unknown_writes_go_by_call_time() {
    let history = vec![
        put(1, 0, 10, "k", "a"),
        unknown(2, 100, Op::put("k", "x")),
        unknown(3, 20, Op::put("k", "y")),
        cas(4, 30, 40, "k", Some("a"), Some("b"), false),
    ];
    assert_eq!(check_records(history.clone()), Ok(()));
    let mut late = history;
    late[2].call = 50;
    assert!(check_records(late).is_err());
}

/// Timeouts of writes whose values nobody reads pile up as candidates for the rest of the history;
/// the symmetry reduction keeps the search polynomial, even when it must be exhaustive.
#[test]
fn many_unknown_writes_of_unread_values_stay_tractable() {
    let rounds = 300u64;
    let mut history = Vec::new();
    for r in 0..rounds {
        let t = 100 * r;
        history.push(put(1, t, t + 50, "k", &format!("r{r}")));
        history.push(unknown(2, t + 10, Op::put("k", format!("lost{r}"))));
        history.push(get(3, t + 20, t + 60, "k", Some(&format!("r{r}"))));
    }
    let last = format!("r{}", rounds - 1);
    history.push(get(3, 100 * rounds, 100 * rounds + 10, "k", Some(&last)));
    assert_eq!(check_records(history.clone()), Ok(()));
    history.push(get(3, 100 * rounds + 20, 100 * rounds + 30, "k", Some("r5")));
    let violation = check_records(history.clone()).unwrap_err();
    assert_eq!(violation.stuck.last().map(|(id, _)| id.index()), Some(history.len() - 1));
}

#[test]
fn unknown_cas_and_delete_may_apply_or_not() {
    let cas_late = vec![
        put(1, 0, 10, "k", "a"),
        unknown(2, 20, Op::cas("k", Some(v("a")), Some(v("b")))),
        get(3, 30, 40, "k", Some("a")),
        get(3, 50, 60, "k", Some("b")),
    ];
    assert_eq!(check_records(cas_late), Ok(()));
    let cas_reverted = vec![
        put(1, 0, 10, "k", "a"),
        unknown(2, 20, Op::cas("k", Some(v("a")), Some(v("b")))),
        get(3, 30, 40, "k", Some("b")),
        get(3, 50, 60, "k", Some("a")),
    ];
    assert!(check_records(cas_reverted).is_err());
    // A cas of unknown outcome whose guard never held cannot have swapped.
    let cas_impossible = vec![
        put(1, 0, 10, "k", "a"),
        unknown(2, 20, Op::cas("k", Some(v("x")), Some(v("b")))),
        get(3, 30, 40, "k", Some("b")),
    ];
    assert!(check_records(cas_impossible).is_err());
    let delete_late = vec![
        put(1, 0, 10, "k", "a"),
        unknown(2, 20, Op::delete("k")),
        get(3, 30, 40, "k", Some("a")),
        get(3, 50, 60, "k", None),
    ];
    assert_eq!(check_records(delete_late), Ok(()));
}

#[test]
fn unknown_get_constrains_nothing() {
    let history = vec![unknown(1, 0, Op::get("k")), put(2, 10, 20, "k", "a")];
    assert_eq!(check_records(history), Ok(()));
}

#[test]
fn operations_never_completed_count_as_unknown() {
    let history = History::new();
    let lost = history.invoke(1, Op::put("k", "a"));
    let read = history.invoke(2, Op::get("k"));
    history.complete(read, Outcome::Ok(Output::Read(Some(v("a")))));
    assert_eq!(history.records()[lost.index()].outcome, Outcome::Unknown);
    assert_eq!(check(&history), Ok(()));
    let read = history.invoke(2, Op::get("k"));
    history.complete(read, Outcome::Ok(Output::Read(None)));
    assert!(check(&history).is_err());
}

#[test]
fn keys_are_checked_independently() {
    let history = vec![
        put(1, 0, 10, "k1", "a"),
        put(2, 0, 10, "k2", "a"),
        get(1, 20, 30, "k1", Some("a")),
        get(2, 20, 30, "k2", None),
        get(3, 20, 30, "k3", None),
    ];
    let violation = check_records(history).unwrap_err();
    assert_eq!(violation.key, v("k2"));
    assert_eq!(violation.stuck.iter().map(|(id, _)| id.index()).collect::<Vec<_>>(), [3]);
}

#[test]
fn violation_reads_well() {
    let violation = check_records(vec![
        put(7, 0, 10, "k\n", "a"),
        cas(8, 20, 30, "k\n", Some("a"), None, true),
        get(9, 40, 50, "k\n", Some("a")),
        unknown(8, 45, Op::put("k\n", "b")),
    ])
    .unwrap_err();
    let text = violation.to_string();
    assert!(
        text.starts_with("key \"k\\n\" is not linearizable: after 2 of its operations, which leave it absent,"),
        "{text}"
    );
    assert!(text.contains("op #2 (client 9) get = \"a\" [40, 50]"), "{text}");
    assert!(text.contains("op #1 (client 8) cas \"a\" -> absent swapped [20, 30]"), "{text}");
}

#[test]
fn search_limit_gives_an_inconclusive_verdict() {
    let history: Vec<Record> = (0..50u64).map(|i| put(i, i * 10, i * 10 + 5, "a", &i.to_string())).collect();
    let history = History::from_records(history);
    assert_eq!(check_with_limit(&history, 10), Verdict::Inconclusive { keys: vec![v("a")] });
    assert_eq!(check_with_limit(&history, 1_000), Verdict::Linearizable);
}

#[test]
fn a_violation_wins_over_an_inconclusive_key() {
    let mut history: Vec<Record> = (0..50u64).map(|i| put(i, i * 10, i * 10 + 5, "a", &i.to_string())).collect();
    history.extend([put(1, 0, 10, "b", "x"), get(2, 20, 30, "b", None)]);
    let Verdict::Violation(violation) = check_with_limit(&History::from_records(history), 10) else {
        panic!("the violation on b was not reported");
    };
    assert_eq!(violation.key, v("b"));
}

/// Many mutually concurrent writes, then reads that pin an impossible order: memoization keeps
/// the (exponential) search small.
#[test]
fn many_concurrent_writes_stay_tractable() {
    let mut history: Vec<Record> = (0..12u64).map(|i| put(i, 0, 100, "k", &i.to_string())).collect();
    history.extend([get(20, 200, 210, "k", Some("3")), get(20, 220, 230, "k", Some("4"))]);
    assert!(check_records(history).is_err());
    let mut history: Vec<Record> = (0..12u64).map(|i| unknown(i, 0, Op::put("k", i.to_string()))).collect();
    history.extend((0..12u64).map(|i| get(20, 200 + 20 * i, 210 + 20 * i, "k", Some(&(11 - i).to_string()))));
    assert_eq!(check_records(history.clone()), Ok(()));
    history.push(get(20, 1_000, 1_010, "k", Some("11")));
    assert!(check_records(history).is_err());
}

/// Clients share a store behind a mutex, so what they record is linearizable by construction.
#[test]
fn recorder_from_many_threads() {
    let history = Arc::new(History::new());
    let store = Arc::new(parking_lot::Mutex::new(std::collections::HashMap::<Vec<u8>, Vec<u8>>::new()));
    let threads: Vec<_> = (0..4u64)
        .map(|client| {
            let (history, store) = (history.clone(), store.clone());
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let key = format!("k{}", i % 3).into_bytes();
                    let value = format!("{client}-{i}").into_bytes();
                    let op = match i % 4 {
                        0 => Op::Put { key, value },
                        1 => Op::Get { key },
                        2 => Op::Cas { key, expect: None, new: Some(value) },
                        _ => Op::Delete { key },
                    };
                    let id = history.invoke(client, op.clone());
                    let output = {
                        let mut store = store.lock();
                        match op {
                            Op::Put { key, value } => {
                                store.insert(key, value);
                                Output::Ack
                            }
                            Op::Get { key } => Output::Read(store.get(&key).cloned()),
                            Op::Delete { key } => {
                                store.remove(&key);
                                Output::Ack
                            }
                            Op::Cas { key, expect, new } => {
                                let swap = store.get(&key) == expect.as_ref();
                                if swap {
                                    match new {
                                        Some(new) => store.insert(key, new),
                                        None => store.remove(&key),
                                    };
                                }
                                Output::Cas(swap)
                            }
                        }
                    };
                    // Every tenth answer is lost (the put or cas still happened).
                    let outcome = if i % 10 == 9 { Outcome::Unknown } else { Outcome::Ok(output) };
                    history.complete(id, outcome);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(history.len(), 800);
    assert_eq!(check(&history), Ok(()));
}

#[test]
#[should_panic(expected = "op #0 completed twice")]
fn completing_twice_panics() {
    let history = History::new();
    let id = history.invoke(1, Op::delete("k"));
    history.complete(id, Outcome::Ok(Output::Ack));
    history.complete(id, Outcome::Unknown);
}

#[test]
#[should_panic(expected = "does not answer")]
fn output_of_the_wrong_kind_panics() {
    let history = History::new();
    let id = history.invoke(1, Op::get("k"));
    history.complete(id, Outcome::Ok(Output::Ack));
}

#[test]
#[should_panic(expected = "before its call")]
fn return_before_call_panics() {
    History::from_records(vec![put(1, 10, 5, "k", "a")]);
}

/// The example of the crate's documentation (doctests are not part of `--all-targets`).
#[test]
fn crate_example() {
    let history = History::new();
    let put = history.invoke(1, Op::put("k", "v"));
    history.complete(put, Outcome::Ok(Output::Ack));
    let get = history.invoke(2, Op::get("k"));
    history.complete(get, Outcome::Ok(Output::Read(None))); // stale: the put had returned
    let violation = check(&history).unwrap_err();
    assert_eq!(violation.key, b"k");
    assert_eq!(violation.stuck[0].0, get);
    assert_eq!(get, OpId(1));
}
