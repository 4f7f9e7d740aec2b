//! Histories generated from a real in-memory store: operations take effect one after another at
//! known instants, each recorded with an interval around its instant, so the history is
//! linearizable by construction. Corrupting one read must make it non-linearizable.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{check_records, v};
use crate::{History, Op, Outcome, Output, Record, Verdict, check_with_limit};

/// What the compare of a cas expects.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The value the key holds when the cas takes effect (it swaps).
    Current,
    Absent,
    Value(u8),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    /// Completed, its answer recorded.
    Known,
    /// Took effect, but its client never learnt the answer.
    LostAnswer,
    /// Never took effect, and its client does not know.
    NeverHappened,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Put(u8),
    Get,
    Delete,
    Cas(Expect, Option<u8>),
}

/// One operation of the plan: the `i`-th takes effect at `1_000 + 100 * i`, and is recorded as
/// called `before` earlier and returning `after` later.
#[derive(Clone, Copy, Debug)]
struct Planned {
    client: u64,
    key: u8,
    kind: Kind,
    before: u64,
    after: u64,
    fate: Fate,
}

/// Makes the history of a plan, running it against a map.
fn history_from(plan: &[Planned]) -> Vec<Record> {
    let name = |n: u8| format!("v{n}").into_bytes();
    let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut records = Vec::new();
    for (i, p) in plan.iter().enumerate() {
        let at = 1_000 + 100 * i as u64;
        let key = format!("k{}", p.key).into_bytes();
        let current = store.get(&key).cloned();
        let (op, output) = match p.kind {
            Kind::Put(value) => (Op::Put { key: key.clone(), value: name(value) }, Output::Ack),
            Kind::Get => (Op::Get { key: key.clone() }, Output::Read(current.clone())),
            Kind::Delete => (Op::Delete { key: key.clone() }, Output::Ack),
            Kind::Cas(expect, new) => {
                let expect = match expect {
                    Expect::Current => current.clone(),
                    Expect::Absent => None,
                    Expect::Value(value) => Some(name(value)),
                };
                let swapped = expect == current;
                (Op::Cas { key: key.clone(), expect, new: new.map(name) }, Output::Cas(swapped))
            }
        };
        if p.fate != Fate::NeverHappened {
            match (&op, &output) {
                (Op::Put { value, .. }, _) => drop(store.insert(key, value.clone())),
                (Op::Delete { .. }, _) => drop(store.remove(&key)),
                (Op::Cas { new, .. }, Output::Cas(true)) => match new {
                    Some(new) => drop(store.insert(key, new.clone())),
                    None => drop(store.remove(&key)),
                },
                _ => {}
            }
        }
        let outcome = if p.fate == Fate::Known { Outcome::Ok(output) } else { Outcome::Unknown };
        records.push(Record { client: p.client, call: at - p.before, ret: at + p.after, op, outcome });
    }
    records
}

fn planned(keys: u8) -> impl Strategy<Value = Planned> {
    let value = 0..4u8;
    let expect =
        prop_oneof![2 => Just(Expect::Current), 1 => Just(Expect::Absent), 1 => value.clone().prop_map(Expect::Value)];
    let kind = prop_oneof![
        3 => value.clone().prop_map(Kind::Put),
        4 => Just(Kind::Get),
        1 => Just(Kind::Delete),
        2 => (expect, proptest::option::weighted(0.8, value)).prop_map(|(e, n)| Kind::Cas(e, n)),
    ];
    let fate = prop_oneof![30 => Just(Fate::Known), 1 => Just(Fate::LostAnswer), 1 => Just(Fate::NeverHappened)];
    (0..8u64, 0..keys, kind, 0..400u64, 0..400u64, fate).prop_map(|(client, key, kind, before, after, fate)| Planned {
        client,
        key,
        kind,
        before,
        after,
        fate,
    })
}

/// Plans of up to 150 operations on 1 to 3 keys; intervals overlap up to 4 neighbours each side.
fn plan() -> impl Strategy<Value = Vec<Planned>> {
    (1..=3u8).prop_flat_map(|keys| proptest::collection::vec(planned(keys), 0..150))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn generated_histories_are_linearizable(plan in plan()) {
        let history = history_from(&plan);
        if let Err(violation) = check_records(history) {
            prop_assert!(false, "{violation}");
        }
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught(plan in plan(), which in any::<prop::sample::Index>()) {
        let mut history = history_from(&plan);
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].outcome, Outcome::Ok(Output::Read(_))))
            .collect();
        prop_assume!(!reads.is_empty());
        let corrupted = reads[which.index(reads.len())];
        history[corrupted].outcome = Outcome::Ok(Output::Read(Some(v("never written"))));
        let key = history[corrupted].op.key().to_vec();
        match check_records(history) {
            Ok(()) => prop_assert!(false, "op #{corrupted} read a value never written, unnoticed"),
            Err(violation) => {
                prop_assert_eq!(violation.key, key);
                prop_assert!(!violation.stuck.is_empty());
            }
        }
    }
}

/// A long history on one key, from a deterministic pseudo-random plan: the search is linear in
/// practice, not exponential.
#[test]
fn long_generated_history_checks_quickly() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let plan: Vec<Planned> = (0..5_000)
        .map(|_| {
            let value = next(4) as u8;
            let kind = match next(10) {
                0..=2 => Kind::Put(value),
                3..=6 => Kind::Get,
                7 => Kind::Delete,
                _ => Kind::Cas(if next(2) == 0 { Expect::Current } else { Expect::Value(value) }, Some(next(4) as u8)),
            };
            let fate = match next(40) {
                0 => Fate::LostAnswer,
                1 => Fate::NeverHappened,
                _ => Fate::Known,
            };
            Planned { client: next(8), key: 0, kind, before: next(400), after: next(400), fate }
        })
        .collect();
    let history = History::from_records(history_from(&plan));
    let started = std::time::Instant::now();
    assert_eq!(check_with_limit(&history, 10_000_000), Verdict::Linearizable);
    eprintln!("5000 operations checked in {:?}", started.elapsed());
}
