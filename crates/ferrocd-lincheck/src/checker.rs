//! The search: one depth-first search over linearization points per key, memoized.
//!
//! Per key, the calls and returns of its operations form a doubly linked list sorted by time (a
//! call and a return at the same instant are taken as concurrent: the call comes first). The
//! operations that may take effect next are those whose call precedes the first return still in
//! the list (the "minimal call" rule of Wing & Gong): walking the list from its head, every call
//! met before the first return is a candidate. Linearizing a candidate applies it to the register
//! and unlinks its call and return; meeting a return means every candidate failed, so the search
//! backtracks (relinking, dancing-links style). Lowe's memoization prunes a branch when the same
//! set of linearized operations (a bitset) was already reached with the same register value.
//!
//! An operation of unknown outcome has no return in the list: it never forces anything, may be
//! linearized at any point after its call, or never. The search succeeds once every operation of
//! known outcome is linearized. Left unchecked, `k` such operations pending together multiply the
//! search by up to `2^k` (which of them happened so far); a symmetry reduction cuts that when they
//! are interchangeable: same kind, and values that no operation compares with (no read returned
//! them, no cas expected them), as with writes of unique values that timed out and were never read.
//! Of interchangeable operations, only the earliest called not yet linearized may go next (a
//! linearization using others can be rewritten to use those), so `k + 1` choices remain.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use crate::history::{History, Op, OpId, Outcome, Output, Record};

/// The answer of [`check_with_limit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's operations can be linearized.
    Linearizable,
    /// Some key's operations cannot (the first such key in byte order is reported).
    Violation(Violation),
    /// No violation was found, but the search of these keys hit the step limit before deciding.
    Inconclusive {
        /// The undecided keys, in byte order.
        keys: Vec<Vec<u8>>,
    },
}

/// Why a history is not linearizable: the deepest partial linearization of one key that the search
/// reached, and the operations none of which could take effect after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key whose operations cannot be linearized.
    pub key: Vec<u8>,
    /// The longest sequence of this key's operations found that respects real time and the
    /// register's semantics, in linearization order.
    pub linearized: Vec<(OpId, Record)>,
    /// The value of the key after `linearized` (`None`: absent).
    pub state: Option<Vec<u8>>,
    /// The operations of known outcome that could go next by real time (called before the earliest
    /// pending return), none of which is consistent with `state`: at least one of them
    /// (typically the one returning first) is wrong. Sorted by call time.
    pub stuck: Vec<(OpId, Record)>,
}

impl std::error::Error for Violation {}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// How many of the last linearized operations to show.
        const TAIL: usize = 8;
        write!(
            f,
            "key {} is not linearizable: after {} of its operations, which leave it {}, none of these can take effect:",
            Bytes(&self.key),
            self.linearized.len(),
            Value(self.state.as_deref()),
        )?;
        for (id, record) in &self.stuck {
            write!(f, "\n  {}", Show(*id, record))?;
        }
        if !self.linearized.is_empty() {
            let skipped = self.linearized.len().saturating_sub(TAIL);
            write!(f, "\nlast operations linearized:")?;
            if skipped > 0 {
                write!(f, "\n  ... {skipped} more")?;
            }
            for (id, record) in &self.linearized[skipped..] {
                write!(f, "\n  {}", Show(*id, record))?;
            }
        }
        Ok(())
    }
}

struct Bytes<'a>(&'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

struct Value<'a>(Option<&'a [u8]>);

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => Bytes(v).fmt(f),
            None => f.write_str("absent"),
        }
    }
}

/// One operation, for people.
struct Show<'a>(OpId, &'a Record);

impl fmt::Display for Show<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Show(id, r) = self;
        write!(f, "{id} (client {}) ", r.client)?;
        match &r.op {
            Op::Put { value, .. } => write!(f, "put {}", Bytes(value))?,
            Op::Get { .. } => f.write_str("get")?,
            Op::Delete { .. } => f.write_str("delete")?,
            Op::Cas { expect, new, .. } => {
                write!(f, "cas {} -> {}", Value(expect.as_deref()), Value(new.as_deref()))?;
            }
        }
        match &r.outcome {
            Outcome::Ok(Output::Ack) => write!(f, " ok [{}, {}]", r.call, r.ret),
            Outcome::Ok(Output::Read(v)) => write!(f, " = {} [{}, {}]", Value(v.as_deref()), r.call, r.ret),
            Outcome::Ok(Output::Cas(swapped)) => {
                let answer = if *swapped { "swapped" } else { "failed" };
                write!(f, " {answer} [{}, {}]", r.call, r.ret)
            }
            Outcome::Unknown => write!(f, " outcome unknown [{}, ...)", r.call),
        }
    }
}

/// Checks that `history` is linearizable against a key-value store whose keys all start absent.
///
/// Unbounded: the search is exponential in the worst case (many mutually concurrent operations on
/// one key); see [`check_with_limit`].
pub fn check(history: &History) -> Result<(), Violation> {
    match check_with_limit(history, u64::MAX) {
        Verdict::Linearizable => Ok(()),
        Verdict::Violation(violation) => Err(violation),
        // Not reachable: a step count of u64::MAX would take centuries.
        Verdict::Inconclusive { keys } => panic!("search limit reached on {} keys", keys.len()),
    }
}

/// [`check`], giving up on a key after `max_steps` search steps on it (a step is one candidate
/// tried or one backtrack). Every key is searched, so a violation on one key is found even when
/// another is inconclusive, and wins.
pub fn check_with_limit(history: &History, max_steps: u64) -> Verdict {
    let records = history.records();
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (i, record) in records.iter().enumerate() {
        by_key.entry(record.op.key()).or_default().push(i);
    }
    let mut undecided = Vec::new();
    for (key, indexes) in by_key {
        let mut history = KeyHistory::new(&records, &indexes);
        match history.search(max_steps) {
            Search::Linearizable => {}
            Search::Exhausted => undecided.push(key.to_vec()),
            Search::Stuck(deepest) => return Verdict::Violation(history.explain(deepest, key, &records)),
        }
    }
    if undecided.is_empty() { Verdict::Linearizable } else { Verdict::Inconclusive { keys: undecided } }
}

/// A value of the key: 0 is absent, `v > 0` is the `v`-th distinct value in the key's history.
type Val = u32;

/// Stands for any value no operation compares the register with.
const OPAQUE: Val = Val::MAX;

/// An operation of one key, reduced to its effect on, and its constraint by, the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Step {
    /// Put or delete, known or not: sets the value.
    Write(Val),
    /// A completed get: the value must be this.
    Read(Val),
    /// A completed cas that swapped, or a cas of unknown outcome (which, when it did not swap, had
    /// no effect: as if never linearized).
    Swap { expect: Val, new: Val },
    /// A completed cas that did not swap: the value must not be `expect`.
    NoSwap { expect: Val },
}

impl Step {
    fn apply(self, state: Val) -> Option<Val> {
        match self {
            Step::Write(v) => Some(v),
            Step::Read(v) => (v == state).then_some(state),
            Step::Swap { expect, new } => (expect == state).then_some(new),
            Step::NoSwap { expect } => (expect != state).then_some(state),
        }
    }

    /// The value the register is compared with.
    fn observes(self) -> Option<Val> {
        match self {
            Step::Write(_) => None,
            Step::Read(v) | Step::Swap { expect: v, .. } | Step::NoSwap { expect: v } => Some(v),
        }
    }

    /// The step with every value that no operation compares with replaced by [`OPAQUE`]: steps
    /// equal after this are indistinguishable by the rest of the history.
    fn blurred(self, observed: &[bool]) -> Step {
        let blur = |v: Val| if observed[v as usize] { v } else { OPAQUE };
        match self {
            Step::Write(v) => Step::Write(blur(v)),
            Step::Swap { expect, new } => Step::Swap { expect, new: blur(new) },
            other => other,
        }
    }
}

/// An operation of one key.
#[derive(Debug)]
struct KeyOp {
    /// Its index in the history.
    index: usize,
    step: Step,
    /// Whether its outcome is known (else it has no return: it may take effect late, or never).
    known: bool,
}

/// One key's operations, as a linked list of call and return events sorted by time.
#[derive(Debug)]
struct KeyHistory {
    ops: Vec<KeyOp>,
    /// `values[v - 1]` is the value `v`.
    values: Vec<Vec<u8>>,
    /// Per event node: its operation, and whether it is the call (else the return). Node 0 is the
    /// head and the last node the tail; neither has an operation.
    events: Vec<(usize, bool)>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per operation: its return node, if its outcome is known.
    ret_node: Vec<Option<usize>>,
    /// Per operation of unknown outcome: the one called last before it among the operations of
    /// unknown outcome interchangeable with it, which must be linearized first (symmetry
    /// reduction: of `k` interchangeable operations, only the `k + 1` call-order prefixes are
    /// tried rather than the `2^k` subsets — any linearization using some of them can be rewritten
    /// to use the earliest called, in call order).
    twin: Vec<Option<usize>>,
    /// Per operation: a random word; the hash of a set of operations is the xor of theirs.
    zobrist: Vec<u64>,
}

/// Where a key's search ended.
enum Search {
    Linearizable,
    Exhausted,
    Stuck(Deepest),
}

/// The deepest dead end of a failed search.
struct Deepest {
    /// Local operations, in linearization order.
    linearized: Vec<usize>,
    state: Val,
    /// Local operations of known outcome that could have gone next, by call time.
    stuck: Vec<usize>,
}

const HEAD: usize = 0;

/// `splitmix64`'s finalizer: a bijective mix of the bits of `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A map hasher for keys that are already well-mixed hashes.
#[derive(Debug, Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// Lowe's memo, extended to operations of unknown outcome: the searched dead ends, as (set of
/// linearized operations, value) pairs, by hash of (the operations of known outcome in the set,
/// value).
///
/// A state is a dead end if a dead end with the same value, the same operations of known outcome
/// and a subset of its operations of unknown outcome was found: whatever completes the state would
/// complete that one too (those left out can stay out), so nothing does. Without operations of
/// unknown outcome, this is Lowe's exact match. Only states searched to the end are recorded:
/// a state equal to one on the current path cannot come up (the path's sets are smaller), and
/// one merely dominated by an ancestor is searched again.
#[derive(Debug, Default)]
struct DeadEnds(HashMap<u64, Vec<Box<[u64]>>, BuildHasherDefault<PassThrough>>);

impl DeadEnds {
    fn slot(known_hash: u64, state: Val) -> u64 {
        known_hash ^ mix(u64::from(state) | 1 << 63)
    }

    fn insert(&mut self, known_hash: u64, set: &[u64], state: Val) {
        self.0.entry(Self::slot(known_hash, state)).or_default().push(set.into());
    }

    /// Whether `(set, state)` is known to be a dead end. `known` flags the operations of known
    /// outcome; `known_hash` hashes the set's.
    fn contains(&self, known_hash: u64, set: &[u64], state: Val, known: &[u64]) -> bool {
        let Some(dead) = self.0.get(&Self::slot(known_hash, state)) else { return false };
        // `dead ⊆ set` and `set ∩ known ⊆ dead`: the same known operations, fewer unknown ones.
        dead.iter().any(|d| d.iter().zip(set).zip(known).all(|((&d, &s), &k)| d & !s == 0 && s & k & !d == 0))
    }
}

fn contains(set: &[u64], op: usize) -> bool {
    set[op / 64] & (1 << (op % 64)) != 0
}

fn toggle(set: &mut [u64], op: usize) {
    set[op / 64] ^= 1 << (op % 64);
}

impl KeyHistory {
    fn new<'a>(records: &'a [Record], indexes: &[usize]) -> Self {
        let mut values = Vec::new();
        let mut ids: HashMap<&'a [u8], Val> = HashMap::new();
        let mut val = |v: Option<&'a [u8]>| -> Val {
            let Some(v) = v else { return 0 };
            *ids.entry(v).or_insert_with(|| {
                values.push(v.to_vec());
                Val::try_from(values.len()).unwrap_or(OPAQUE - 1)
            })
        };
        let mut ops = Vec::new();
        // (time, is return, local op): calls sort before returns at the same instant.
        let mut times = Vec::new();
        for &index in indexes {
            let record = &records[index];
            let known = match &record.outcome {
                Outcome::Ok(output) => Some(output),
                Outcome::Unknown => None,
            };
            let step = match (&record.op, known) {
                (Op::Put { value, .. }, _) => Step::Write(val(Some(value))),
                (Op::Delete { .. }, _) => Step::Write(0),
                (Op::Get { .. }, Some(Output::Read(v))) => Step::Read(val(v.as_deref())),
                // A read of unknown outcome constrains nothing and changes nothing.
                (Op::Get { .. }, _) => continue,
                (Op::Cas { expect, .. }, Some(Output::Cas(false))) => Step::NoSwap { expect: val(expect.as_deref()) },
                // Of unknown outcome, it changes nothing whether it swapped or not.
                (Op::Cas { expect, new, .. }, None) if expect == new => continue,
                (Op::Cas { expect, new, .. }, _) => {
                    Step::Swap { expect: val(expect.as_deref()), new: val(new.as_deref()) }
                }
            };
            let local = ops.len();
            ops.push(KeyOp { index, step, known: known.is_some() });
            times.push((record.call, false, local));
            if known.is_some() {
                times.push((record.ret, true, local));
            }
        }
        times.sort_unstable();

        let tail = times.len() + 1;
        let mut events = vec![(usize::MAX, false); tail + 1];
        let mut ret_node = vec![None; ops.len()];
        for (n, &(_, is_return, local)) in times.iter().enumerate() {
            events[n + 1] = (local, !is_return);
            if is_return {
                ret_node[local] = Some(n + 1);
            }
        }
        let next = (0..=tail).map(|n| (n + 1).min(tail)).collect();
        let prev = (0..=tail).map(|n| n.saturating_sub(1)).collect();

        let mut observed = vec![false; values.len() + 1];
        for op in &ops {
            if let Some(v) = op.step.observes() {
                observed[v as usize] = true;
            }
        }
        let mut twin = vec![None; ops.len()];
        let mut last_of_class: HashMap<Step, usize> = HashMap::new();
        // `times` lists calls in call order.
        for &(_, is_return, local) in &times {
            if !is_return && !ops[local].known {
                twin[local] = last_of_class.insert(ops[local].step.blurred(&observed), local);
            }
        }
        let zobrist = (0..ops.len() as u64).map(mix).collect();
        KeyHistory { ops, values, events, next, prev, ret_node, twin, zobrist }
    }

    fn unlink(&mut self, n: usize) {
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = x;
        self.prev[x] = p;
    }

    /// Undoes `unlink(n)`, provided the nodes unlinked since were relinked.
    fn relink(&mut self, n: usize) {
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = n;
        self.prev[x] = n;
    }

    /// Removes a linearized operation's call (node `call`) and return.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(ret) = self.ret_node[self.events[call].0] {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: usize) {
        if let Some(ret) = self.ret_node[self.events[call].0] {
            self.relink(ret);
        }
        self.relink(call);
    }

    fn search(&mut self, max_steps: u64) -> Search {
        let total_known = self.ops.iter().filter(|op| op.known).count();
        let mut pending = total_known;
        if pending == 0 {
            return Search::Linearizable;
        }
        let mut known = vec![0u64; self.ops.len().div_ceil(64)];
        for (op, _) in self.ops.iter().enumerate().filter(|(_, op)| op.known) {
            toggle(&mut known, op);
        }
        let mut linearized = vec![0u64; known.len()];
        // The hash of the operations of known outcome linearized.
        let mut known_hash = 0u64;
        let mut dead_ends = DeadEnds::default();
        // The call nodes of the operations linearized, with the value before each and whether
        // they were tried among those of unknown outcome.
        let mut stack: Vec<(usize, Val, bool)> = Vec::new();
        // Below any dead end's depth.
        let mut deepest = ((0, Reverse(usize::MAX)), Deepest { linearized: Vec::new(), state: 0, stuck: Vec::new() });
        let mut state: Val = 0;
        let mut node = self.next[HEAD];
        // Candidates are tried in two passes: those of known outcome first, so that operations of
        // unknown outcome get linearized only when needed.
        let mut unknown_pass = false;
        let mut steps = 0u64;
        loop {
            steps += 1;
            if steps >= max_steps {
                return Search::Exhausted;
            }
            // Some operation of known outcome is pending, so its return lies ahead: `node` is not
            // the tail.
            let (op, is_call) = self.events[node];
            if is_call {
                let KeyOp { step, known: op_known, .. } = self.ops[op];
                let ready = op_known != unknown_pass && self.twin[op].is_none_or(|twin| contains(&linearized, twin));
                if let Some(after) = step.apply(state).filter(|_| ready) {
                    toggle(&mut linearized, op);
                    let hash = if op_known { known_hash ^ self.zobrist[op] } else { known_hash };
                    if !dead_ends.contains(hash, &linearized, after, &known) {
                        known_hash = hash;
                        stack.push((node, state, unknown_pass));
                        state = after;
                        self.lift(node);
                        if op_known {
                            pending -= 1;
                            if pending == 0 {
                                return Search::Linearizable;
                            }
                        }
                        node = self.next[HEAD];
                        unknown_pass = false;
                        continue;
                    }
                    toggle(&mut linearized, op);
                }
                node = self.next[node];
            } else if !unknown_pass {
                unknown_pass = true;
                node = self.next[HEAD];
            } else {
                // Every candidate failed: the operation returning here cannot be linearized after
                // the current prefix. Deepest: most operations of known outcome linearized, then
                // fewest of unknown outcome.
                let depth = (total_known - pending, Reverse(stack.len()));
                if depth > deepest.0 {
                    deepest = (depth, self.dead_end(&stack, state));
                }
                dead_ends.insert(known_hash, &linearized, state);
                let Some((call, before, pass)) = stack.pop() else {
                    return Search::Stuck(deepest.1);
                };
                let op = self.events[call].0;
                self.unlift(call);
                toggle(&mut linearized, op);
                state = before;
                if self.ops[op].known {
                    known_hash ^= self.zobrist[op];
                    pending += 1;
                }
                node = self.next[call];
                unknown_pass = pass;
            }
        }
    }

    fn dead_end(&self, stack: &[(usize, Val, bool)], state: Val) -> Deepest {
        let linearized = stack.iter().map(|&(call, _, _)| self.events[call].0).collect();
        let mut stuck = Vec::new();
        let mut node = self.next[HEAD];
        while let Some(&(op, true)) = self.events.get(node) {
            if self.ops[op].known {
                stuck.push(op);
            }
            node = self.next[node];
        }
        Deepest { linearized, state, stuck }
    }

    fn explain(&self, deepest: Deepest, key: &[u8], records: &[Record]) -> Violation {
        let entry = |op: usize| {
            let index = self.ops[op].index;
            (OpId(index), records[index].clone())
        };
        let state = deepest.state.checked_sub(1).map(|v| self.values[v as usize].clone());
        Violation {
            key: key.to_vec(),
            linearized: deepest.linearized.into_iter().map(entry).collect(),
            state,
            stuck: deepest.stuck.into_iter().map(entry).collect(),
        }
    }
}
