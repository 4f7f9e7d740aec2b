//! Tests of the checker: hand-written histories, and histories generated from a real model.

mod generated;
mod hand_written;

use crate::{History, Op, Outcome, Output, Record, Violation, check};

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn ok(client: u64, call: u64, ret: u64, op: Op, output: Output) -> Record {
    Record { client, call, ret, op, outcome: Outcome::Ok(output) }
}

fn put(client: u64, call: u64, ret: u64, key: &str, value: &str) -> Record {
    ok(client, call, ret, Op::put(key, value), Output::Ack)
}

fn get(client: u64, call: u64, ret: u64, key: &str, seen: Option<&str>) -> Record {
    ok(client, call, ret, Op::get(key), Output::Read(seen.map(v)))
}

fn delete(client: u64, call: u64, ret: u64, key: &str) -> Record {
    ok(client, call, ret, Op::delete(key), Output::Ack)
}

#[allow(clippy::too_many_arguments)]
fn cas(client: u64, call: u64, ret: u64, key: &str, expect: Option<&str>, new: Option<&str>, swapped: bool) -> Record {
    ok(client, call, ret, Op::cas(key, expect.map(v), new.map(v)), Output::Cas(swapped))
}

/// An operation whose client never learnt its outcome.
fn unknown(client: u64, call: u64, op: Op) -> Record {
    Record { client, call, ret: u64::MAX, op, outcome: Outcome::Unknown }
}

fn check_records(records: Vec<Record>) -> Result<(), Violation> {
    check(&History::from_records(records))
}
